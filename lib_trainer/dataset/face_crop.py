"""face_crop_aug_range: crops centred on a face whose position the file name carries, the face
scaled anew each step, as sd-scripts' crop_target does (without buckets).

A name ending in `_cx_cy_w_h` (e.g. `img_412_300_96_120.png`, pixels of the original picture)
gives the face's centre and size; the face is scaled so that the crop's shorter side is
`low`..`high` times the face's larger side (never enlarging the picture beyond covering the
crop), and the crop is centred on the face, nudged at random.
"""
from __future__ import annotations

import os
import random

from .buckets import Placement

Face = tuple[int, int, int, int]  # centre x, centre y, width, height


def face_from_name(path: str) -> Face | None:
    """(cx, cy, w, h) from a name ending in four numbers after underscores, or None."""
    parts = os.path.splitext(os.path.basename(path))[0].split("_")
    if len(parts) < 5 or not all(part.isdigit() for part in parts[-4:]):
        return None
    face = tuple(int(part) for part in parts[-4:])
    return face if face[0] > 0 else None  # kohya treats a centre x of 0 as "no face"


def face_view(size: tuple[int, int], target: tuple[int, int], face: Face, crop_range: tuple[float, float],
              random_crop: bool, rng: random.Random) -> tuple[Placement, tuple[int, int]]:
    """(where the picture is resized to, the crop's top-left corner) for one step."""
    (width, height), (target_w, target_h) = size, target
    cx, cy, face_w, face_h = face
    face_side = max(face_w, face_h, 1)
    short = min(target_w, target_h)
    cover = max(target_w / width, target_h / height)
    low = max(cover, min(1.0, max(cover, short / (face_side * crop_range[1]))))
    high = max(low, min(1.0, max(low, short / (face_side * crop_range[0]))))
    scale = low if low >= high else rng.uniform(low, high)
    resized = (max(target_w, int(width * scale + 0.5)), max(target_h, int(height * scale + 0.5)))
    corner = []
    # kohya goes height first, then width: the order of the random draws.
    for target_side, length, centre in ((target_h, resized[1], int(cy * scale + 0.5)),
                                        (target_w, resized[0], int(cx * scale + 0.5))):
        start = centre - target_side // 2
        if random_crop:  # around the face, more often near it, so the background is seen too
            reach = max(length - centre, centre)
            start += rng.randint(0, reach) + rng.randint(0, reach) - reach
        elif crop_range[0] != crop_range[1] and face_side > short // 10 and face_side >= 40:
            start += rng.randint(-face_side // 20, face_side // 20)
        corner.append(max(0, min(start, length - target_side)))
    return Placement(target, resized), (corner[1], corner[0])
