"""Where the subject is: a focal point from faces, entropy and edges, mixed by user weights.

Behaves like the WebUI's autocrop (modules/textual_inversion/autocrop.py): each enabled
method gives candidate points, each method's centroid is weighted by its share of the
weights of the methods that found something, and the weighted average is the focal point.
Differences, on purpose: entropy and edges are plain numpy (so they work without OpenCV);
faces come from a registry of detectors tried in order (YuNet when its model file is
present, then OpenCV's bundled Haar cascades), and a detector that fails or is missing
hands over to the next one with a warning instead of stopping the batch.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

from ..dataset.images import flatten_on_white
from ..errors import UserError

# The analysis runs on a copy this size at most: faster, and the result is scaled back.
ANALYSIS_SIDE = 768


@dataclass
class Point:
    x: float
    y: float
    weight: float = 1.0


@dataclass
class FocalSettings:
    face_weight: float = 0.9  # the WebUI's defaults
    entropy_weight: float = 0.15
    edges_weight: float = 0.5
    face_detectors: tuple[str, ...] = ("yunet", "haar")
    yunet_model: str | None = None  # path to face_detection_yunet_*.onnx


@dataclass
class FocalResult:
    point: Point
    parts: dict[str, tuple[Point, list[Point]]] = field(default_factory=dict)  # method -> (centroid, points)
    warnings: list[str] = field(default_factory=list)


# --- faces -------------------------------------------------------------------------------
class DetectorUnavailable(UserError, RuntimeError):
    """The detector cannot run here (package or model file missing)."""


def _cv2():
    try:
        import cv2
    except ImportError as error:
        raise DetectorUnavailable("OpenCV is not installed (pip install opencv-python-headless); "
                                  "face detection is off, entropy and edges still work") from error
    return cv2


def detect_yunet(rgb: np.ndarray, settings: FocalSettings) -> list[Point]:
    if not settings.yunet_model or not os.path.isfile(settings.yunet_model):
        raise DetectorUnavailable(f"YuNet model file not found: {settings.yunet_model}")
    cv2 = _cv2()
    height, width = rgb.shape[:2]
    detector = cv2.FaceDetectorYN.create(settings.yunet_model, "", (width, height), 0.9, 0.3, 5000)
    _, faces = detector.detect(np.ascontiguousarray(rgb[:, :, ::-1]))
    if faces is None:
        return []
    # Aim a third of the way down the face box: eyes, not chin (as the WebUI does).
    return [Point(x + w * 0.5, y + h * 0.33, 1.0 / len(faces)) for x, y, w, h in faces[:, :4]]


_HAAR_CASCADES = (("haarcascade_frontalface_default.xml", 0.05), ("haarcascade_profileface.xml", 0.05),
                  ("haarcascade_frontalface_alt.xml", 0.05), ("haarcascade_frontalface_alt2.xml", 0.05))


def detect_haar(rgb: np.ndarray, settings: FocalSettings) -> list[Point]:
    cv2 = _cv2()
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    for name, min_fraction in _HAAR_CASCADES:
        classifier = cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades, name))
        if classifier.empty():
            raise DetectorUnavailable(f"OpenCV has no bundled cascade {name} (OpenCV 5 dropped them)")
        side = max(1, int(min(gray.shape) * min_fraction))
        faces = classifier.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=7, minSize=(side, side))
        if len(faces):
            return [Point(x + w / 2, y + h / 2, 1.0 / len(faces)) for x, y, w, h in faces]
    return []


FACE_DETECTORS: dict[str, Callable[[np.ndarray, FocalSettings], list[Point]]] = {
    "yunet": detect_yunet,
    "haar": detect_haar,
}


def face_points(rgb: np.ndarray, settings: FocalSettings, warnings: list[str]) -> list[Point]:
    """The first detector that runs and finds faces wins; failures fall through with a warning."""
    for name in settings.face_detectors:
        detector = FACE_DETECTORS[name]
        try:
            points = detector(rgb, settings)
        except DetectorUnavailable as error:
            if name != "yunet" or settings.yunet_model:  # no YuNet file configured is normal
                warnings.append(f"face detector {name} unavailable: {error}")
            continue
        except Exception as error:  # an OpenCV error on one odd image must not stop the batch
            warnings.append(f"face detector {name} failed ({error}); trying the next method")
            continue
        if points:
            return points
    return []


# --- entropy and edges ---------------------------------------------------------------------
def _entropy(gray: np.ndarray) -> float:
    histogram = np.bincount(gray.ravel() >> 2, minlength=64).astype(np.float64)
    p = histogram[histogram > 0] / gray.size
    return float(-(p * np.log2(p)).sum())


def entropy_points(gray: np.ndarray, crop_size: tuple[int, int]) -> list[Point]:
    """Slide a window of the crop's shape along the long side; the most detailed window wins."""
    height, width = gray.shape
    crop_w, crop_h = crop_size
    scale = min(width / crop_w, height / crop_h)  # the crop window in analysis pixels
    window_w, window_h = max(1, int(crop_w * scale)), max(1, int(crop_h * scale))
    if window_w >= width and window_h >= height:
        return []  # the crop takes the whole picture: nothing to choose
    steps = 32
    boxes = [((width - window_w) * i // steps, (height - window_h) * i // steps) for i in range(steps + 1)]
    values = [_entropy(gray[y:y + window_h, x:x + window_w]) for x, y in boxes]
    if max(values) - min(values) < 1e-6:
        return []  # every window alike (a flat picture): entropy has no opinion
    x, y = boxes[values.index(max(values))]
    return [Point(x + window_w / 2, y + window_h / 2)]


def edge_points(gray: np.ndarray, grid: int = 16) -> list[Point]:
    """Centres of the grid cells with the strongest gradients, weighted by their strength."""
    values = gray.astype(np.float32)
    # The bottom tenth is flattened so watermarks and signatures do not pull the crop down.
    cut = int(values.shape[0] * 0.9)
    if cut > 0:
        values[cut:] = values[cut - 1]
    magnitude = np.abs(np.diff(values, axis=0))[:, :-1] + np.abs(np.diff(values, axis=1))[:-1, :]
    height, width = magnitude.shape
    if height < grid or width < grid:
        return []
    cells = magnitude[: height // grid * grid, : width // grid * grid]
    energy = cells.reshape(grid, height // grid, grid, width // grid).mean(axis=(1, 3))
    if energy.max() <= 1.0:  # flat picture: no edges worth following
        return []
    strong = np.argwhere(energy >= energy.max() * 0.5)
    cell_h, cell_w = height / grid, width / grid
    total = float(energy[tuple(strong.T)].sum())
    return [Point((c + 0.5) * cell_w, (r + 0.5) * cell_h, float(energy[r, c]) / total) for r, c in strong]


# --- mixing --------------------------------------------------------------------------------
def _centroid(points: list[Point]) -> Point:
    total = sum(p.weight for p in points) or 1.0
    return Point(sum(p.x * p.weight for p in points) / total, sum(p.y * p.weight for p in points) / total)


def find_focal_point(image: Image.Image, crop_size: tuple[int, int], settings: FocalSettings) -> FocalResult:
    """The focal point of `image` (in its own pixel coordinates) for a crop of `crop_size`."""
    scale = min(1.0, ANALYSIS_SIDE / max(image.size))
    small = flatten_on_white(image)  # transparent areas count as plain background
    if scale < 1.0:
        small = small.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BILINEAR)
    rgb = np.asarray(small)
    gray = np.asarray(small.convert("L"))
    warnings: list[str] = []
    methods = {
        "face": (settings.face_weight, lambda: face_points(rgb, settings, warnings)),
        "entropy": (settings.entropy_weight, lambda: entropy_points(gray, crop_size)),
        "edges": (settings.edges_weight, lambda: edge_points(gray)),
    }
    found = {name: compute() for name, (weight, compute) in methods.items() if weight > 0}
    found = {name: points for name, points in found.items() if points}
    total_weight = sum(methods[name][0] for name in found)
    parts = {}
    for name, points in found.items():
        centroid = _centroid(points)
        centroid.weight = methods[name][0] / total_weight
        parts[name] = (_rescale(centroid, scale), [_rescale(p, scale) for p in points])
    if parts:
        point = _centroid([centroid for centroid, _ in parts.values()])
    else:  # nothing stands out: the centre, like a plain centre crop
        point = Point(image.width / 2, image.height / 2)
    return FocalResult(point, parts, warnings)


def _rescale(point: Point, scale: float) -> Point:
    return Point(point.x / scale, point.y / scale, point.weight)


COLORS = {"face": "#F00", "entropy": "#FF0", "edges": "#00F"}


def draw_debug(image: Image.Image, result: FocalResult, box: tuple[int, int, int, int] | None) -> Image.Image:
    """A copy of `image` with each method's points and centroid, the focal point (green
    circle and cross) and the crop box (green rectangle)."""
    view = image.convert("RGB").copy()
    draw = ImageDraw.Draw(view)
    radius = max(4, min(view.size) * 0.04)
    for name, (centroid, points) in result.parts.items():
        for p in points:
            draw.rectangle([p.x - 2, p.y - 2, p.x + 2, p.y + 2], outline=COLORS[name])
        r = radius * (0.5 + centroid.weight)
        draw.ellipse([centroid.x - r, centroid.y - r, centroid.x + r, centroid.y + r], outline=COLORS[name], width=2)
        draw.text((centroid.x - r, centroid.y - r - 12), f"{name}: {centroid.weight:.2f}", fill=COLORS[name])
    p = result.point
    draw.ellipse([p.x - radius, p.y - radius, p.x + radius, p.y + radius], outline="#0F0", width=3)
    draw.line([p.x - radius, p.y, p.x + radius, p.y], fill="#0F0", width=2)
    draw.line([p.x, p.y - radius, p.x, p.y + radius], fill="#0F0", width=2)
    if box is not None:
        draw.rectangle([box[0], box[1], box[2] - 1, box[3] - 1], outline="#0F0", width=2)
    return view
