"""A run request (the body of ``POST /api/runs``) and the settings it resolves to.

**A request chooses backends and creative knobs; the rest is server configuration.** A
request may set only the renderer options its backend declares ``request_safe``
(:mod:`llmpopcorn.backends.options`: sizes, steps, an endpoint id, never a URL, a model
path, a device or a price), merged over the server's own options for that backend; it
may name the LLM's model only for backends whose model is a name at a remote API
(``request_model``), never a path on the server; and while the server holds any API key
(its ``llm_api_key``, or a provider key in its environment) the LLM URL may only be one
the server is configured for (its ``llm_base_url``) or the backend's own default.

The other rule: **a key goes only where it was configured to go.** The
server's ``llm_api_key`` was configured for one backend at one URL; a request that picks
another backend or another URL gets no key from the server (and a request that would make a
backend fall back to a key from the server's environment for a URL other than that
backend's own default is refused). A key typed into the page (``llm_api_key`` in the
request) is used for that run in this process only: it is never stored in the run store,
echoed, logged or written to a record (:meth:`RunRequest.public` drops it, the records go
through :mod:`llmpopcorn.core.redact`).
"""

from __future__ import annotations

import functools
import hashlib
import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from llmpopcorn.backends.options import validate_options
from llmpopcorn.core.errors import ConfigError
from llmpopcorn.core.registry import registry
from llmpopcorn.core.settings import Settings

#: request fields copied onto the settings as they are (when given)
_PLAIN = (
    "mode",
    "temperature",
    "variants",
    "refine",
    "image",
    "video",
    "render",
    "num_tags",
    "ratio",
    "n_refs",
    "category_match",
    "pe_pool",
    "min_category_size",
)
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"


class RunRequest(BaseModel):
    """What a client may choose for one run. Server-side paths (data, output, cache,
    predictor, certificates) are the server's own and cannot be set per request."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(max_length=2_000)
    mode: Literal["basic", "pe"] = "basic"
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    variants: int = Field(1, ge=1, le=10)
    #: judge-guided refinement rounds (settings.refine), fewer than a CLI run may ask
    refine: int | None = Field(None, ge=0, le=5)
    llm: str | None = Field(None, max_length=64, pattern=_NAME)
    llm_model: str | None = Field(None, max_length=200)
    llm_base_url: str | None = Field(None, max_length=500, pattern=r"^https?://")
    llm_api_key: SecretStr | None = Field(None, max_length=500)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    image: str | None = Field(None, max_length=64, pattern=_NAME)
    video: str | None = Field(None, max_length=64, pattern=_NAME)
    image_options: dict[str, str] | None = None
    video_options: dict[str, str] | None = None
    render: bool | None = None
    num_tags: int | None = Field(None, ge=1, le=10)
    ratio: float | None = Field(None, ge=0.0, le=1.0)
    n_refs: int | None = Field(None, ge=1, le=200)
    category_match: Literal["centroid", "name"] | None = None
    pe_pool: Literal["all", "reference"] | None = None
    min_category_size: int | None = Field(None, ge=1, le=100_000)

    @field_validator("image_options", "video_options")
    @classmethod
    def _small_options(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None and (
            len(value) > 32 or any(len(k) > 64 or len(v) > 500 for k, v in value.items())
        ):
            raise ValueError("at most 32 options, keys up to 64 and values up to 500 characters")
        return value

    def public(self) -> dict[str, Any]:
        """The request as stored and shown: every field that was given, never the key."""
        data = self.model_dump(mode="json", exclude_none=True, exclude={"llm_api_key"})
        if self.llm_api_key is not None:
            data["llm_api_key"] = "(typed into the page; not kept)"
        return data


def _describe_from_settings(model: type[BaseModel]) -> None:
    """Give every request field that is a setting the setting's own help (the OpenAPI page
    and the studio's form read it), so the two cannot drift apart."""
    for name, info in model.model_fields.items():
        if name in Settings.model_fields and not info.description:
            info.description = Settings.model_fields[name].description
    model.model_rebuild(force=True)


_describe_from_settings(RunRequest)


def _url(value: str | None) -> str:
    return (value or "").rstrip("/")


def _default_url(cls: type) -> str:
    return _url(getattr(cls, "default_base_url", None))


def settings_for(base: Settings, request: RunRequest) -> Settings:
    """The settings one run uses: the server's, changed by what the request chose, with the
    server's key only when the request keeps the server's backend *and* URL."""
    update: dict[str, Any] = {
        name: getattr(request, name) for name in _PLAIN if getattr(request, name) is not None
    }
    for kind in ("image", "video"):
        update.update(_renderer_options(base, request, kind))
    llm_name = request.llm or base.llm
    cls = registry.get("llm", llm_name)
    if request.llm_model is not None:
        if not getattr(cls, "request_model", False):
            raise ConfigError(
                f"the model of the '{llm_name}' LLM backend is a path or name on this server: "
                "a request cannot choose it",
                "leave the model empty (the server's --llm-model is used), or choose an API "
                "backend (openai, deepseek, ollama, vllm, llamacpp)",
            )
        update["llm_model"] = request.llm_model
    same_backend = llm_name == base.llm
    server_url = _url(base.llm_base_url) or _default_url(cls)
    if request.llm_base_url:
        target_url = _url(request.llm_base_url)
        allowed = {_url(base.llm_base_url), _default_url(cls)} - {""}
        if server_keys(base) and target_url not in allowed:
            raise ConfigError(
                "this server holds API keys, so a request cannot choose where the LLM is reached",
                "leave the LLM URL empty; the URL is server configuration "
                "(popcorn serve --llm-base-url URL)",
            )
    elif same_backend:
        target_url = server_url
    else:
        target_url = _default_url(cls)
    update["llm"] = llm_name
    update["llm_base_url"] = target_url or None
    if request.llm_api_key is not None and request.llm_api_key.get_secret_value().strip():
        update["llm_api_key"] = request.llm_api_key  # the user's own key, for this run only
    elif same_backend and target_url == server_url:
        update["llm_api_key"] = base.llm_api_key  # the server's key, where it was configured
    else:
        update["llm_api_key"] = None
        env_name = getattr(cls, "key_env", None)
        if env_name and os.environ.get(env_name) and target_url != _default_url(cls):
            # the backend would fall back to the server's ${env_name} for a foreign URL
            raise ConfigError(
                f"the server's {env_name} is only sent to {_default_url(cls)}, not to the "
                "URL this request names",
                "type your own API key for that URL into the request (llm_api_key), or "
                "leave the LLM URL empty",
            )
    if "llm_model" not in update and not same_backend:
        update["llm_model"] = None  # the server's model belongs to the server's backend
    try:
        return Settings(**{**base.model_dump(), **update})
    except ValueError as exc:
        raise ConfigError(f"invalid run settings: {exc}", "fix the field named above") from None


def _renderer_options(base: Settings, request: RunRequest, kind: str) -> dict[str, Any]:
    """The ``{kind}`` and ``{kind}_options`` settings a request leads to: only options the
    backend declares request-safe, over the server's own options for that backend (a
    backend other than the server's gets none of the server's)."""
    name = getattr(request, kind) or getattr(base, kind)
    cls = registry.get(kind, name)  # an unknown name: a clear 400 now
    asked = dict(getattr(request, f"{kind}_options") or {})
    if getattr(request, kind) is None and not asked:
        return {}
    model = getattr(cls, "options_model", None)
    safe = set(getattr(model, "request_safe", ())) if model is not None else set()
    refused = sorted(set(asked) - safe)
    if refused:
        known = set(model.model_fields) if model is not None else set()
        named = [key for key in refused if key in known]
        what = f"option(s) {', '.join(named)}" if named else "unknown option(s)"
        raise ConfigError(
            f"a request cannot set {what} of the '{name}' {kind} backend: URLs, model paths, "
            "devices, prices and limits are server configuration",
            f"options a request may set for '{name}': {', '.join(sorted(safe)) or 'none'}",
        )
    own = dict(getattr(base, f"{kind}_options") or {}) if name == getattr(base, kind) else {}
    merged = {**own, **asked}
    if model is not None:
        validate_options(model, merged, kind=kind, name=name)  # a bad value: 400 now
    return {kind: name, f"{kind}_options": merged}


@functools.cache
def _key_variables() -> tuple[str, ...]:
    """Every environment variable a registered backend reads a key from."""
    names: set[str] = set()
    for kind in ("llm", "image", "video"):
        for name in registry.names(kind):
            try:
                cls = registry.get(kind, name)
            except Exception:  # noqa: BLE001 - a broken plugin holds no key
                continue
            names.update(getattr(cls, "key_envs", ()) or ())
            if getattr(cls, "key_env", None):
                names.add(cls.key_env)
    return tuple(sorted(names))


def server_keys(base: Settings) -> list[str]:
    """Names of the API keys this server holds (its setting, its environment)."""
    from llmpopcorn.core.redact import SECRET_ENV_SUFFIX, SECRET_ENV_VARS

    held = ["llm_api_key"] if base.llm_api_key is not None else []
    for name, value in sorted(os.environ.items()):
        named = name in SECRET_ENV_VARS or name.endswith(SECRET_ENV_SUFFIX)
        if value.strip() and (named or name in _key_variables()):
            held.append(name)
    return held


def settings_key(settings: Settings) -> str:
    """A cache key for a pipeline built from ``settings``: the public settings plus a hash
    of the key (two users' keys never share a pipeline; the key itself is not kept)."""
    key = settings.api_key() or ""
    secret = hashlib.sha256(key.encode()).hexdigest()[:16] if key else ""
    from llmpopcorn.runs.store import digest

    return digest({"settings": settings.public(), "key": secret})
