"""Shared click options that map one-to-one onto :class:`~llmpopcorn.core.settings.Settings`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from llmpopcorn.core.settings import Settings

# (flag, settings field, click kwargs)
_COMMON: list[tuple[str, str, dict[str, Any]]] = [
    (
        "--config",
        "_config",
        {
            "type": click.Path(dir_okay=False),
            "help": "TOML config file (else $POPCORN_CONFIG, else ~/.config/llmpopcorn/config.toml).",
        },
    ),
    (
        "--data",
        "data_dir",
        {
            "type": click.Path(file_okay=False),
            "help": "Data directory holding microlens/videos.csv [env POPCORN_DATA].",
        },
    ),
    (
        "--seed",
        "seed",
        {"type": int, "help": "Random seed for the LLM and renderers [default 42]."},
    ),
]
_LLM: list[tuple[str, str, dict[str, Any]]] = [
    (
        "--llm",
        "llm",
        {
            "help": "LLM backend: offline (default), deepseek, openai, ollama, vllm, llamacpp, transformers [env POPCORN_LLM]."
        },
    ),
    (
        "--llm-model",
        "llm_model",
        {"help": "Model name or local path for the LLM backend [env POPCORN_LLM_MODEL]."},
    ),
    (
        "--llm-base-url",
        "llm_base_url",
        {
            "help": "Base URL of an OpenAI-compatible server [env POPCORN_LLM_BASE_URL]. The key comes from POPCORN_LLM_API_KEY or the provider's variable."
        },
    ),
    (
        "--temperature",
        "temperature",
        {"type": float, "help": "Sampling temperature [default 0.7, as in the paper]."},
    ),
    ("--top-p", "top_p", {"type": float, "help": "Nucleus sampling top_p [default 0.9]."}),
    ("--max-tokens", "max_tokens", {"type": int, "help": "Most tokens in a reply [default 1024]."}),
    (
        "--max-attempts",
        "max_attempts",
        {"type": int, "help": "Ideation attempts before giving up on invalid replies [default 3]."},
    ),
    (
        "--llm-timeout",
        "llm_timeout",
        {"type": float, "help": "Seconds to wait for one LLM request [default 120]."},
    ),
    (
        "--llm-max-retries",
        "llm_max_retries",
        {"type": int, "help": "Retries on 429/5xx/timeouts, with backoff [default 3]."},
    ),
    (
        "--llm-deadline",
        "llm_deadline",
        {
            "type": float,
            "help": "Most seconds one LLM call may take, retries included [default 120].",
        },
    ),
]
_PE: list[tuple[str, str, dict[str, Any]]] = [
    (
        "--mode",
        "mode",
        {
            "type": click.Choice(["basic", "pe"]),
            "help": "basic: direct prompt; pe: prompt enhancement with MicroLens references [default basic].",
        },
    ),
    (
        "--refs",
        "n_refs",
        {"type": int, "help": "PE: number of reference videos shown to the LLM [default 50]."},
    ),
    (
        "--tags",
        "num_tags",
        {"type": int, "help": "PE: number of categories to draw references from [default 1]."},
    ),
    (
        "--ratio",
        "ratio",
        {"type": float, "help": "PE: share of unpopular references [default 0.1]."},
    ),
    (
        "--category-match",
        "category_match",
        {
            "type": click.Choice(["centroid", "name"]),
            "help": "How a query finds its category: centroid (content, default) or name (the paper's match on category names) [env POPCORN_CATEGORY_MATCH].",
        },
    ),
    (
        "--min-category-size",
        "min_category_size",
        {
            "type": int,
            "help": "Categories with fewer videos are never chosen for a query [default 50; 1 for the paper's matcher].",
        },
    ),
    (
        "--pe-pool",
        "pe_pool",
        {
            "type": click.Choice(["all", "reference"]),
            "help": "PE: draw references from all videos (default) or only the reference part, which the judge never trained on [env POPCORN_PE_POOL].",
        },
    ),
    (
        "--embedder",
        "embedder",
        {
            "help": "PE: text embedder for retrieval: minilm (default), minilm-l12, tfidf [env POPCORN_EMBEDDER]."
        },
    ),
    (
        "--embedder-model",
        "embedder_model",
        {
            "help": "PE: embedding model folder (or a name already in the Hugging Face cache) [env POPCORN_EMBEDDER_MODEL]."
        },
    ),
    (
        "--cache-dir",
        "cache_dir",
        {
            "type": click.Path(file_okay=False),
            "help": "PE: cache for corpus embeddings [default ~/.cache/llmpopcorn, env POPCORN_CACHE_DIR].",
        },
    ),
]


def _none_if_empty(_ctx: click.Context, _param: click.Parameter, value: tuple) -> list | None:
    """Repeatable flags give ``()`` when absent: make that "not given" (None)."""
    return list(value) or None


_RENDER: list[tuple[str, str, dict[str, Any]]] = [
    (
        "--image",
        "image",
        {
            "help": "Cover backend: draft (CPU default), a diffusers model (sd15, sdxl, flux) or hosted (openai-image, fal-flux, fal-sd; needs a key) [env POPCORN_IMAGE]."
        },
    ),
    (
        "--video",
        "video",
        {
            "help": "Clip backend: draft (CPU default), a diffusers model (ltx, wan, hunyuan, ...) or hosted (fal-ltx, fal-wan, fal-hunyuan, fal-kling; needs FAL_KEY) [env POPCORN_VIDEO]."
        },
    ),
    (
        "--device",
        "device",
        {"help": "Device for model backends: auto, cpu, cuda, cuda:N [default auto]."},
    ),
    (
        "--image-opt",
        "image_options",
        {
            "multiple": True,
            "callback": _none_if_empty,
            "metavar": "KEY=VALUE",
            "help": "Option of the image backend, repeatable: model, steps, guidance, width, height, dtype, offload, vae_tiling, quantization... [env POPCORN_IMAGE_OPTIONS].",
        },
    ),
    (
        "--video-opt",
        "video_options",
        {
            "multiple": True,
            "callback": _none_if_empty,
            "metavar": "KEY=VALUE",
            "help": "Option of the video backend, repeatable: model, steps, frames, fps, width, height, dtype, offload, vae_tiling, quantization... [env POPCORN_VIDEO_OPTIONS].",
        },
    ),
    (
        "--video-from-cover",
        "video_from_cover",
        {
            "is_flag": True,
            "help": "Animate the rendered cover (image-to-video: ltx, cogvideox, wan, and the hosted fal-* video backends).",
        },
    ),
    (
        "--max-cost",
        "max_cost",
        {
            "type": float,
            "metavar": "USD",
            "help": "Most a run may spend on hosted generators (estimated from published prices); refused before any call [env POPCORN_MAX_COST].",
        },
    ),
    (
        "--out",
        "out_dir",
        {
            "type": click.Path(file_okay=False),
            "help": "Directory for run folders [default ./popcorn-runs, env POPCORN_OUT].",
        },
    ),
]


def _apply(groups: list[list[tuple[str, str, dict[str, Any]]]]) -> Callable:
    def deco(func: Callable) -> Callable:
        for group in reversed(groups):
            for flag, field, kwargs in reversed(group):
                func = click.option(flag, field, default=None, **kwargs)(func)
        return func

    return deco


_PACKAGE: list[tuple[str, str, dict[str, Any]]] = [
    (
        "--package",
        "package",
        {
            "is_flag": True,
            "help": "Also write package.zip (clip, cover, metadata.json with caption, hashtags and the AI-generated disclosure, embedded in the files) [env POPCORN_PACKAGE].",
        },
    ),
    (
        "--c2pa-cert",
        "c2pa_cert",
        {
            "type": click.Path(dir_okay=False),
            "help": "PEM certificate chain that signs the package's C2PA manifests [env POPCORN_C2PA_CERT].",
        },
    ),
    (
        "--c2pa-key",
        "c2pa_key",
        {
            "type": click.Path(dir_okay=False),
            "help": "PEM private key of that certificate [env POPCORN_C2PA_KEY].",
        },
    ),
]

common_options = _apply([_COMMON])
package_options = _apply([_PACKAGE])
llm_options = _apply([_LLM])
pe_options = _apply([_PE])
render_options = _apply([_RENDER])


def settings_from(params: dict[str, Any], **explicit: Any) -> Settings:
    """Resolve settings from the command's parameters (unknown keys are ignored)."""
    fields = Settings.model_fields
    cli = {k: v for k, v in params.items() if k in fields}
    return Settings.resolve(cli, config_path=params.get("_config"), **explicit)


#: ``--model DIR`` of the predictor commands (eval, score)
predictor_model_option = click.option(
    "--model",
    "model_dir",
    default=None,
    type=click.Path(),
    help="Model directory [default: the shipped model, env POPCORN_PREDICTOR].",
)


def execution_options(command: Callable) -> Callable:
    """Where and how many at once: ``-k/--concurrency``, ``--render-slots``, ``--executor``
    and ``--address`` (shared by ``popcorn batch`` and ``popcorn bench``)."""
    for option in reversed(
        [
            click.option(
                "-k",
                "--concurrency",
                type=int,
                default=4,
                show_default=True,
                help="LLM calls at once (they wait on the network).",
            ),
            click.option(
                "--render-slots",
                type=int,
                default=None,
                help="Renders at once [default: one per GPU, else 1].",
            ),
            click.option(
                "--executor",
                type=click.Choice(["local", "ray"]),
                default="local",
                show_default=True,
                help="local: threads in this process; ray: Ray actors "
                "(pip install 'llmpopcorn[ray]').",
            ),
            click.option(
                "--address",
                default=None,
                help="Ray cluster: auto, or ray://HOST:10001 [default: start a local Ray].",
            ),
        ]
    ):
        command = option(command)
    return command
