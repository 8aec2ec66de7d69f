"""Drawing helpers for the draft renderers: seeded palettes, gradients and legible text."""

from __future__ import annotations

import colorsys
import hashlib
from functools import cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

_FONT_NAMES = ("DejaVuSans-Bold.ttf", "DejaVuSans.ttf")


def seed_from(*parts: object) -> int:
    """A 63-bit seed derived from text and numbers (stable across runs and machines)."""
    digest = hashlib.sha256("|".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def palette(seed: int, n: int = 4) -> list[tuple[int, int, int]]:
    """``n`` harmonious saturated colours from a seed."""
    rng = np.random.default_rng(seed)
    base = rng.random()
    colours = []
    for i in range(n):
        hue = (base + i * (0.08 + 0.1 * rng.random())) % 1.0
        sat = 0.55 + 0.35 * rng.random()
        val = 0.45 + 0.45 * rng.random()
        r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
        colours.append((int(r * 255), int(g * 255), int(b * 255)))
    return colours


def gradient(width: int, height: int, top: tuple, bottom: tuple, shift: float = 0.0) -> np.ndarray:
    """A vertical gradient (H x W x 3 uint8); ``shift`` in [0, 1) scrolls it."""
    t = (np.linspace(0.0, 1.0, height, dtype=np.float32) + shift) % 1.0
    t = 1.0 - np.abs(2.0 * t - 1.0)  # triangle wave: scrolling stays seamless
    top_a, bottom_a = np.asarray(top, np.float32), np.asarray(bottom, np.float32)
    rows = top_a[None, :] * (1.0 - t[:, None]) + bottom_a[None, :] * t[:, None]
    return np.broadcast_to(rows[:, None, :], (height, width, 3)).astype(np.uint8)


@cache
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for name in _FONT_NAMES:
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size=size)


def wrap_text(
    draw: ImageDraw.ImageDraw, text: str, max_width: int, max_height: int, start_size: int
) -> tuple[list[str], ImageFont.ImageFont, int]:
    """Wrap ``text`` into lines that fit the box, shrinking the font until they do.

    Words longer than a line are split, so nothing is ever cut off.
    """
    size = start_size
    while True:
        fnt = font(size)
        lines = _wrap(draw, text, fnt, max_width)
        line_height = int(size * 1.25)
        if len(lines) * line_height <= max_height or size <= 10:
            return lines, fnt, line_height
        size = int(size * 0.9)


def _wrap(draw: ImageDraw.ImageDraw, text: str, fnt, max_width: int) -> list[str]:
    def width(s: str) -> float:
        return draw.textlength(s, font=fnt)

    lines: list[str] = []
    current = ""
    for word in text.split():
        while width(word) > max_width and len(word) > 1:  # hard-split very long words
            cut = len(word)
            while cut > 1 and width(word[:cut]) > max_width:
                cut -= 1
            if current:
                lines.append(current)
                current = ""
            lines.append(word[:cut])
            word = word[cut:]
        candidate = f"{current} {word}".strip()
        if width(candidate) <= max_width:
            current = candidate
        else:
            lines.append(current)
            current = word
    if current:
        lines.append(current)
    return lines or [""]


def draw_text_block(
    image: Image.Image,
    text: str,
    box: tuple[int, int, int, int],
    start_size: int,
    fill=(255, 255, 255),
    stroke=(0, 0, 0),
) -> None:
    """Centre wrapped ``text`` in ``box`` (x0, y0, x1, y1) with an outline for legibility."""
    draw = ImageDraw.Draw(image)
    x0, y0, x1, y1 = box
    lines, fnt, line_height = wrap_text(draw, text, x1 - x0, y1 - y0, start_size)
    stroke_width = max(2, line_height // 14)
    y = y0 + ((y1 - y0) - len(lines) * line_height) // 2
    for line in lines:
        w = draw.textlength(line, font=fnt)
        draw.text(
            (x0 + ((x1 - x0) - w) / 2, y),
            line,
            font=fnt,
            fill=fill,
            stroke_width=stroke_width,
            stroke_fill=stroke,
        )
        y += line_height
