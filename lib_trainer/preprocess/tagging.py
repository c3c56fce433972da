"""Caption a folder with a tagger: the "Dataset" sub-tab's tagging step and `python -m lib_trainer tag`.

Taggers are a registry (`TAGGERS`): a name maps to a factory that returns an object with
`tag(images) -> [[(tag, score), ...], ...]`. WD14 runs here through onnxruntime, BLIP from a
local transformers folder; the WebUI registers its own deepbooru and BLIP and its models
folder for WD14 when it starts (lib_trainer/webui/taggers.py). What happens after
(thresholds aside) is shared: exclusions, underscores, escaping, sorting, limits, trigger
word and the merge with the caption already on disk, which is backed up before its first
overwrite.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Callable, Protocol

from PIL import Image

from ..dataset.images import ImageReadError, list_images, load_rgb
from ..fileio import write_text_atomic
from ..progress import Progress, silent
from . import tags as tag_ops
from ..dataset import encodings
from .captions import DEFAULT_CAPTION_EXTENSION, CaptionBackup, caption_path, join_tags, read_caption, split_tags
from ..errors import InvalidInput, Unavailable

MERGE_MODES = ("overwrite", "append", "prepend", "skip")
# Kaomoji whose underscores are the face itself (the tagger extensions keep these too).
KAOMOJI = {"0_0", "(o)_(o)", "+_+", "+_-", "._.", "<o>_<o>", "<|>_<|>", "=_=", ">_<", "3_3", "6_9", ">_o",
           "@_@", "^_^", "o_o", "u_u", "x_x", "|_|", "||_||"}


@dataclass
class TagOptions:
    general_threshold: float | None = None  # None: the model's default
    character_threshold: float | None = None
    exclude: list[str] = field(default_factory=list)
    replace_underscores: bool = True
    escape_parentheses: bool = True
    sort_by: str = "confidence"  # or "alphabetical"
    max_tags: int = 0  # 0: no limit
    trigger: str = ""
    merge: str = "overwrite"  # how new tags meet an existing caption; see MERGE_MODES
    include_rating: bool = False  # add the most likely rating tag (general, sensitive, ...)
    caption_extension: str = DEFAULT_CAPTION_EXTENSION
    batch_size: int = 8

    def validate(self) -> None:
        if self.merge not in MERGE_MODES:
            raise InvalidInput(f"unknown merge mode {self.merge!r}; choose from {', '.join(MERGE_MODES)}")
        if self.sort_by not in ("confidence", "alphabetical"):
            raise InvalidInput(f"sort_by must be 'confidence' or 'alphabetical', not {self.sort_by!r}")
        for name in ("general_threshold", "character_threshold"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1:
                raise InvalidInput(f"{name} must be between 0 and 1, not {value}")


class Tagger(Protocol):
    def tag(self, images: list[Image.Image]) -> list[list[tuple[str, float]]]: ...


def _normal(tag: str) -> str:
    """How exclusions compare: underscores, spaces, escapes and case do not matter."""
    return tag.replace("\\", "").replace("_", " ").strip().casefold()


def format_tag(tag: str, options: TagOptions) -> str:
    if options.replace_underscores and tag not in KAOMOJI:
        tag = tag.replace("_", " ")
    if options.escape_parentheses:
        tag = re.sub(r"(?<!\\)([()])", r"\\\1", tag)
    return tag


def format_tags(scored: list[tuple[str, float]], options: TagOptions) -> list[str]:
    """Scored tags -> the caption's tag list: exclusions, order, limit, formatting."""
    excluded = {_normal(tag) for tag in options.exclude}
    kept = [(tag, score) for tag, score in scored if _normal(tag) not in excluded]
    if options.sort_by == "confidence":
        kept.sort(key=lambda item: (-item[1], item[0]))
    else:
        kept.sort(key=lambda item: item[0].casefold())
    if options.max_tags > 0:
        kept = kept[: options.max_tags]
    return tag_ops.dedupe([format_tag(tag, options) for tag, _ in kept])


def merge_caption(existing: list[str], new: list[str], options: TagOptions) -> list[str]:
    """The caption to write; the trigger word goes first whatever the mode."""
    merged = {
        "overwrite": lambda: list(new),
        "append": lambda: tag_ops.add(existing, new, "end"),
        # Prepend is the mirror of append: the tagger's order first, the rest of the old caption after.
        "prepend": lambda: tag_ops.add(new, existing, "end"),
        "skip": lambda: list(existing) if existing else list(new),
    }[options.merge]()
    return tag_ops.insert_trigger(merged, options.trigger)


@dataclass
class TagResult:
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    backup_dir: str = ""
    stopped: bool = False
    seconds: float = 0.0

    def summary(self) -> str:
        text = f"{len(self.written)} captions written, {len(self.unchanged)} unchanged"
        if self.written and self.backup_dir and os.path.isdir(self.backup_dir):
            text += f"; previous captions backed up in {self.backup_dir}"
        if self.skipped:
            text += f"; {len(self.skipped)} skipped:\n" + "\n".join(f"  {p}: {why}" for p, why in self.skipped)
        return text + ("\nstopped early on request" if self.stopped else "")


def tag_folder(folder: str, tagger: Tagger, options: TagOptions, progress: Progress | None = None,
               dry_run: bool = False) -> TagResult:
    """Tag every picture in `folder` in batches and write the merged captions atomically."""
    import time

    options.validate()
    progress = progress or silent()
    paths = list_images(folder)
    backup = CaptionBackup(folder)
    result = TagResult(backup_dir=backup.backup_dir)
    started = time.perf_counter()
    progress.start("tagging", total=len(paths))
    for first in range(0, len(paths), max(1, options.batch_size)):
        if progress.stop_requested:
            result.stopped = True
            break
        batch, images = [], []
        for path in paths[first:first + options.batch_size]:
            try:
                images.append(load_rgb(path))
                batch.append(path)
            except ImageReadError as error:
                result.skipped.append((path, str(error)))
                progress.status(str(error))
        for path, scored in zip(batch, tagger.tag(images) if images else []):
            _write_caption(path, format_tags(scored, options), options, backup, result, dry_run)
        progress.step(min(first + options.batch_size, len(paths)))
    result.seconds = time.perf_counter() - started
    progress.end(result.summary())
    return result


def _write_caption(path, new_tags, options, backup, result, dry_run) -> None:
    target = caption_path(path, options.caption_extension)
    existing = read_caption(target)
    if existing.exists and existing.encoding not in encodings.UTF8:  # merging would rewrite it unasked
        result.skipped.append((target, f"caption is {encodings.display_name(existing.encoding)}, not UTF-8: convert "
                                       "it first (tags FOLDER --convert-encoding)"))
        return
    old = split_tags(existing.text)
    tags = merge_caption(old, new_tags, options)
    if existing.exists and tags == old:
        result.unchanged.append(target)
        return
    if not dry_run:
        backup.protect(target)
        write_text_atomic(target, join_tags(tags))
    result.written.append(target)


# --- the registry --------------------------------------------------------------------------
@dataclass
class WD14Tagger:
    model: "object"  # wd14.WD14Model
    general_threshold: float
    character_threshold: float
    include_rating: bool = False

    def tag(self, images):
        probabilities = self.model.predict(images)
        results = []
        for row in probabilities:
            ratings, scored = self.model.scored_tags(row, self.general_threshold, self.character_threshold)
            if self.include_rating and ratings:
                scored.append(max(ratings.items(), key=lambda item: item[1]))
            results.append(scored)
        return results


def make_wd14(options: TagOptions, model: str | None = None, model_path: str | None = None,
              models_dir: str | None = None, download: bool = False, use_gpu: bool = True,
              models_file: str | None = None, notice=print, download_hint: str | None = None, **_) -> WD14Tagger:
    """`model_path`: a folder with the two files (used as is); else `model` from the list."""
    from . import wd14

    catalogue = wd14.load_model_list(models_file or wd14.MODEL_LIST)
    name = model or wd14.default_model_name(models_file or wd14.MODEL_LIST)
    if model_path:
        info = catalogue.get(name, wd14.ModelInfo(name, ""))
        folder = model_path
    else:
        if name not in catalogue:
            raise InvalidInput(f"unknown WD14 model {name!r}; known: {', '.join(catalogue)} "
                               f"(add others to {models_file or wd14.MODEL_LIST})")
        info = catalogue[name]
        folder = wd14.ensure_model(info, models_dir or wd14.default_models_dir(), download,
                                   download_hint or wd14.CLI_DOWNLOAD)
    loaded = wd14.WD14Model(folder, use_gpu, notice)
    general = info.general_threshold if options.general_threshold is None else options.general_threshold
    character = info.character_threshold if options.character_threshold is None else options.character_threshold
    return WD14Tagger(loaded, general, character, options.include_rating)


def make_deepbooru(options: TagOptions, **settings):
    """Without the WebUI: there is no deepbooru model here (the WebUI registers its own)."""
    raise Unavailable("deepbooru uses the WebUI's own model and runs only inside the WebUI; "
                      "outside it, use a WD14 tagger (--tagger wd14), which is also more accurate")


def make_blip(options: TagOptions, model_path: str | None = None, use_gpu: bool = True, **settings):
    from .blip import LocalBlip

    return LocalBlip(model_path, use_gpu)


TAGGERS: dict[str, Callable[..., Tagger]] = {
    "wd14": make_wd14,
    "deepbooru": make_deepbooru,
    "blip": make_blip,
}


def register_tagger(name: str, factory: Callable[..., Tagger]) -> None:
    """Add a tagger, or replace the one of that name: the WebUI replaces deepbooru and BLIP
    with its own models when it starts (lib_trainer/webui/taggers.py)."""
    TAGGERS[name] = factory


def make_tagger(name: str, options: TagOptions, **settings) -> Tagger:
    if name not in TAGGERS:
        raise InvalidInput(f"unknown tagger {name!r}; choose from {', '.join(TAGGERS)}")
    return TAGGERS[name](options, **settings)
