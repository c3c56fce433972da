"""Aspect-ratio bucketing, with kohya's rules.

A bucket is a (width, height) whose area is at most the training resolution's area, both
sides multiples of `bucket_reso_steps`. Each image goes to the bucket with the closest
aspect ratio, is resized to cover it, then cropped to it.
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
        """The bucket is the image itself (shrunk to the area limit if larger), rounded down
        to the step; so small images are never enlarged."""
        width, height = size
        step = self.settings.bucket_reso_steps
        if width * height > self.settings.max_area:
            # kohya's form: sqrt(area * ratio) is exact for a square (512, not 511.99...),
            # so a large square image is not pushed down into the next smaller bucket.
            width = math.sqrt(self.settings.max_area * width / height)
            height = self.settings.max_area / width
        bucket = (max(step, int(width // step) * step), max(step, int(height // step) * step))
        return Placement(bucket, _cover(size, bucket))


def _cover(size: tuple[int, int], bucket: tuple[int, int]) -> tuple[int, int]:
    """The smallest size with the image's aspect ratio that covers the bucket."""
    width, height = size
    scale = max(bucket[0] / width, bucket[1] / height)
    return max(bucket[0], round(width * scale)), max(bucket[1], round(height * scale))
