"""Before training: a usable output folder, one run per output name, no stale partial files."""
from __future__ import annotations

import collections
import os
import socket
import subprocess
import sys

import pytest

from lib_trainer.config import ConfigError, TrainConfig
from lib_trainer.jobs.queue import QueueError, TrainQueue
from lib_trainer.progress import Progress
from lib_trainer.train import output_guard
from lib_trainer.train.loop import train
from lib_trainer.train.output_guard import OutputInUse, claimed_output

from conftest import quick_config


@pytest.mark.parametrize("name, words", [
    ("my:lora", "':'"), ("a?b", "'?'"), ("..", "start with a dot"), (".hidden", "start with a dot"),
    ("name.", "end with a dot"), ("CON", "reserves"), ("x" * 300, "keep it under 150"), ("", "empty"),
])
def test_output_names_that_fail_on_windows_or_linux_are_refused(name, words):
    problems = [p for p in TrainConfig().replace(output_name=name).problems() if "output_name" in p]
    assert problems and words in problems[0], problems


def test_a_folder_that_cannot_be_written_is_refused_before_training(small_root, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match="cannot be written to"):
        train(quick_config(small_root, str(blocker / "out")))


def test_too_little_room_is_refused_with_the_figures(tmp_path, monkeypatch):
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(output_guard.shutil, "disk_usage", lambda path: usage(10**9, 10**9, 10 * 2**20))
    with pytest.raises(ConfigError, match=r"has 10 MiB free; this run writes about 100 MiB"):
        with claimed_output(str(tmp_path), "x", 100 * 2**20, Progress()):
            pass


def test_a_second_run_with_the_same_output_is_refused_and_a_dead_ones_lock_is_taken_over(tmp_path):
    lock = tmp_path / ".test.lock"
    lock.write_text(f"{socket.gethostname()} {os.getppid()}")  # a live process holds it
    with pytest.raises(OutputInUse, match="is writing 'test' files"):
        with claimed_output(str(tmp_path), "test", 0, Progress()):
            pass
    assert lock.exists()
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.write_text(f"{socket.gethostname()} {ended.stdout.strip()}")  # its process is gone
    statuses = []
    with claimed_output(str(tmp_path), "test", 0, Progress([lambda e: statuses.append(e.text)])):
        assert lock.read_text() == f"{socket.gethostname()} {os.getpid()}"
    assert not lock.exists() and any("took over" in text for text in statuses)


def test_stale_partial_files_of_this_name_are_removed_and_said(tmp_path):
    mine = [".test.safetensors.k2j3.tmp", ".test-step00000004.safetensors.x1.tmp", ".test.toml.abc.tmp",
            "test-step00000004-state.partial"]
    others = [".test2.safetensors.k2j3.tmp", ".other.safetensors.a.tmp", "test.safetensors", "test-state",
              ".test.safetensors"]
    for name in mine + others:
        if name.endswith(".partial") or name.endswith("-state"):
            (tmp_path / name).mkdir()
        else:
            (tmp_path / name).write_text("x")
    statuses = []
    with claimed_output(str(tmp_path), "test", 0, Progress([lambda e: statuses.append(e.text)])):
        pass
    assert sorted(os.listdir(tmp_path)) == sorted(others)
    assert sum("interrupted" in text for text in statuses) == len(mine)


def test_the_queue_refuses_two_runs_writing_the_same_files(tmp_path):
    queue = TrainQueue(str(tmp_path / "queue.json"))
    config = TrainConfig().replace(output_name="same", output_dir=str(tmp_path / "out"))
    queue.add(config)
    with pytest.raises(QueueError, match="already writes 'same' files"):
        queue.add(config)
    queue.add(config.replace(output_dir=str(tmp_path / "elsewhere")))
