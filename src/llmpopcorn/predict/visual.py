"""Visual features of a rendered clip.

:func:`clip_stats` gives cheap, interpretable statistics (brightness,
colourfulness, motion energy, sharpness) that the score stage records beside the
score. A *visual extractor* is anything with ``dim`` and ``extract(frames) -> (dim,)``;
the retrieval model accepts such features (``visual_dim``) so that a real video
encoder can be plugged in later. :class:`RandomProjectionExtractor` is a tiny seeded,
randomly initialised one (used in tests; it carries no learned knowledge).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from llmpopcorn.core.errors import DataError

MAX_FRAMES = 24


class VisualExtractor(Protocol):
    dim: int

    def extract(self, frames: list[np.ndarray]) -> np.ndarray: ...


def read_frames(path: str | Path, max_frames: int = MAX_FRAMES) -> list[np.ndarray]:
    """Up to ``max_frames`` evenly spaced RGB frames (H x W x 3 uint8) of a video file."""
    import av

    try:
        with av.open(str(path)) as container:
            decoded = list(container.decode(video=0))
            if len(decoded) > max_frames:  # convert only the frames kept (YUV -> RGB
                # is most of the cost: 72 conversions took 0.36 s for a 540x960 clip)
                keep = np.linspace(0, len(decoded) - 1, max_frames).round().astype(int)
                decoded = [decoded[i] for i in keep]
            frames = [f.to_ndarray(format="rgb24") for f in decoded]
    except (av.error.FFmpegError, OSError) as exc:
        raise DataError(f"cannot read the clip {path}: {exc}", "re-render the clip") from None
    if not frames:
        raise DataError(f"the clip {path} has no frames", "re-render the clip")
    return frames


def _gray(frame: np.ndarray) -> np.ndarray:
    f = frame.astype(np.float32)
    return 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]


def frame_stats(frames: list[np.ndarray]) -> dict[str, float]:
    """Brightness (mean luma, 0-1), colourfulness (Hasler & Süsstrunk 2003, 0-255
    scale), motion energy (mean absolute luma change between frames, 0-1) and
    sharpness (variance of the 4-neighbour Laplacian of luma)."""
    grays = [_gray(f) for f in frames]
    brightness = float(np.mean([g.mean() for g in grays]) / 255.0)
    colour = []
    for f in frames:
        r, g, b = (f[..., i].astype(np.float32) for i in range(3))
        rg, yb = r - g, 0.5 * (r + g) - b
        colour.append(
            np.sqrt(rg.std() ** 2 + yb.std() ** 2) + 0.3 * np.sqrt(rg.mean() ** 2 + yb.mean() ** 2)
        )
    motion = [np.abs(a - b).mean() / 255.0 for a, b in zip(grays[1:], grays[:-1], strict=True)]
    sharp = []
    for g in grays:
        lap = -4 * g[1:-1, 1:-1] + g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:]
        sharp.append(lap.var())
    return {
        "brightness": round(brightness, 4),
        "colourfulness": round(float(np.mean(colour)), 3),
        "motion_energy": round(float(np.mean(motion)) if motion else 0.0, 5),
        "sharpness": round(float(np.mean(sharp)), 2),
        "frames_sampled": float(len(frames)),
    }


def clip_stats(path: str | Path) -> dict[str, float]:
    """:func:`frame_stats` of a video file."""
    return frame_stats(read_frames(path))


class ClipStatsExtractor:
    """The four cheap statistics as a feature vector."""

    dim = 4

    def extract(self, frames: list[np.ndarray]) -> np.ndarray:
        s = frame_stats(frames)
        return np.array(
            [
                s["brightness"],
                s["colourfulness"] / 100,
                s["motion_energy"] * 10,
                np.log1p(s["sharpness"]) / 10,
            ],
            dtype=np.float32,
        )


class RandomProjectionExtractor:
    """A tiny randomly initialised encoder: 8x8 pooled frames -> tanh(random projection)."""

    def __init__(self, dim: int = 8, seed: int = 0):
        self.dim = dim
        self.weight = np.random.default_rng(seed).normal(0, 0.1, size=(8 * 8 * 3, dim))

    def extract(self, frames: list[np.ndarray]) -> np.ndarray:
        pooled = []
        for f in frames:
            h, w = f.shape[0] // 8 * 8, f.shape[1] // 8 * 8
            blocks = f[:h, :w].astype(np.float32).reshape(8, h // 8, 8, w // 8, 3)
            pooled.append(blocks.mean(axis=(1, 3)).ravel() / 255.0)
        return np.tanh(np.mean(pooled, axis=0) @ self.weight).astype(np.float32)


#: extractors a model can name in its ``visual_extractor`` parameter
VISUAL_EXTRACTORS: dict[str, type] = {
    "clip-stats": ClipStatsExtractor,
    "random-projection": RandomProjectionExtractor,
}


def get_extractor(name: str, dim: int) -> VisualExtractor:
    if name not in VISUAL_EXTRACTORS:
        raise DataError(
            f"unknown visual extractor '{name}'", f"use one of: {', '.join(VISUAL_EXTRACTORS)}"
        )
    cls = VISUAL_EXTRACTORS[name]
    extractor = cls(dim=dim) if cls is RandomProjectionExtractor else cls()
    if extractor.dim != dim:
        raise DataError(f"extractor '{name}' gives {extractor.dim} features, model wants {dim}")
    return extractor
