"""Caption files: one comma-separated `.txt` next to each image, as the tagger and
tag-editor extensions write them.

Reading never loses text: files in another encoding (UTF-16 from Notepad, cp1252 from old
tools) are decoded and the encoding is remembered, so the caller can say that saving will
rewrite them as UTF-8. Before a caption is first overwritten, the original bytes are copied
into a timestamped backup folder next to the images.
"""
from __future__ import annotations

import codecs
import os
import shutil
import time
from dataclasses import dataclass

DEFAULT_CAPTION_EXTENSION = ".txt"
BACKUP_FOLDER = ".caption_backup"

# Tried in order after the byte-order marks; latin-1 decodes any byte so it is the last resort.
_FALLBACK_ENCODINGS = ("utf-8", "cp1252", "latin-1")
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


@dataclass
class Caption:
    text: str
    encoding: str = "utf-8"  # how the file was decoded; "" when there was no file
    exists: bool = True


def caption_path(image_path: str, extension: str = DEFAULT_CAPTION_EXTENSION) -> str:
    if not extension.startswith("."):
        extension = "." + extension
    return os.path.splitext(image_path)[0] + extension


def decode_caption_bytes(data: bytes) -> tuple[str, str]:
    """(text, encoding) for the bytes of a caption file."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data.decode(encoding), encoding
    for encoding in _FALLBACK_ENCODINGS:
        try:
            return data.decode(encoding), encoding
        except UnicodeDecodeError:
            continue
    raise AssertionError("latin-1 decodes every byte string")


def read_caption(path: str) -> Caption:
    if not os.path.isfile(path):
        return Caption("", encoding="", exists=False)
    with open(path, "rb") as handle:
        text, encoding = decode_caption_bytes(handle.read())
    return Caption(text.strip(), encoding)


def split_tags(text: str) -> list[str]:
    """Comma-separated tags; newlines count as commas, blanks are dropped."""
    return [tag.strip() for tag in text.replace("\n", ",").split(",") if tag.strip()]


def join_tags(tags: list[str]) -> str:
    return ", ".join(tags)


class CaptionBackup:
    """Copies each caption file once, before its first overwrite in this session.

    The copies go to `<folder>/.caption_backup/<time>/`, a hidden folder that neither the
    trainer nor kohya's scripts read (they do not recurse). Each session gets a folder of its
    own, claimed when its first copy is made (the time to the microsecond, then `-2`, `-3`...
    if another edit took that name), so no edit's backup ever replaces another's.
    """

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.stamp = time.strftime("%Y%m%d-%H%M%S-") + f"{time.time_ns() // 1000 % 1_000_000:06d}"
        self.claimed = False
        self._saved: set[str] = set()

    @property
    def backup_dir(self) -> str:
        return os.path.join(self.folder, BACKUP_FOLDER, self.stamp)

    def protect(self, path: str) -> str | None:
        """Back up `path` if it exists and was not backed up yet; returns the copy's path."""
        key = os.path.abspath(path)
        if key in self._saved or not os.path.isfile(path):
            self._saved.add(key)
            return None
        self._claim()
        target = os.path.join(self.backup_dir, os.path.relpath(key, os.path.abspath(self.folder)))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(path, target)
        self._saved.add(key)
        return target

    def _claim(self) -> None:
        if self.claimed:
            return
        base, counter = self.stamp, 1
        os.makedirs(os.path.join(self.folder, BACKUP_FOLDER), exist_ok=True)
        while True:
            try:
                os.mkdir(self.backup_dir)
                break
            except FileExistsError:
                counter += 1
                self.stamp = f"{base}-{counter}"
        self.claimed = True


def backups(folder: str) -> list[str]:
    """The caption backups of `folder`, newest first (their folder names)."""
    root = os.path.join(folder, BACKUP_FOLDER)
    if not os.path.isdir(root):
        return []
    return sorted((name for name in os.listdir(root) if os.path.isdir(os.path.join(root, name))), reverse=True)


def restore_backup(folder: str, backup: str) -> tuple[list[str], str]:
    """Put the captions of a backup (its folder name or path) back in `folder`. The captions
    they replace are backed up first, so a restore can itself be undone. Returns (the caption
    files restored, the new backup's folder)."""
    source = backup if os.path.isdir(backup) else os.path.join(folder, BACKUP_FOLDER, backup)
    if not os.path.isdir(source):
        known = ", ".join(backups(folder)[:10]) or "none"
        raise FileNotFoundError(f"no caption backup {backup!r} in {os.path.join(folder, BACKUP_FOLDER)} "
                                f"(there: {known})")
    from ..fileio import atomic_path

    before = CaptionBackup(folder)
    restored = []
    for root, _, files in os.walk(source):
        for name in sorted(files):
            copy = os.path.join(root, name)
            target = os.path.join(folder, os.path.relpath(copy, source))
            before.protect(target)
            with atomic_path(target) as temporary:
                shutil.copy2(copy, temporary)
            restored.append(target)
    return restored, before.backup_dir if before.claimed else ""
