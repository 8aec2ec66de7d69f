"""Draft clip renderer (the CPU default): a 3-second 9:16 motion card, no model.

A scrolling gradient with drifting shapes (visible motion) and the title fading
in, derived from the video prompt and the seed. Same inputs, same frames.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from ...draw import draw_text_block, gradient, palette, seed_from
from ...errors import RenderError
from ..base import Clip, VideoBackend, VideoRequest


class DraftClip(VideoBackend):
    name = "draft"
    description = "fast CPU 3 s motion card (540x960, 24 fps, H.264); no model"

    def __init__(
        self, width: int = 540, height: int = 960, fps: int = 24, from_cover: bool = False
    ):
        self.width, self.height, self.fps = width, height, fps
        self.from_cover = from_cover

    @classmethod
    def from_settings(cls, settings) -> DraftClip:
        return cls(from_cover=settings.video_from_cover)

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
        title = _TitleOverlay(request.title, width, height) if request.title else None
        # one period of the scrolling gradient as a column, cut per frame (no full-frame
        # arithmetic), and one disc mask per blob, pasted in C with Pillow
        column = gradient(1, 2 * height, colours[0], colours[1])
        discs = [_disc(r) for _, _, r, *_ in blobs]
        frames = []
        for i in range(n):
            t = i / max(1, n - 1)
            offset = round(0.5 * t * 2 * height) % (2 * height)
            rows = np.roll(column, -offset, axis=0)[::2] if offset else column[::2]
            frame = Image.fromarray(np.ascontiguousarray(rows)).resize(
                (width, height), Image.Resampling.NEAREST
            )
            for (cx, cy, r, orbit, phase, colour), disc in zip(blobs, discs, strict=True):
                angle = phase + 2 * math.pi * t
                x, y = cx + orbit * math.cos(angle), cy + orbit * math.sin(angle)
                frame.paste(colour, (round(x - r), round(y - r)), disc)
            if title is not None:
                title.draw(frame, min(1.0, t * 2.5))  # fades in over the first 40 %
            frames.append(np.asarray(frame))
        return Clip(frames=frames, fps=float(self.fps), meta={"seed": request.seed})

    def _animate_cover(self, cover: Image.Image, width: int, height: int, n: int) -> Clip:
        """A slow push-in on the cover (Ken Burns), so the clip and the cover agree."""
        base = ImageOps.fit(cover.convert("RGB"), (width, height), Image.Resampling.LANCZOS)
        frames = []
        for i in range(n):
            zoom = 1.0 + 0.15 * i / max(1, n - 1)
            w, h = width / zoom, height / zoom
            box = ((width - w) / 2, (height - h) / 2, (width + w) / 2, (height + h) / 2)
            frame = base.resize((width, height), Image.Resampling.BILINEAR, box=box)
            frames.append(np.asarray(frame))
        return Clip(frames=frames, fps=float(self.fps), meta={"from_cover": True})


#: opacity of the drifting discs (0-255)
DISC_ALPHA = 150


def _disc(radius: float) -> Image.Image:
    """A filled circle of ``radius`` as a paste mask at :data:`DISC_ALPHA`."""
    size = max(1, round(2 * radius))
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).ellipse((0, 0, size - 1, size - 1), fill=DISC_ALPHA)
    return mask


class _TitleOverlay:
    """The title drawn once (text and outline), pasted per frame through its alpha
    mask, cropped to the text's bounding box."""

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
        crop = layer.crop(self.box)
        self.rgb = crop.convert("RGB")
        self.alpha = crop.getchannel("A")
        self._faded: dict[int, Image.Image] = {}

    def draw(self, frame: Image.Image, opacity: float) -> None:
        if self.box is None or opacity <= 0:
            return
        level = round(255 * opacity)
        mask = self.alpha
        if level < 255:
            if level not in self._faded:
                self._faded[level] = self.alpha.point([v * level // 255 for v in range(256)])
            mask = self._faded[level]
        frame.paste(self.rgb, self.box[:2], mask)
