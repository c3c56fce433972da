"""Turn a folder of raw pictures into a training folder: the "Dataset" sub-tab and
`python -m lib_trainer preprocess` both call `preprocess_folder`.

Originals are only read. Each picture is handled on its own: a broken or unusable file is
reported in the result and the batch goes on. Captions next to the originals are copied
next to every picture made from them (tiles, flipped copies).
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field

from PIL import Image, ImageOps

from ..dataset.images import ImageReadError, list_images, load_picture, unusable_files
from ..fileio import atomic_path
from ..progress import Progress, silent
from .captions import DEFAULT_CAPTION_EXTENSION, caption_path
from ..dataset.buckets import BucketAssigner, BucketSettings
from .crop import CROP_MODES, auto_size, needs_split, split_tiles
from .focal import FocalSettings, draw_debug
from ..errors import InvalidInput

SIZE_MODES = ("fixed", "bucket", "auto")


@dataclass
class PreprocessOptions:
    source: str
    destination: str
    width: int = 512
    height: int = 512
    size_mode: str = "fixed"  # fixed: width x height; bucket: nearest bucket of width^2 area; auto: see min/max area
    crop: str = "focal"  # a key of crop.CROP_MODES
    focal: FocalSettings = field(default_factory=FocalSettings)
    min_area: int = 384 * 384  # auto size mode
    max_area: int = 768 * 768
    split: bool = False
    split_threshold: float = 0.5
    overlap: float = 0.2
    flip: bool = False
    background: str | None = "white"  # flatten transparency on this colour; None keeps it (PNG)
    debug: bool = False  # write focal-point views to <destination>/.focal_debug
    repeats: int = 0  # with a trigger and/or class: output into "<repeats>_<trigger> <class>"
    trigger: str = ""
    class_token: str = ""
    caption_extension: str = DEFAULT_CAPTION_EXTENSION
    image_format: str = "png"

    def validate(self) -> None:
        if self.crop not in CROP_MODES:
            raise InvalidInput(f"unknown crop mode {self.crop!r}; choose from {', '.join(CROP_MODES)}")
        if self.size_mode not in SIZE_MODES:
            raise InvalidInput(f"unknown size mode {self.size_mode!r}; choose from {', '.join(SIZE_MODES)}")
        if self.width < 64 or self.height < 64:
            raise InvalidInput(f"target size {self.width}x{self.height} is too small (64 at least)")
        if not os.path.isdir(self.source):
            raise FileNotFoundError(f"{self.source}: source folder not found")

    def output_folder(self) -> str:
        concept = " ".join(part for part in (self.trigger.strip(), self.class_token.strip()) if part)
        if self.repeats > 0 and concept:
            return os.path.join(self.destination, f"{self.repeats}_{concept}")
        if self.repeats > 0 or concept:
            raise InvalidInput("a kohya folder name needs both repeats (> 0) and a trigger or class")
        return self.destination


@dataclass
class PreprocessResult:
    output_folder: str
    written: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why)
    warnings: list[str] = field(default_factory=list)
    stopped: bool = False

    def summary(self) -> str:
        text = f"{len(self.written)} images written to {self.output_folder}"
        if self.skipped:
            text += f"; {len(self.skipped)} skipped:\n" + "\n".join(f"  {path}: {why}" for path, why in self.skipped)
        return text + ("\nstopped early on request" if self.stopped else "")


def target_size(options: PreprocessOptions, size: tuple[int, int]) -> tuple[int, int]:
    if options.size_mode == "bucket":
        # The training buckets themselves, so training needs no further crop.
        settings = BucketSettings((options.width, options.width), True, options.width // 2, options.width * 2, 64)
        return BucketAssigner(settings).place(size).bucket
    if options.size_mode == "auto":
        return auto_size(*size, options.min_area, options.max_area)
    return options.width, options.height


def unique_stems(paths: list[str]) -> dict[str, str]:
    """Each picture's output name: its own, or with `_1`, `_2`... when another picture of the
    batch has the same name in another format (`x.png`, `x.jpg`), so none overwrites another.
    Names are compared ignoring case, as Windows and macOS do."""
    taken: set[str] = set()
    stems = {}
    for path in paths:
        stem = base = os.path.splitext(os.path.basename(path))[0]
        counter = 0
        while stem.casefold() in taken:
            counter += 1
            stem = f"{base}_{counter}"
        taken.add(stem.casefold())
        stems[path] = stem
    return stems


def process_picture(path: str, options: PreprocessOptions, folder: str, debug_folder: str,
                    stem: str | None = None) -> tuple[list[str], list[str]]:
    """Write the outputs made from one picture, named after `stem` (default: the picture's
    own name); returns (paths written, warnings)."""
    image = load_picture(path, options.background)
    target = target_size(options, image.size)
    stem = stem or os.path.splitext(os.path.basename(path))[0]
    warnings: list[str] = []
    if options.split and needs_split(image.size, target, options.split_threshold):
        pieces = [(f"{stem}_tile{i + 1}", tile) for i, tile in enumerate(split_tiles(image, target, options.overlap))]
    else:
        # Focal analysis sees the flattened picture even when the output keeps transparency.
        result = CROP_MODES[options.crop](image, target, options.focal)
        pieces = [(stem, result.image)]
        if result.focal is not None:
            warnings += [f"{os.path.basename(path)}: {w}" for w in result.focal.warnings]
            if options.debug:
                _save(draw_debug(result.resized, result.focal, result.box), os.path.join(debug_folder, stem + ".jpg"))
    if options.flip:
        pieces += [(name + "_flip", ImageOps.mirror(picture)) for name, picture in pieces]
    written = []
    caption = caption_path(path, options.caption_extension)
    for name, picture in pieces:
        out = os.path.join(folder, f"{name}.{options.image_format}")
        _save(picture, out)
        written.append(out)
        if os.path.isfile(caption):
            with atomic_path(caption_path(out, options.caption_extension)) as temporary:
                shutil.copyfile(caption, temporary)
    return written, warnings


def preprocess_folder(options: PreprocessOptions, progress: Progress | None = None) -> PreprocessResult:
    progress = progress or silent()
    options.validate()
    folder = options.output_folder()
    if os.path.realpath(folder) == os.path.realpath(options.source):
        raise InvalidInput("the output folder is the source folder; choose another so the originals stay untouched")
    result = PreprocessResult(folder)
    paths = list_images(options.source)
    unusable = unusable_files(options.source)
    result.skipped.extend(unusable)
    skipped_names = sorted(set(os.listdir(options.source)) - {os.path.basename(p) for p in paths}
                           - {os.path.basename(p) for p, _ in unusable})
    for name in skipped_names:
        full = os.path.join(options.source, name)
        if os.path.isfile(full) and not name.endswith(options.caption_extension) and not name.startswith("."):
            result.skipped.append((full, "not an image file"))
    stems = unique_stems(paths)
    os.makedirs(folder, exist_ok=True)
    debug_folder = os.path.join(folder, ".focal_debug")
    reported: set[str] = set()
    progress.start("preprocess", total=len(paths))
    for done, path in enumerate(paths, 1):
        if progress.stop_requested:
            result.stopped = True
            break
        try:
            written, warnings = process_picture(path, options, folder, debug_folder, stems[path])
        except (ImageReadError, OSError) as error:
            result.skipped.append((path, str(error)))
            progress.status(f"skipped {path}: {error}")
        else:
            result.written += written
            for warning in warnings:
                problem = warning.split(": ", 1)[-1]  # without the file name
                if problem not in reported:
                    reported.add(problem)
                    progress.status(warning)  # each distinct problem once, not once per picture
                result.warnings.append(warning)
        progress.step(done)
    progress.end(result.summary())
    return result


def _save(picture: Image.Image, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    extension = os.path.splitext(path)[1].lstrip(".").lower()
    format_name = {"jpg": "JPEG", "jpeg": "JPEG"}.get(extension, extension.upper())
    if format_name == "JPEG" and picture.mode != "RGB":
        picture = picture.convert("RGB")
    with atomic_path(path) as temporary:
        picture.save(temporary, format=format_name, **({"quality": 95} if format_name == "JPEG" else {}))
