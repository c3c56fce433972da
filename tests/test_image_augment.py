"""color_aug, resize_interpolation and face_crop_aug_range, by what they do to the pixels."""
from __future__ import annotations

import random

import numpy as np
from PIL import Image

from lib_trainer.config import TrainConfig
from lib_trainer.dataset.buckets import Placement
from lib_trainer.dataset.face_crop import face_from_name, face_view
from lib_trainer.dataset.pixels import RESIZE_FILTERS, color_augment, load_pixels, resize_filter


def stripes(path, size=(96, 96)):
    """A red square on blue with a checker corner: shapes and colours to compare."""
    array = np.zeros((size[1], size[0], 3), np.uint8)
    array[...] = (20, 40, 200)
    array[20:60, 30:70] = (220, 30, 30)
    array[::2, ::3] = (250, 250, 250)
    Image.fromarray(array).save(path)
    return path


def seed_for(branch: str) -> int:
    """A seed whose draws take color_aug into its hue (or gamma) branch."""
    for seed in range(100):
        rng = random.Random(seed)
        if rng.random() <= 0.33 and (rng.random() > 0.5) == (branch == "hue"):
            return seed
    raise AssertionError("no seed")


def test_color_aug_turns_the_hue_but_moves_nothing(tmp_path):
    image = Image.open(stripes(tmp_path / "a.png")).convert("RGB")
    turned = color_augment(image, random.Random(seed_for("hue")))
    before, after = np.asarray(image.convert("HSV")), np.asarray(turned.convert("HSV"))
    red = (slice(21, 59), slice(31, 69))
    shift = (after[red][..., 0].astype(int) - before[red][..., 0].astype(int)) % 256
    assert 0 < np.median(shift) < 256 and len(np.unique(shift)) <= 3  # one turn for every pixel, within rounding
    assert 0 < min(np.median(shift), 256 - np.median(shift)) <= 12  # at most 8/180 of a turn
    # the shapes stay: where the picture changes from pixel to pixel is where it did
    edges = lambda a: np.abs(np.diff(np.asarray(a, np.int64).sum(-1), axis=1)) > 30
    assert (edges(image) == edges(turned)).mean() > 0.99
    brighter = color_augment(image, random.Random(seed_for("gamma")))
    assert not np.array_equal(np.asarray(brighter), np.asarray(image))


def test_color_aug_leaves_two_thirds_of_the_steps_alone(tmp_path):
    image = Image.open(stripes(tmp_path / "a.png")).convert("RGB")
    changed = sum(not np.array_equal(np.asarray(color_augment(image, random.Random(s))), np.asarray(image))
                  for s in range(300))
    assert 70 < changed < 130  # kohya's p = 0.33


def test_color_aug_refuses_cached_latents():
    assert any("color_aug" in p for p in TrainConfig(color_aug=True).problems())
    assert not [p for p in TrainConfig(color_aug=True, cache_latents=False).problems() if "color_aug" in p]


def test_resize_interpolations_are_kohyas_names_passed_to_pil(tmp_path, monkeypatch):
    path = stripes(tmp_path / "a.png")
    placement = Placement((64, 64), (64, 64))
    results = {name: load_pixels(str(path), placement, (0, 0), False, name).numpy()
               for name in RESIZE_FILTERS}
    for alias, name in (("linear", "bilinear"), ("cubic", "bicubic"), ("box", "area")):
        assert np.array_equal(results[alias], results[name])
    distinct = ["lanczos", "nearest", "bilinear", "bicubic", "area"]
    for i, first in enumerate(distinct):
        for second in distinct[i + 1:]:
            assert not np.array_equal(results[first], results[second]), (first, second)
    seen = []
    original = Image.Image.resize
    monkeypatch.setattr(Image.Image, "resize", lambda self, size, resample=None, *a, **k:
                        seen.append(resample) or original(self, size, resample, *a, **k))
    load_pixels(str(path), placement, (0, 0), False, "bicubic")
    assert seen == [Image.BICUBIC]


def test_the_default_is_area_when_shrinking_and_lanczos_when_enlarging():
    assert resize_filter("", (100, 100), (64, 64)) == Image.BOX
    assert resize_filter("", (50, 100), (64, 64)) == Image.LANCZOS
    assert resize_filter("nearest", (100, 100), (64, 64)) == Image.NEAREST
    assert any("resize_interpolation" in p for p in TrainConfig(resize_interpolation="sinc").problems())


def test_face_position_comes_from_the_file_name():
    assert face_from_name("/d/img_412_300_96_120.png") == (412, 300, 96, 120)
    assert face_from_name("/d/img_1.png") is None and face_from_name("/d/a_b_c_d_e.png") is None


def test_face_crop_scales_the_face_into_the_range_and_centres_it():
    size, target, face = (1000, 800), (256, 256), (600, 400, 100, 100)
    for seed in range(20):
        placement, (left, top) = face_view(size, target, face, (2.0, 4.0), False, random.Random(seed))
        scale = placement.resized[0] / size[0]
        assert 256 / (100 * 4.0) - 0.01 <= scale <= 256 / (100 * 2.0) + 0.01  # face = 1/4 .. 1/2 of the side
        cx, cy = 600 * scale, 400 * scale
        assert abs(left + 128 - cx) <= 6 and abs(top + 128 - cy) <= 6  # centred, nudged by 1/20 of the face
        assert 0 <= left <= placement.resized[0] - 256 and 0 <= top <= placement.resized[1] - 256
    fixed, corner = face_view(size, target, face, (3.0, 3.0), False, random.Random(0))
    # one scale (256 / 300) and no nudge: the face centre (600, 400) -> (512, 341), less half the crop
    assert fixed.resized == (853, 683) and corner == (512 - 128, 341 - 128)


def test_face_crop_needs_no_buckets_and_no_cache():
    problems = TrainConfig(face_crop_aug_range="2.0,4.0").problems()
    assert any("enable_bucket" in p for p in problems) and any("cache_latents" in p for p in problems)
    assert any("two numbers" in p for p in TrainConfig(face_crop_aug_range="2").problems())
    assert not [p for p in TrainConfig(face_crop_aug_range="2,4", enable_bucket=False, cache_latents=False).problems()
                if "face" in p]


def test_a_run_with_colour_face_crops_and_an_interpolation(tmp_path):
    import os

    from safetensors import safe_open

    from conftest import quick_config
    from lib_trainer.demo_data import DEMO_FOLDER, make_demo_dataset
    from lib_trainer.train.loop import train

    root = make_demo_dataset(str(tmp_path / "data"), count=2, size=96)
    folder = os.path.join(root, DEMO_FOLDER)
    for extension in (".png", ".txt"):  # a face at (40, 40), 24 px: the file name says so
        os.rename(os.path.join(folder, "ball_00" + extension), os.path.join(folder, "ball_40_40_24_24" + extension))
    config = quick_config(root, str(tmp_path / "out"), resolution="64", enable_bucket=False, cache_latents=False,
                          color_aug=True, face_crop_aug_range="2.0,4.0", resize_interpolation="bicubic",
                          max_train_steps=2, network_train_unet_only=True)
    result = train(config)
    with safe_open(result.final_path, "pt") as handle:
        meta = handle.metadata()
    assert (meta["ss_color_aug"], meta["ss_face_crop_aug_range"], meta["ss_resize_interpolation"]) == (
        "True", "(2.0, 4.0)", "bicubic")
    assert len(result.losses) == 2
