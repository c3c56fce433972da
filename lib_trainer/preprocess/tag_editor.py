"""A tag-editing session over one dataset folder: what the "Tags" sub-tab calls.

The session holds every image's caption as a tag list, the edits not yet saved and an
undo stack of batch operations. Nothing touches the disk until `save()`, which backs up
each original caption before its first overwrite and writes atomically. `pending()` and
`summary()` say what a save would change, so the UI can show it first.

Hundreds of images stay responsive: captions are small and read once; thumbnails are made
only when asked for and cached.
"""
from __future__ import annotations

import collections
import os
from dataclasses import dataclass, field

from PIL import Image

from ..dataset.images import ImageReadError, list_images, load_rgb
from ..fileio import write_text_atomic
from . import tags as tag_ops
from .captions import (
    DEFAULT_CAPTION_EXTENSION, CaptionBackup, CaptionEncodingError, caption_path, convert_to_utf8, encoding_problems,
    join_tags, read_captions, split_tags,
)
from ..errors import InvalidInput, UserError

UNDO_DEPTH = 50


class CaptionWriteError(UserError, OSError):
    """Some captions could not be written; the message names them."""


@dataclass
class Entry:
    image: str
    caption_file: str
    saved_tags: list[str]  # what is on disk (after our last save)
    tags: list[str]
    encoding: str = "utf-8"
    caption_exists: bool = True

    @property
    def changed(self) -> bool:
        return self.tags != self.saved_tags


@dataclass
class Change:
    image: str
    caption_file: str
    before: list[str]
    after: list[str]
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


def convert_encodings(folder: str, caption_extension: str = DEFAULT_CAPTION_EXTENSION) -> tuple[dict[str, str], str]:
    """Convert the folder's captions that are not UTF-8 (each backed up first); returns
    (path -> the encoding it was in, the backup folder). Only on the user's word."""
    if not os.path.isdir(folder):
        raise InvalidInput(f"{folder}: no such folder")
    return convert_to_utf8(folder, [caption_path(image, caption_extension) for image in list_images(folder)])


class TagEditor:
    def __init__(self, folder: str, caption_extension: str = DEFAULT_CAPTION_EXTENSION, thumbnail_size: int = 256):
        if not os.path.isdir(folder):
            raise InvalidInput(f"{folder}: no such folder" if not os.path.exists(folder) else f"{folder}: not a folder")
        self.folder = folder
        self.caption_extension = caption_extension
        self.thumbnail_size = thumbnail_size
        self.entries: list[Entry] = []
        self._undo: list[tuple[str, list[list[str]]]] = []
        self._thumbnails: collections.OrderedDict[int, Image.Image] = collections.OrderedDict()
        self._backup = CaptionBackup(folder)
        self.reload()

    # --- loading and looking -------------------------------------------------------------
    def reload(self) -> None:
        """Read (again) every caption from disk; unsaved edits and undo history are dropped.

        Refuses (CaptionEncodingError, naming the files and their encodings) a folder with
        captions that are not UTF-8: `convert_encodings()` converts them once the user agrees."""
        images = list_images(self.folder)
        captions = read_captions(self.caption_files(images))
        problems = encoding_problems(captions)
        if problems:
            raise CaptionEncodingError(self.folder, problems)
        self.entries = []
        for image in images:
            path = caption_path(image, self.caption_extension)
            caption = captions[path]
            tags = split_tags(caption.text)
            self.entries.append(Entry(image, path, tags, list(tags), caption.encoding or "utf-8", caption.exists))
        self._undo.clear()
        self._thumbnails.clear()

    def caption_files(self, images: list[str] | None = None) -> list[str]:
        return [caption_path(image, self.caption_extension) for image in (images or list_images(self.folder))]

    def __len__(self) -> int:
        return len(self.entries)

    def caption(self, index: int) -> str:
        return join_tags(self.entries[index].tags)

    def thumbnail(self, index: int) -> Image.Image | None:
        """A small RGB preview, made on first request; None (not an exception) for a broken file."""
        if index in self._thumbnails:
            self._thumbnails.move_to_end(index)
            return self._thumbnails[index]
        try:
            image = load_rgb(self.entries[index].image)
        except ImageReadError:
            return None
        image.thumbnail((self.thumbnail_size, self.thumbnail_size))
        self._thumbnails[index] = image
        if len(self._thumbnails) > 512:  # bounded memory for very large folders
            self._thumbnails.popitem(last=False)
        return image

    def frequency(self, indices: list[int] | None = None) -> list[tuple[str, int]]:
        """(tag, number of images with it), most frequent first, then by name."""
        counts = collections.Counter()
        for index in self._indices(indices):
            counts.update(set(self.entries[index].tags))
        return sorted(counts.items(), key=lambda item: (-item[1], item[0]))

    def filter(self, include=(), mode: str = "and", exclude=(), text: str = "", regex: bool = False) -> list[int]:
        """Indices of images whose tags match: all (`and`) or any (`or`) of `include`, none of
        `exclude`, and whose caption contains `text` (substring, or a regex)."""
        include, exclude = set(tag_ops.clean_tags(list(include))), set(tag_ops.clean_tags(list(exclude)))
        if mode not in ("and", "or"):
            raise InvalidInput(f"filter mode must be 'and' or 'or', not {mode!r}")
        pattern = tag_ops.compile_pattern(text) if (text and regex) else None
        result = []
        for index, entry in enumerate(self.entries):
            present = set(entry.tags)
            if include and not (include <= present if mode == "and" else include & present):
                continue
            if exclude & present:
                continue
            caption = join_tags(entry.tags)
            if text and not (pattern.search(caption) if pattern else text in caption):
                continue
            result.append(index)
        return result

    # --- editing -------------------------------------------------------------------------
    def set_caption(self, index: int, text_or_tags: str | list[str]) -> None:
        """Per-image edit; undoable like a batch operation."""
        tags = split_tags(text_or_tags) if isinstance(text_or_tags, str) else tag_ops.clean_tags(text_or_tags)
        self._remember(f"edit {os.path.basename(self.entries[index].image)}")
        self.entries[index].tags = tags

    def apply(self, operation: str, indices: list[int] | None = None, **params) -> int:
        """Run a batch operation from `tags.OPERATIONS` on the given images (all by default).

        Returns how many captions it changed. Validates on the first image before
        changing anything, so a bad regex leaves the session as it was.
        """
        targets = self._indices(indices)
        results = [tag_ops.apply(operation, self.entries[i].tags, **params) for i in targets]
        changed = sum(1 for i, tags in zip(targets, results) if tags != self.entries[i].tags)
        if changed:
            self._remember(operation)
            for i, tags in zip(targets, results):
                self.entries[i].tags = tags
        return changed

    def undo(self) -> str | None:
        """Undo the last operation; returns its name, or None when there is nothing to undo."""
        if not self._undo:
            return None
        name, snapshot = self._undo.pop()
        for entry, tags in zip(self.entries, snapshot):
            entry.tags = tags
        return name

    @property
    def undo_names(self) -> list[str]:
        return [name for name, _ in self._undo]

    # --- saving --------------------------------------------------------------------------
    def pending(self) -> list[Change]:
        changes = []
        for entry in self.entries:
            if entry.changed:
                before, after = entry.saved_tags, entry.tags
                changes.append(Change(entry.image, entry.caption_file, list(before), list(after),
                                      tag_ops.dedupe([t for t in after if t not in before]),
                                      tag_ops.dedupe([t for t in before if t not in after])))
        return changes

    def summary(self) -> str:
        """What `save()` would write, in words, for the user to confirm."""
        changes = self.pending()
        if not changes:
            return "No caption changes to save."
        added, removed = collections.Counter(), collections.Counter()
        reordered = 0
        for change in changes:
            added.update(change.added)
            removed.update(change.removed)
            reordered += not change.added and not change.removed
        lines = [f"{len(changes)} of {len(self.entries)} captions will be written."]
        if added:
            lines.append("added: " + ", ".join(f"{tag} (x{n})" for tag, n in added.most_common()))
        if removed:
            lines.append("removed: " + ", ".join(f"{tag} (x{n})" for tag, n in removed.most_common()))
        if reordered:
            lines.append(f"reordered only: {reordered}")
        lines.append(f"saving first backs up the original captions to {self._backup.backup_dir}")
        return "\n".join(lines)

    def save(self) -> list[Change]:
        """Back up, then atomically write every changed caption. Returns what was written.

        A caption that cannot be written (read-only, immutable, a full disk) is left as it was
        and its edit stays pending; the others are written, and CaptionWriteError names it."""
        changes = self.pending()
        by_file = {entry.caption_file: entry for entry in self.entries}
        written, failed = [], []
        for change in changes:
            try:
                self._backup.protect(change.caption_file)
                write_text_atomic(change.caption_file, join_tags(change.after))
            except OSError as error:
                failed.append(f"{change.caption_file} ({error.strerror or error})")
                continue
            entry = by_file[change.caption_file]
            entry.saved_tags, entry.encoding, entry.caption_exists = list(change.after), "utf-8", True
            written.append(change)
        if failed:
            raise CaptionWriteError(
                f"could not write {len(failed)} captions, left as they were: {', '.join(failed[:10])}"
                + (f" and {len(failed) - 10} more" if len(failed) > 10 else "")
                + f". {len(written)} others were saved (originals in {self.backup_dir}). Make the files writable "
                "(chmod u+w; chattr -i for an immutable one) and save again: their edits are still pending")
        return written

    @property
    def backup_dir(self) -> str:
        return self._backup.backup_dir

    # --- helpers -------------------------------------------------------------------------
    def _indices(self, indices: list[int] | None) -> list[int]:
        return list(range(len(self.entries))) if indices is None else list(indices)

    def _remember(self, name: str) -> None:
        self._undo.append((name, [list(entry.tags) for entry in self.entries]))
        del self._undo[:-UNDO_DEPTH]
