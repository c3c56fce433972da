"""The base-model hashes kohya writes into a LoRA (`ss_sd_model_hash`, `ss_new_sd_model_hash`),
which civitai and model managers use to link a LoRA to its checkpoint.

Both are sd-scripts' (library/train_util.py), which are the WebUI's:
- `model_hash`, the WebUI's legacy hash: the first 8 hex digits of the sha256 of the 64 KiB at
  offset 1 MiB of the file;
- `calculate_sha256`, the WebUI's current hash: the sha256 of the whole file.

The whole-file hash reads every byte (6.5 GB for SDXL), so it is read in 1 MiB blocks, once,
and kept in a small JSON cache (`~/.cache/lib_trainer/model_hashes.json`, or under
`$XDG_CACHE_HOME`) keyed by the file's path, size and modification time: a second run on the
same checkpoint reads nothing. A changed file (other size or time) is hashed again.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os

from ..fileio import write_text_atomic

log = logging.getLogger("lib_trainer")

LEGACY_OFFSET, LEGACY_LENGTH = 0x100000, 0x10000
BLOCK = 2**20


def legacy_model_hash(path: str) -> str:
    with open(path, "rb") as handle:
        handle.seek(LEGACY_OFFSET)
        return hashlib.sha256(handle.read(LEGACY_LENGTH)).hexdigest()[:8]


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_path() -> str:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(root, "lib_trainer", "model_hashes.json")


def model_hashes(path: str) -> tuple[str, str]:
    """(legacy hash, sha256) of a checkpoint file, from the cache when the file is unchanged."""
    path = os.path.abspath(path)
    stat = os.stat(path)
    stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    cache = _read_cache()
    known = cache.get(path)
    if isinstance(known, dict) and {k: known.get(k) for k in stamp} == stamp and known.get("sha256"):
        return str(known.get("legacy", "")), str(known["sha256"])
    legacy, full = legacy_model_hash(path), file_sha256(path)
    cache[path] = {**stamp, "legacy": legacy, "sha256": full}
    try:
        write_text_atomic(cache_path(), json.dumps(cache, indent=1, sort_keys=True) + "\n")
    except OSError as error:  # a read-only home only costs the next run a re-read
        log.warning("could not keep the model hash in %s: %s", cache_path(), error)
    return legacy, full


def _read_cache() -> dict:
    try:
        with open(cache_path(), encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):  # none yet, or broken: it is only a cache
        return {}
    return data if isinstance(data, dict) else {}
