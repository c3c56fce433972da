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


def load_pixels(path: str, placement: Placement, left_top: tuple[int, int], flip: bool) -> torch.Tensor:
    """A (3, H, W) float tensor in [-1, 1]."""
    image = load_rgb(path)
    if image.size != placement.resized:
        image = image.resize(placement.resized, Image.LANCZOS)
    left, top = left_top
    image = image.crop((left, top, left + placement.bucket[0], top + placement.bucket[1]))
    if flip:
        image = image.transpose(Image.FLIP_LEFT_RIGHT)
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def to_image(pixels: torch.Tensor) -> Image.Image:
    """A (3, H, W) tensor in [-1, 1] -> an RGB image; values outside are clipped."""
    array = ((pixels.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return Image.fromarray(array.permute(1, 2, 0).cpu().numpy())
