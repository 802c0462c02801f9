"""A renderer of captchas in the style of captcha-v2: 200x50, a light grey horizontal gradient,
five characters of a bold sans-serif (DejaVu Sans Bold, shipped with matplotlib, so no font is
downloaded) with ragged, textured edges, each a little rotated, raised and overlapping, and one
thin dark stroke through the text. Its layout figures were measured on captcha-v2's 1040 images
(text from x 20 to 140 and y 12 to 42, background 195 on the left to 248 on the right)."""

from __future__ import annotations

import random
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont


@cache
def font_file() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans-Bold.ttf"


@cache
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(font_file()), size)


def render(label: str, rng: random.Random, width: int = 200, height: int = 50) -> Image.Image:
    """One image of ``label``; the same ``rng`` state draws the same image."""
    sx, sy = width / 200, height / 50  # the measured layout, scaled to another size
    noise = np.random.default_rng(rng.getrandbits(64))
    left, right = rng.uniform(186, 204), rng.uniform(242, 252)
    pixels = np.tile(np.linspace(left, right, width), (height, 1))
    pixels += noise.normal(0, 1.5, pixels.shape)

    ink = _text_mask(label, rng, sx, sy, width, height)
    # ragged edges: the blurred glyphs inked where they beat a random threshold
    core = np.asarray(ink) / 255
    halo = np.asarray(ink.filter(ImageFilter.GaussianBlur(rng.uniform(1.0, 1.6) * sy))) / 255
    # ragged grey edges: the blurred glyphs inked by a random share, the core solid
    alpha = np.maximum(core**2, (halo * noise.uniform(0.2, 1.8, halo.shape)).clip(0, 1))
    pixels = pixels * (1 - alpha) + noise.uniform(0, 30, alpha.shape) * alpha

    image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    _stroke(ImageDraw.Draw(image), rng, sx, sy)
    return image.convert("RGB")


def _text_mask(
    label: str, rng: random.Random, sx: float, sy: float, width: int, height: int
) -> Image.Image:
    mask = Image.new("L", (width, height), 0)
    font = _font(max(8, round(rng.uniform(36, 40) * sy)))
    x = rng.uniform(10, 18) * sx
    narrow = rng.uniform(0.82, 0.92)  # captcha-v2's glyphs are narrower than DejaVu's
    base = rng.uniform(-1, 2) * sy
    for char in label:
        *_, right, bottom = font.getbbox(char)
        glyph = Image.new("L", (right + 8, bottom + 8), 0)
        ImageDraw.Draw(glyph).text((4, 4), char, font=font, fill=255)
        glyph = glyph.resize((round(glyph.width * narrow * sx / sy), glyph.height))
        glyph = glyph.rotate(rng.uniform(-8, 8), resample=Image.BILINEAR, expand=True)
        y = base + rng.uniform(-2.5, 2.5) * sy
        mask.paste(255, (round(x), round(y)), glyph)
        x += font.getlength(char) * narrow * sx / sy * rng.uniform(0.9, 1.02)
    return mask


def _stroke(draw: ImageDraw.ImageDraw, rng: random.Random, sx: float, sy: float) -> None:
    """A gently bent line through the text from its left edge to near the right border, most
    often after a short hook, as in captcha-v2."""
    x, y = rng.uniform(12, 24), rng.uniform(12, 38)
    points = [(x, y)]
    if rng.random() < 0.7:
        points.insert(0, (x + rng.uniform(-8, 12), y + rng.choice((-1, 1)) * rng.uniform(6, 16)))
    for end in sorted(rng.uniform(50, 160) for _ in range(rng.randint(1, 2))):
        y = min(max(y + rng.uniform(-8, 8), 10), 40)
        points.append((end, y))
    points.append((rng.uniform(175, 190), min(max(y + rng.uniform(-10, 10), 10), 42)))
    scaled = [(px * sx, min(max(py, 2), 48) * sy) for px, py in points]
    draw.line(scaled, fill=rng.randint(0, 25), width=max(1, round(rng.uniform(2.6, 4.0) * sy)))
