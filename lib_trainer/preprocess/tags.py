"""Batch operations on one caption's tag list. Pure functions: list in, new list out.

Every operation is registered in `OPERATIONS` under the name the CLI (`tags`) and the tag
editor use, so a new operation is one function and one registry line.
Tags compare after trimming spaces and are otherwise exact ("long hair" != "long_hair").
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from ..errors import InvalidInput


def _unique(tags: list[str]) -> list[str]:
    seen: set[str] = set()
    return [tag for tag in tags if not (tag in seen or seen.add(tag))]


def clean_tags(tags: list[str] | str) -> list[str]:
    if isinstance(tags, str):
        tags = tags.split(",")
    return [tag.strip() for tag in tags if tag.strip()]


def add(tags: list[str], new: list[str] | str, position: str = "end") -> list[str]:
    """Add tags not already present, at the front or the end (order of `new` kept)."""
    new = [tag for tag in _unique(clean_tags(new)) if tag not in tags]
    if position == "front":
        return new + list(tags)
    if position == "end":
        return list(tags) + new
    raise InvalidInput(f"position must be 'front' or 'end', not {position!r}")


def remove(tags: list[str], unwanted: list[str] | str) -> list[str]:
    unwanted = set(clean_tags(unwanted))
    return [tag for tag in tags if tag not in unwanted]


def compile_pattern(text: str) -> "re.Pattern[str]":
    """A regular expression typed by the user; a bad one is a message, not a traceback."""
    try:
        return re.compile(text)
    except re.error as error:
        raise InvalidInput(f"{text!r} is not a valid regular expression: {error}") from None


def replace(tags: list[str], old: str, new: str, regex: bool = False) -> list[str]:
    """Replace a whole tag (plain) or every regex match inside each tag.

    A replacement may be empty (the tag disappears) or contain commas (it becomes several
    tags); duplicates created by the replacement are merged, first position kept.
    """
    if regex:
        pattern = compile_pattern(old)
        try:
            result = [part for tag in tags for part in clean_tags(pattern.sub(new, tag))]
        except re.error as error:  # a bad group reference in the replacement
            raise InvalidInput(f"replacement {new!r} for the regular expression {old!r}: {error}") from None
    else:
        old = old.strip()
        result = [part for tag in tags for part in (clean_tags(new) if tag == old else [tag])]
    return _unique(result)


def move_to_front(tags: list[str], front: list[str] | str) -> list[str]:
    """Put the given tags (those present) first, in the order given."""
    front = [tag for tag in _unique(clean_tags(front)) if tag in tags]
    return front + [tag for tag in tags if tag not in front]


def dedupe(tags: list[str]) -> list[str]:
    return _unique(list(tags))


def sort(tags: list[str], keep_first: int = 0, reverse: bool = False) -> list[str]:
    """Alphabetical order after the first `keep_first` tags (kohya's keep_tokens)."""
    keep_first = max(0, int(keep_first))
    return list(tags[:keep_first]) + sorted(tags[keep_first:], key=str.casefold, reverse=reverse)


def insert_trigger(tags: list[str], trigger: str) -> list[str]:
    """The trigger word first, exactly once."""
    trigger = trigger.strip()
    if not trigger:
        return list(tags)
    return [trigger] + [tag for tag in tags if tag != trigger]


@dataclass(frozen=True)
class Operation:
    function: Callable[..., list[str]]
    summary: str


OPERATIONS: dict[str, Operation] = {
    "add": Operation(add, "add tags (position: front or end)"),
    "remove": Operation(remove, "remove tags"),
    "replace": Operation(replace, "replace a tag, or regex matches inside tags"),
    "move_to_front": Operation(move_to_front, "move tags to the front"),
    "dedupe": Operation(dedupe, "remove duplicate tags"),
    "sort": Operation(sort, "sort tags alphabetically (keep_first tags stay)"),
    "trigger": Operation(insert_trigger, "put the trigger word first"),
}


def apply(name: str, tags: list[str], **params) -> list[str]:
    try:
        operation = OPERATIONS[name]
    except KeyError:
        raise InvalidInput(f"unknown tag operation {name!r}; choose from {', '.join(OPERATIONS)}") from None
    return operation.function(list(tags), **params)
