"""Atomic writes keep the permissions a file written in place would have."""
import os
import stat

from lib_trainer.fileio import write_text_atomic


def test_a_new_file_gets_the_usual_mode_not_a_private_one(tmp_path):
    mask = os.umask(0o022)
    os.umask(mask)
    path = tmp_path / "lora.toml"
    write_text_atomic(path, "x")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~mask
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_a_rewritten_file_keeps_its_mode(tmp_path):
    path = tmp_path / "caption.txt"
    path.write_text("old")
    os.chmod(path, 0o640)
    write_text_atomic(path, "new")
    assert path.read_text() == "new"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
