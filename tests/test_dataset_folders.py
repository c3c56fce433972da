"""The kohya dataset layout: what a user's folders turn into, and the messages for bad ones."""
from __future__ import annotations

import os

import pytest
from PIL import Image

from lib_trainer.dataset.folders import DatasetError, parse_concept_folder, scan_dataset


def draw(path, size=(96, 128), color=(200, 30, 30), **save_args) -> str:
    """A solid-colour picture of `size` (width, height)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", size, color).save(path, **save_args)
    return str(path)


def write(path, text: str | bytes) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    mode = "wb" if isinstance(text, bytes) else "w"
    with open(path, mode, **({} if isinstance(text, bytes) else {"encoding": "utf-8"})) as handle:
        handle.write(text)
    return str(path)


# --- folder names ---

@pytest.mark.parametrize("name, expected", [
    ("5_RishiNaruto", (5, "RishiNaruto")),
    ("10_sls 1girl", (10, "sls 1girl")),
    ("1_a_b", (1, "a_b")),          # only the first underscore separates the repeats
    ("RishiNaruto", None),          # no repeats
    ("0_zero", None),               # 0 repeats would train nothing
    ("x_name", None),
    ("5_", None),
])
def test_parse_concept_folder(name, expected):
    assert parse_concept_folder(name) == expected


def test_concepts_repeats_and_folder_name_captions(tmp_path):
    draw(tmp_path / "5_RishiNaruto" / "a.png")
    draw(tmp_path / "5_RishiNaruto" / "b.png")
    draw(tmp_path / "10_sls 1girl" / "c.png")
    scan = scan_dataset(str(tmp_path))
    concepts = {c.name: c.repeats for c in scan.concepts}
    assert concepts == {"RishiNaruto": 5, "sls 1girl": 10}
    captions = {os.path.basename(item.path): item.caption for item in scan.items}
    # no caption files: each image is captioned with its folder's name
    assert captions == {"a.png": "RishiNaruto", "b.png": "RishiNaruto", "c.png": "sls 1girl"}
    assert not any(item.caption_from_file for item in scan.items)
    assert all(item.size == (96, 128) for item in scan.items)
    # the user is told that folder names are being used as captions
    assert any("RishiNaruto" in w and "folder name" in w for w in scan.warnings)


def test_txt_captions_are_used_and_missing_ones_fall_back_to_folder_name(tmp_path):
    folder = tmp_path / "5_RishiNaruto"
    draw(folder / "a.png")
    write(folder / "a.txt", "RishiNaruto, 1boy, orange hair\n")
    draw(folder / "b.png")  # no caption file
    scan = scan_dataset(str(tmp_path))
    by_name = {os.path.basename(item.path): item for item in scan.items}
    assert by_name["a.png"].caption == "RishiNaruto, 1boy, orange hair"
    assert by_name["a.png"].caption_from_file
    assert by_name["b.png"].caption == "RishiNaruto"
    assert not by_name["b.png"].caption_from_file


def test_multiline_caption_becomes_one_line(tmp_path):
    draw(tmp_path / "1_x" / "a.png")
    write(tmp_path / "1_x" / "a.txt", "1girl\n\nsolo \r\nsmile\n")
    assert scan_dataset(str(tmp_path)).items[0].caption == "1girl, solo, smile"


def test_caption_extension_option(tmp_path):
    folder = tmp_path / "3_cat"
    draw(folder / "a.png")
    write(folder / "a.txt", "from txt")
    write(folder / "a.caption", "from caption")
    assert scan_dataset(str(tmp_path)).items[0].caption == "from txt"
    assert scan_dataset(str(tmp_path), caption_extension=".caption").items[0].caption == "from caption"


def test_only_caption_files_with_the_other_extension_is_an_error(tmp_path):
    folder = tmp_path / "3_cat"
    for name in ("a", "b"):
        draw(folder / f"{name}.png")
        write(folder / f"{name}.caption", "a cat")
    with pytest.raises(DatasetError) as error:
        scan_dataset(str(tmp_path))  # default .txt: would silently train on "cat"
    message = str(error.value)
    assert str(folder) in message
    assert "2 .caption" in message
    assert "--caption_extension .caption" in message
    # with the right option the same folder is fine
    scan = scan_dataset(str(tmp_path), caption_extension=".caption")
    assert [item.caption for item in scan.items] == ["a cat", "a cat"]


# --- bad roots ---

def test_empty_root(tmp_path):
    with pytest.raises(DatasetError) as error:
        scan_dataset(str(tmp_path))
    message = str(error.value)
    assert str(tmp_path) in message
    assert "<repeats>_<concept>" in message


def test_missing_root(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DatasetError) as error:
        scan_dataset(str(missing))
    assert str(missing) in str(error.value)
    assert "does not exist" in str(error.value)


def test_unset_root():
    with pytest.raises(DatasetError, match="train_data_dir is not set"):
        scan_dataset("")


def test_root_holding_images_directly(tmp_path):
    draw(tmp_path / "a.png")
    draw(tmp_path / "b.jpg")
    with pytest.raises(DatasetError) as error:
        scan_dataset(str(tmp_path))
    message = str(error.value)
    assert str(tmp_path) in message
    assert "holds 2 images directly" in message
    assert "move the images into a subfolder named <repeats>_<concept>" in message


def test_folder_without_repeats_is_ignored_with_a_warning(tmp_path):
    draw(tmp_path / "5_good" / "a.png")
    draw(tmp_path / "extras" / "b.png")
    scan = scan_dataset(str(tmp_path))
    assert [os.path.basename(item.path) for item in scan.items] == ["a.png"]
    assert [c.name for c in scan.concepts] == ["good"]
    warning = next(w for w in scan.warnings if "extras" in w)
    assert "ignored" in warning and "10_extras" in warning


def test_only_folder_without_repeats_is_an_error(tmp_path):
    draw(tmp_path / "RishiNaruto" / "a.png")
    with pytest.raises(DatasetError) as error:
        scan_dataset(str(tmp_path))
    message = str(error.value)
    assert "RishiNaruto" in message
    assert "rename to e.g. 10_RishiNaruto" in message


# --- bad files ---

def test_corrupt_image_is_skipped_and_listed(tmp_path):
    folder = tmp_path / "2_x"
    draw(folder / "good.png")
    write(folder / "broken.png", b"this is not a png at all")
    scan = scan_dataset(str(tmp_path))
    assert [os.path.basename(item.path) for item in scan.items] == ["good.png"]
    assert len(scan.skipped) == 1
    path, reason = scan.skipped[0]
    assert path == str(folder / "broken.png")
    assert "cannot read image" in reason


def test_only_corrupt_images_is_an_error_listing_them(tmp_path):
    write(tmp_path / "2_x" / "broken.png", b"garbage")
    with pytest.raises(DatasetError) as error:
        scan_dataset(str(tmp_path))
    assert "No usable training images" in str(error.value)
    assert "broken.png" in str(error.value)


def test_tiny_image_is_skipped_with_its_size(tmp_path):
    folder = tmp_path / "2_x"
    draw(folder / "good.png")
    draw(folder / "tiny.png", size=(40, 30))
    scan = scan_dataset(str(tmp_path))
    assert [os.path.basename(item.path) for item in scan.items] == ["good.png"]
    path, reason = scan.skipped[0]
    assert path.endswith("tiny.png")
    assert "40x30" in reason and "too small" in reason


def test_caption_that_is_not_utf8(tmp_path):
    folder = tmp_path / "2_x"
    draw(folder / "a.png")
    write(folder / "a.txt", "caf\xe9".encode("latin-1"))
    with pytest.raises(DatasetError) as error:
        scan_dataset(str(tmp_path))
    message = str(error.value)
    assert str(folder / "a.txt") in message
    assert "a.txt (Windows-1252)); the trainer reads UTF-8 only" in message  # the encoding it is in
    assert f"tags {folder} --convert-encoding" in message


def test_caption_with_utf8_bom_is_accepted(tmp_path):
    folder = tmp_path / "2_x"
    draw(folder / "a.png")
    write(folder / "a.txt", "\ufeffcafé, 1girl".encode("utf-8"))
    item = scan_dataset(str(tmp_path)).items[0]
    assert item.caption == "café, 1girl"  # no stray BOM in front of the first tag


def test_exif_rotated_jpeg_reports_displayed_size(tmp_path):
    folder = tmp_path / "1_x"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": a 128x96 sensor image shows as 96x128
    draw(folder / "rotated.jpg", size=(128, 96), exif=exif)
    draw(folder / "plain.jpg", size=(128, 96))
    sizes = {os.path.basename(item.path): item.size for item in scan_dataset(str(tmp_path)).items}
    assert sizes == {"rotated.jpg": (96, 128), "plain.jpg": (128, 96)}


# --- regularisation ---

def test_regularisation_folders(tmp_path):
    train, reg = tmp_path / "train", tmp_path / "reg"
    draw(train / "10_sls 1girl" / "a.png")
    draw(reg / "1_1girl" / "r1.png")
    draw(reg / "1_1girl" / "r2.png")
    scan = scan_dataset(str(train), reg_data_dir=str(reg))
    assert [os.path.basename(i.path) for i in scan.train_items()] == ["a.png"]
    assert [os.path.basename(i.path) for i in scan.reg_items()] == ["r1.png", "r2.png"]
    assert all(i.caption == "1girl" and i.concept.is_reg for i in scan.reg_items())
    assert {(c.name, c.repeats, c.is_reg) for c in scan.concepts} == {("sls 1girl", 10, False), ("1girl", 1, True)}


def test_bad_reg_root_names_reg_data_dir(tmp_path):
    draw(tmp_path / "train" / "1_x" / "a.png")
    with pytest.raises(DatasetError) as error:
        scan_dataset(str(tmp_path / "train"), reg_data_dir=str(tmp_path / "reg"))
    assert "reg_data_dir" in str(error.value)


def test_an_empty_caption_file_is_reported(tmp_path):
    from PIL import Image

    folder = tmp_path / "3_cat"
    folder.mkdir()
    Image.new("RGB", (96, 96), "red").save(folder / "a.png")
    (folder / "a.txt").write_text("")
    scan = scan_dataset(str(tmp_path))
    assert any("a.txt is empty" in warning for warning in scan.warnings)


def test_hidden_and_appledouble_files_are_left_out_silently_and_counted(tmp_path):
    """As kohya's glob: `.name.png` is hidden on purpose, macOS's `._name.png` is no image."""
    from lib_trainer.config import TrainConfig
    from lib_trainer.dataset.plan import make_plan

    folder = tmp_path / "2_x"
    draw(folder / "good.png")
    draw(folder / ".hidden.png")
    write(folder / "._good.png", b"\x00\x05\x16\x07 AppleDouble resource fork")
    scan = scan_dataset(str(tmp_path))
    assert [os.path.basename(item.path) for item in scan.items] == ["good.png"]
    assert scan.skipped == [] and scan.hidden == 2
    summary = make_plan(TrainConfig().replace(train_data_dir=str(tmp_path), resolution="64",
                                              min_bucket_reso=64)).summary()
    assert "hidden files left out: 2" in summary and "cannot read" not in summary
