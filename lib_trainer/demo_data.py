"""The demo dataset: pictures of one simple concept, drawn on the fly so nothing ships or
downloads. A glossy red ball ("ltdemo ball") on plain backgrounds of different colours,
at different places and sizes, each with a tag caption, in a kohya `10_ltdemo ball` folder.
"""
from __future__ import annotations

import os
import random

from PIL import Image, ImageDraw, ImageFilter

from .fileio import write_text_atomic

DEMO_FOLDER = "10_ltdemo ball"
TRIGGER = "ltdemo"
BACKGROUNDS = {
    "blue": (90, 140, 220), "green": (110, 190, 120), "yellow": (235, 215, 110), "grey": (160, 160, 160),
    "purple": (160, 120, 200), "white": (245, 245, 245),
}


def draw_ball(size: int, background: tuple[int, int, int], center: tuple[float, float], radius: float) -> Image.Image:
    scale = 4  # draw large, then shrink: smooth edges
    canvas = Image.new("RGB", (size * scale, size * scale), background)
    draw = ImageDraw.Draw(canvas)
    cx, cy, r = center[0] * scale, center[1] * scale, radius * scale
    draw.ellipse((cx - r * 0.9, cy + r * 0.75, cx + r * 0.9, cy + r * 1.05), fill=tuple(c // 2 for c in background))
    for i in range(12):  # shading: concentric discs from dark red to bright red
        shade = i / 11
        ri = r * (1 - 0.75 * shade)
        offset = r * 0.3 * shade
        colour = (int(150 + 100 * shade), int(20 + 40 * shade), int(20 + 40 * shade))
        draw.ellipse((cx - offset - ri, cy - offset - ri, cx - offset + ri, cy - offset + ri), fill=colour)
    hr = r * 0.18
    draw.ellipse((cx - r * 0.45 - hr, cy - r * 0.45 - hr, cx - r * 0.45 + hr, cy - r * 0.45 + hr),
                 fill=(255, 240, 240))
    return canvas.filter(ImageFilter.GaussianBlur(scale / 2)).resize((size, size), Image.LANCZOS)


def make_demo_dataset(root: str, count: int = 12, size: int = 128, seed: int = 0) -> str:
    """Write `count` pictures with captions under root/10_ltdemo ball; returns root."""
    rng = random.Random(seed)
    folder = os.path.join(root, DEMO_FOLDER)
    os.makedirs(folder, exist_ok=True)
    names = list(BACKGROUNDS)
    for index in range(count):
        background = names[index % len(names)]
        radius = rng.uniform(0.22, 0.34) * size
        center = (rng.uniform(radius, size - radius), rng.uniform(radius, size - radius * 1.1))
        image = draw_ball(size, BACKGROUNDS[background], center, radius)
        stem = os.path.join(folder, f"ball_{index:02d}")
        image.save(stem + ".png")
        placement = "left" if center[0] < size * 0.4 else "right" if center[0] > size * 0.6 else "center"
        write_text_atomic(stem + ".txt", f"{TRIGGER}, red ball, {background} background, {placement}, simple background")
    return root
