"""Caption backups (the fault suite, item 3): one backup per edit, never overwritten, even for two
edits in the same second, and `tags --restore` / the Tags sub-tab's Restore put them back."""
from __future__ import annotations

import os
import time

from PIL import Image

from lib_trainer.__main__ import main
from lib_trainer.preprocess import captions
from lib_trainer.preprocess.captions import BACKUP_FOLDER, backups


def dataset(tmp_path):
    folder = tmp_path / "10_cat"
    folder.mkdir()
    for index in range(2):
        Image.new("RGB", (64, 64), (index * 90, 20, 20)).save(folder / f"{index}.png")
        (folder / f"{index}.txt").write_text(f"cat, original {index}", encoding="utf-8")
    return folder


def test_two_edits_in_the_same_instant_keep_two_backups(tmp_path, monkeypatch):
    folder = dataset(tmp_path)
    monkeypatch.setattr(time, "strftime", lambda pattern: "20261201-120000-")
    monkeypatch.setattr(time, "time_ns", lambda: 1_000_000_000)  # the same microsecond too
    assert main(["tags", str(folder), "--add", "first"]) == 0
    assert main(["tags", str(folder), "--add", "second"]) == 0
    names = backups(str(folder))
    assert names == ["20261201-120000-000000-2", "20261201-120000-000000"]
    first = (folder / BACKUP_FOLDER / names[1] / "0.txt").read_text(encoding="utf-8")
    second = (folder / BACKUP_FOLDER / names[0] / "0.txt").read_text(encoding="utf-8")
    assert first == "cat, original 0" and second == "cat, original 0, first"


def test_restore_puts_a_backup_back_and_backs_up_what_it_replaces(tmp_path, capsys):
    folder = dataset(tmp_path)
    assert main(["tags", str(folder), "--remove", "cat"]) == 0
    assert (folder / "1.txt").read_text(encoding="utf-8") == "original 1"
    backup = backups(str(folder))[0]
    capsys.readouterr()
    assert main(["tags", str(folder), "--restore", backup]) == 0
    out = capsys.readouterr().out
    assert "2 captions restored" in out and "the ones they replaced are in" in out
    assert (folder / "1.txt").read_text(encoding="utf-8") == "cat, original 1"
    newest = backups(str(folder))[0]
    assert newest != backup and (folder / BACKUP_FOLDER / newest / "1.txt").read_text(encoding="utf-8") == "original 1"
    assert main(["tags", str(folder), "--backups"]) == 0
    assert capsys.readouterr().out.split() == backups(str(folder))


def test_restoring_a_backup_that_is_not_there_says_which_are(tmp_path, capsys):
    folder = dataset(tmp_path)
    assert main(["tags", str(folder), "--restore", "20200101-000000"]) == 1
    err = capsys.readouterr().err
    assert "no caption backup '20200101-000000'" in err and "Traceback" not in err
    assert (folder / "0.txt").read_text(encoding="utf-8") == "cat, original 0"


def test_the_tags_tab_restores_a_backup(tmp_path):
    from lib_trainer.ui.tags_tab import TagsTab

    folder = dataset(tmp_path)
    assert main(["tags", str(folder), "--add", "extra"]) == 0
    backup = backups(str(folder))[0]
    update = TagsTab._backups(str(folder))
    assert update["choices"] == [backup] and update["value"] == backup
    message, editor, *_ = TagsTab()._restore(str(folder), backup, "", "and", "", "")
    assert "Restored 2 captions" in message and editor.caption(0) == "cat, original 0"
    assert captions.read_caption(os.path.join(folder, "0.txt")).text == "cat, original 0"
