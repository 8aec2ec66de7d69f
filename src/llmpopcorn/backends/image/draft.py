"""Draft cover renderer (the CPU default): a legible 9:16 title card, no model.

The background (gradient and soft shapes) is derived from the cover prompt and the
seed; the title is typeset large, wrapped and never cut off. Same inputs, same bytes.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from pydantic import Field

from llmpopcorn.backends.base import ImageBackend, ImageRequest
from llmpopcorn.backends.draw import draw_text_block, gradient, palette, seed_from
from llmpopcorn.backends.options import RendererOptions, selected_options, validate_options


class DraftCoverOptions(RendererOptions):
    """``--image-opt`` of the draft cover."""

    request_safe: ClassVar[frozenset[str]] = frozenset({"width", "height"})

    width: int = Field(1080, ge=64, le=4096, description="cover width in pixels")
    height: int = Field(1920, ge=64, le=4096, description="cover height in pixels")


class DraftCover(ImageBackend):
    name = "draft"
    description = "fast CPU title card (1080x1920) derived from the prompt and seed; no model"
    options_model = DraftCoverOptions

    def __init__(self, width: int = 1080, height: int = 1920):
        self.width, self.height = width, height

    @classmethod
    def from_settings(cls, settings) -> DraftCover:
        raw = selected_options(settings, cls.kind, cls.name)
        opts = validate_options(DraftCoverOptions, raw, kind=cls.kind, name=cls.name)
        return cls(opts.width, opts.height)

    def options(self) -> dict:
        return {"width": self.width, "height": self.height}

    def model_id(self) -> str:
        return "draft-cover-v1"

    def generate(self, request: ImageRequest) -> Image.Image:
        width = request.width or self.width
        height = request.height or self.height
        seed = seed_from("cover", request.prompt, request.seed)
        colours = palette(seed, 4)
        image = Image.fromarray(gradient(width, height, colours[0], colours[1]))
        rng = np.random.default_rng(seed)
        shapes = Image.new("RGBA", (width, height), (0, 0, 0, 0))
        draw = ImageDraw.Draw(shapes)
        for _ in range(7):
            r = int(rng.uniform(0.12, 0.35) * width)
            cx, cy = int(rng.uniform(0, width)), int(rng.uniform(0, height))
            colour = colours[2 + int(rng.integers(0, 2))]
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(*colour, 110))
        shapes = shapes.filter(ImageFilter.GaussianBlur(radius=max(4, width // 60)))
        image = Image.alpha_composite(image.convert("RGBA"), shapes)
        return title_card(image, request.title or request.prompt[:80])


def title_card(
    image: Image.Image, title: str, band: tuple[float, float] = (0.30, 0.62)
) -> Image.Image:
    """``image`` (RGB) with ``title`` typeset large on a dark band (``band``: its top and
    bottom as fractions of the height) that keeps it legible on any background; the draft
    cover's look, also used on stock photos (llmpopcorn.backends.stock)."""
    width, height = image.size
    overlay = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    top, bottom = int(height * band[0]), int(height * band[1])
    ImageDraw.Draw(overlay).rectangle((0, top, width, bottom), fill=(0, 0, 0, 120))
    image = Image.alpha_composite(image.convert("RGBA"), overlay).convert("RGB")
    margin = int(width * 0.07)
    draw_text_block(
        image,
        title,
        (margin, top + margin // 2, width - margin, bottom - margin // 2),
        start_size=max(12, width // 9),
    )
    return image
