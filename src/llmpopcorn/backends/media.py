"""Image and video files: deterministic PNG writing, H.264 MP4 export and probing.

NumPy, Pillow and PyAV load on first use, so importing this module (the pipeline
does) costs nothing at CLI start-up.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmpopcorn.core.errors import RenderError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    from PIL import Image

    from llmpopcorn.backends.base import Clip


def save_png(image: Image.Image, path: Path) -> Path:
    """Write a PNG with fixed settings so equal images give equal bytes."""
    image.convert("RGB").save(path, format="PNG", optimize=False, compress_level=6)
    return path


def fit_duration(frames: list[np.ndarray], fps: float, seconds: float) -> list[np.ndarray]:
    """Exactly ``round(fps * seconds)`` frames: trim extra ones, resample when short."""
    import numpy as np

    want = max(1, round(fps * seconds))
    if not frames:
        raise RenderError("the video backend returned no frames")
    if len(frames) >= want:
        return list(frames[:want])
    index = np.linspace(0, len(frames) - 1, want).round().astype(int)
    return [frames[i] for i in index]


#: RGB to BT.601 limited-range YCbCr as Pillow's 12-value conversion matrix (Y, Cb,
#: Cr rows: three weights and an offset each)
BT601 = (
    0.257, 0.504, 0.098, 16.0,
    -0.148, -0.291, 0.439, 128.0,
    0.439, -0.368, -0.071, 128.0,
)  # fmt: skip


def rgb_to_yuv420p(rgb: np.ndarray | YUVFrame) -> np.ndarray:
    """RGB (H x W x 3 uint8, even sizes) to planar yuv420p (BT.601, limited range), as
    the (H * 3 / 2) x W array PyAV expects; a :class:`YUVFrame` is returned as it is.

    Converting here rather than letting PyAV's swscale do it keeps the encode
    deterministic: with swscale, two encodes of the same frames in one process were
    seen to differ once other libraries (torch) had been loaded. Pillow does the
    arithmetic in C (one pass of the :data:`BT601` matrix, then a 2x2 box average
    for the chroma planes): several times faster than float NumPy.
    """
    import numpy as np
    from PIL import Image

    if isinstance(rgb, YUVFrame):  # already converted (the draft clip draws in YUV)
        return rgb.data
    height, width = rgb.shape[:2]
    pixels = np.ascontiguousarray(rgb[..., :3], dtype=np.uint8)
    image = Image.frombuffer("RGB", (width, height), pixels, "raw", "RGB", 0, 1)
    ycc = image.convert("RGB", BT601)  # the bands now hold Y, Cb, Cr
    half = ycc.reduce(2)
    planes = [ycc.getchannel(0), half.getchannel(1), half.getchannel(2)]
    return np.frombuffer(b"".join(p.tobytes() for p in planes), dtype=np.uint8).reshape(
        height * 3 // 2, width
    )


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """RGB (... x 3, any numeric dtype) to float64 BT.601 limited-range Y, Cb, Cr
    (... x 3) with the :data:`BT601` matrix, unrounded: for renderers that draw in YUV.

    Element-wise products and sums in a fixed order, not a matrix product (BLAS), so
    the result, and what rounds from it, is the same on every CPU.
    """
    import numpy as np

    rgb = np.asarray(rgb, np.float64)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    out = np.empty(rgb.shape[:-1] + (3,), np.float64)
    for row in range(3):
        wr, wg, wb, offset = BT601[4 * row : 4 * row + 4]
        out[..., row] = r * wr + g * wg + b * wb + offset
    return out


class YUVFrame:
    """One frame already in the encoder's format: planar yuv420p (BT.601, limited
    range) as the (H * 3 / 2) x W uint8 array :func:`rgb_to_yuv420p` returns.

    The draft clip draws straight into these planes (1.5 bytes a pixel instead of
    3, and no RGB-to-YUV pass); :func:`write_mp4` encodes them as they are. It
    stands in for an H x W x 3 RGB array where frames are only measured or listed
    (``shape``, ``len``, :func:`fit_duration`), and ``np.asarray(frame)`` gives the
    RGB pixels (chroma repeated 2x2) for anything that looks at them.
    """

    __slots__ = ("data",)

    def __init__(self, data: np.ndarray):
        rows, width = data.shape
        if rows % 3 or width % 2 or not data.flags.c_contiguous:
            raise RenderError(f"not a yuv420p frame: a {rows}x{width} array")
        self.data = data

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.data.shape[0] * 2 // 3, self.data.shape[1], 3)

    @property
    def dtype(self):
        return self.data.dtype

    def planes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Views of the Y (H x W), U and V (H/2 x W/2) planes."""
        height, width = self.shape[:2]
        flat, size = self.data.reshape(-1), height * width
        y = flat[:size].reshape(height, width)
        u = flat[size : size + size // 4].reshape(height // 2, width // 2)
        v = flat[size + size // 4 :].reshape(height // 2, width // 2)
        return y, u, v

    def to_rgb(self) -> np.ndarray:
        """RGB (H x W x 3 uint8): the inverse BT.601 matrix, chroma repeated 2x2."""
        import numpy as np

        y, u, v = self.planes()
        ycc = np.empty((*y.shape, 3), np.float32)
        ycc[..., 0] = y
        ycc[..., 1] = u.repeat(2, axis=0).repeat(2, axis=1)
        ycc[..., 2] = v.repeat(2, axis=0).repeat(2, axis=1)
        matrix = np.asarray(BT601, np.float32).reshape(3, 4)
        rgb = (ycc - matrix[:, 3]) @ np.linalg.inv(matrix[:, :3]).T
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)

    def __array__(self, dtype=None, copy=None):
        rgb = self.to_rgb()
        return rgb if dtype is None else rgb.astype(dtype)


#: x264 preset of the MP4 export: "ultrafast" encodes a 3 s 540x960 draft clip in about
#: a tenth of a second on one thread; files are larger than with slower presets (a
#: preview) and stay browser-playable H.264 yuv420p
PRESET = "ultrafast"


def write_mp4(clip: Clip, path: Path, *, crf: int = 23, preset: str = PRESET) -> Path:
    """Encode frames (RGB arrays or :class:`YUVFrame`) as browser-playable H.264
    (yuv420p, faststart) with PyAV."""
    import av

    if not clip.frames:
        raise RenderError("cannot write a clip with no frames")
    height, width = clip.frames[0].shape[:2]
    if width % 2 or height % 2:
        raise RenderError(f"yuv420p needs even frame sizes, got {width}x{height}")
    rate = Fraction(clip.fps).limit_denominator(1001)
    with av.open(str(path), mode="w", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        # one thread: x264's output then does not depend on the machine's core count
        stream.options = {"crf": str(crf), "preset": preset, "threads": "1"}
        stream.codec_context.thread_count = 1
        for array in clip.frames:
            frame = av.VideoFrame.from_ndarray(rgb_to_yuv420p(array), format="yuv420p")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def probe_mp4(path: Path, *, decode: bool = False) -> dict[str, Any]:
    """Codec, size, frame count, fps and duration of a video file (and frames if asked)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        fps = float(stream.average_rate) if stream.average_rate else 0.0
        info: dict[str, Any] = {
            "codec": stream.codec_context.name,
            "pix_fmt": stream.codec_context.pix_fmt,
            "width": stream.codec_context.width,
            "height": stream.codec_context.height,
            "frames": len(frames),
            "fps": fps,
            "seconds": len(frames) / fps if fps else 0.0,
        }
    if decode:
        info["decoded"] = frames
    return info
