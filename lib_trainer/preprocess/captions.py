"""Caption files: one comma-separated `.txt` next to each image, as the tagger and
tag-editor extensions write them.

Reading never loses text: a folder's captions in another encoding (GBK, Big5, Shift-JIS,
UTF-16...) are detected together (dataset/encodings.py) and remembered, so an editor can refuse
to rewrite them until `convert_to_utf8` has converted them, on the user's word, after a backup.
Before a caption is first overwritten, the original bytes are copied into a timestamped backup
folder next to the images.
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass

from ..dataset import encodings
from ..errors import InvalidInput

DEFAULT_CAPTION_EXTENSION = ".txt"
BACKUP_FOLDER = ".caption_backup"



@dataclass
class Caption:
    text: str
    encoding: str = "utf-8"  # how the file was decoded; "" when there was no file
    exists: bool = True


def caption_path(image_path: str, extension: str = DEFAULT_CAPTION_EXTENSION) -> str:
    if not extension.startswith("."):
        extension = "." + extension
    return os.path.splitext(image_path)[0] + extension


def _text(data: bytes, encoding: str) -> str:
    try:
        return encodings.decode(data, encoding)
    except (UnicodeDecodeError, LookupError):
        return data.decode("latin-1")  # shown only: an editor refuses to save such a file


def read_captions(paths: list[str]) -> dict[str, Caption]:
    """The captions of one folder, their encodings judged together (see dataset/encodings.py)."""
    raw = {}
    for path in paths:
        if os.path.isfile(path):
            with open(path, "rb") as handle:
                raw[path] = handle.read()
    found = encodings.detect_encodings(raw)
    return {path: Caption(_text(raw[path], found[path]).strip(), found[path]) if path in raw
            else Caption("", encoding="", exists=False) for path in paths}


def read_caption(path: str) -> Caption:
    return read_captions([path])[path]


class CaptionEncodingError(InvalidInput):
    """Captions that are not UTF-8: rewriting them as they read would garble them."""

    def __init__(self, folder: str, problems: dict[str, str]):
        self.folder, self.problems = folder, problems
        super().__init__(
            f"{len(problems)} captions in {folder} are not UTF-8: {encodings.describe(problems)}. Saving them "
            f"as they are would garble them (the trainer reads UTF-8 only). Convert them to UTF-8 first; the "
            f"originals are backed up: `python -m lib_trainer tags {folder} --convert-encoding`, or "
            "\"Convert captions to UTF-8\" in the Tags sub-tab.")


def encoding_problems(captions: dict[str, Caption]) -> dict[str, str]:
    """path -> detected encoding, for the captions that are not UTF-8."""
    return {path: caption.encoding for path, caption in captions.items()
            if caption.exists and caption.encoding not in encodings.UTF8}


def convert_to_utf8(folder: str, caption_files: list[str]) -> tuple[dict[str, str], str]:
    """Rewrite the captions among `caption_files` that are not UTF-8 as UTF-8, each backed up
    first. Returns (path -> the encoding it was in, the backup folder). Refuses, changing
    nothing, when an encoding could not be detected."""
    from ..fileio import write_text_atomic

    captions = read_captions(caption_files)
    problems = encoding_problems(captions)
    unknown = sorted(path for path, encoding in problems.items() if encoding == encodings.UNKNOWN)
    if unknown:
        raise InvalidInput(f"cannot tell the encoding of {', '.join(unknown[:10])}"
                           + ("" if encodings.detector_available() else " (pip install charset-normalizer)")
                           + ": open them in a text editor and save them as UTF-8")
    backup = CaptionBackup(folder)
    for path in sorted(problems):
        backup.protect(path)
        write_text_atomic(path, captions[path].text)
    return problems, backup.backup_dir if backup.claimed else ""


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
