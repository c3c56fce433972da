"""Ctrl-C, SIGTERM and a closed terminal (SIGHUP) while training, through real processes:
`python -m lib_trainer train` on the tiny model, and `python -m lib_trainer ui` with a run
going. The first signal stops after the step and saves; a second Ctrl-C or SIGTERM aborts;
neither prints a traceback."""
from __future__ import annotations

import glob
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from lib_trainer.config_files import save_config
from lib_trainer.formats.lora_file import load_lora
from tests.conftest import quick_config

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX signals")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATIENCE_S = 300  # a busy 2-core machine: slow, never flaky


class Process:
    """A `python -m lib_trainer ...` child whose stderr (the progress bar) is read as it comes."""

    def __init__(self, *args: str) -> None:
        self.child = subprocess.Popen([sys.executable, "-m", "lib_trainer", *args], cwd=ROOT,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._err = bytearray()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while chunk := os.read(self.child.stderr.fileno(), 65536):
            self._err += chunk

    @property
    def stderr(self) -> str:
        return self._err.decode("utf-8", "replace")

    def wait_for(self, condition, what: str):
        deadline = time.monotonic() + PATIENCE_S
        while time.monotonic() < deadline:
            value = condition()
            if value:
                return value
            if self.child.poll() is not None:
                break
            time.sleep(0.1)
        self.child.kill()
        pytest.fail(f"no {what} (exit status {self.child.poll()}); stderr:\n{self.stderr}")

    def training_step(self) -> int:
        """The newest step the progress bar shows (`training:  1%|...| 7/100000`), 0 before."""
        steps = re.findall(r"training:[^\r\n|]*\|[^|]*\| *(\d+)/\d+", self.stderr)
        return int(steps[-1]) if steps else 0

    def finish(self) -> tuple[int, str]:
        try:
            self.child.wait(PATIENCE_S)
        except subprocess.TimeoutExpired:
            self.child.kill()
            pytest.fail(f"did not exit after the signal; stderr:\n{self.stderr}")
        self._reader.join(10)
        return self.child.returncode, self.stdout()

    def stdout(self) -> str:
        return self.child.stdout.read().decode("utf-8", "replace")


def long_run_config(small_root, tmp_path, name: str) -> str:
    """A run far longer than the test waits: it only ends by the signal."""
    path = str(tmp_path / f"{name}.toml")
    save_config(quick_config(small_root, str(tmp_path / "out"), output_name=name, max_train_steps=100000,
                             train_batch_size=1), path)
    return path


def assert_step_file_saved(tmp_path, name: str) -> str:
    files = glob.glob(str(tmp_path / "out" / f"{name}-step*.safetensors"))
    assert len(files) == 1, os.listdir(tmp_path / "out")
    assert load_lora(files[0])
    assert not os.path.exists(tmp_path / "out" / f"{name}.safetensors")  # no "final" file for a stopped run
    assert os.path.isdir(files[0][:-len(".safetensors")] + "-state")  # and it can be resumed
    return files[0]


@pytest.mark.parametrize("signals, status", [
    (["SIGTERM"], 143),
    (["SIGINT"], 130),
    (["SIGHUP"], 129),  # the terminal was closed
    (["SIGINT", "SIGTERM"], 143),  # a second signal aborts at once
    (["SIGHUP", "SIGHUP"], 129),  # a closing terminal may send two: still a stop, not an abort
])
def test_a_signal_stops_the_cli_run_after_its_step_and_saves(small_root, tmp_path, signals, status):
    run = Process("train", "--config", long_run_config(small_root, tmp_path, "sig"))
    run.wait_for(lambda: run.training_step() >= 1, "first training step")
    for name in signals:
        run.child.send_signal(getattr(signal, name))
    code, out = run.finish()
    assert code == status, run.stderr
    assert "Traceback" not in run.stderr
    path = assert_step_file_saved(tmp_path, "sig")
    first = "Ctrl-C" if signals[0] == "SIGINT" else signals[0]
    assert f"{first}: stopping after this step and saving" in run.stderr
    if len(signals) > 1 and signals[1] != "SIGHUP":
        assert f"aborted ({signals[1]})" in run.stderr
    else:
        assert out.strip() == path  # a stop ends as a run does: the file on stdout


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_with_a_run_going(small_root, tmp_path, name: str) -> Process:
    from lib_trainer.jobs import TrainQueue

    state = tmp_path / "state"
    TrainQueue(str(state / "queue.json")).add(
        quick_config(small_root, str(tmp_path / "out"), output_name=name, max_train_steps=100000, train_batch_size=1))
    server = Process("ui", "--port", str(free_port()), "--state-dir", str(state), "--run-queue")
    server.wait_for(lambda: server.training_step() >= 1, "first training step of the queued run")
    return server


@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM", "SIGHUP"])
def test_a_signal_stops_the_servers_run_saves_it_and_closes_the_server(small_root, tmp_path, signal_name):
    from lib_trainer.jobs import TrainQueue

    server = server_with_a_run_going(small_root, tmp_path, "srv")
    server.child.send_signal(getattr(signal, signal_name))
    code, _ = server.finish()
    assert code == 0, server.stderr  # not 134 ("terminate called without an active exception")
    assert "Traceback" not in server.stderr and "terminate called" not in server.stderr
    path = assert_step_file_saved(tmp_path, "srv")
    assert "server closed" in server.stderr and f"saved {path}" in server.stderr
    item, = TrainQueue(str(tmp_path / "state" / "queue.json")).snapshot()
    assert item.status == "stopped" and item.result == path and item.resumable()  # Resume continues it


def test_a_second_signal_closes_the_server_at_once_and_the_run_stays_first_in_the_queue(small_root, tmp_path):
    from lib_trainer.jobs import TrainQueue

    server = server_with_a_run_going(small_root, tmp_path, "srv")
    server.child.send_signal(signal.SIGINT)
    server.child.send_signal(signal.SIGTERM)
    code, _ = server.finish()
    assert code == 143, server.stderr
    assert "Traceback" not in server.stderr and "terminate called" not in server.stderr
    assert "aborted (SIGTERM)" in server.stderr
    item, = TrainQueue(str(tmp_path / "state" / "queue.json")).snapshot()  # what the next start sees
    assert item.status == "waiting" and "interrupted by a restart" in item.note
