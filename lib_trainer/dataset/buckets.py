"""Aspect-ratio bucketing, with kohya's rules.

A bucket is a (width, height) whose area is at most the training resolution's area, both
sides multiples of `bucket_reso_steps`. Each image goes to the bucket with the closest
aspect ratio, is resized to cover it, then cropped to it. With `bucket_no_upscale` the
bucket comes from the image's own size instead (kohya's rule, see `_place_without_upscale`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class BucketSettings:
    resolution: tuple[int, int] = (512, 512)
    enable_bucket: bool = True
    min_bucket_reso: int = 256
    max_bucket_reso: int = 1024
    bucket_reso_steps: int = 64
    bucket_no_upscale: bool = False

    @property
    def max_area(self) -> int:
        return self.resolution[0] * self.resolution[1]


@dataclass(frozen=True)
class Placement:
    """Where an image goes: its bucket and the size it is resized to before cropping."""
    bucket: tuple[int, int]
    resized: tuple[int, int]


def bucket_resolutions(settings: BucketSettings) -> list[tuple[int, int]]:
    """All buckets: the square one, and every width from min to max with the tallest height
    that keeps the area within the resolution's."""
    step, low, high = settings.bucket_reso_steps, settings.min_bucket_reso, settings.max_bucket_reso
    side = int(math.sqrt(settings.max_area) // step) * step
    buckets = {(side, side)}
    width = low
    while width <= high:
        height = min(high, int(settings.max_area // width // step) * step)
        if height >= low:
            buckets.add((width, height))
            buckets.add((height, width))
        width += step
    return sorted(buckets)


class BucketAssigner:
    def __init__(self, settings: BucketSettings) -> None:
        self.settings = settings
        self.buckets = bucket_resolutions(settings) if settings.enable_bucket else [settings.resolution]
        self.ratios = [w / h for w, h in self.buckets]

    def place(self, size: tuple[int, int]) -> Placement:
        width, height = size
        if not self.settings.enable_bucket:
            return Placement(self.settings.resolution, _cover(size, self.settings.resolution))
        if self.settings.bucket_no_upscale:
            return self._place_without_upscale(size)
        ratio = width / height
        index = min(range(len(self.ratios)), key=lambda i: abs(self.ratios[i] - ratio))
        bucket = self.buckets[index]
        return Placement(bucket, _cover(size, bucket))

    def _place_without_upscale(self, size: tuple[int, int]) -> Placement:
        """kohya's `BucketManager.select_bucket` with `no_upscale` (sd-scripts
        library/train_util.py): an image within the area limit keeps its size and is only
        cropped to the step; a larger one is shrunk to the area limit at its own ratio, with
        whichever side rounded to the step gives the closer aspect ratio. So small images are
        never enlarged, and the bucket is always cut out of the resized image."""
        width, height = size
        if width * height > self.settings.max_area:
            resized = self._shrink_to_area(width / height)
        else:
            resized = size  # no resize at all: cropped to the bucket below
        step = self.settings.bucket_reso_steps
        # max(step, ...) only guards sides below one step, which kohya would turn into 0.
        bucket = (max(step, resized[0] - resized[0] % step), max(step, resized[1] - resized[1] % step))
        return Placement(bucket, (max(bucket[0], resized[0]), max(bucket[1], resized[1])))

    def _shrink_to_area(self, ratio: float) -> tuple[int, int]:
        """The size at `ratio` with the area limit, one side a multiple of the step: the exact
        size is sqrt(area * ratio) x area / width; kohya rounds either the width or the height
        to the step, derives the other side from the ratio, and keeps the closer ratio (the
        height on a tie)."""
        area = self.settings.max_area
        exact_width = math.sqrt(area * ratio)
        exact_height = area / exact_width
        width_first = self._round_to_step(exact_width)
        ratio_width_first = width_first / self._round_to_step(width_first / ratio)
        height_first = self._round_to_step(exact_height)
        ratio_height_first = self._round_to_step(height_first * ratio) / height_first
        if abs(ratio_width_first - ratio) < abs(ratio_height_first - ratio):
            return width_first, _round_half_up(width_first / ratio)
        return _round_half_up(height_first * ratio), height_first

    def _round_to_step(self, value: float) -> int:
        """kohya's round_to_steps: round to the nearest pixel, then down to the step."""
        pixels = _round_half_up(value)
        return pixels - pixels % self.settings.bucket_reso_steps


def _round_half_up(value: float) -> int:
    """int(x + 0.5), as kohya rounds sizes (Python's round() would round 0.5 to even)."""
    return int(value + 0.5)


def _cover(size: tuple[int, int], bucket: tuple[int, int]) -> tuple[int, int]:
    """The smallest size with the image's aspect ratio that covers the bucket."""
    width, height = size
    scale = max(bucket[0] / width, bucket[1] / height)
    return max(bucket[0], _round_half_up(width * scale)), max(bucket[1], _round_half_up(height * scale))
