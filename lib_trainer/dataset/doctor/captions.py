"""Caption checks per concept: missing or empty captions, the trigger word, the token limit,
tags in (nearly) every caption, tags that look like tagger noise, the tag frequency table.

"Remove from all" goes through the Tags sub-tab's TagEditor, so the originals are backed up
in `.caption_backup/` and the Restore button (or `tags --restore`) undoes it.
"""
from __future__ import annotations

import os
from collections import Counter
from typing import Callable

from ..captions import put_trigger_first, split_tags
from ..folders import Concept, ImageItem
from .report import LOOK, PROBLEM, Finding

COMMON_SHARE = 0.9  # a tag in this share of a concept's captions describes the concept itself
COMMON_MIN_IMAGES = 5
NOISE_MIN_IMAGES = 30  # rare tags are noise only in a large set
NOISE_MAX_SHARE = 0.02


def concept_trigger(concept: Concept, trigger_word: str) -> str:
    """The word every caption of the concept should have: the trigger word when given, else
    the first word of the folder's concept name (`10_sks dog` -> `sks`)."""
    return trigger_word.strip() or (concept.name.split()[0] if concept.name.split() else "")


def has_trigger(caption: str, trigger: str, separator: str = ",") -> bool:
    trigger = trigger.lower()
    return any(tag.lower() == trigger or trigger in tag.lower().split() for tag in split_tags(caption, separator))


def tag_frequency(items: list[ImageItem], separator: str = ",") -> list[tuple[str, int]]:
    counts = Counter()
    for item in items:
        counts.update(set(split_tags(item.caption, separator)))
    return sorted(counts.items(), key=lambda pair: (-pair[1], pair[0]))


def caption_findings(concept: Concept, items: list[ImageItem], trigger_word: str = "", separator: str = ",",
                     max_token_length: int = 225,
                     count_tokens: Callable[[str], int] | None = None) -> list[Finding]:
    folder = os.path.basename(concept.folder)
    found: list[Finding] = []
    uncaptioned = [i.path for i in items if not i.caption_from_file]
    if uncaptioned:
        found.append(Finding(LOOK, "no caption", f"{len(uncaptioned)} of {len(items)} images in {folder} have no "
                             f"caption file: they train with the caption {concept.name!r}",
                             "caption them (Dataset sub-tab: Caption with a tagger)", uncaptioned, folder))
    empty = [i.path for i in items if i.caption_from_file and not i.caption.strip()]
    if empty:
        found.append(Finding(PROBLEM, "empty caption", f"{len(empty)} captions in {folder} are empty",
                             "write or tag them, or delete the empty files", empty, folder))
    trigger = concept_trigger(concept, trigger_word)
    if trigger and not concept.is_reg:
        lacking = [i.path for i in items if i.caption_from_file and i.caption.strip()
                   and not has_trigger(i.caption, trigger, separator)]
        if lacking:
            found.append(Finding(PROBLEM, "trigger missing", f"{len(lacking)} captions in {folder} lack the "
                                 f"trigger word {trigger!r}: those images do not teach it",
                                 f"add it first (Tags sub-tab: trigger {trigger}), or set trigger_word={trigger} "
                                 "so the trainer puts it first", lacking, folder, {"trigger": trigger}))
    if count_tokens is not None:
        found += _length_findings(items, folder, trigger_word, separator, max_token_length, count_tokens)
    found += _tag_findings(items, folder, trigger, separator)
    return found


def _length_findings(items, folder, trigger_word, separator, limit, count_tokens) -> list[Finding]:
    over = []
    for item in items:
        tokens = count_tokens(put_trigger_first(item.caption, trigger_word, separator))
        if tokens > limit:
            over.append((item.path, tokens))
    if not over:
        return []
    worst = max(over, key=lambda pair: pair[1])
    return [Finding(LOOK, "too long", f"{len(over)} captions in {folder} are over max_token_length={limit} "
                    f"tokens (longest: {os.path.basename(worst[0])}, {worst[1]}): the rest is cut off",
                    "shorten them (fewer tags), or raise max_token_length to 150 or 225",
                    [path for path, _ in over], folder, {"tokens": dict(over)})]


def _tag_findings(items, folder, trigger, separator) -> list[Finding]:
    captioned = [i for i in items if i.caption_from_file and i.caption.strip()]
    frequency = tag_frequency(captioned, separator)
    found = []
    if len(captioned) >= COMMON_MIN_IMAGES:
        common = [(tag, n) for tag, n in frequency
                  if n >= COMMON_SHARE * len(captioned) and tag.lower() != trigger.lower()]
        for tag, n in common:
            found.append(Finding(LOOK, "tag in every caption", f"{tag!r} is in {n} of {len(captioned)} captions "
                                 f"of {folder}: it describes the concept itself",
                                 "remove it from all, so the trigger word absorbs it (keep it if you want to "
                                 "vary it in prompts)", [], folder, {"tag": tag, "images": n}))
    if len(captioned) >= NOISE_MIN_IMAGES:
        rare = [tag for tag, n in frequency if n == 1 or n < NOISE_MAX_SHARE * len(captioned)]
        if rare:
            shown = ", ".join(rare[:12]) + (" ..." if len(rare) > 12 else "")
            found.append(Finding(LOOK, "rare tags", f"{len(rare)} tags appear in only one or two of {len(captioned)} "
                                 f"captions of {folder} ({shown}): often tagger noise",
                                 "check them in the Tags sub-tab; remove the wrong ones", [], folder,
                                 {"tags": rare}))
    return found


def remove_tag_from_all(folder: str, tag: str, caption_extension: str = ".txt") -> tuple[int, str]:
    """Remove `tag` from every caption of `folder` through the tag editor: originals backed up
    first. Only call it on the user's confirmation. Returns (captions changed, backup folder)."""
    from ...preprocess.tag_editor import TagEditor

    editor = TagEditor(folder, caption_extension)
    changed = editor.apply("remove", unwanted=tag)
    editor.save()
    return changed, editor.backup_dir if changed else ""
