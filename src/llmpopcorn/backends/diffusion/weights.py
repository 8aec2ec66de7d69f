"""Find weights on this machine: a local folder/file or the local Hugging Face cache.

Nothing here downloads. A missing model raises :class:`WeightsMissingError` naming
the model id, its approximate size and the command that fetches it on a connected
machine. Parameter counts are read from safetensors headers (a few KB per file), so
the memory planner can use the real sizes of whatever is on disk.
"""

from __future__ import annotations

import json
import os
import shlex
import struct
from math import prod
from pathlib import Path

from llmpopcorn.backends.diffusion.memory import Sizes
from llmpopcorn.backends.diffusion.specs import ModelSpec
from llmpopcorn.core.errors import RenderError

DENOISERS = ("transformer", "transformer_2", "unet", "motion_adapter")
TEXT = ("text_encoder", "text_encoder_2", "text_encoder_3", "image_encoder")


class WeightsMissingError(RenderError):
    """The model's weights are neither a local path nor in the local HF cache."""


def hub_cache_dir() -> str:
    """The local Hugging Face cache, as huggingface_hub resolves it (its ``constants``
    module is light; ``file_download`` is not)."""
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except ImportError:  # pragma: no cover - the [gpu] extra brings huggingface_hub
        return os.path.expanduser("~/.cache/huggingface/hub")


def split_hub_ref(ref: str) -> tuple[str, str | None] | None:
    """``owner/name`` or ``owner/name/file`` -> (repo, file); None when not a hub reference."""
    if ref.startswith(("/", ".", "~")) or "\\" in ref:
        return None
    parts = ref.split("/")
    if len(parts) < 2 or not all(parts):
        return None
    return "/".join(parts[:2]), ("/".join(parts[2:]) or None)


def find(ref: str, filename: str = "model_index.json") -> Path | None:
    """The local folder (or file) for ``ref``, or None; never downloads.

    ``ref`` is a path, a hub repo id (its cached snapshot folder, found through
    ``filename``) or ``repo/file`` (that cached file).
    """
    path = Path(ref).expanduser()
    if path.exists():
        return path
    hub = split_hub_ref(ref)
    if hub is None:
        return None
    repo, file = hub
    # the repo's cache folder (models--owner--name) is what try_to_load_from_cache looks
    # at first; without it the answer is None, known without importing huggingface_hub's
    # download module and httpx (~0.13 s, paid by every `popcorn backends`)
    if not (Path(hub_cache_dir()) / f"models--{repo.replace('/', '--')}").is_dir():
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    got = try_to_load_from_cache(repo, file or filename)
    if isinstance(got, str):
        return Path(got) if file else Path(got).parent
    return None


def fetch_command(ref: str, spec: ModelSpec | None = None, from_cover: bool = False) -> str:
    """The command that fetches ``ref`` (``owner/name`` or ``owner/name/file``) into the cache.

    With the model's ``spec``, a repo is fetched with ``--include`` patterns for exactly
    the files ``from_pretrained`` reads (see :meth:`ModelSpec.include_patterns`).
    """
    hub = split_hub_ref(ref)
    if hub is None:
        return f"(a local path: {ref})"
    repo, file = hub
    if file:
        return f"hf download {repo} {shlex.quote(file)}"
    command = f"hf download {repo}"
    if spec is not None and spec.components:
        command += "".join(
            f" --include {shlex.quote(p)}" for p in spec.include_patterns(from_cover)
        )
    return command


def fetch_hint(
    ref: str,
    spec: ModelSpec,
    flag: str,
    size_gb: float | None = None,
    from_cover: bool = False,
) -> str:
    hub = split_hub_ref(ref)
    if size_gb is None:
        size_gb = spec.fetch_size_gb(from_cover)
    size = f" (about {size_gb:.0f} GB)" if size_gb >= 1 else f" (about {size_gb:.1f} GB)"
    if hub is None:
        return f"check the path, or pass a diffusers folder with {flag} model=PATH"
    return (
        f"on a connected machine run `{fetch_command(ref, spec, from_cover)}`{size}, then copy "
        "the Hugging Face "
        f"cache ({hub_cache_dir()}) to this machine, or pass a local folder with {flag} model=PATH"
    )


def locate(
    ref: str,
    spec: ModelSpec,
    *,
    what: str = "model",
    size_gb: float | None = None,
    from_cover: bool = False,
) -> Path:
    """Like :func:`find`, raising :class:`WeightsMissingError` with the fetch command.

    ``from_cover``: ``ref`` is the model's separate image-to-video repo (its own files
    and size).
    """
    found = find(ref)
    flag = f"--{spec.kind}-opt"
    if found is None:
        where = (
            "the local path does not exist"
            if split_hub_ref(ref) is None
            else (f"it is not in the local Hugging Face cache ({hub_cache_dir()})")
        )
        raise WeightsMissingError(
            f"{spec.title} {what} '{ref}' is not on this machine: {where}",
            fetch_hint(ref, spec, flag, size_gb, from_cover),
        )
    if found.is_dir() and what == "model" and not (found / "model_index.json").exists():
        raise WeightsMissingError(
            f"{found} is not a diffusers pipeline folder (no model_index.json)",
            f"pass a folder saved with save_pretrained or a hub id with {flag} model=...",
        )
    return found


def model_index(folder: Path) -> dict:
    try:
        return json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _safetensors_params(path: Path) -> int:
    with path.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    return sum(prod(v["shape"]) for k, v in header.items() if k != "__metadata__")


def component_params(folder: Path) -> dict[str, int]:
    """Parameters per component folder, from safetensors headers (non-variant files first)."""
    out: dict[str, int] = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(sub.glob("*.safetensors"))
        plain = [f for f in files if f.name.count(".") == 1 or "-of-" in f.name]
        chosen = plain or files
        if chosen:
            out[sub.name] = sum(_safetensors_params(f) for f in chosen)
    return out


def measured_sizes(folder: Path | None, spec: ModelSpec, from_cover: bool = False) -> Sizes:
    """Sizes read from the local weights, falling back to the spec per missing part."""
    default = Sizes.of(spec, from_cover)
    if folder is None or not folder.is_dir():
        return default
    try:
        params = component_params(folder)
    except (OSError, ValueError, struct.error):
        return default
    if not params:
        return default

    def total(names: tuple[str, ...], fallback: float) -> float:
        found = [params[n] for n in names if n in params]
        return sum(found) / 1e9 if found else fallback

    return Sizes(
        denoiser_b=total(DENOISERS, default.denoiser_b),
        text_encoders_b=total(TEXT, default.text_encoders_b),
        vae_b=total(("vae",), default.vae_b),
    )
