"""Captions in other encodings (the fault suite, item 2): a folder's GBK/GB18030, Big5,
Shift-JIS and UTF-16 captions are detected together; the tag editor (CLI and Tags sub-tab)
refuses them, naming the files and the encoding, and converts them only when asked, after a
backup; the trainer refuses them the same way and warns about GBK that happens to be valid
UTF-8. No user file changes before the user asks."""
from __future__ import annotations

import hashlib
import os

import pytest
from PIL import Image

from lib_trainer.__main__ import main
from lib_trainer.dataset.encodings import detect_encodings, misread_utf8
from lib_trainer.dataset.folders import DatasetError, scan_dataset

CAPTIONS = {
    "gb18030": ["鸣人, 忍者, 火影", "女孩, 长发, 蓝眼睛", "微笑, 猫, 学校"],
    "big5": ["女孩, 長髮, 藍眼睛", "微笑, 貓, 學校", "櫻花, 戶外"],
    "cp932": ["少女, 笑顔, 学校", "猫, 桜, 着物", "ロングヘア, 青い目"],
    "utf-16": ["鸣人, 忍者, 火影", "猫, 桜, 着物", "café, ß"],
}
# GBK bytes that are also valid UTF-8: they read as `Ϣ…Ц, è, ѧУ`.
LOOKS_LIKE_UTF8 = "微笑, 猫, 学校".encode("gbk")


def concept(tmp_path, texts, encoding):
    folder = tmp_path / "data" / "10_cat"
    folder.mkdir(parents=True)
    for index, text in enumerate(texts):
        Image.new("RGB", (64, 64), (index * 60, 30, 30)).save(folder / f"{index}.png")
        (folder / f"{index}.txt").write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return folder


def hashes(folder) -> dict[str, str]:
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in sorted(os.listdir(folder))
            if (folder / name).is_file()}


@pytest.mark.parametrize("encoding", list(CAPTIONS))
def test_a_folder_of_short_captions_is_detected_together(encoding):
    files = {f"{i}.txt": text.encode(encoding) for i, text in enumerate(CAPTIONS[encoding])}
    found = detect_encodings(files)
    assert set(found.values()) == {encoding}, found
    for name, data in files.items():
        assert data.decode(found[name]).lstrip("\ufeff") == CAPTIONS[encoding][int(name[0])]


def test_gbk_that_is_valid_utf8_is_flagged_and_real_utf8_is_not():
    assert LOOKS_LIKE_UTF8.decode("utf-8") == "\u03a2\u0426, \u00e8, \u0467\u0423"  # valid, and garbled
    assert misread_utf8(LOOKS_LIKE_UTF8) == "gb18030"
    for text in ["微笑, 猫, 学校", "café, crème brûlée", "девушка, кот", "λ, α, β", "1girl, solo"]:
        assert misread_utf8(text.encode("utf-8")) is None, text
    assert detect_encodings({"a.txt": LOOKS_LIKE_UTF8}) == {"a.txt": "gb18030"}


@pytest.mark.parametrize("encoding", ["gb18030", "big5", "cp932", "utf-16"])
def test_the_tags_command_refuses_them_and_changes_nothing(tmp_path, capsys, encoding):
    folder = concept(tmp_path, CAPTIONS[encoding], encoding)
    before = hashes(folder)
    assert main(["tags", str(folder), "--add", "extra"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "3 captions in" in err and "are not UTF-8" in err
    assert all(f"{index}.txt" in err for index in range(3)) and "--convert-encoding" in err
    assert hashes(folder) == before and not (folder / ".caption_backup").exists()


def test_convert_encoding_backs_up_then_converts_and_the_edit_goes_on(tmp_path, capsys):
    folder = concept(tmp_path, CAPTIONS["gb18030"][:2] + [LOOKS_LIKE_UTF8], "gbk")
    originals = {name: (folder / name).read_bytes() for name in ("0.txt", "1.txt", "2.txt")}
    assert main(["tags", str(folder), "--convert-encoding", "--dry-run"]) == 1  # lists them, converts nothing
    assert "2.txt (GB18030 (GBK))" in capsys.readouterr().err
    assert main(["tags", str(folder), "--convert-encoding", "--add", "extra"]) == 0
    out = capsys.readouterr().out
    assert "3 captions converted to UTF-8; the originals are in" in out and "GB18030 (GBK) -> UTF-8" in out
    texts = [(folder / f"{i}.txt").read_text(encoding="utf-8") for i in range(3)]
    assert texts == ["鸣人, 忍者, 火影, extra", "女孩, 长发, 蓝眼睛, extra", "微笑, 猫, 学校, extra"]
    conversion = sorted(os.listdir(folder / ".caption_backup"))[0]  # the first backup: before anything changed
    assert {name: (folder / ".caption_backup" / conversion / name).read_bytes() for name in originals} == originals


def test_the_tags_tab_refuses_and_converts_on_the_button(tmp_path):
    from lib_trainer.ui.tags_tab import TagsTab

    folder = concept(tmp_path, CAPTIONS["big5"], "big5")
    before = hashes(folder)
    message, editor, *_ = TagsTab()._load(str(folder), "", "and", "", "")
    assert "are not UTF-8" in message and "0.txt (Big5)" in message and "Convert captions to UTF-8" in message
    assert hashes(folder) == before
    message, editor, *_ = TagsTab()._convert(str(folder), "", "and", "", "")
    assert "Converted 3 captions to UTF-8" in message and editor.caption(1) == "微笑, 貓, 學校"
    assert (folder / "1.txt").read_text(encoding="utf-8") == "微笑, 貓, 學校"


def test_the_trainer_refuses_other_encodings_naming_the_encoding(tmp_path):
    folder = concept(tmp_path, CAPTIONS["cp932"], "cp932")
    with pytest.raises(DatasetError) as error:
        scan_dataset(str(tmp_path / "data"))
    message = str(error.value)
    assert "3 captions are not UTF-8" in message and "2.txt (Shift-JIS)" in message
    assert f"tags {folder} --convert-encoding" in message


def test_the_trainer_warns_about_gbk_that_reads_as_utf8(tmp_path):
    folder = concept(tmp_path, ["1girl, 微笑", LOOKS_LIKE_UTF8], "utf-8")
    scan = scan_dataset(str(tmp_path / "data"))
    warning = [w for w in scan.warnings if "look like text in another encoding" in w]
    assert len(warning) == 1 and str(folder / "1.txt") in warning[0] and "GB18030" in warning[0]
    assert "0.txt" not in warning[0]
