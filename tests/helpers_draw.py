"""Pictures the tests draw: a cartoon face OpenCV's Haar cascade finds, a detailed patch."""
import numpy as np
from PIL import Image, ImageDraw


def draw_face(image: Image.Image, cx: float, cy: float, s: float) -> tuple[float, float, float, float]:
    """A frontal cartoon face centred at (cx, cy), half-width s; returns its bounding box."""
    draw = ImageDraw.Draw(image)
    draw.ellipse([cx - s, cy - 1.3 * s, cx + s, cy + 1.3 * s], fill=(225, 190, 160))
    for dx in (-0.4, 0.4):
        draw.ellipse([cx + dx * s - 0.18 * s, cy - 0.45 * s, cx + dx * s + 0.18 * s, cy - 0.25 * s], fill=(30, 30, 30))
        draw.rectangle([cx + dx * s - 0.25 * s, cy - 0.6 * s, cx + dx * s + 0.25 * s, cy - 0.55 * s], fill=(60, 40, 30))
    draw.polygon([(cx, cy - 0.2 * s), (cx - 0.12 * s, cy + 0.25 * s), (cx + 0.12 * s, cy + 0.25 * s)], fill=(190, 150, 120))
    draw.rectangle([cx - 0.35 * s, cy + 0.55 * s, cx + 0.35 * s, cy + 0.65 * s], fill=(150, 50, 50))
    return cx - s, cy - 1.3 * s, cx + s, cy + 1.3 * s


def detail_patch_picture(size, box, seed=0) -> Image.Image:
    """A flat grey picture with random coloured noise inside `box` (left, top, right, bottom)."""
    array = np.full((size[1], size[0], 3), 128, np.uint8)
    rng = np.random.default_rng(seed)
    left, top, right, bottom = box
    array[top:bottom, left:right] = rng.integers(0, 256, (bottom - top, right - left, 3), dtype=np.uint8)
    return Image.fromarray(array)


def draw_scene(seed: int, size=(128, 128)) -> Image.Image:
    """A distinct picture per seed: a coloured background with a dozen random shapes."""
    rng = np.random.default_rng(seed)
    width, height = size
    image = Image.new("RGB", size, tuple(int(v) for v in rng.integers(60, 200, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, y0 = rng.uniform(-0.2, 0.9) * width, rng.uniform(-0.2, 0.9) * height
        x1, y1 = x0 + rng.uniform(0.1, 0.5) * width, y0 + rng.uniform(0.1, 0.5) * height
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse([x0, y0, x1, y1], fill=colour)
        else:
            draw.rectangle([x0, y0, x1, y1], fill=colour)
    return image
