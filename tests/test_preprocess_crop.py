"""Focal-point crop: the crop holds the subject for every aspect ratio; geometry helpers."""
import pytest
from PIL import Image

from helpers_draw import detail_patch_picture, draw_face
from lib_trainer.preprocess import focal as focal_module
from lib_trainer.preprocess.crop import CROP_MODES, auto_size, crop_focal, kept_fraction, needs_split, split_tiles
from lib_trainer.preprocess.pipeline import PreprocessOptions, target_size
from lib_trainer.preprocess.focal import FocalSettings, Point, draw_debug, find_focal_point

TARGETS = [(512, 512), (512, 768), (768, 512), (640, 384), (384, 640)]
NO_FACES = FocalSettings(face_weight=0.0)


def scaled_box(box, source_size, resized_size):
    sx, sy = resized_size[0] / source_size[0], resized_size[1] / source_size[1]
    return box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy


def contains(outer, inner, slack=2):
    return (outer[0] - slack <= inner[0] and outer[1] - slack <= inner[1]
            and inner[2] <= outer[2] + slack and inner[3] <= outer[3] + slack)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("size,patch", [
    ((1600, 700), (1250, 250, 1450, 450)),   # wide, detail far right
    ((1600, 700), (60, 420, 260, 620)),      # wide, detail bottom left
    ((700, 1600), (300, 1300, 500, 1500)),   # tall, detail near the bottom
    ((900, 900), (60, 60, 260, 260)),        # square, detail top left
])
def test_crop_contains_the_detailed_patch(size, patch, target):
    picture = detail_patch_picture(size, patch)
    result = crop_focal(picture, target, NO_FACES)
    assert result.image.size == target
    assert contains(result.box, scaled_box(patch, size, result.resized.size)), (result.box, result.focal.point)


@pytest.mark.parametrize("target", TARGETS)
def test_crop_contains_the_face(target):
    picture = detail_patch_picture((1500, 800), (40, 40, 240, 240), seed=1)  # a distracting detailed corner
    face_box = draw_face(picture, 1150, 450, 90)
    settings = FocalSettings(face_weight=0.9, entropy_weight=0.15, edges_weight=0.0)
    result = crop_focal(picture, target, settings)
    assert "face" in result.focal.parts
    assert contains(result.box, scaled_box(face_box, picture.size, result.resized.size), slack=4)


def test_failing_face_detector_falls_back_with_a_warning(monkeypatch):
    def broken(rgb, settings):
        raise RuntimeError("cv2.error: bad model")

    monkeypatch.setitem(focal_module.FACE_DETECTORS, "broken", broken)
    monkeypatch.setitem(focal_module.FACE_DETECTORS, "fake", lambda rgb, s: [Point(10, 20)])
    picture = Image.new("RGB", (400, 200), "gray")
    result = find_focal_point(picture, (200, 200), FocalSettings(face_detectors=("broken", "fake"),
                                                                 entropy_weight=0, edges_weight=0))
    assert (result.point.x, result.point.y) == (10, 20)
    assert any("broken failed" in w and "bad model" in w for w in result.warnings)


def test_missing_yunet_file_is_reported_only_when_configured(tmp_path):
    picture = Image.new("RGB", (300, 200), "gray")
    quiet = find_focal_point(picture, (200, 200), FocalSettings())
    assert not [w for w in quiet.warnings if "yunet" in w]
    loud = find_focal_point(picture, (200, 200), FocalSettings(yunet_model=str(tmp_path / "missing.onnx")))
    assert any("yunet unavailable" in w and "missing.onnx" in w for w in loud.warnings)


def test_flat_picture_falls_back_to_the_centre():
    result = find_focal_point(Image.new("RGB", (600, 300), "white"), (300, 300), NO_FACES)
    assert (result.point.x, result.point.y) == (300, 150) and result.parts == {}


def test_weights_mix_the_methods(monkeypatch):
    monkeypatch.setitem(focal_module.FACE_DETECTORS, "fake", lambda rgb, s: [Point(100, 100)])
    picture = detail_patch_picture((700, 350), (500, 100, 600, 200))  # below ANALYSIS_SIDE: no rescale
    only_face = find_focal_point(picture, (400, 400), FocalSettings(face_detectors=("fake",), entropy_weight=0,
                                                                    edges_weight=0))
    mixed = find_focal_point(picture, (400, 400), FocalSettings(face_detectors=("fake",), face_weight=1,
                                                                entropy_weight=0, edges_weight=1))
    assert (only_face.point.x, only_face.point.y) == (100, 100)
    edges = mixed.parts["edges"][0]
    assert 500 <= edges.x <= 600 and mixed.parts["face"][0].weight == pytest.approx(0.5)
    assert mixed.point.x == pytest.approx((100 + edges.x) / 2)


def test_debug_view_marks_the_focal_point_and_the_box():
    picture = detail_patch_picture((800, 400), (600, 100, 700, 200))
    result = crop_focal(picture, (400, 400), NO_FACES)
    view = draw_debug(result.resized, result.focal, result.box)
    p = result.focal.point
    radius = max(4, min(view.size) * 0.04)
    ring = [view.getpixel((round(p.x + dx), round(p.y))) for dx in (-radius, radius)]
    assert all(pixel == (0, 255, 0) for pixel in ring)
    assert view.getpixel((result.box[0], 10)) == (0, 255, 0)  # left edge of the crop box
    assert result.resized.getpixel((round(p.x + radius), round(p.y))) != (0, 255, 0)  # original untouched


def test_center_and_resize_modes():
    picture = detail_patch_picture((1000, 500), (0, 0, 10, 10))
    center = CROP_MODES["center"](picture, (500, 500), NO_FACES)
    assert center.box == (250, 0, 750, 500)
    assert CROP_MODES["resize"](picture, (300, 200), NO_FACES).image.size == (300, 200)


def test_sizes_buckets_and_auto():
    bucket = lambda w, h: target_size(PreprocessOptions("in", "out", size_mode="bucket", width=512, height=512), (w, h))  # noqa: E731
    assert bucket(1000, 1000) == (512, 512)
    # Buckets take the largest height per width (kohya): 640x384 (1.67) is nearer 1.5 than 576x448 (1.29).
    assert bucket(1500, 1000) == (640, 384)
    assert bucket(1000, 1500) == (384, 640)
    w, h = auto_size(4000, 3000, 256 * 256, 768 * 768)  # too big: shrunk to at most max area
    assert w % 64 == h % 64 == 0 and 256 * 256 <= w * h <= 768 * 768 and w * h >= 0.9 * 768 * 768
    assert abs(w / h - 4 / 3) < 0.07
    assert auto_size(200, 100, 512 * 512, 1024 * 1024) == (768, 384)  # too small: grown, 2:1 kept exactly
    assert auto_size(600, 600, 256 * 256, 1024 * 1024) == (576, 576)  # within range: size kept
    with pytest.raises(ValueError, match="min area"):
        auto_size(10, 10, 100, 50)


def test_split_into_overlapping_tiles():
    picture = detail_patch_picture((3000, 500), (0, 0, 10, 10))
    assert kept_fraction(picture.size, (512, 512)) == pytest.approx(1 / 6)
    assert needs_split(picture.size, (512, 512)) and not needs_split((600, 500), (512, 512))
    tiles = split_tiles(picture, (512, 512), overlap=0.2)
    assert all(tile.size == (512, 512) for tile in tiles)
    length = round(3000 * 512 / 500)
    step = (length - 512) / (len(tiles) - 1)
    assert step <= 512 * 0.8 + 1  # neighbours share at least 20%
    tall = split_tiles(detail_patch_picture((400, 2000), (0, 0, 10, 10)), (512, 768), overlap=0.3)
    assert len(tall) >= 3 and all(tile.size == (512, 768) for tile in tall)
