"""Loss masks (masked_loss, alpha_mask): which pixels of a picture train.

A mask is a picture the size of the training image: from conditioning_data_dir (its red
channel, as sd-scripts reads it: white trains, black is ignored) or the image's own alpha
channel (opaque trains). It goes through the image's own resize, crop and flip, then is
shrunk to the latents' size by averaging (kohya's area interpolation), and multiplies the
per-element loss before its mean (train/step_loss.py).
"""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F

from .buckets import Placement
from .images import image_size, is_image_file, load_picture
from .pixels import fit_to_bucket
from .latent_cache import file_sha256


def find_mask(folder: str, image_path: str) -> str | None:
    """The mask of `image_path`: a picture with its stem in `folder`/<the image's folder name>/,
    else in `folder` itself (kohya's layout, for one image folder)."""
    stem = os.path.splitext(os.path.basename(image_path))[0]
    for place in (os.path.join(folder, os.path.basename(os.path.dirname(image_path))), folder):
        if not os.path.isdir(place):
            continue
        for name in sorted(os.listdir(place)):
            if os.path.splitext(name)[0] == stem and is_image_file(name):
                return os.path.join(place, name)
    return None


class MaskSource:
    """Masks of the examples, from `folder` or (folder empty) the images' alpha channel."""

    def __init__(self, folder: str = "", interpolation: str = "") -> None:
        self.folder = folder
        self.interpolation = interpolation

    def path(self, image_path: str) -> str | None:
        return find_mask(self.folder, image_path) if self.folder else image_path

    def key(self, image_path: str) -> str:
        """What the mask depends on, for the latent cache's key."""
        if not self.folder:
            return "alpha"
        path = self.path(image_path)
        return f"mask={file_sha256(path)}" if path else "mask=none"

    def load(self, image_path: str, placement: Placement, left_top: tuple[int, int], flip: bool,
             latent_size: tuple[int, int]) -> torch.Tensor:
        """A (1, h, w) mask in 0..1 at the latents' size; all ones for a picture without one (a
        regularisation image without a mask file, or a picture without transparency)."""
        path = self.path(image_path)
        if path is None:
            return torch.ones((1, *latent_size))
        picture = load_picture(path, background="white" if self.folder else None)
        if self.folder:
            channel = picture.getchannel("R")
        elif picture.mode == "RGBA":
            channel = picture.getchannel("A")
        else:
            return torch.ones((1, *latent_size))
        channel = fit_to_bucket(channel, placement, left_top, flip, self.interpolation)
        mask = torch.from_numpy(np.asarray(channel, dtype=np.float32) / 255.0)[None, None]
        return F.interpolate(mask, size=latent_size, mode="area")[0]


def mask_source(config) -> MaskSource | None:
    """The run's masks, or None when it trains without."""
    if config.alpha_mask:
        return MaskSource("", config.resize_interpolation)
    if config.masked_loss and config.conditioning_data_dir:
        return MaskSource(config.conditioning_data_dir, config.resize_interpolation)
    return None


def mask_file_problems(config, items) -> list[str]:
    """Training images without a mask file, or with one of another size, each by name."""
    if not (config.masked_loss and config.conditioning_data_dir) or config.alpha_mask:
        return []
    missing, wrong_size = [], []
    for item in items:
        if item.concept.is_reg:
            continue  # regularisation images train unmasked unless they have a mask
        path = find_mask(config.conditioning_data_dir, item.path)
        if path is None:
            missing.append(os.path.basename(item.path))
        elif image_size(path) != item.size:
            wrong_size.append(f"{os.path.basename(path)} is {image_size(path)[0]}x{image_size(path)[1]}, "
                              f"{os.path.basename(item.path)} {item.size[0]}x{item.size[1]}")
    found = []
    if missing:
        found.append(f"masked_loss: {len(missing)} training images have no mask in {config.conditioning_data_dir} "
                     f"(a picture with the same name, e.g. {os.path.splitext(missing[0])[0]}.png): "
                     + ", ".join(missing))
    if wrong_size:
        found.append("masked_loss: masks must be the size of their image: " + "; ".join(wrong_size))
    return found


def unmatched_mask_warning(config, items) -> list[str]:
    """One line naming the mask pictures that belong to no image (kohya refuses them; here they
    are only left unused, since the images that do have masks train as they should)."""
    if not (config.masked_loss and config.conditioning_data_dir) or config.alpha_mask:
        return []
    used = {os.path.abspath(path) for item in items if (path := find_mask(config.conditioning_data_dir, item.path))}
    places = [config.conditioning_data_dir] + sorted({os.path.join(config.conditioning_data_dir,
                                                                   os.path.basename(item.concept.folder))
                                                      for item in items})
    unused = sorted(os.path.relpath(os.path.join(place, name), config.conditioning_data_dir)
                    for place in places if os.path.isdir(place) for name in os.listdir(place)
                    if is_image_file(name) and os.path.abspath(os.path.join(place, name)) not in used)
    if not unused:
        return []
    return [f"conditioning_data_dir {config.conditioning_data_dir}: masks of no training image, not used "
            f"({len(unused)}): {', '.join(unused)}"]
