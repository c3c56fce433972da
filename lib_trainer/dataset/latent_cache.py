"""Latents of every training image, encoded once by the VAE.

`cache_latents` keeps them in memory; `cache_latents_to_disk` also writes one `.npz` per
image (next to it, or in `latents_cache_dir`, named after the whole file name so that
`a.png` and `a.jpg` never share one) and reuses it in later runs. Each entry
carries a key made of the image's content hash, the VAE's fingerprint and the bucket
placement, so a changed image, another VAE or another bucket re-encodes instead of
training on stale latents. Flip augmentation caches both orientations. Loss masks
(dataset/masks.py), at the latents' size, are cached beside them; a flipped mask is the
mask mirrored.
"""
from __future__ import annotations

import hashlib
import io
import os
import zipfile
from typing import Callable, Iterable

import numpy as np
import torch

from ..fileio import write_bytes_atomic
from ..progress import Progress
from .pixels import crop_box, load_pixels
from .training_set import Example

CACHE_SUFFIX = ".lib_trainer.npz"


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class LatentCache:
    def __init__(self, encode: Callable[[torch.Tensor], torch.Tensor], vae_fingerprint: str, flip_aug: bool,
                 to_disk: bool = False, cache_dir: str = "", interpolation: str = "", masks=None) -> None:
        self.encode = encode  # (B, 3, H, W) pixels in [-1, 1] -> (B, C, h, w) scaled latents
        self.vae_fingerprint = vae_fingerprint
        self.flip_aug = flip_aug
        self.to_disk = to_disk
        self.cache_dir = cache_dir
        self.interpolation = interpolation  # resize_interpolation
        self.masks = masks  # a masks.MaskSource, or None
        self.latents: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self.loss_masks: dict[str, torch.Tensor] = {}
        self.reused_from_disk = 0

    def key(self, example: Example) -> str:
        p = example.placement
        mask = f"|{self.masks.key(example.path)}" if self.masks is not None else ""
        return (f"{file_sha256(example.path)}|vae={self.vae_fingerprint}|bucket={p.bucket}|resized={p.resized}"
                f"|flip={self.flip_aug}|resize={self.interpolation or 'auto'}{mask}")

    def disk_path(self, path: str) -> str:
        """`a.png` -> `a.png.lib_trainer.npz`: the extension stays in the name because a
        folder may hold `a.png` and `a.jpg`, two images that need two caches."""
        if not self.cache_dir:
            return path + CACHE_SUFFIX
        folder_tag = hashlib.sha1(os.path.abspath(os.path.dirname(path)).encode()).hexdigest()[:10]
        return os.path.join(self.cache_dir, f"{os.path.basename(path)}.{folder_tag}{CACHE_SUFFIX}")

    def fill(self, examples: Iterable[Example], progress: Progress) -> None:
        unique = {e.path: e for e in examples}
        progress.start("caching latents", len(unique))
        for done, example in enumerate(unique.values(), 1):
            if example.path not in self.latents:
                self.latents[example.path], mask = self._load_or_encode(example, progress)
                if mask is not None:
                    self.loss_masks[example.path] = mask
            progress.step(done)
            if progress.stop_requested:
                break
        progress.end()

    def get(self, example: Example, flip: bool) -> torch.Tensor:
        plain, flipped = self.latents[example.path]
        return flipped if flip and flipped is not None else plain

    def get_mask(self, example: Example, flip: bool) -> torch.Tensor:
        """The (1, h, w) loss mask, mirrored with the flipped latents."""
        mask = self.loss_masks[example.path]
        return mask.flip(-1) if flip else mask

    def _load_or_encode(self, example: Example, progress: Progress):
        """((latents, flipped latents or None), loss mask or None)."""
        key = self.key(example) if self.to_disk else ""
        if self.to_disk:
            cached = self._read(self.disk_path(example.path), key, progress)
            if cached is not None and (self.masks is None or cached[1] is not None):
                self.reused_from_disk += 1
                return cached
        left_top = crop_box(example.placement, random_crop=False, rng=None)
        orientations = [False, True] if self.flip_aug else [False]
        pixels = torch.stack([load_pixels(example.path, example.placement, left_top, flip, self.interpolation)
                              for flip in orientations])
        with torch.no_grad():
            encoded = self.encode(pixels).float().cpu()
        latents = (encoded[0], encoded[1] if self.flip_aug else None)
        mask = None
        if self.masks is not None:
            mask = self.masks.load(example.path, example.placement, left_top, False, tuple(encoded.shape[-2:]))
        if self.to_disk:
            self._write(self.disk_path(example.path), key, latents, mask)
        return latents, mask

    @staticmethod
    def _read(path: str, key: str, progress: Progress):
        """The cached latents, or None when they must be encoded again: no file, another key
        (image, VAE or bucket changed), or a file that cannot be read (empty or truncated by a
        crash or a full disk), which is said once in the log and then overwritten."""
        if not os.path.isfile(path):
            return None
        try:
            with np.load(path) as data:
                if str(data["key"]) != key:
                    return None
                flipped = torch.from_numpy(data["latents_flipped"]) if "latents_flipped" in data else None
                mask = torch.from_numpy(data["loss_mask"]) if "loss_mask" in data else None
                return (torch.from_numpy(data["latents"]), flipped), mask
        # np.load raises EOFError on an empty file and BadZipFile on a truncated one.
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            progress.status(f"latent cache {path} is unreadable ({type(error).__name__}: {error}); encoding again")
            return None

    @staticmethod
    def _write(path: str, key: str, latents: tuple[torch.Tensor, torch.Tensor | None],
               mask: torch.Tensor | None = None) -> None:
        arrays = {"key": np.array(key), "latents": latents[0].numpy()}
        if latents[1] is not None:
            arrays["latents_flipped"] = latents[1].numpy()
        if mask is not None:
            arrays["loss_mask"] = mask.numpy()
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        write_bytes_atomic(path, buffer.getvalue())
