"""From an image file to the pixel tensor the VAE encodes (resize, crop, flip, scale), and
from decoded pixels back to an image."""
from __future__ import annotations

import random

import numpy as np
import torch
from PIL import Image

from .buckets import Placement
from .images import load_rgb


def crop_box(placement: Placement, random_crop: bool, rng: random.Random | None) -> tuple[int, int]:
    """Top-left corner of the bucket-sized crop inside the resized image."""
    extra_x = placement.resized[0] - placement.bucket[0]
    extra_y = placement.resized[1] - placement.bucket[1]
    if random_crop and rng is not None:
        return rng.randint(0, extra_x), rng.randint(0, extra_y)
    return extra_x // 2, extra_y // 2


def size_condition(image_size: tuple[int, int], placement: Placement, left_top: tuple[int, int]) -> list[int]:
    """SDXL's size conditioning of one image, in its order: original height, width, crop
    top, left (in the resized image), target height, width."""
    (width, height), (left, top), (bucket_w, bucket_h) = image_size, left_top, placement.bucket
    return [height, width, top, left, bucket_h, bucket_w]


# resize_interpolation's names (kohya's, library/utils.py) -> PIL's filters. kohya resizes
# "area" with OpenCV's INTER_AREA, which averages the pixels each output pixel covers when
# shrinking: PIL's BOX filter does the same; enlarging, both repeat pixels (near nearest).
RESIZE_FILTERS = {"lanczos": Image.LANCZOS, "nearest": Image.NEAREST, "bilinear": Image.BILINEAR,
                  "linear": Image.BILINEAR, "bicubic": Image.BICUBIC, "cubic": Image.BICUBIC,
                  "area": Image.BOX, "box": Image.BOX}


def resize_filter(interpolation: str, size: tuple[int, int], target: tuple[int, int]) -> int:
    """The PIL filter of `interpolation`; empty: kohya's default, area when shrinking (no side
    grows), lanczos when enlarging."""
    if not interpolation:
        interpolation = "area" if target[0] <= size[0] and target[1] <= size[1] else "lanczos"
    return RESIZE_FILTERS[interpolation]


def fit_to_bucket(image: Image.Image, placement: Placement, left_top: tuple[int, int], flip: bool,
                  interpolation: str = "") -> Image.Image:
    """Resize to the placement, crop the bucket at `left_top`, mirror when `flip`: the same
    steps for a picture and its loss mask, so the two stay aligned."""
    if image.size != placement.resized:
        image = image.resize(placement.resized, resize_filter(interpolation, image.size, placement.resized))
    left, top = left_top
    image = image.crop((left, top, left + placement.bucket[0], top + placement.bucket[1]))
    if flip:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    return image


def load_pixels(path: str, placement: Placement, left_top: tuple[int, int], flip: bool, interpolation: str = "",
                color_rng: random.Random | None = None) -> torch.Tensor:
    """A (3, H, W) float tensor in [-1, 1]; with `color_rng`, kohya's colour augmentation."""
    image = fit_to_bucket(load_rgb(path), placement, left_top, flip, interpolation)
    if color_rng is not None:
        image = color_augment(image, color_rng)
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


HUE_SHIFT_LIMIT = 8.0  # kohya's, in OpenCV's hue units (180 a full turn): up to 16 degrees


def color_augment(image: Image.Image, rng: random.Random) -> Image.Image:
    """kohya's color_aug: a third of the time, either (even odds) the hue turns by up to 16
    degrees either way or a gamma of 0.95..1.05 is applied; the picture's shapes never move."""
    if rng.random() > 0.33:
        return image
    if rng.random() > 0.5:
        turn = rng.uniform(-HUE_SHIFT_LIMIT, HUE_SHIFT_LIMIT) / 180.0  # of a full turn
        hsv = np.asarray(image.convert("HSV")).copy()
        hsv[..., 0] = np.rint(hsv[..., 0] + turn * 256.0).astype(np.int64) % 256  # PIL: 256 a turn
        return Image.fromarray(hsv, "HSV").convert("RGB")
    gamma = rng.uniform(0.95, 1.05)
    values = (np.asarray(image, dtype=np.float64) / 255.0) ** gamma
    return Image.fromarray(np.clip(np.rint(values * 255.0), 0, 255).astype(np.uint8), "RGB")


def to_image(pixels: torch.Tensor) -> Image.Image:
    """A (3, H, W) tensor in [-1, 1] -> an RGB image; values outside are clipped."""
    array = ((pixels.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return Image.fromarray(array.permute(1, 2, 0).cpu().numpy())
