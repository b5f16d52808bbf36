"""Scene layout and renderer for the synthetic data: flat shapes and a built-in bitmap font, PIL only.

``sample_scene`` places objects from a caller-seeded RNG; ``render_scene`` is then a pure function of the
record, and the font is a 5x7 bitmap table defined below instead of a system/FreeType font, so the PNG bytes do not depend on
which fonts or FreeType build a machine has.
"""
from __future__ import annotations

import random

from PIL import Image, ImageDraw

SIZE = 448              # image side in pixels
SHAPES = ["circle", "square", "triangle", "diamond", "cross"]
POSITIONS = ["left", "right", "top", "bottom", "center"]
SIZES = ["large", "small"]
BACKGROUNDS = [(245, 245, 245), (232, 232, 228), (240, 236, 226)]
# Region centres as fractions of the side, 134 px apart at 448. An object spans at most JITTER + MAX_RADIUS px
# from its region centre, so no two regions overlap and the corners (text) stay free.
_REGION = {"left": (0.2, 0.5), "right": (0.8, 0.5), "top": (0.5, 0.2), "bottom": (0.5, 0.8), "center": (0.5, 0.5)}
JITTER = 10
MAX_RADIUS = 56

# Well separated in hue so a colour question has one right answer at full resolution; small objects still blur
# into their neighbourhood once an encoder patch covers much more than the object (low resolution).
COLOR_RGB = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
    "purple": (150, 60, 190),
    "orange": (245, 140, 30),
}
COLORS = list(COLOR_RGB)
TEXT_RGB = (20, 20, 20)

# 5 columns x 7 rows per glyph. Only characters the generator uses: I, O, Q, 0 and 1 are left out because
# they are easy to confuse with each other at 7 px.
_GLYPHS = {
    "A": "01110 10001 10001 11111 10001 10001 10001",
    "B": "11110 10001 10001 11110 10001 10001 11110",
    "C": "01110 10001 10000 10000 10000 10001 01110",
    "D": "11110 10001 10001 10001 10001 10001 11110",
    "E": "11111 10000 10000 11110 10000 10000 11111",
    "F": "11111 10000 10000 11110 10000 10000 10000",
    "G": "01110 10001 10000 10111 10001 10001 01111",
    "H": "10001 10001 10001 11111 10001 10001 10001",
    "J": "00111 00010 00010 00010 00010 10010 01100",
    "K": "10001 10010 10100 11000 10100 10010 10001",
    "L": "10000 10000 10000 10000 10000 10000 11111",
    "M": "10001 11011 10101 10101 10001 10001 10001",
    "N": "10001 10001 11001 10101 10011 10001 10001",
    "P": "11110 10001 10001 11110 10000 10000 10000",
    "R": "11110 10001 10001 11110 10100 10010 10001",
    "S": "01111 10000 10000 01110 00001 00001 11110",
    "T": "11111 00100 00100 00100 00100 00100 00100",
    "U": "10001 10001 10001 10001 10001 10001 01110",
    "V": "10001 10001 10001 10001 10001 01010 00100",
    "W": "10001 10001 10001 10101 10101 10101 01010",
    "X": "10001 10001 01010 00100 01010 10001 10001",
    "Y": "10001 10001 01010 00100 00100 00100 00100",
    "Z": "11111 00001 00010 00100 01000 10000 11111",
    "2": "01110 10001 00001 00010 00100 01000 11111",
    "3": "11111 00010 00100 00010 00001 10001 01110",
    "4": "00010 00110 01010 10010 11111 00010 00010",
    "5": "11111 10000 11110 00001 00001 10001 01110",
    "6": "00110 01000 10000 11110 10001 10001 01110",
    "7": "11111 00001 00010 00100 01000 01000 01000",
    "8": "01110 10001 10001 01110 10001 10001 01110",
    "9": "01110 10001 10001 01111 00001 00010 01100",
}
TEXT_LETTERS = "".join(c for c in _GLYPHS if c.isalpha())
TEXT_DIGITS = "".join(c for c in _GLYPHS if c.isdigit())
GLYPH_ROWS = 7


def text_size(text: str, px: int) -> tuple[int, int]:
    """(width, height) in pixels of ``text`` drawn with glyphs ``px`` pixels tall (px a multiple of 7)."""
    scale = px // GLYPH_ROWS
    return (6 * len(text) - 1) * scale, GLYPH_ROWS * scale


def draw_text(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, px: int) -> None:
    """Draw ``text`` with its top-left corner at ``xy``; every glyph pixel becomes a (scale x scale) block."""
    scale = px // GLYPH_ROWS
    if scale < 1 or px % GLYPH_ROWS:
        raise ValueError(f"text_px must be a positive multiple of {GLYPH_ROWS}, got {px}")
    x0, y0 = xy
    for i, ch in enumerate(text):
        rows = _GLYPHS[ch].split()
        for r, row in enumerate(rows):
            for c, bit in enumerate(row):
                if bit == "1":
                    x = x0 + (6 * i + c) * scale
                    y = y0 + r * scale
                    draw.rectangle((x, y, x + scale - 1, y + scale - 1), fill=TEXT_RGB)


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: int, cy: int, r: int, rgb: tuple[int, int, int]) -> None:
    """Draw one filled shape whose bounding box is the square of half-side ``r`` around (cx, cy)."""
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=rgb)
    elif shape == "square":
        # a little smaller than the box so that its area is close to the circle's
        s = round(r * 0.88)
        draw.rectangle((cx - s, cy - s, cx + s, cy + s), fill=rgb)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=rgb)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=rgb)
    elif shape == "cross":
        w = max(1, round(r * 0.35))
        draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=rgb)
        draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=rgb)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def sample_scene(rng: random.Random, scene_id: str, settings: dict) -> tuple[dict, dict]:
    """(record, render_info): the record is the eval_scenes.jsonl format; render_info holds drawing-only values."""
    weights = settings["count_weights"]
    n = rng.choices(range(1, len(weights) + 1), weights=weights)[0]
    # distinct positions, shapes and colours: every question about "the circle" or "the left shape" has one answer
    positions, shapes, colors = rng.sample(POSITIONS, n), rng.sample(SHAPES, n), rng.sample(COLORS, n)
    objects = []
    for pos, shape, color in zip(positions, shapes, colors):
        size = "small" if rng.random() < settings["small_prob"] else "large"
        fx, fy = _REGION[pos]
        objects.append({"shape": shape, "color": color,
                        "cx": round(fx * SIZE) + rng.randint(-JITTER, JITTER),
                        "cy": round(fy * SIZE) + rng.randint(-JITTER, JITTER),
                        "r": rng.randint(*settings[f"{size}_r"]), "size": size, "position": pos})
    text, text_px, text_xy = None, settings["text_px"][0], None
    if rng.random() < settings["text_prob"]:
        text = rng.choice(TEXT_LETTERS) + rng.choice(TEXT_DIGITS)
        text_px = rng.choice(settings["text_px"])
        w, h = text_size(text, text_px)
        # one of the four corners, 10-50 px from the edges
        x = rng.randint(10, 50) if rng.random() < 0.5 else SIZE - w - rng.randint(10, 50)
        y = rng.randint(10, 50) if rng.random() < 0.5 else SIZE - h - rng.randint(10, 50)
        text_xy = (x, y)
    record = {"scene_id": scene_id, "image": f"images/{scene_id}.png", "size": SIZE,
              "objects": objects, "text": text, "text_px": text_px}
    return record, {"background": rng.choice(BACKGROUNDS), "text_xy": text_xy}


def render_scene(scene: dict, background: tuple[int, int, int], text_xy: tuple[int, int] | None) -> Image.Image:
    """Render a scene record (size, objects, text, text_px) to an RGB image of ``size`` x ``size`` pixels."""
    img = Image.new("RGB", (scene["size"], scene["size"]), background)
    draw = ImageDraw.Draw(img)
    for obj in scene["objects"]:
        draw_shape(draw, obj["shape"], obj["cx"], obj["cy"], obj["r"], COLOR_RGB[obj["color"]])
    if scene.get("text"):
        draw_text(draw, text_xy, scene["text"], scene["text_px"])
    return img
