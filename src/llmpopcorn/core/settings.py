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


def setting(
    default: Any = None,
    help: str = "",  # noqa: A002 - the word click uses
    *,
    flag: str | None = None,
    group: str | None = None,
    metavar: str | None = None,
    names: str | None = None,
    default_text: str | None = None,
    path: Literal["file", "dir"] | None = None,
    default_factory: Any = None,
    **constraints: Any,
) -> Any:
    """A settings field that declares, once, everything its command-line flag needs: the
    help text, the flag and the group of commands that take it (``cli/options.py``
    builds the click options from these, with the default, the choices of a ``Literal``
    and the environment variable added to the help). ``names``: a registry kind whose
    names the help lists (``llm``, ``image``, ...); ``default_text``: how to show a
    default that is computed elsewhere."""
    cli = {"flag": flag, "group": group, "metavar": metavar, "names": names}
    cli |= {"default_text": default_text, "path": path}
    extra = {"cli": {k: v for k, v in cli.items() if v is not None}}
    if default_factory is not None:
        return Field(
            default_factory=default_factory,
            description=help,
            json_schema_extra=extra,
            **constraints,
        )
    return Field(default, description=help, json_schema_extra=extra, **constraints)


class Settings(BaseModel):
    """All knobs of a run. Each field's help is its flag's ``--help`` text."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # where things are
    data_dir: Path | None = setting(
        None,
        "Data directory holding microlens/videos.csv (or that CSV itself).",
        flag="--data",
        group="common",
    )
    out_dir: Path = setting(
        Path("popcorn-runs"),
        "Directory for run folders.",
        flag="--out",
        group="render",
        path="dir",
        default_text="./popcorn-runs",
    )

    # run
    mode: Literal["basic", "pe"] = setting(
        "basic",
        "basic: direct prompt; pe: prompt enhancement with MicroLens references.",
        flag="--mode",
        group="pe",
    )
    seed: int = setting(42, "Random seed for the LLM and renderers.", flag="--seed", group="common")

    # LLM
    llm: str = setting("offline", "LLM backend.", flag="--llm", group="llm", names="llm")
    llm_model: str | None = setting(
        None,
        "Model name or local path for the LLM backend.",
        flag="--llm-model",
        group="llm",
        default_text="the backend's own",
    )
    llm_base_url: str | None = setting(
        None,
        "Base URL of an OpenAI-compatible server. The key comes from POPCORN_LLM_API_KEY or "
        "the provider's variable.",
        flag="--llm-base-url",
        group="llm",
    )
    llm_api_key: SecretStr | None = None
    temperature: float = setting(
        0.7,
        "Sampling temperature (0.7 as in the paper).",
        flag="--temperature",
        group="llm",
        ge=0.0,
        le=2.0,
    )
    top_p: float = setting(
        0.9, "Nucleus sampling top_p.", flag="--top-p", group="llm", gt=0.0, le=1.0
    )
    post_text: bool = setting(
        True,
        "Also ask the LLM for the post's caption, hashtags and stock-footage keywords; "
        "--no-post-text asks only the paper's three fields (title, cover prompt, video "
        "prompt), as the study does unless told otherwise.",
        flag="--post-text/--no-post-text",
        group="llm",
    )
    max_tokens: int | None = setting(
        None,
        "Most tokens in a reply, within the model's context where it is known (a reply cut "
        "at the limit is re-asked once with twice the budget).",
        flag="--max-tokens",
        group="llm",
        default_text="1024 basic, 5000 PE (the paper's)",
        ge=16,
    )
    max_attempts: int = setting(
        3,
        "Ideation attempts before giving up on invalid replies.",
        flag="--max-attempts",
        group="llm",
        ge=1,
        le=10,
    )
    variants: int = setting(
        1,
        "Ideas per query (seeds seed..seed+N-1, each told to take its own angle; "
        "near-duplicate titles are re-asked), ranked by predicted popularity.",
        flag="--variants",
        group="variants",
        ge=1,
        le=50,
    )
    refine: int = setting(
        0,
        "Rounds of judge-guided refinement: the LLM sees its idea's predicted score, interval "
        "and the reward judge's explanation (the videos that drove it, popular and unpopular "
        "ones of the category) and writes an improved idea; the best by the reward judge is "
        "kept, and every round is also scored by the evaluation judge, which never chooses.",
        flag="--refine",
        group="refine",
        metavar="K",
        ge=0,
        le=10,
    )
    llm_timeout: float = setting(
        120.0, "Seconds to wait for one LLM request.", flag="--llm-timeout", group="llm", gt=0
    )
    llm_max_retries: int = setting(
        3,
        "Retries on 429/5xx/timeouts, with backoff.",
        flag="--llm-max-retries",
        group="llm",
        ge=0,
        le=10,
    )
    llm_deadline: float = setting(
        120.0,
        "Most seconds one LLM call may take, retries included.",
        flag="--llm-deadline",
        group="llm",
        gt=0,
    )
    llm_load_in_4bit: bool = False
    llm_adapter: Path | None = setting(
        None,
        "A LoRA adapter folder (popcorn tune's OUT/adapter) merged into the local model at "
        "load: --llm local or transformers, on the transformers runtime.",
        flag="--llm-adapter",
        group="llm",
        path="dir",
    )
    llm_runtime: Literal["auto", "onnx", "transformers"] = setting(
        "auto",
        "Runtime of --llm local: onnx (onnxruntime-genai; the model is converted once, "
        "cached) or transformers; auto: onnx when installed.",
        flag="--llm-runtime",
        group="llm",
    )
    llm_rpm: float | None = setting(
        None,
        "Most LLM requests per minute.",
        flag="--llm-rpm",
        group="batch",
        gt=0,
        default_text="no limit",
    )
    max_batch_llm_calls: int | None = setting(
        None,
        "Most LLM requests a batch may make; then it pauses.",
        flag="--max-llm-calls",
        group="batch",
        ge=1,
        default_text="no cap",
    )

    # renderers
    render: bool = setting(
        True,
        "Render covers and clips, or only ideate and score.",
        flag="--render/--no-render",
        group="stages",
    )
    image: str = setting(
        "draft",
        "Cover backend: draft (CPU), a diffusers model or a hosted generator (needs a key).",
        flag="--image",
        group="render",
        names="image",
    )
    video: str = setting(
        "draft",
        "Clip backend: draft (CPU), a diffusers model or a hosted generator (needs a key).",
        flag="--video",
        group="render",
        names="video",
    )
    device: str = setting(
        "auto",
        "Device for model backends: auto, cpu, cuda, cuda:N.",
        flag="--device",
        group="render",
    )
    image_options: dict[str, Any] = setting(
        help="Option of the image backend, repeatable: model, steps, guidance, width, height, "
        "dtype, offload, vae_tiling, quantization...",
        flag="--image-opt",
        group="render",
        metavar="KEY=VALUE",
        default_factory=dict,
    )
    video_options: dict[str, Any] = setting(
        help="Option of the video backend, repeatable: model, steps, frames, fps, width, "
        "height, dtype, offload, vae_tiling, quantization...",
        flag="--video-opt",
        group="render",
        metavar="KEY=VALUE",
        default_factory=dict,
    )
    video_from_cover: bool = setting(
        False,
        "Animate the rendered cover (image-to-video: ltx, cogvideox, wan, and the hosted fal-* "
        "video backends).",
        flag="--video-from-cover",
        group="render",
    )
    max_cost: float | None = setting(
        None,
        "Most a run may spend on hosted generators (estimated from published prices); "
        "refused before any call.",
        flag="--max-cost",
        group="render",
        metavar="USD",
        ge=0,
        default_text="no cap",
    )
    max_batch_cost: float | None = setting(
        None,
        "Most a batch may spend on hosted generators (estimated).",
        flag="--max-batch-cost",
        group="batch",
        metavar="USD",
        ge=0,
        default_text="no cap",
    )

    # ready-to-post package
    package: bool = setting(
        False,
        "Also write package.zip (clip, cover, metadata.json with caption, hashtags and the "
        "AI-generated disclosure, embedded in the files).",
        flag="--package",
        group="package",
    )
    c2pa_cert: Path | None = setting(
        None,
        "PEM certificate chain that signs the package's C2PA manifests.",
        flag="--c2pa-cert",
        group="package",
        path="file",
    )
    c2pa_key: Path | None = setting(
        None,
        "PEM private key of that certificate.",
        flag="--c2pa-key",
        group="package",
        path="file",
    )

    @field_validator("image_options", "video_options", mode="before")
    @classmethod
    def _parse_options(cls, value: Any) -> Any:
        return parse_options(value)

    # prompt enhancement (PE)
    embedder: str = setting(
        "minilm",
        "PE: text embedder for retrieval.",
        flag="--embedder",
        group="pe",
        names="embedder",
    )
    embedder_model: str | None = setting(
        None,
        "PE: embedding model folder (or a name already in the Hugging Face cache).",
        flag="--embedder-model",
        group="pe",
        default_text="the embedder's own",
    )
    num_tags: int = setting(
        1, "PE: number of categories to draw references from.", flag="--tags", group="pe", ge=1
    )
    ratio: float = setting(
        0.1, "PE: share of unpopular references.", flag="--ratio", group="pe", ge=0.0, le=1.0
    )
    n_refs: int = setting(
        50, "PE: number of reference videos shown to the LLM.", flag="--refs", group="pe", ge=1
    )
    category_match: Literal["centroid", "name"] = setting(
        "centroid",
        "How a query finds its category: centroid (content: similarity to each category's "
        "videos) or name (the paper's match against category names).",
        flag="--category-match",
        group="pe",
    )
    min_category_size: int = setting(
        50,
        "Categories with fewer videos are never chosen for a query (1 for the paper's matcher).",
        flag="--min-category-size",
        group="pe",
        ge=1,
    )
    pe_pool: Literal["all", "reference"] = setting(
        "all",
        "PE: draw references from all videos, or only from the reference part (disjoint from "
        "the judge's training videos; the study's default).",
        flag="--pe-pool",
        group="pe",
    )

    cache_dir: Path | None = setting(
        None,
        "Cache for corpus embeddings (PE) and local models converted for --llm local.",
        flag="--cache-dir",
        group="pe",
        path="dir",
        default_text="~/.cache/llmpopcorn",
    )

    # scoring
    predictor: str | None = setting(
        None,
        "Predictor: a model shipped under predict/models (default, judge) or a folder.",
        flag="--predictor",
        group="score",
        default_text="the shipped model",
    )
    score: bool = setting(
        True, "Predict the popularity of the idea.", flag="--score/--no-score", group="stages"
    )

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
