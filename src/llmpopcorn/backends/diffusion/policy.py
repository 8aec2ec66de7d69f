"""From what a model generates to the product's 9:16, exactly 3.0 s clip.

Models are run at the size and frame count they were trained for (see
:mod:`.specs`); these functions then reach the output format by a stated policy,
which is recorded with every run:

* size (``fit``): ``crop`` keeps the centre 9:16 part of the frame (no stretching);
  ``letterbox`` keeps the whole frame and pads it with black bars to 9:16.
* duration (``duration``): ``trim`` keeps the first 3.0 s at the model's frame rate;
  ``resample`` picks frames evenly over the whole generated clip to fill 3.0 s at the
  model's frame rate (faster or slower motion, no frame invented); ``retime`` keeps
  every generated frame once and changes the playback rate so they last exactly 3.0 s.

For image-to-video on a model with a fixed landscape size (CogVideoX), the 9:16 cover
is pillarboxed into the model's frame (blurred cover at the sides), so the centre
9:16 crop of the result is the animated cover.

Pure numpy/Pillow: no torch, cheap to import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

ASPECT = (9, 16)
SECONDS = 3.0
FITS = ("crop", "letterbox")
DURATIONS = ("trim", "resample", "retime")


def _even(value: float) -> int:
    return max(2, int(round(value)) // 2 * 2)


def fit_size(width: int, height: int, fit: str) -> tuple[int, int]:
    """The 9:16 output size (even sides) for a generated ``width`` x ``height``."""
    aw, ah = ASPECT
    if fit == "crop":
        if width * ah > height * aw:  # too wide: keep the height
            return _even(height * aw / ah), height - height % 2
        return width - width % 2, _even(width * ah / aw)
    if fit == "letterbox":
        if width * ah > height * aw:  # too wide: bars above and below
            return width - width % 2, _even(width * ah / aw)
        return _even(height * aw / ah), height - height % 2
    raise ValueError(f"unknown fit {fit!r}")


def fit_frame(frame: np.ndarray, fit: str) -> np.ndarray:
    """One H x W x 3 frame to 9:16 by ``fit`` (centre crop or black bars)."""
    height, width = frame.shape[:2]
    out_w, out_h = fit_size(width, height, fit)
    if fit == "crop":
        top, left = (height - out_h) // 2, (width - out_w) // 2
        return np.ascontiguousarray(frame[top : top + out_h, left : left + out_w])
    out = np.zeros((out_h, out_w) + frame.shape[2:], dtype=frame.dtype)
    keep_h, keep_w = min(height, out_h), min(width, out_w)
    top, left = (out_h - keep_h) // 2, (out_w - keep_w) // 2
    src_top, src_left = (height - keep_h) // 2, (width - keep_w) // 2
    out[top : top + keep_h, left : left + keep_w] = frame[
        src_top : src_top + keep_h, src_left : src_left + keep_w
    ]
    return out


def output_timing(frames: int, fps: float, duration: str) -> tuple[int, float]:
    """(output frames, output fps) for ``frames`` generated at ``fps``."""
    if duration == "retime":
        return frames, frames / SECONDS
    if duration in ("trim", "resample"):
        return max(1, round(fps * SECONDS)), fps
    raise ValueError(f"unknown duration policy {duration!r}")


def fit_duration(frames: list[np.ndarray], fps: float, duration: str) -> tuple[list, float]:
    """Exactly 3.0 s: the frames and frame rate by the ``duration`` policy."""
    want, out_fps = output_timing(len(frames), fps, duration)
    if duration == "trim":
        if len(frames) < want:
            raise ValueError(f"{len(frames)} frames at {fps:g} fps are shorter than 3.0 s")
        return list(frames[:want]), out_fps
    if duration == "resample":
        index = np.linspace(0, len(frames) - 1, want).round().astype(int)
        return [frames[i] for i in index], out_fps
    return list(frames), out_fps


def cover_for_model(cover: Image.Image, width: int, height: int) -> Image.Image:
    """The cover as the model's first frame at ``width`` x ``height``.

    Same aspect (within 3 %): centre-crop and resize. Otherwise the whole cover is
    placed in the centre over a blurred, cropped copy of itself (pillarbox or
    letterbox), so nothing of the cover is lost and the model sees no hard bars.
    """
    from PIL import Image as PILImage
    from PIL import ImageFilter

    cover = cover.convert("RGB")
    lanczos = PILImage.Resampling.LANCZOS
    if abs(cover.width / cover.height - width / height) <= 0.03 * width / height:
        return _crop_to(cover, width, height).resize((width, height), lanczos)
    background = _crop_to(cover, width, height).resize((width, height), lanczos)
    background = background.filter(ImageFilter.GaussianBlur(radius=max(2, width // 40)))
    scale = min(width / cover.width, height / cover.height)
    inner = cover.resize((max(1, round(cover.width * scale)), max(1, round(cover.height * scale))))
    background.paste(inner, ((width - inner.width) // 2, (height - inner.height) // 2))
    return background


def _crop_to(image: Image.Image, width: int, height: int) -> Image.Image:
    w, h = image.size
    if w * height > h * width:
        new_w = max(1, round(h * width / height))
        left = (w - new_w) // 2
        return image.crop((left, 0, left + new_w, h))
    new_h = max(1, round(w * height / width))
    top = (h - new_h) // 2
    return image.crop((0, top, w, top + new_h))
