"""Files from hosted generators: data URIs, images and MP4 decoding (PyAV)."""

from __future__ import annotations

import base64
import io
from typing import TYPE_CHECKING

import numpy as np

from llmpopcorn.backends.hosted.errors import HostedError
from llmpopcorn.backends.outbound import OutboundTooLarge

#: the largest video frame decoded (4096x4096: above any clip a provider makes for 9:16)
MAX_FRAME_PIXELS = 4096 * 4096

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image


def decode_data_uri(uri: str) -> bytes:
    header, _, payload = uri.partition(",")
    if ";base64" in header:
        return base64.b64decode(payload)
    from urllib.parse import unquote_to_bytes

    return unquote_to_bytes(payload)


def png_data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def open_image(data: bytes, what: str) -> Image.Image:
    """An RGB picture; a decompression bomb or a picture over the pixel cap is "the
    provider's image is too large" (:func:`llmpopcorn.backends.outbound.open_image`)."""
    from llmpopcorn.backends.outbound import open_image as bounded_open

    return bounded_open(data, what)


def to_cover(picture: Image.Image) -> Image.Image:
    """The project's 9:16 cover policy: centre-crop, never stretch, even sizes."""
    from llmpopcorn.backends.diffusion.base import to_cover as crop

    return crop(picture)


def decode_mp4(
    data: bytes,
    *,
    seconds: float,
    what: str,
    size: tuple[int, int] | None = None,
    max_fps: float | None = None,
) -> tuple[list[np.ndarray], float, dict]:
    """Decode at most ``seconds`` (plus one frame) of a video file with PyAV; frames are
    centre-cropped to 9:16 with even sizes, like the covers, and scaled to ``size``
    (width, height) when given, one at a time (a 1080p source never sits in memory whole);
    above ``max_fps`` every n-th frame is kept."""
    import math

    import av

    frames: list[np.ndarray] = []
    try:
        with av.open(io.BytesIO(data)) as container:
            if not container.streams.video:
                raise HostedError(f"{what} has no video stream")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            if width * height > MAX_FRAME_PIXELS:
                raise OutboundTooLarge(
                    f"the provider's video is too large: {what} is {width}x{height} "
                    f"(at most {MAX_FRAME_PIXELS:,} pixels a frame are decoded)",
                    "ask the provider for a lower resolution (resolution option) and retry",
                )
            rate = stream.average_rate or stream.guessed_rate
            source_fps = float(rate) if rate else 24.0
            step = math.ceil(source_fps / max_fps - 1e-9) if max_fps else 1
            fps = source_fps / max(1, step)
            want = max(1, round(fps * seconds))
            info = {
                "source_width": stream.codec_context.width,
                "source_height": stream.codec_context.height,
                "source_fps": round(source_fps, 3),
                "source_codec": stream.codec_context.name,
            }
            for number, frame in enumerate(container.decode(stream)):
                if number % max(1, step):
                    continue
                frames.append(_fit_frame(frame.to_ndarray(format="rgb24"), size))
                if len(frames) >= want:
                    break
    except av.error.FFmpegError as exc:
        raise HostedError(f"{what} could not be decoded as a video: {exc}") from None
    if not frames:
        raise HostedError(f"{what} holds no frames")
    info["source_frames_decoded"] = len(frames)
    return frames, fps, info


def _fit_frame(frame: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """The centre 9:16 of ``frame``, scaled to ``size`` when given."""
    frame = _crop_frame(frame)
    if size is None or (frame.shape[1], frame.shape[0]) == tuple(size):
        return frame
    from PIL import Image

    scaled = Image.fromarray(frame).resize(tuple(size), Image.Resampling.BILINEAR)
    return np.asarray(scaled)


def _crop_frame(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    if w * 16 > h * 9:  # too wide: keep the middle
        new_w = max(2, h * 9 // 16)
        left = (w - new_w) // 2
        frame = frame[:, left : left + new_w]
    elif w * 16 < h * 9:  # too tall
        new_h = max(2, w * 16 // 9)
        top = (h - new_h) // 2
        frame = frame[top : top + new_h]
    h, w = frame.shape[:2]
    return np.ascontiguousarray(frame[: h - h % 2, : w - w % 2, :3])
