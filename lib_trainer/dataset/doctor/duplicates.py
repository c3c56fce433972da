"""Exact and near duplicates by perceptual hashes, and setting one of a pair aside.

Two 64-bit hashes of the grey picture, each robust to resizing, re-compression and small
colour changes:
- dHash: the picture at 9x8; bit = whether each pixel is brighter than its right neighbour.
- pHash: the picture at 32x32; its 2-D DCT-II; the 8x8 lowest frequencies without the
  constant term; bit = whether each coefficient is above their median.
A pair is near-duplicate when both hashes are within a few bits (needing both keeps
different pictures of a plain background from matching by one hash's chance).
Nothing is deleted: "keep one" moves the other picture and its caption to `_set_aside/`
inside its concept folder, which neither the trainer nor kohya reads (they do not recurse).
"""
from __future__ import annotations

import functools
import os

import numpy as np
from PIL import Image

from ...errors import InvalidInput
from .report import LOOK, PROBLEM, Finding

PHASH_NEAR, DHASH_NEAR = 10, 12  # of 64 bits
SET_ASIDE = "_set_aside"


def dhash(grey: Image.Image) -> int:
    small = np.asarray(grey.convert("L").resize((9, 8), Image.BILINEAR), dtype=np.int16)
    return _bits(small[:, 1:] > small[:, :-1])


@functools.lru_cache(maxsize=1)
def _dct_matrix(n: int = 32) -> np.ndarray:
    """Orthonormal DCT-II: C[k, i] = a(k) cos(pi (2i + 1) k / 2n)."""
    k, i = np.arange(n)[:, None], np.arange(n)[None, :]
    matrix = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2 / n)
    matrix[0] /= np.sqrt(2)
    return matrix


def phash(grey: Image.Image) -> int:
    pixels = np.asarray(grey.convert("L").resize((32, 32), Image.BILINEAR), dtype=np.float64)
    dct = _dct_matrix() @ pixels @ _dct_matrix().T
    low = dct[:8, :8].flatten()[1:]  # without the constant (mean brightness) term
    return _bits(np.concatenate([[False], low > np.median(low)]))


def _bits(flags: np.ndarray) -> int:
    value = 0
    for flag in np.asarray(flags).flatten():
        value = (value << 1) | int(flag)
    return value


def hamming_matrix(hashes: list[int]) -> np.ndarray:
    """Bit distances between every pair of 64-bit hashes, (n, n)."""
    packed = np.array(hashes, dtype=np.uint64).view(np.uint8).reshape(len(hashes), 8)
    distances = np.zeros((len(hashes), len(hashes)), dtype=np.int16)
    for row in range(0, len(hashes), 256):  # in blocks: memory stays small for large folders
        block = packed[row:row + 256, None, :] ^ packed[None, :, :]
        distances[row:row + 256] = np.unpackbits(block, axis=2).sum(axis=2)
    return distances


def duplicate_findings(stats) -> list[Finding]:
    """Exact (same pixels) and near pairs among ImageStats, each pair once, closest first."""
    if len(stats) < 2:
        return []
    near_p, near_d = hamming_matrix([s.phash for s in stats]), hamming_matrix([s.dhash for s in stats])
    found = []
    first, second = np.nonzero(np.triu((near_p <= PHASH_NEAR) & (near_d <= DHASH_NEAR), k=1))
    order = sorted(zip(first.tolist(), second.tolist()), key=lambda ij: (int(near_p[ij]), ij))
    for i, j in order:
        a, b = stats[i], stats[j]
        names = f"{os.path.basename(a.path)} and {os.path.basename(b.path)}"
        if a.pixels_digest == b.pixels_digest:
            found.append(Finding(PROBLEM, "exact duplicate", f"{names} are the same picture: it trains twice as often",
                                 "keep one: set the other aside", [a.path, b.path]))
        else:
            found.append(Finding(LOOK, "near duplicate", f"{names} are nearly the same picture (hash distance "
                                 f"{int(near_p[i, j])} of 64)", "keep the better one: set the other aside",
                                 [a.path, b.path], data={"distance": int(near_p[i, j])}))
    return found


def set_aside(paths: list[str], caption_extension: str = ".txt") -> list[str]:
    """Move each picture and its caption to `_set_aside/` in its folder (a name taken there gets
    a -2, -3... suffix). Only call it on the user's confirmation. Returns the new paths."""
    from ..images import is_image_file

    moved = []
    for path in paths:
        if not os.path.isfile(path) or not is_image_file(path):
            raise InvalidInput(f"{path}: not a picture in the dataset; nothing was moved")
    for path in paths:
        folder = os.path.join(os.path.dirname(path), SET_ASIDE)
        os.makedirs(folder, exist_ok=True)
        stem, extension = os.path.splitext(os.path.basename(path))
        target_stem, counter = stem, 1
        while any(os.path.exists(os.path.join(folder, target_stem + e)) for e in (extension, caption_extension)):
            counter += 1
            target_stem = f"{stem}-{counter}"
        target = os.path.join(folder, target_stem + extension)
        os.replace(path, target)
        caption = os.path.splitext(path)[0] + caption_extension
        if os.path.isfile(caption):
            os.replace(caption, os.path.join(folder, target_stem + caption_extension))
        moved.append(target)
    return moved
