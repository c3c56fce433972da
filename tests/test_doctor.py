"""The dataset doctor on drawn folders with known defects: each defect is found, a clean folder
of distinct pictures gets no problem, and nothing in the folder changes unless confirmed."""
from __future__ import annotations

import hashlib
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageFilter

from helpers_draw import draw_scene
from lib_trainer.config import TrainConfig
from lib_trainer.dataset.doctor import FINE, LOOK, PROBLEM, examine
from lib_trainer.dataset.doctor.captions import remove_tag_from_all
from lib_trainer.dataset.doctor.duplicates import SET_ASIDE, dhash, hamming_matrix, phash, set_aside
from lib_trainer.dataset.folders import scan_dataset
from lib_trainer.preprocess.captions import backups, restore_backup

CONCEPT = "10_sks dog"


def config_for(root: str, **changes) -> TrainConfig:
    return TrainConfig().replace(train_data_dir=root, resolution="128", min_bucket_reso=64, max_bucket_reso=256,
                                 **changes)


def write(folder: str, name: str, image: Image.Image, caption: str | None, **save) -> str:
    path = os.path.join(folder, name)
    image.save(path, **save)
    if caption is not None:
        with open(os.path.splitext(path)[0] + ".txt", "w", encoding="utf-8") as handle:
            handle.write(caption)
    return path


def clean_folder(root: str, count: int = 16, common: str = "") -> str:
    folder = os.path.join(root, CONCEPT)
    os.makedirs(folder)
    for index in range(count):
        tags = ["sks", f"pose{index}", f"place{index % 5}"] + ([common] if common else [])
        write(folder, f"img{index:02d}.png", draw_scene(index), ", ".join(tags))
    return folder


@pytest.fixture(scope="module")
def defects(tmp_path_factory) -> dict:
    """A concept folder of 16 distinct pictures, "solo" in every caption, plus one of each defect."""
    root = str(tmp_path_factory.mktemp("defects"))
    folder = clean_folder(root, common="solo")
    names = {
        "upscaled": write(folder, "small.png", draw_scene(100, (64, 64)), "sks, small, solo"),
        "blurred": write(folder, "blurred.png", draw_scene(0).filter(ImageFilter.GaussianBlur(3)), "sks, blurry, solo"),
        "exact": write(folder, "copy.png", draw_scene(1), "sks, copy, solo"),
        "near": write(folder, "near.jpg", ImageEnhance.Brightness(draw_scene(2)).enhance(1.08), "sks, near, solo",
                      quality=85),
        "dark": write(folder, "dark.png", Image.fromarray((np.asarray(draw_scene(101)) * 0.15).astype(np.uint8)),
                      "sks, dark, solo"),
        "wide": write(folder, "wide.png", draw_scene(102, (192, 64)), "sks, wide, solo"),
        "untriggered": write(folder, "notrigger.png", draw_scene(103), "dog, grass, solo"),
    }
    alpha = draw_scene(104).convert("RGBA")
    alpha.putalpha(Image.fromarray(np.where(np.arange(128)[None, :].repeat(128, 0) < 64, 0, 255).astype(np.uint8)))
    names["alpha"] = write(folder, "alpha.png", alpha, "sks, cutout, solo")
    return {"root": root, "folder": folder, "paths": names,
            "report": examine(config_for(root, trigger_word="sks"), trigger_word="sks")}


def found(report, check: str, path: str | None = None):
    return [f for f in report.findings if f.check == check and (path is None or path in f.paths)]


def folder_hashes(root: str) -> dict[str, str]:
    result = {}
    for where, _, files in os.walk(root):
        for name in files:
            path = os.path.join(where, name)
            with open(path, "rb") as handle:
                result[os.path.relpath(path, root)] = hashlib.sha256(handle.read()).hexdigest()
    return result


# --- each defect is found ---------------------------------------------------------------------
def test_a_picture_the_trainer_enlarges_2x_is_a_problem(defects):
    (finding,) = found(defects["report"], "upscaled")
    assert finding.paths == [defects["paths"]["upscaled"]] and finding.severity == PROBLEM
    assert finding.data["scale"] == pytest.approx(2.0) and "2.0x" in finding.reason


def test_the_blurred_copy_is_less_sharp_than_the_folder(defects):
    (finding,) = found(defects["report"], "blur")
    assert finding.paths == [defects["paths"]["blurred"]] and finding.severity == PROBLEM


def test_exact_and_near_duplicates_are_paired(defects):
    paths, report = defects["paths"], defects["report"]
    folder = defects["folder"]
    exact = found(report, "exact duplicate")
    assert [sorted(f.paths) for f in exact] == [sorted([os.path.join(folder, "img01.png"), paths["exact"]])]
    near = {tuple(sorted(f.paths)) for f in found(report, "near duplicate")}
    assert tuple(sorted([os.path.join(folder, "img02.png"), paths["near"]])) in near
    assert tuple(sorted([os.path.join(folder, "img00.png"), paths["blurred"]])) in near  # a blurred copy too
    assert len(near) == 2


def test_dark_picture_alpha_and_one_image_bucket(defects):
    report, paths = defects["report"], defects["paths"]
    assert [f.paths for f in found(report, "exposure")] == [[paths["dark"]]]
    assert "dark" in found(report, "exposure")[0].reason
    assert [f.paths for f in found(report, "alpha")] == [[paths["alpha"]]]
    (alone,) = found(report, "bucket of one")
    assert alone.paths == [paths["wide"]] and alone.data["bucket"] == [192, 64]


def test_caption_checks_trigger_and_a_tag_in_every_caption(defects):
    report = defects["report"]
    (missing,) = found(report, "trigger missing")
    assert missing.paths == [defects["paths"]["untriggered"]] and missing.severity == PROBLEM
    assert [f.data["tag"] for f in found(report, "tag in every caption")] == ["solo"]
    table = dict(report.tag_frequency[CONCEPT])
    assert table["solo"] == 24 and table["sks"] == 23


def test_the_per_image_rows_carry_bucket_sharing(defects):
    rows = {row.path: row for row in defects["report"].images}
    assert rows[defects["paths"]["wide"]].bucket_images == 1
    assert rows[defects["paths"]["upscaled"]].scale == pytest.approx(2.0)
    assert rows[defects["paths"]["alpha"]].alpha and len(rows) == 24


# --- no false problem -------------------------------------------------------------------------
def test_a_clean_folder_of_distinct_pictures_has_nothing_to_look_at(tmp_path):
    clean_folder(str(tmp_path))
    report = examine(config_for(str(tmp_path)))
    assert [f for f in report.findings if f.severity != FINE] == []
    assert report.counts() == {PROBLEM: 0, LOOK: 0, FINE: 1}


def test_perceptual_hashes_survive_resizing_but_tell_pictures_apart():
    picture = draw_scene(5).convert("L")
    resized = picture.resize((300, 300), Image.LANCZOS)
    hashes = [phash(picture), phash(resized), phash(draw_scene(6).convert("L"))]
    distances = hamming_matrix(hashes)
    assert distances[0, 1] <= 4 and distances[0, 2] > 16
    assert bin(dhash(picture) ^ dhash(resized)).count("1") <= 6


# --- nothing changes unless confirmed ---------------------------------------------------------
def test_examining_and_saving_elsewhere_changes_no_file(tmp_path, defects):
    root = str(tmp_path / "copy")
    shutil.copytree(defects["root"], root)
    before = folder_hashes(root)
    report = examine(config_for(root))
    assert folder_hashes(root) == before
    json_path, md_path = report.save(str(tmp_path))
    data = json.loads(open(json_path, encoding="utf-8").read())
    assert {f["severity"] for f in data["findings"]} == {PROBLEM, LOOK, FINE}
    assert "| problem | blur |" in open(md_path, encoding="utf-8").read()
    assert folder_hashes(root) == before


def test_set_aside_moves_the_picture_and_its_caption_out_of_training(tmp_path, defects):
    root = str(tmp_path / "copy")
    shutil.copytree(defects["root"], root)
    folder = os.path.join(root, CONCEPT)
    moved = set_aside([os.path.join(folder, "copy.png")])
    assert moved == [os.path.join(folder, SET_ASIDE, "copy.png")]
    assert os.path.isfile(os.path.join(folder, SET_ASIDE, "copy.txt"))
    assert not os.path.exists(os.path.join(folder, "copy.png"))
    assert len(scan_dataset(root).items) == 23  # the trainer does not look inside _set_aside
    assert not found(examine(config_for(root)), "exact duplicate")


def test_remove_from_all_goes_through_the_tag_editors_backup(tmp_path, defects):
    root = str(tmp_path / "copy")
    shutil.copytree(defects["root"], root)
    folder = os.path.join(root, CONCEPT)
    before = folder_hashes(folder)
    changed, backup = remove_tag_from_all(folder, "solo")
    assert changed == 24 and os.path.isdir(backup)
    assert all("solo" not in item.caption for item in scan_dataset(root).items)
    restore_backup(folder, backups(folder)[-1])
    after = {path: digest for path, digest in folder_hashes(folder).items() if not path.startswith(".caption_backup")}
    assert after == before
