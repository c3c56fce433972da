"""Captions: reading them safely and turning them into the prompt a step trains with."""
from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass

from ..errors import UserError


class CaptionError(UserError, ValueError):
    """A caption file that cannot be read; the message names it and says what to do."""


def read_caption(path: str, keep_lines: bool = False) -> str:
    """The caption text, one line; a UTF-8 byte-order mark is accepted. With `keep_lines`
    (enable_wildcard) a caption of several lines keeps them, one line drawn per step."""
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
    return ("\n" if keep_lines else ", ").join(line.strip() for line in text.splitlines() if line.strip())


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
    """Move the trigger word to the front, or add it there; it appears once (in each line of
    a caption of several lines: enable_wildcard trains one of them)."""
    trigger = trigger.strip()
    if not trigger:
        return caption
    if "\n" in caption:
        return "\n".join(put_trigger_first(line, trigger, separator) for line in caption.split("\n"))
    tags = [tag for tag in split_tags(caption, separator) if tag != trigger]
    return join_tags([trigger] + tags, separator)


@dataclass(frozen=True)
class CaptionOptions:
    """The caption options of one set of examples (a folder, or a dataset_config subset)."""
    shuffle_caption: bool = False
    keep_tokens: int = 0
    separator: str = ","
    caption_dropout_rate: float = 0.0
    caption_tag_dropout_rate: float = 0.0
    keep_tokens_separator: str = ""
    secondary_separator: str = ""
    enable_wildcard: bool = False
    caption_prefix: str = ""
    caption_suffix: str = ""
    caption_dropout_every_n_epochs: int = 0
    token_warmup_min: int = 1
    token_warmup_step: int = 0  # in steps (a fraction of the run is resolved by plan.caption_options)

    @property
    def is_random(self) -> bool:
        return (self.shuffle_caption or self.caption_dropout_rate > 0 or self.caption_tag_dropout_rate > 0
                or self.enable_wildcard or self.caption_dropout_every_n_epochs > 0 or self.token_warmup_step > 0)


@dataclass
class CaptionClock:
    """Where the run is, for the captions that change with it (token warm-up,
    caption_dropout_every_n_epochs): the loop moves it, the prompt source reads it."""
    step: int = 0   # optimizer steps done
    epoch: int = 0  # 1-based; 0 before training


def training_caption(caption: str, options: CaptionOptions, rng: random.Random | None, step: int = 0,
                     epoch: int = 0) -> str:
    """The prompt for one step (`step` optimizer steps done, in 1-based `epoch`; 0: outside
    training), as sd-scripts' process_caption builds it, in its order:

    1. caption_prefix and caption_suffix are added, each with a space;
    2. the whole caption is dropped with `caption_dropout_rate`, and in every epoch that is a
       multiple of `caption_dropout_every_n_epochs` (the model then also learns the
       unconditional case);
    3. with `enable_wildcard` one line of a caption of several lines is drawn, and each
       {a|b|c} becomes one of its choices;
    4. the tags split into kept ones (before `keep_tokens_separator`, or the first
       `keep_tokens`), flexible ones, and kept ones at the end (after a second separator);
       token warm-up keeps only the first flexible tags early on; the flexible tags are
       shuffled and each is dropped with `caption_tag_dropout_rate`;
    5. `secondary_separator` becomes the caption separator, so the tags it joined (which
       moved and dropped as one) read as separate tags.
    Without an rng (the text-encoder cache, previews) nothing random happens.
    """
    if options.caption_prefix:
        caption = options.caption_prefix + " " + caption
    if options.caption_suffix:
        caption = caption + " " + options.caption_suffix
    if rng is not None and options.caption_dropout_rate > 0 and rng.random() < options.caption_dropout_rate:
        return ""
    every = options.caption_dropout_every_n_epochs
    if every > 0 and epoch > 0 and epoch % every == 0:
        return ""
    lines = caption.split("\n")
    caption = rng.choice(lines) if options.enable_wildcard and rng is not None and len(lines) > 1 else lines[0]
    if options.enable_wildcard and rng is not None:
        caption = expand_wildcards(caption, rng)
    reorders = options.shuffle_caption or options.token_warmup_step > 0 or options.caption_tag_dropout_rate > 0
    marker = options.keep_tokens_separator
    if reorders or (marker and marker in caption):
        fixed, flexible, fixed_end = _kept_and_flexible(caption, options)
        if options.token_warmup_step and step < options.token_warmup_step:
            flexible = flexible[: warmup_tag_count(len(flexible), step, options)]
        if rng is not None and options.shuffle_caption:
            rng.shuffle(flexible)
        if rng is not None and options.caption_tag_dropout_rate > 0:
            flexible = [tag for tag in flexible if rng.random() >= options.caption_tag_dropout_rate]
        caption = join_tags(fixed + flexible + fixed_end, options.separator)
    if options.secondary_separator:
        caption = caption.replace(options.secondary_separator, options.separator)
    return caption


def _kept_and_flexible(caption: str, options: CaptionOptions) -> tuple[list[str], list[str], list[str]]:
    """(tags kept at the front, flexible tags, tags kept at the end)."""
    marker = options.keep_tokens_separator
    if marker and marker in caption:
        front, rest = caption.split(marker, 1)
        middle, end = rest.split(marker, 1) if marker in rest else (rest, "")
        return (split_tags(front, options.separator), split_tags(middle, options.separator),
                split_tags(end, options.separator))
    tags = split_tags(caption, options.separator)
    return tags[: options.keep_tokens], tags[options.keep_tokens:], []


def warmup_tag_count(tags: int, step: int, options: CaptionOptions) -> int:
    """kohya's token warm-up: floor(step * (tags - min) / warmup_step) + min flexible tags
    at `step`, from token_warmup_min at step 0 to all of them at token_warmup_step."""
    grown = math.floor(step * (tags - options.token_warmup_min) / options.token_warmup_step)
    return max(0, grown + options.token_warmup_min)


# {a|b|c}; {{ and }} are literal braces.
_WILDCARD = re.compile(r"\{([^{}]+)\}")


def expand_wildcards(caption: str, rng: random.Random) -> str:
    """Each {a|b|c} becomes one of its choices, drawn with `rng`; {{ and }} stay as { and }."""
    opening, closing = "\x00", "\x01"  # control characters never appear in a read caption
    caption = caption.replace("{{", opening).replace("}}", closing)
    caption = _WILDCARD.sub(lambda match: rng.choice(match.group(1).split("|")), caption)
    return caption.replace(opening, "{").replace(closing, "}")
