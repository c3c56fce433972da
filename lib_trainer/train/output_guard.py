"""Before a run trains: the output folder is usable, nobody else writes the same files, and
what an earlier killed save left behind is cleared.

- The folder must be writable, with room for the files the run will write (and a margin),
  checked before the first step rather than found out at the last.
- One run at a time per output name and folder: a lock file `.<name>.lock` holds the owner's
  process id; a second run refuses, and a lock whose process is gone is taken over.
- A save killed half-way leaves a hidden `.<file>.<random>.tmp` (fileio.atomic_path) or a
  `<state>.partial` folder; those of this output name are removed, and the run says so.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
from typing import Iterator

from ..config import ConfigError

ROOM_MARGIN = 2.0          # free space needed: this many times the estimate
ROOM_MINIMUM = 64 * 2**20  # and never less than 64 MiB


class OutputInUse(ConfigError):
    """Another run is writing files of the same name into the same folder."""


@contextlib.contextmanager
def claimed_output(output_dir: str, output_name: str, expected_bytes: int, progress) -> Iterator[None]:
    """Check the folder, take the lock for the run, clear stale partial files; release the
    lock afterwards whatever happens."""
    _check_writable(output_dir)
    _check_room(output_dir, expected_bytes)
    lock = os.path.join(output_dir, f".{output_name}.lock")
    _take_lock(lock, output_dir, output_name, progress)
    try:
        for name in remove_stale_partials(output_dir, output_name):
            progress.status(f"removed {name}, left by a save that was interrupted")
        yield
    finally:
        with contextlib.suppress(OSError):
            os.remove(lock)


def _check_writable(output_dir: str) -> None:
    try:
        os.makedirs(output_dir, exist_ok=True)
        probe = os.path.join(output_dir, f".lib_trainer-write-test-{os.getpid()}")
        with open(probe, "wb") as handle:
            handle.write(b"ok")
        os.remove(probe)
    except OSError as error:
        raise ConfigError(f"output_dir={output_dir!r} cannot be written to ({error.strerror or error}); choose "
                          "a folder you can write to, or fix its permissions") from error


def _check_room(output_dir: str, expected_bytes: int) -> None:
    needed = max(ROOM_MINIMUM, int(expected_bytes * ROOM_MARGIN))
    free = shutil.disk_usage(output_dir).free
    if free < needed:
        raise ConfigError(f"output_dir={output_dir!r} has {free / 2**20:.0f} MiB free; this run writes about "
                          f"{expected_bytes / 2**20:.0f} MiB (with a margin: {needed / 2**20:.0f} MiB). Free some "
                          "space or choose another folder")


def _take_lock(lock: str, output_dir: str, output_name: str, progress) -> None:
    owner = f"{socket.gethostname()} {os.getpid()}"
    for _ in range(2):
        try:
            descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _lock_holder(lock)
            if holder is not None:
                raise OutputInUse(f"another run (process {holder}) is writing {output_name!r} files in "
                                  f"{output_dir}; wait for it, or choose another output_name") from None
            progress.status(f"took over {lock}: the run that held it has ended")
            with contextlib.suppress(FileNotFoundError):
                os.remove(lock)
            continue
        with os.fdopen(descriptor, "w") as handle:
            handle.write(owner)
        return
    raise OutputInUse(f"could not lock {lock}; another run is starting with the same output_name")


def _lock_holder(lock: str) -> str | None:
    """The owner of a lock that is still held, or None when its process is gone."""
    try:
        with open(lock, encoding="utf-8") as handle:
            host, _, pid = handle.read().strip().rpartition(" ")
    except OSError:
        return None
    if host and host != socket.gethostname():
        return f"{pid} on {host}"  # cannot tell from here: treat as held
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return None
    except PermissionError:
        pass  # exists, owned by someone else
    return pid


def remove_stale_partials(output_dir: str, output_name: str) -> list[str]:
    """Hidden temporary files and partial state folders of this output name's files."""
    name = re.escape(output_name)
    # "<name>.safetensors", "<name>-000002.safetensors", "<name>-step00000100.toml", "<name>.toml" ...
    own = rf"{name}(?:-(?:\d{{6}}|step\d{{8}}))?(?:\.safetensors|\.toml|\.pt)"
    patterns = [re.compile(rf"^\.{own}\..+\.tmp$"), re.compile(rf"^{name}(?:-(?:\d{{6}}|step\d{{8}}))?-state"
                                                               r"\.(?:partial|old)$")]
    removed = []
    for entry in sorted(os.listdir(output_dir)):
        if any(pattern.match(entry) for pattern in patterns):
            path = os.path.join(output_dir, entry)
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.remove(path)
            removed.append(entry)
    return removed
