"""Captions: reading them safely and turning them into the prompt a step trains with."""
from __future__ import annotations

import random
from dataclasses import dataclass

from ..errors import UserError


class CaptionError(UserError, ValueError):
    """A caption file that cannot be read; the message names it and says what to do."""


def read_caption(path: str) -> str:
    """The caption text, one line; a UTF-8 byte-order mark is accepted."""
    with open(path, "rb") as handle:
        raw = handle.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise CaptionError(
            f"{path}: caption is not UTF-8 (byte 0x{raw[error.start]:02x} at position {error.start}); "
            "re-save it as UTF-8"
        ) from error
    # Captions are one line for kohya; newlines inside become tag separators.
    return ", ".join(line.strip() for line in text.splitlines() if line.strip())


def _convert_hint(folder: str) -> str:
    return (f"convert them (the originals are backed up first): python -m lib_trainer tags {folder} "
            "--convert-encoding, or \"Convert captions to UTF-8\" in the Tags sub-tab")


def encoding_report(folder: str, not_utf8: list[str], non_ascii: list[str]) -> tuple[str, str]:
    """(the refusal for captions that are not UTF-8, the warning for UTF-8 captions that look
    like GBK & co. read as UTF-8), "" for none, for one folder: its captions' encodings are
    judged together (dataset/encodings.py), which a single short caption is too short for."""
    from . import encodings

    def read(paths):
        data = {}
        for path in paths:
            with open(path, "rb") as handle:
                data[path] = handle.read()
        return data

    refusal = warning = ""
    if not_utf8:
        found = encodings.detect_encodings(read(not_utf8))
        refusal = (f"{folder}: {len(found)} captions are not UTF-8 ({encodings.describe(found)}); the trainer reads "
                   f"UTF-8 only: {_convert_hint(folder)}")
    suspects = {path: encoding for path, data in read(non_ascii).items()
                if (encoding := encodings.misread_utf8(data))}
    if suspects:
        warning = (f"{folder}: {len(suspects)} captions read as UTF-8 look like text in another encoding "
                   f"({encodings.describe(suspects)}), so they would train garbled: check them, and "
                   f"{_convert_hint(folder)}")
    return refusal, warning


def split_tags(caption: str, separator: str = ",") -> list[str]:
    return [tag.strip() for tag in caption.split(separator) if tag.strip()]


def join_tags(tags: list[str], separator: str = ",") -> str:
    return (separator + " ").join(tags) if separator.strip() else separator.join(tags)


def put_trigger_first(caption: str, trigger: str, separator: str = ",") -> str:
    """Move the trigger word to the front, or add it there; it appears once."""
    trigger = trigger.strip()
    if not trigger:
        return caption
    tags = [tag for tag in split_tags(caption, separator) if tag != trigger]
    return join_tags([trigger] + tags, separator)


@dataclass(frozen=True)
class CaptionOptions:
    shuffle_caption: bool = False
    keep_tokens: int = 0
    separator: str = ","
    caption_dropout_rate: float = 0.0
    caption_tag_dropout_rate: float = 0.0

    @property
    def is_random(self) -> bool:
        return self.shuffle_caption or self.caption_dropout_rate > 0 or self.caption_tag_dropout_rate > 0


def training_caption(caption: str, options: CaptionOptions, rng: random.Random) -> str:
    """The prompt for one step, as kohya builds it.

    The whole caption is dropped with `caption_dropout_rate` (the model then also learns
    the unconditional case); otherwise the first `keep_tokens` tags stay in place, the
    rest are shuffled and each is dropped with `caption_tag_dropout_rate`.
    """
    if not options.is_random:
        return caption
    if options.caption_dropout_rate > 0 and rng.random() < options.caption_dropout_rate:
        return ""
    tags = split_tags(caption, options.separator)
    fixed, flexible = tags[: options.keep_tokens], tags[options.keep_tokens:]
    if options.shuffle_caption:
        rng.shuffle(flexible)
    if options.caption_tag_dropout_rate > 0:
        flexible = [tag for tag in flexible if rng.random() >= options.caption_tag_dropout_rate]
    return join_tags(fixed + flexible, options.separator)
