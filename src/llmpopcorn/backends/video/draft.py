"""Draft clip renderer (the CPU default): a 3-second 9:16 motion card, no model.

A scrolling gradient with drifting shapes (visible motion) and the title fading
in, derived from the video prompt and the seed. Same inputs, same frames.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
from PIL import Image, ImageDraw, ImageOps
from pydantic import Field

from llmpopcorn.backends.base import Clip, VideoBackend, VideoRequest
from llmpopcorn.backends.draw import draw_text_block, gradient, palette, seed_from
from llmpopcorn.backends.media import YUVFrame, rgb_to_ycbcr
from llmpopcorn.backends.options import RendererOptions, selected_options, validate_options
from llmpopcorn.core.errors import RenderError


class DraftClipOptions(RendererOptions):
    """``--video-opt`` of the draft clip (yuv420p: even sizes)."""

    request_safe: ClassVar[frozenset[str]] = frozenset({"width", "height", "fps"})

    width: int = Field(540, ge=64, le=2160, multiple_of=2, description="clip width (even)")
    height: int = Field(960, ge=64, le=3840, multiple_of=2, description="clip height (even)")
    fps: int = Field(24, ge=1, le=60, description="frames per second")


class DraftClip(VideoBackend):
    name = "draft"
    description = "fast CPU 3 s motion card (540x960, 24 fps, H.264); no model"
    options_model = DraftClipOptions

    def __init__(
        self, width: int = 540, height: int = 960, fps: int = 24, from_cover: bool = False
    ):
        self.width, self.height, self.fps = width, height, fps
        self.from_cover = from_cover

    @classmethod
    def from_settings(cls, settings) -> DraftClip:
        raw = selected_options(settings, cls.kind, cls.name)
        opts = validate_options(DraftClipOptions, raw, kind=cls.kind, name=cls.name)
        return cls(opts.width, opts.height, opts.fps, from_cover=settings.video_from_cover)

    def options(self) -> dict:
        return {
            "width": self.width,
            "height": self.height,
            "fps": self.fps,
            "from_cover": self.from_cover,
        }

    def model_id(self) -> str:
        return "draft-clip-v1"

    def generate(self, request: VideoRequest) -> Clip:
        width = request.width or self.width
        height = request.height or self.height
        n = max(1, round(self.fps * request.seconds))
        if self.from_cover:
            if request.cover is None:
                raise RenderError(
                    "--video-from-cover needs a rendered cover", "render the cover first"
                )
            return self._animate_cover(request.cover, width, height, n)
        seed = seed_from("clip", request.prompt, request.seed)
        colours = palette(seed, 4)
        rng = np.random.default_rng(seed)
        blobs = [
            (
                rng.uniform(0, width),  # centre x
                rng.uniform(0, height),  # centre y
                rng.uniform(0.08, 0.2) * width,  # radius
                rng.uniform(0.15, 0.4) * width,  # orbit radius
                rng.uniform(0, 2 * math.pi),  # phase
                colours[2 + int(rng.integers(0, 2))],
            )
            for _ in range(6)
        ]
        if width % 2 or height % 2:
            raise RenderError(
                f"the draft clip needs even sizes (yuv420p), got {width}x{height}",
                "ask for an even width and height",
            )
        title = _TitleOverlay(request.title, width, height) if request.title else None
        # Drawn straight into the encoder's yuv420p planes (BT.601, as media.write_mp4
        # encodes): alpha blending is linear, so blending in YUV equals blending in RGB
        # then converting, up to rounding. One period of the scrolling gradient as a
        # column (Y per row; Cb/Cr per row pair), cut per frame.
        column = gradient(1, 2 * height, colours[0], colours[1])[:, 0]
        ycc = rgb_to_ycbcr(column)
        y_column = _to_u8(ycc[:, 0])
        discs = [_Disc(r, colour) for _, _, r, *_, colour in blobs]
        rows = np.arange(height)
        frames = []
        for i in range(n):
            t = i / max(1, n - 1)
            offset = round(0.5 * t * 2 * height) % (2 * height)
            index = (offset + 2 * rows) % (2 * height)  # the frame's rows of the column
            frame = YUVFrame(np.empty((height * 3 // 2, width), np.uint8))
            y, u, v = frame.planes()
            y[:] = y_column[index][:, None]
            chroma = (ycc[index[0::2], 1:] + ycc[index[1::2], 1:]) / 2  # row pairs
            u[:] = _to_u8(chroma[:, 0])[:, None]
            v[:] = _to_u8(chroma[:, 1])[:, None]
            for (cx, cy, r, orbit, phase, _), disc in zip(blobs, discs, strict=True):
                angle = phase + 2 * math.pi * t
                x, yc = cx + orbit * math.cos(angle), cy + orbit * math.sin(angle)
                disc.draw(y, u, v, round(x - r), round(yc - r))
            if title is not None:
                title.draw(y, u, v, min(1.0, t * 2.5))  # fades in over the first 40 %
            frames.append(frame)
        return Clip(frames=frames, fps=float(self.fps), meta={"seed": request.seed})

    def _animate_cover(self, cover: Image.Image, width: int, height: int, n: int) -> Clip:
        """A slow push-in on the cover (Ken Burns), so the clip and the cover agree.

        The cover is converted to YUV planes once (luma at full size, chroma on the
        2x2 grid) and each plane is zoomed per frame: bilinear resampling is linear,
        so this equals zooming the RGB picture and converting it, up to rounding.
        """
        if width % 2 or height % 2:
            raise RenderError(
                f"the draft clip needs even sizes (yuv420p), got {width}x{height}",
                "ask for an even width and height",
            )
        base = ImageOps.fit(cover.convert("RGB"), (width, height), Image.Resampling.LANCZOS)
        ycc = rgb_to_ycbcr(np.asarray(base))
        planes = [
            Image.fromarray(_to_u8(ycc[..., 0])),
            Image.fromarray(_to_u8(_half(ycc[..., 1]))),
            Image.fromarray(_to_u8(_half(ycc[..., 2]))),
        ]
        frames = []
        for i in range(n):
            zoom = 1.0 + 0.15 * i / max(1, n - 1)
            w, h = width / zoom, height / zoom
            box = ((width - w) / 2, (height - h) / 2, (width + w) / 2, (height + h) / 2)
            frame = YUVFrame(np.empty((height * 3 // 2, width), np.uint8))
            for target, plane in zip(frame.planes(), planes, strict=True):
                scale = plane.width / width  # 1 for luma, 1/2 for chroma
                zoomed = plane.resize(
                    plane.size, Image.Resampling.BILINEAR, box=tuple(c * scale for c in box)
                )
                target[:] = np.asarray(zoomed)
            frames.append(frame)
        return Clip(frames=frames, fps=float(self.fps), meta={"from_cover": True})


def overlay_title(frames: list[np.ndarray], title: str) -> list[YUVFrame]:
    """``frames`` (RGB arrays, even sizes) in the encoder's yuv420p with ``title`` drawn as
    the draft clip draws it: low in the frame, fading in over the first 40 %. Used on
    stock footage (llmpopcorn.backends.stock)."""
    from llmpopcorn.backends.media import rgb_to_yuv420p

    if not frames:
        return []
    height, width = frames[0].shape[:2]
    overlay = _TitleOverlay(title, width, height) if title else None
    out = []
    for i, rgb in enumerate(frames):
        frame = YUVFrame(rgb_to_yuv420p(rgb).copy())  # drawn into: a writable copy
        if overlay is not None:
            overlay.draw(*frame.planes(), min(1.0, i / max(1, len(frames) - 1) * 2.5))
        out.append(frame)
    return out


#: opacity of the drifting discs (0-255)
DISC_ALPHA = 150


def _to_u8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _to_u16(values: np.ndarray) -> np.ndarray:
    return np.rint(values).astype(np.uint16)


def _half(values: np.ndarray) -> np.ndarray:
    """The 2x2 box average (float) of an array with even sides: the chroma grid (sums in
    a fixed order, so equal on every CPU)."""
    values = np.asarray(values, np.float64)
    return (values[0::2, 0::2] + values[0::2, 1::2] + values[1::2, 0::2] + values[1::2, 1::2]) / 4


def _blend(plane: np.ndarray, x: int, y: int, alpha: np.ndarray, premul: np.ndarray) -> None:
    """``plane = (plane * (255 - alpha) + premul) / 255`` (rounded) over the box at
    (x, y), clipped to the plane; ``premul`` is colour * alpha (uint16)."""
    h, w = alpha.shape
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + w, plane.shape[1]), min(y + h, plane.shape[0])
    if x0 >= x1 or y0 >= y1:
        return
    region = plane[y0:y1, x0:x1]
    a = alpha[y0 - y : y1 - y, x0 - x : x1 - x]
    acc = region * (255 - a) + premul[y0 - y : y1 - y, x0 - x : x1 - x]
    acc += 128
    acc += acc >> 8  # exact rounded division by 255 for 0..65025
    acc >>= 8
    region[:] = acc


def _disc(radius: float) -> Image.Image:
    """A filled circle of ``radius`` as a paste mask at :data:`DISC_ALPHA`."""
    size = max(1, round(2 * radius))
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).ellipse((0, 0, size - 1, size - 1), fill=DISC_ALPHA)
    return mask


class _Disc:
    """One drifting disc in one colour: its alpha mask and colour * alpha per plane,
    on the luma grid and on the chroma grid for each parity of its position (a disc
    at an odd x covers other 2x2 chroma blocks than one at an even x)."""

    def __init__(self, radius: float, colour: tuple[int, int, int]):
        mask = np.asarray(_disc(radius), np.uint16)
        cy, cu, cv = (float(c) for c in rgb_to_ycbcr(np.asarray(colour)))
        self.luma = (mask, _to_u16(mask * cy))
        self.chroma = {}
        size = mask.shape[0]
        for py in (0, 1):
            for px in (0, 1):
                side = size + 2 - (size % 2)
                padded = np.zeros((side, side), np.float64)
                padded[py : py + size, px : px + size] = mask
                alpha = _half(padded)
                self.chroma[py, px] = tuple(_to_u16(alpha * c) for c in (1.0, cu, cv))

    def draw(self, y: np.ndarray, u: np.ndarray, v: np.ndarray, x0: int, y0: int) -> None:
        _blend(y, x0, y0, *self.luma)
        alpha, pu, pv = self.chroma[y0 & 1, x0 & 1]
        _blend(u, x0 >> 1, y0 >> 1, alpha, pu)
        _blend(v, x0 >> 1, y0 >> 1, alpha, pv)


class _TitleOverlay:
    """The title drawn once (text and outline) and turned into planes: luma and alpha
    at full size, premultiplied chroma and alpha on the chroma grid, cropped to the
    text's bounding box widened to even edges. Blended per frame at an opacity."""

    def __init__(self, text: str, width: int, height: int):
        layer = Image.new("RGBA", (width, height), (0, 0, 0, 0))
        margin = width // 12
        draw_text_block(
            layer,
            text,
            (margin, int(height * 0.70), width - margin, int(height * 0.92)),
            start_size=width // 11,
        )
        self.box = layer.getchannel("A").getbbox()
        if self.box is None:
            return
        x0, y0, x1, y1 = self.box
        x0, y0, x1, y1 = x0 & ~1, y0 & ~1, min(width, x1 + x1 % 2), min(height, y1 + y1 % 2)
        self.origin = (x0, y0)
        rgba = np.asarray(layer.crop((x0, y0, x1, y1)), np.float64)
        alpha = rgba[..., 3]
        ycc = rgb_to_ycbcr(rgba[..., :3])
        self.alpha = alpha  # 0..255, full size
        self.luma = ycc[..., 0] * alpha / 255  # premultiplied by alpha / 255
        self.alpha_half = _half(alpha)
        self.u = _half(ycc[..., 1] * alpha) / 255
        self.v = _half(ycc[..., 2] * alpha) / 255
        self._levels: dict[int, tuple] = {}

    def _at(self, level: int) -> tuple:
        if level not in self._levels:
            scale = level / 255
            self._levels = {k: w for k, w in self._levels.items() if k == 255}
            self._levels[level] = tuple(
                _to_u16(a * scale)
                for a in (self.alpha, self.luma * 255, self.alpha_half, self.u * 255, self.v * 255)
            )
        return self._levels[level]

    def draw(self, y: np.ndarray, u: np.ndarray, v: np.ndarray, opacity: float) -> None:
        if self.box is None or opacity <= 0:
            return
        alpha, luma, alpha_half, pu, pv = self._at(round(255 * opacity))
        x0, y0 = self.origin
        _blend(y, x0, y0, alpha, luma)
        _blend(u, x0 // 2, y0 // 2, alpha_half, pu)
        _blend(v, x0 // 2, y0 // 2, alpha_half, pv)
