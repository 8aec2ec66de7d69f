"""One settings object, resolved once per run.

Precedence, highest first: explicit argument > CLI flag > ``POPCORN_*`` environment
variable > config file (TOML) > default. The resolved settings, minus secrets, are
saved in every run record (:meth:`Settings.public`).

Environment variables are ``POPCORN_`` + the field name in upper case
(``POPCORN_LLM_MODEL``), plus the aliases in :data:`ENV_ALIASES` (``POPCORN_DATA``).
The config file is ``--config PATH``, else ``$POPCORN_CONFIG``, else
``~/.config/llmpopcorn/config.toml`` when it exists; its keys are the field names.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from llmpopcorn.core.errors import ConfigError

ENV_PREFIX = "POPCORN_"
ENV_ALIASES = {"POPCORN_DATA": "data_dir", "POPCORN_OUT": "out_dir"}
DEFAULT_CONFIG = Path("~/.config/llmpopcorn/config.toml")
SECRET_FIELDS = ("llm_api_key",)


class Settings(BaseModel):
    """All knobs of a run. Field docs double as ``--help`` text where a flag exists."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # where things are
    data_dir: Path | None = Field(None, description="data directory (holds microlens/videos.csv)")
    out_dir: Path = Field(Path("popcorn-runs"), description="where run directories are created")
    cache_dir: Path | None = Field(
        None, description="cache for embeddings (default: ~/.cache/llmpopcorn)"
    )

    # run
    mode: Literal["basic", "pe"] = "basic"
    seed: int = 42

    # LLM
    llm: str = Field("offline", description="LLM backend name (see `popcorn backends`)")
    llm_model: str | None = None
    llm_base_url: str | None = None
    llm_api_key: SecretStr | None = None
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    max_tokens: int = Field(1024, ge=16)
    max_attempts: int = Field(3, ge=1, le=10, description="ideation attempts before giving up")
    variants: int = Field(
        1, ge=1, le=50, description="ideas to generate and rank by predicted popularity"
    )
    llm_timeout: float = Field(120.0, gt=0, description="seconds one LLM request may take")
    llm_max_retries: int = Field(3, ge=0, le=10, description="retries on 429/5xx/timeouts")
    llm_deadline: float = Field(
        120.0, gt=0, description="seconds one LLM call may take, retries and backoff included"
    )
    llm_load_in_4bit: bool = False
    llm_rpm: float | None = Field(
        None, gt=0, description="most LLM requests per minute (batches; none: no limit)"
    )
    max_batch_llm_calls: int | None = Field(
        None, ge=1, description="most LLM requests one batch may make (money-costing API calls)"
    )

    # renderers
    render: bool = Field(True, description="render the cover and clip (off: ideas and scores only)")
    image: str = Field("draft", description="cover image backend")
    video: str = Field("draft", description="video clip backend")
    device: str = Field(
        "auto", description="torch device for model backends: auto, cpu, cuda, cuda:N"
    )
    image_options: dict[str, Any] = Field(
        default_factory=dict, description="options of the image backend (KEY=VALUE; see its docs)"
    )
    video_options: dict[str, Any] = Field(
        default_factory=dict, description="options of the video backend (KEY=VALUE; see its docs)"
    )
    video_from_cover: bool = Field(False, description="animate the rendered cover (image-to-video)")
    max_cost: float | None = Field(
        None, ge=0, description="most USD one run may spend on hosted generators (estimated)"
    )
    max_batch_cost: float | None = Field(
        None, ge=0, description="most USD a batch may spend on hosted generators (estimated)"
    )

    # ready-to-post package
    package: bool = Field(False, description="write a ready-to-post zip beside the run")
    c2pa_cert: Path | None = Field(
        None, description="PEM certificate chain that signs the C2PA manifests of packages"
    )
    c2pa_key: Path | None = Field(None, description="PEM private key for that certificate")

    @field_validator("image_options", "video_options", mode="before")
    @classmethod
    def _parse_options(cls, value: Any) -> Any:
        return parse_options(value)

    # prompt enhancement (PE)
    embedder: str = Field(
        "minilm", description="text embedder for PE retrieval (see `popcorn backends`)"
    )
    embedder_model: str | None = Field(
        None, description="embedding model folder or cached hub name (default: the embedder's own)"
    )
    num_tags: int = Field(1, ge=1)
    ratio: float = Field(0.1, ge=0.0, le=1.0)
    n_refs: int = Field(50, ge=1)
    category_match: Literal["centroid", "name"] = Field(
        "centroid",
        description="how a query finds its category: centroid (content: similarity to each "
        "category's videos) or name (the paper's match against category names)",
    )
    min_category_size: int = Field(
        50, ge=1, description="categories with fewer videos are never chosen for a query"
    )
    pe_pool: Literal["all", "reference"] = Field(
        "all",
        description="PE draws references from all videos, or only from the reference part "
        "(disjoint from the judge's training videos; the study's default)",
    )

    # scoring
    predictor: str | None = Field(None, description="predictor directory (default: shipped model)")
    score: bool = True

    def public(self) -> dict[str, Any]:
        """The settings as JSON-safe data with every secret removed."""
        return self.model_dump(mode="json", exclude=set(SECRET_FIELDS))

    def api_key(self) -> str | None:
        return self.llm_api_key.get_secret_value() if self.llm_api_key else None

    # -- resolution -----------------------------------------------------------------

    @classmethod
    def resolve(
        cls,
        cli: Mapping[str, Any] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        config_path: str | Path | None = None,
        **explicit: Any,
    ) -> Settings:
        """Build settings from every source; see the module docstring for precedence.

        ``cli`` holds flag values (``None`` means "not given"); ``explicit`` holds
        values passed by library callers.
        """
        env = os.environ if env is None else env
        layers: list[dict[str, Any]] = []
        layers.append(_from_config(config_path, env))
        layers.append(_from_env(env))
        layers.append({k: v for k, v in (cli or {}).items() if v is not None})
        layers.append({k: v for k, v in explicit.items() if v is not None})
        merged: dict[str, Any] = {}
        for layer in layers:
            merged.update(layer)
        unknown = sorted(set(merged) - set(cls.model_fields))
        if unknown:
            raise ConfigError(
                f"unknown setting(s): {', '.join(unknown)}",
                f"known settings are: {', '.join(sorted(cls.model_fields))}",
            )
        try:
            return cls(**merged)
        except ValidationError as exc:
            raise ConfigError(
                _describe(exc), "fix the value in the flag, env var or config file"
            ) from None


def parse_options(value: Any) -> Any:
    """Backend options from ``KEY=VALUE`` strings (a list, or one string separated by ``;``
    or newlines), a JSON object string, or a mapping. Values stay strings; the backend
    validates and converts them."""
    if value is None:
        return {}
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            try:
                return json.loads(text)
            except ValueError as exc:
                raise ValueError(f"not a JSON object: {exc}") from None
        value = [part for part in text.replace("\n", ";").split(";") if part.strip()]
    if isinstance(value, list | tuple):
        out: dict[str, Any] = {}
        for item in value:
            key, sep, val = str(item).partition("=")
            if not sep or not key.strip():
                raise ValueError(f"expected KEY=VALUE, got {item!r}")
            out[key.strip()] = val.strip()
        return out
    return value


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"])
        # never echo a secret's value back
        shown = "" if loc in SECRET_FIELDS else f" (got {err.get('input')!r})"
        parts.append(f"setting '{loc}': {err['msg']}{shown}")
    return "; ".join(parts)


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    fields = Settings.model_fields
    for key, value in env.items():
        if not key.startswith(ENV_PREFIX) or key == "POPCORN_CONFIG":
            continue
        name = ENV_ALIASES.get(key) or key[len(ENV_PREFIX) :].lower()
        if name in fields and value != "":
            out[name] = value
    return out


def _from_config(config_path: str | Path | None, env: Mapping[str, str]) -> dict[str, Any]:
    explicit = config_path or env.get("POPCORN_CONFIG")
    path = Path(explicit).expanduser() if explicit else DEFAULT_CONFIG.expanduser()
    if not path.exists():
        if explicit:
            raise ConfigError(
                f"config file not found: {path}",
                "pass an existing TOML file with --config or POPCORN_CONFIG",
            )
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}", "fix the file") from None
    # allow an optional [popcorn] table
    if isinstance(data.get("popcorn"), dict):
        data = data["popcorn"]
    return data
