"""The training queue: runs waiting their turn, kept in a JSON file.

Each item holds a whole training config (as a flat dict, the same as a config file), so
the queue survives a page reload and a restart of the server. Waiting items can be moved
up or down or removed; the item that is running and finished ones stay where they are.
Every change is written atomically at once.

A server that stopped while a run was going leaves that item "running" in the file; on
loading, such an item goes back to "waiting" (first in line) with a note, and the queue
starts paused: nothing trains until the user asks again. An item remembers the newest run
state its run wrote (`resume_state`), so that an interrupted item, or a stopped one the user
resumes, goes on from there instead of from step 0.

A queue file that cannot be read (not JSON, `[]`, a value of the wrong type) is moved aside
as `queue.json.broken-<time>`, the queue starts empty, and `load_notice` says so: the server
and the WebUI tab still start.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from ..config import TrainConfig
from ..fileio import write_text_atomic
from ..errors import UserError

WAITING, RUNNING, DONE, STOPPED, FAILED = "waiting", "running", "done", "stopped", "failed"
FINISHED = (DONE, STOPPED, FAILED)
QUEUE_FILE_VERSION = 1
log = logging.getLogger("lib_trainer")


@dataclass
class QueueItem:
    id: int
    name: str
    config: dict[str, Any]
    status: str = WAITING
    added: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    result: str = ""  # the file written (final or name-stepN)
    error: str = ""
    note: str = ""
    total_steps: int | None = None
    resume_state: str = ""  # the newest run state folder its run wrote
    # Draw the run's epoch x weight grid when it ends done. On the item, not in TrainConfig:
    # it is what to do after the run, not how to train (config files, kohya imports and the
    # ss_* metadata have no business with it). Queue files written before it load as False.
    compare_when_done: bool = False
    grid: str = ""  # the grid PNG "Compare when done" saved

    def resumable(self) -> bool:
        return self.status in (STOPPED, FAILED) and bool(self.resume_state) and os.path.isdir(self.resume_state)

    def train_config(self) -> TrainConfig:
        return TrainConfig.from_dict(self.config, source=f"queue item {self.id}")


class QueueError(UserError, ValueError):
    """A queue operation that cannot be done (unknown item, item not waiting)."""


class TrainQueue:
    """Thread-safe: the UI edits it while the worker thread takes items from it."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._lock = threading.RLock()
        self.items: list[QueueItem] = []
        self.paused = True
        self._next_id = 1
        self.load_notice = ""  # set when the file was unreadable and moved aside
        if path and os.path.isfile(path):
            self._load()

    # --- reading ---------------------------------------------------------------------
    def snapshot(self) -> list[QueueItem]:
        with self._lock:
            return [QueueItem(**asdict(item)) for item in self.items]

    def get(self, item_id: int) -> QueueItem:
        with self._lock:
            for item in self.items:
                if item.id == item_id:
                    return item
        raise QueueError(f"no queue item #{item_id}")

    def waiting(self) -> list[QueueItem]:
        with self._lock:
            return [item for item in self.items if item.status == WAITING]

    # --- changing --------------------------------------------------------------------
    def add(self, config: TrainConfig, name: str = "", total_steps: int | None = None,
            compare_when_done: bool = False) -> QueueItem:
        with self._lock:
            for other in self.items:
                if other.status in (WAITING, RUNNING) and _same_output(other.config, config):
                    raise QueueError(f"#{other.id} {other.name} ({other.status}) already writes "
                                     f"{config.output_name!r} files in {config.output_dir}: the second run would "
                                     "overwrite them. Choose another output_name or output folder")
            item = QueueItem(self._next_id, name or config.output_name, config.to_dict(), total_steps=total_steps,
                             compare_when_done=compare_when_done)
            self._next_id += 1
            self.items.append(item)
            self._save()
            return item

    def remove(self, item_id: int) -> QueueItem:
        """Remove a waiting or finished item (a running one must be stopped first)."""
        with self._lock:
            item = self.get(item_id)
            if item.status == RUNNING:
                raise QueueError(f"#{item_id} {item.name} is running: stop it first")
            self.items.remove(item)
            self._save()
            return item

    def move(self, item_id: int, offset: int) -> None:
        """Move a waiting item `offset` places among the waiting items (-1: up, +1: down)."""
        with self._lock:
            item = self.get(item_id)
            if item.status != WAITING:
                raise QueueError(f"#{item_id} {item.name} is {item.status}: only waiting runs can be moved")
            waiting = [i for i, entry in enumerate(self.items) if entry.status == WAITING]
            position = waiting.index(self.items.index(item))
            target = max(0, min(len(waiting) - 1, position + offset))
            if target == position:
                return
            a, b = waiting[position], waiting[target]
            moved = self.items.pop(a)
            self.items.insert(b, moved)
            self._save()

    def resume(self, item_id: int) -> QueueItem:
        """Put a stopped or failed item back in line, to go on from its last run state."""
        with self._lock:
            item = self.get(item_id)
            if not item.resumable():
                why = "it is not stopped or failed" if item.status not in (STOPPED, FAILED) else \
                    "its run wrote no state to resume from"
                raise QueueError(f"#{item_id} {item.name} cannot be resumed: {why}")
            self._continue_from_state(item)
            item.status, item.finished, item.error = WAITING, None, ""
            self._save()
            return QueueItem(**asdict(item))

    @staticmethod
    def _continue_from_state(item: QueueItem) -> None:
        item.config = {**item.config, "resume": item.resume_state}
        item.note = f"resumes from {os.path.basename(item.resume_state)}"

    def clear_finished(self) -> int:
        with self._lock:
            before = len(self.items)
            self.items = [item for item in self.items if item.status not in FINISHED]
            self._save()
            return before - len(self.items)

    def set_paused(self, paused: bool) -> None:
        with self._lock:
            self.paused = paused
            self._save()

    def take_next(self) -> QueueItem | None:
        """Mark the first waiting item running and return a copy; None if paused or empty."""
        with self._lock:
            if self.paused:
                return None
            for item in self.items:
                if item.status == WAITING:
                    item.status, item.started, item.error, item.note = RUNNING, time.time(), "", ""
                    self._save()
                    return QueueItem(**asdict(item))
            return None

    def update(self, item_id: int, **changes: Any) -> None:
        with self._lock:
            item = self.get(item_id)
            for key, value in changes.items():
                setattr(item, key, value)
            if changes.get("status") in FINISHED:
                item.finished = time.time()
            self._save()

    # --- the file --------------------------------------------------------------------
    def _save(self) -> None:
        if not self.path:
            return
        data = {"version": QUEUE_FILE_VERSION, "paused": self.paused, "next_id": self._next_id,
                "items": [asdict(item) for item in self.items]}
        write_text_atomic(self.path, json.dumps(data, indent=1, ensure_ascii=False) + "\n")

    def _load(self) -> None:
        try:
            data = _read_queue_file(self.path)
        except _BrokenQueueFile as broken:
            self._move_aside(str(broken))
            return
        self.items = data["items"]
        interrupted = [item for item in self.items if item.status == RUNNING]
        for item in interrupted:
            item.status, item.started = WAITING, None
            if item.resume_state and os.path.isdir(item.resume_state):
                self._continue_from_state(item)
                item.note = f"interrupted by a restart of the server; {item.note}"
            else:
                item.note = "interrupted by a restart of the server; will run again from the start"
        # They stay in place, which is ahead of every waiting run: the queue only ever
        # starts the first waiting item, and moves happen among waiting items.
        self._next_id = max([data["next_id"]] + [item.id + 1 for item in self.items])
        self.paused = True  # a restart never starts training by itself

    def _move_aside(self, reason: str) -> None:
        """A queue file we cannot read must not keep the server (or the WebUI tab) from
        starting: keep it for the user under another name and start with an empty queue."""
        aside = f"{self.path}.broken-{time.strftime('%Y%m%d-%H%M%S')}"
        try:
            os.replace(self.path, aside)
        except OSError as error:
            raise QueueError(f"the queue file {self.path} cannot be read ({reason}) nor moved aside ({error}); "
                             "move it away to start with an empty queue") from error
        self.load_notice = (f"the queue file {self.path} could not be read ({reason}); it was moved aside to "
                            f"{aside} and the queue starts empty")
        log.warning("%s", self.load_notice)


class _BrokenQueueFile(Exception):
    """A queue file that is not what `_save` writes; its message says what is wrong."""


def _read_queue_file(path: str) -> dict[str, Any]:
    """{"items": [QueueItem...], "next_id": int} from a queue file, every value checked
    against QueueItem's field types (an item with a wrong type would only fail later, in the
    worker or in the page)."""
    with open(path, encoding="utf-8") as handle:
        try:
            data = json.load(handle)
        except json.JSONDecodeError as error:
            raise _BrokenQueueFile(f"not valid JSON: {error}") from error
        except UnicodeDecodeError as error:  # damaged, or saved by an editor in another encoding
            raise _BrokenQueueFile(f"not UTF-8 text (byte {error.start})") from error
    if not isinstance(data, dict):
        raise _BrokenQueueFile(f"a JSON {type(data).__name__} instead of an object with the items")
    entries, next_id = data.get("items", []), data.get("next_id", 1)
    if not isinstance(entries, list):
        raise _BrokenQueueFile(f'"items" is a {type(entries).__name__}, not a list')
    if not _has_type(next_id, int):
        raise _BrokenQueueFile(f'"next_id" is {next_id!r}, not a whole number')
    hints = typing.get_type_hints(QueueItem)
    required = [spec.name for spec in fields(QueueItem)
                if spec.default is MISSING and spec.default_factory is MISSING]
    items = []
    for number, entry in enumerate(entries, 1):
        if not isinstance(entry, dict):
            raise _BrokenQueueFile(f"item {number} is a {type(entry).__name__}, not an object")
        missing = [name for name in required if name not in entry]
        if missing:
            raise _BrokenQueueFile(f"item {number} has no {', '.join(missing)}")
        for key, value in entry.items():
            if key in hints and not _has_type(value, hints[key]):
                raise _BrokenQueueFile(f"item {number}: {key} is {value!r}, not of type {_type_name(hints[key])}")
        if entry.get("status", WAITING) not in (WAITING, RUNNING, *FINISHED):
            raise _BrokenQueueFile(f"item {number}: unknown status {entry['status']!r}")
        items.append(QueueItem(**{k: v for k, v in entry.items() if k in hints}))  # unknown keys: a newer version's
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        raise _BrokenQueueFile("two items have the same id")
    return {"items": items, "next_id": next_id}


def _has_type(value: Any, hint: Any) -> bool:
    """isinstance for the simple hints QueueItem uses: int, float, str, dict[...], X | None."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_has_type(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if isinstance(value, bool):  # JSON true/false is no number
        return hint is bool
    if hint is float:
        return isinstance(value, (int, float))
    return isinstance(value, typing.get_origin(hint) or hint)


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _same_output(values: dict[str, Any], config: TrainConfig) -> bool:
    return (values.get("output_name") == config.output_name and
            os.path.abspath(values.get("output_dir", "")) == os.path.abspath(config.output_dir))
