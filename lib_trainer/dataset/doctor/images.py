"""Per-image measurements and their findings: size against the training resolution, blur,
exposure, alpha, EXIF rotation.

Each picture is read once, with the project's own loading rules (EXIF rotation, 16-bit
greyscale, transparency), at about the size it trains at (never enlarged, at most
ANALYSIS_SIDE px), and turned into a few numbers and two perceptual hashes.
"""
from __future__ import annotations

import hashlib
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

from ..buckets import Placement
from ..images import ImageReadError, eight_bit, flatten, has_transparency
from .duplicates import dhash, phash
from .report import FINE, LOOK, PROBLEM, Finding

ANALYSIS_SIDE = 512  # longest side the measurements are made at
UPSCALE_PROBLEM = 1.5  # enlarged more than this: soft, the network learns the blur
DARK, BRIGHT, FLAT = 40.0, 235.0, 12.0  # mean grey level, and its standard deviation (0..255)
BLUR_FACTOR = 3.0  # sharper images than this many times the folder's typical one are not flagged
BLUR_MIN_IMAGES = 5  # fewer: no folder spread to compare with


@dataclass
class ImageStats:
    path: str
    size: tuple[int, int]  # as displayed (after EXIF rotation)
    placement: Placement
    sharpness: float  # variance of the Laplacian over that of the gradient (see sharpness())
    brightness: float
    contrast: float
    alpha: bool  # some pixel is (partly) transparent
    orientation: int  # EXIF orientation tag, 1 = upright
    dhash: int
    phash: int
    pixels_digest: str  # same pixels at the analysis size: an exact duplicate

    @property
    def scale(self) -> float:
        """How much the trainer enlarges the picture (below 1: shrinks it)."""
        return max(self.placement.resized[0] / self.size[0], self.placement.resized[1] / self.size[1])


def measure(path: str, placement: Placement) -> ImageStats:
    try:
        with Image.open(path) as image:
            orientation = int(image.getexif().get(0x0112, 1) or 1)
            width, height = image.size
            size = (height, width) if orientation in (5, 6, 7, 8) else (width, height)
            if image.format == "JPEG":  # decode at a fraction of the size: the measurement is made smaller
                image.draft("RGB", (max(1, image.width * ANALYSIS_SIDE // max(image.size)),
                                    max(1, image.height * ANALYSIS_SIDE // max(image.size))))
            image.load()
            picture = eight_bit(ImageOps.exif_transpose(image))
    except Exception as error:  # PIL raises many types for broken files
        raise ImageReadError(f"{path}: cannot read image ({error}); remove or re-save it") from error
    alpha = False
    if has_transparency(picture):
        alpha = picture.convert("RGBA").getextrema()[3][0] < 255
    grey_image = flatten(picture).convert("L")
    grey_image = grey_image.resize(_analysis_size(size, placement), Image.BILINEAR)
    grey = np.asarray(grey_image, dtype=np.float32)
    return ImageStats(path, size, placement, sharpness(grey), float(grey.mean()), float(grey.std()), alpha,
                      orientation, dhash(grey_image), phash(grey_image),
                      hashlib.sha1(grey.tobytes() + repr(size).encode()).hexdigest())


def _analysis_size(size: tuple[int, int], placement: Placement) -> tuple[int, int]:
    """The size it trains at, but never enlarged (an enlarged picture is reported as such) and
    at most ANALYSIS_SIDE on its longest side."""
    scale = min(1.0, placement.resized[0] / size[0], ANALYSIS_SIDE / max(size))
    return max(8, round(size[0] * scale)), max(8, round(size[1] * scale))


def sharpness(grey: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian over the variance of the gradient. Both grow with
    the number and contrast of the edges, so their ratio depends on how sharp the edges are
    rather than on how many there are: blurring an edge by s pixels divides it by about s^2."""
    laplacian = (grey[1:-1, :-2] + grey[1:-1, 2:] + grey[:-2, 1:-1] + grey[2:, 1:-1] - 4 * grey[1:-1, 1:-1])
    gradient = np.square(np.diff(grey, axis=0)).mean() + np.square(np.diff(grey, axis=1)).mean()
    return float(laplacian.var()) / float(gradient) if gradient > 1e-6 else 0.0


def measure_all(items: list[tuple[str, Placement]]) -> list[ImageStats | ImageReadError]:
    """`measure` each (path, placement) in a few threads (PIL and numpy work outside the GIL)."""
    def one(item):
        try:
            return measure(*item)
        except ImageReadError as error:
            return error

    if len(items) < 8:
        return [one(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        return list(pool.map(one, items))


def image_findings(stats: list[ImageStats], resolution: tuple[int, int]) -> list[Finding]:
    found: list[Finding] = []
    for s in stats:
        found += _size_findings(s, resolution)
        found += _exposure_findings(s)
        if s.alpha:
            found.append(Finding(LOOK, "alpha", f"{_name(s)} has transparent areas: they train as white",
                                 "if the background matters, flatten it yourself on the colour you want",
                                 [s.path]))
        if s.orientation != 1:
            found.append(Finding(FINE, "EXIF rotation", f"{_name(s)} is rotated by its EXIF tag "
                                 f"(orientation {s.orientation}): it trains upright, as viewers show it",
                                 "nothing to do", [s.path]))
    found += blur_findings(stats)
    return found


def _size_findings(s: ImageStats, resolution: tuple[int, int]) -> list[Finding]:
    if s.scale <= 1.05:
        return []
    severity = PROBLEM if s.scale > UPSCALE_PROBLEM else LOOK
    return [Finding(severity, "upscaled",
                    f"{_name(s)} is {s.size[0]}x{s.size[1]}: enlarged {s.scale:.1f}x to fill its "
                    f"{s.placement.bucket[0]}x{s.placement.bucket[1]} bucket at resolution {resolution[0]}",
                    f"use a source of at least {s.placement.resized[0]}x{s.placement.resized[1]} (sources about "
                    "twice the training resolution are best), or leave it out", [s.path], data={"scale": s.scale})]


def _exposure_findings(s: ImageStats) -> list[Finding]:
    if s.brightness < DARK:
        what = f"very dark (mean level {s.brightness:.0f} of 255)"
    elif s.brightness > BRIGHT:
        what = f"very bright (mean level {s.brightness:.0f} of 255)"
    elif s.contrast < FLAT:
        what = f"low in contrast (levels spread {s.contrast:.0f} of 255)"
    else:
        return []
    return [Finding(LOOK, "exposure", f"{_name(s)} is {what}: the network learns the lighting too",
                    "replace it with a normally lit picture, or tag the lighting (dark, backlighting...)",
                    [s.path], data={"brightness": s.brightness, "contrast": s.contrast})]


def blur_findings(stats: list[ImageStats]) -> list[Finding]:
    """Pictures much less sharp than the folder's own typical one: below the median by more
    than three robust standard deviations (of the log sharpness) and BLUR_FACTOR times."""
    if len(stats) < BLUR_MIN_IMAGES:
        return []
    logs = np.log([max(s.sharpness, 1e-9) for s in stats])
    median = float(np.median(logs))
    spread = 1.4826 * float(np.median(np.abs(logs - median)))
    limit = median - max(3 * spread, math.log(BLUR_FACTOR))
    found = []
    for s, value in zip(stats, logs):
        if value < limit:
            times = math.exp(median - value)
            found.append(Finding(PROBLEM, "blur", f"{_name(s)} is {times:.0f}x less sharp than this folder's "
                                 "typical picture (variance of the Laplacian against the gradient's)",
                                 "replace it with a sharp version, or leave it out", [s.path],
                                 data={"sharpness": s.sharpness, "times": times}))
    return found


def _name(s: ImageStats) -> str:
    return os.path.basename(s.path)
