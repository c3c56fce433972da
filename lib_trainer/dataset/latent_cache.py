"""Latents of every training image, encoded once by the VAE.

`cache_latents` keeps them in memory; `cache_latents_to_disk` also writes one `.npz` per
image (next to it, or in `latents_cache_dir`, named after the whole file name so that
`a.png` and `a.jpg` never share one) and reuses it in later runs. Each entry
carries a key made of the image's content hash, the VAE's fingerprint and the bucket
placement, so a changed image, another VAE or another bucket re-encodes instead of
training on stale latents. Flip augmentation caches both orientations. Loss masks
(dataset/masks.py), at the latents' size, are cached beside them; a flipped mask is the
mask mirrored.

`vae_batch_size` images of one bucket are encoded together (sd-scripts' option): faster on
a GPU, more memory. Unless highvram is set, CUDA's cached memory is freed after each batch
(the `after_batch` hook), as sd-scripts does without it.
"""
from __future__ import annotations

import hashlib
import io
import os
import zipfile
from typing import Callable, Iterable, Iterator

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
                 to_disk: bool = False, cache_dir: str = "", interpolation: str = "", masks=None,
                 batch_size: int = 1, after_batch: Callable[[], None] | None = None) -> None:
        self.encode = encode  # (B, 3, H, W) pixels in [-1, 1] -> (B, C, h, w) scaled latents
        self.batch_size = batch_size
        self.after_batch = after_batch
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
        done, to_encode = 0, []
        for example in unique.values():
            cached = self._from_disk(example, progress) if example.path not in self.latents else None
            if cached is None:
                if example.path not in self.latents:
                    to_encode.append(example)
                continue
            self._keep(example, *cached)
            done += 1
            progress.step(done)
        for batch in batches_by_bucket(to_encode, self.batch_size):
            if progress.stop_requested:
                break
            for example, (latents, mask) in zip(batch, self._encode_batch(batch)):
                self._keep(example, latents, mask)
                if self.to_disk:
                    self._write(self.disk_path(example.path), self.key(example), latents, mask)
            if self.after_batch is not None:
                self.after_batch()
            done += len(batch)
            progress.step(done)
        progress.end()

    def _keep(self, example: Example, latents: tuple[torch.Tensor, torch.Tensor | None],
              mask: torch.Tensor | None) -> None:
        self.latents[example.path] = latents
        if mask is not None:
            self.loss_masks[example.path] = mask

    def get(self, example: Example, flip: bool) -> torch.Tensor:
        plain, flipped = self.latents[example.path]
        return flipped if flip and flipped is not None else plain

    def get_mask(self, example: Example, flip: bool) -> torch.Tensor:
        """The (1, h, w) loss mask, mirrored with the flipped latents."""
        mask = self.loss_masks[example.path]
        return mask.flip(-1) if flip else mask

    def _from_disk(self, example: Example, progress: Progress):
        """((latents, flipped latents or None), loss mask or None) from the disk cache, or None."""
        if not self.to_disk:
            return None
        cached = self._read(self.disk_path(example.path), self.key(example), progress)
        if cached is None or (self.masks is not None and cached[1] is None):
            return None
        self.reused_from_disk += 1
        return cached

    def _encode_batch(self, batch: list[Example]):
        """One VAE call for the batch's images (each in both orientations with flip_aug); for
        each, ((latents, flipped latents or None), loss mask or None)."""
        orientations = [False, True] if self.flip_aug else [False]
        corners = [crop_box(e.placement, random_crop=False, rng=None) for e in batch]
        pixels = torch.stack([load_pixels(e.path, e.placement, corner, flip, self.interpolation)
                              for e, corner in zip(batch, corners) for flip in orientations])
        with torch.no_grad():
            encoded = self.encode(pixels).float().cpu()
        results = []
        for example, corner, latents in zip(batch, corners, encoded.split(len(orientations))):
            mask = None
            if self.masks is not None:
                mask = self.masks.load(example.path, example.placement, corner, False, tuple(latents.shape[-2:]))
            results.append(((latents[0], latents[1] if self.flip_aug else None), mask))
        return results

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


def batches_by_bucket(examples: list[Example], size: int) -> Iterator[list[Example]]:
    """Up to `size` examples of one bucket at a time (one tensor shape), in the order given as
    far as each bucket's batch allows."""
    open_batches: dict[tuple[int, int], list[Example]] = {}
    for example in examples:
        batch = open_batches.setdefault(tuple(example.placement.bucket), [])
        batch.append(example)
        if len(batch) >= size:
            yield open_batches.pop(tuple(example.placement.bucket))
    yield from open_batches.values()
