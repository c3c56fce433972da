"""Keep as best: copy the file a grid picked to a clean name beside it (`name-000004.safetensors`
-> `name-best.safetensors`), so the prompt says `<lora:name-best:0.8>` from now on.

The copy is byte for byte, so it keeps the file's metadata (the WebUI's Lora card shows the
same training settings, epoch and hashes). It is written to a temporary file and renamed, so
an interrupted copy never leaves half a file under the new name; an existing file of that
name is only replaced when the user says so.
"""
from __future__ import annotations

import os
import shutil

from ..errors import InvalidInput
from ..fileio import atomic_path
from .runs import NETWORK_EXTENSIONS, SavedFile

BEST_SUFFIX = "-best"


def best_name(saved: SavedFile) -> str:
    """The default name of the kept file: `<run>-best`."""
    return f"{saved.run}{BEST_SUFFIX}"


def keep_as_best(source: str, name: str, overwrite: bool = False) -> str:
    """Copy `source` to `<name>.safetensors` in its own folder; returns the new path."""
    if not os.path.isfile(source):
        raise InvalidInput(f"{source!r} is not a file: choose one of the run's files")
    target = os.path.join(os.path.dirname(os.path.abspath(source)), _file_name(name, source))
    if os.path.abspath(target) == os.path.abspath(source):
        raise InvalidInput(f"{os.path.basename(source)} already has that name: give another name")
    if os.path.exists(target) and not overwrite:
        raise InvalidInput(f"{target} already exists: give another name, or tick overwrite to replace it")
    with atomic_path(target) as temporary:
        shutil.copyfile(source, temporary)
        shutil.copystat(source, temporary)  # the modification time too: sorting by date keeps the training order
    return target


def _file_name(name: str, source: str) -> str:
    name = str(name or "").strip()
    extension = os.path.splitext(source)[1] or NETWORK_EXTENSIONS[0]
    if name.lower().endswith(extension.lower()):
        name = name[:-len(extension)]
    if not name or name in (".", "..") or any(sep in name for sep in ("/", "\\", os.sep)) or name.startswith("."):
        raise InvalidInput(f"{name!r} is not a file name: give a plain name such as my_lora-best "
                           "(the file goes beside the one it copies)")
    return name + extension
