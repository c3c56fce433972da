"""A run that cannot save (the fault suite, item 4): the output folder is checked before training
(writable, room, a valid name); a save that still fails at the end writes the trained weights
to a rescue folder and says where, so a finished run is never lost."""
from __future__ import annotations

import collections
import errno
import os
import tempfile

import pytest
from safetensors.torch import load_file

from conftest import quick_config
from lib_trainer.__main__ import main
from lib_trainer.config import ConfigError, TrainConfig
from lib_trainer.progress import Progress
from lib_trainer.train import output_guard
from lib_trainer.train.checkpoints import RESCUE_FOLDER, SaveFailed
from lib_trainer.train.loop import train


def refuse_writes_in(monkeypatch, folders, error):
    """Every atomic write (fileio's temporary file) into one of `folders` fails with `error`,
    as on a folder made read-only, or a disk filled up, during the run."""
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and any(os.path.abspath(dir).startswith(os.path.abspath(f)) for f in folders):
            raise error
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def test_a_read_only_output_folder_is_refused_before_training(small_root, tmp_path, monkeypatch, capsys):
    def read_only(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", path)

    monkeypatch.setattr(output_guard, "open", read_only, raising=False)  # the folder's write probe
    out = tmp_path / "out"
    code = main(["train", "--train_data_dir", small_root, "--output_dir", str(out), "--max_train_steps", "2",
                 "--resolution", "64", "--pretrained_model_name_or_path", "tiny:sd1"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert f"output_dir={str(out)!r} cannot be written to (Permission denied)" in err
    assert os.listdir(out) == []  # no step was trained, nothing written


def test_a_full_disk_is_refused_before_training(small_root, tmp_path, monkeypatch):
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(output_guard.shutil, "disk_usage", lambda path: usage(10**9, 10**9, 2**20))
    statuses = []
    with pytest.raises(ConfigError, match=r"has 1 MiB free; this run writes about .* Free some space"):
        train(quick_config(small_root, str(tmp_path / "out")), progress=Progress([lambda e: statuses.append(e)]))
    assert not any(event.kind == "step" for event in statuses)
    assert os.listdir(tmp_path / "out") == []


def test_a_300_character_name_is_refused_before_the_model_loads():
    problems = TrainConfig().replace(output_name="x" * 300).problems()
    assert any("output_name" in p and "keep it under 150" in p for p in problems)


@pytest.mark.parametrize("error", [PermissionError(errno.EROFS, "Read-only file system"),
                                   OSError(errno.ENOSPC, "No space left on device")])
def test_a_final_save_that_fails_goes_to_the_rescue_folder(small_root, tmp_path, monkeypatch, error):
    out, home = tmp_path / "out", tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    refuse_writes_in(monkeypatch, [out], error)
    statuses = []
    result = train(quick_config(small_root, str(out), max_train_steps=2, save_state_on_train_end=True),
                   progress=Progress([lambda e: statuses.append(e.text or "")]))
    rescued = os.path.dirname(result.final_path)
    assert os.path.dirname(rescued) == str(home / RESCUE_FOLDER) and os.path.basename(result.final_path) == \
        "test.safetensors"
    assert load_file(result.final_path)  # the trained weights, readable
    assert os.path.isfile(os.path.join(rescued, "test.toml")) and os.path.isdir(os.path.join(rescued, "test-state"))
    said = [text for text in statuses if "instead" in text]
    assert said and f"could not write {out / 'test.safetensors'} ({error.strerror})" in said[0]
    assert result.final_path in said[0]
    assert not [name for name in os.listdir(out) if name.endswith(".safetensors")]


def test_when_no_folder_takes_the_file_the_message_names_them(small_root, tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    refuse_writes_in(monkeypatch, [tmp_path], OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(SaveFailed, match=r"could not write .*test.safetensors \(No space left on device\), nor "
                                         r"into .*home.*lib_trainer-rescued.* or .*tmp.*lib_trainer-rescued"):
        train(quick_config(small_root, str(out), max_train_steps=1))
