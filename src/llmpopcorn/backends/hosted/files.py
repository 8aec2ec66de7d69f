"""Files from hosted generators: data URIs, images and MP4 decoding (PyAV)."""

from __future__ import annotations

import base64
import io
from typing import TYPE_CHECKING

import numpy as np

from llmpopcorn.backends.hosted.errors import HostedError

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
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise HostedError(f"{what} is not a readable image: {exc}") from None
    return image.convert("RGB")


def to_cover(picture: Image.Image) -> Image.Image:
    """The project's 9:16 cover policy: centre-crop, never stretch, even sizes."""
    from llmpopcorn.backends.diffusion.base import to_cover as crop

    return crop(picture)


def decode_mp4(data: bytes, *, seconds: float, what: str) -> tuple[list[np.ndarray], float, dict]:
    """Decode at most ``seconds`` (plus one frame) of a video file with PyAV; frames are
    centre-cropped to 9:16 with even sizes, like the covers."""
    import av

    frames: list[np.ndarray] = []
    try:
        with av.open(io.BytesIO(data)) as container:
            if not container.streams.video:
                raise HostedError(f"{what} has no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            fps = float(rate) if rate else 24.0
            want = max(1, round(fps * seconds))
            info = {
                "source_width": stream.codec_context.width,
                "source_height": stream.codec_context.height,
                "source_fps": round(fps, 3),
                "source_codec": stream.codec_context.name,
            }
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="rgb24"))
                if len(frames) >= want:
                    break
    except av.error.FFmpegError as exc:
        raise HostedError(f"{what} could not be decoded as a video: {exc}") from None
    if not frames:
        raise HostedError(f"{what} holds no frames")
    info["source_frames_decoded"] = len(frames)
    return [_crop_frame(f) for f in frames], fps, info


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
