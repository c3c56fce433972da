"""Geometry of preprocessing: target sizes (fixed, nearest bucket, auto within an area
range), cropping around a point, and splitting very long pictures into overlapping tiles.

Crop modes are a registry: a name maps to a function (image, target size, settings) ->
CropResult, so a new mode is one function and one line.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from PIL import Image

from .focal import FocalResult, FocalSettings, Point, find_focal_point
from ..errors import InvalidInput


@dataclass
class CropResult:
    image: Image.Image
    box: tuple[int, int, int, int]  # in the coordinates of the resized picture
    resized: Image.Image  # the picture scaled to cover the target, before cropping
    focal: FocalResult | None = None


# --- target sizes --------------------------------------------------------------------------
def auto_size(width: int, height: int, min_area: int, max_area: int, step: int = 64) -> tuple[int, int]:
    """A size on the `step` grid with area in [min_area, max_area], as close as it can be
    to the picture's aspect ratio and to its own area (clamped into that range)."""
    if min_area > max_area:
        raise InvalidInput(f"min area {min_area} is larger than max area {max_area}")
    aspect = width / height
    area = min(max(width * height, min_area), max_area)
    ideal_width = math.sqrt(area * aspect)
    candidates = []
    for w in range(max(step, int(ideal_width // step - 2) * step), int(ideal_width // step + 3) * step, step):
        h = max(step, round(w / aspect / step) * step)
        if min_area <= w * h <= max_area:
            # Aspect errors weigh double: a distorted crop is worse than a slightly smaller one.
            candidates.append((abs(math.log(w / h / aspect)) + 0.5 * abs(math.log(w * h / area)), w, h))
    if not candidates:  # a range narrower than one grid step: round down and accept the error
        scale = math.sqrt(area / (width * height))
        return max(step, int(width * scale) // step * step), max(step, int(height * scale) // step * step)
    return min(candidates)[1:]


# --- cropping ------------------------------------------------------------------------------
def cover_resize(image: Image.Image, target: tuple[int, int]) -> Image.Image:
    """Scale so the picture covers `target` entirely (one side exact, the other >=)."""
    scale = max(target[0] / image.width, target[1] / image.height)
    size = (max(target[0], round(image.width * scale)), max(target[1], round(image.height * scale)))
    return image if size == image.size else image.resize(size, Image.LANCZOS)


def box_around(point: Point, size: tuple[int, int], target: tuple[int, int]) -> tuple[int, int, int, int]:
    """A `target`-sized box centred on `point`, pushed back inside a picture of `size`."""
    left = min(max(0, round(point.x - target[0] / 2)), size[0] - target[0])
    top = min(max(0, round(point.y - target[1] / 2)), size[1] - target[1])
    return left, top, left + target[0], top + target[1]


def crop_focal(image: Image.Image, target: tuple[int, int], settings: FocalSettings) -> CropResult:
    resized = cover_resize(image, target)
    focal = find_focal_point(resized, target, settings)
    box = box_around(focal.point, resized.size, target)
    return CropResult(resized.crop(box), box, resized, focal)


def crop_center(image: Image.Image, target: tuple[int, int], settings: FocalSettings) -> CropResult:
    resized = cover_resize(image, target)
    box = box_around(Point(resized.width / 2, resized.height / 2), resized.size, target)
    return CropResult(resized.crop(box), box, resized)


def resize_only(image: Image.Image, target: tuple[int, int], settings: FocalSettings) -> CropResult:
    """Stretch to the target; for users whose pictures already have the right shape."""
    resized = image.resize(target, Image.LANCZOS) if image.size != target else image
    return CropResult(resized, (0, 0) + target, resized)


CROP_MODES: dict[str, Callable[[Image.Image, tuple[int, int], FocalSettings], CropResult]] = {
    "focal": crop_focal,
    "center": crop_center,
    "resize": resize_only,
}


# --- splitting -----------------------------------------------------------------------------
def kept_fraction(size: tuple[int, int], target: tuple[int, int]) -> float:
    """How much of the picture one crop to `target`'s shape keeps (1.0: same shape)."""
    ratio = (size[0] / size[1]) / (target[0] / target[1])
    return min(ratio, 1 / ratio)


def needs_split(size: tuple[int, int], target: tuple[int, int], threshold: float = 0.5) -> bool:
    """True when one crop would lose more than `threshold` of the picture."""
    return kept_fraction(size, target) < 1 - threshold


def split_tiles(image: Image.Image, target: tuple[int, int], overlap: float = 0.2) -> list[Image.Image]:
    """Cut a long picture into overlapping `target`-sized tiles along its long side.

    The picture is scaled to cover the target; tiles are spread evenly so that neighbours
    share at least `overlap` of a tile and the first and last tiles touch the edges.
    """
    if not 0 <= overlap < 1:
        raise InvalidInput(f"overlap must be in [0, 1), not {overlap}")
    resized = cover_resize(image, target)
    horizontal = resized.width > target[0]
    length, tile = (resized.width, target[0]) if horizontal else (resized.height, target[1])
    if length <= tile:
        return [resized.crop((0, 0) + target)]
    count = max(2, math.ceil((length - tile * overlap) / (tile * (1 - overlap))))
    starts = [round(i * (length - tile) / (count - 1)) for i in range(count)]
    boxes = [(s, 0, s + target[0], target[1]) if horizontal else (0, s, target[0], s + target[1]) for s in starts]
    return [resized.crop(box) for box in boxes]
