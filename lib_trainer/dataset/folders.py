"""The kohya dataset layout: `<root>/<repeats>_<concept>/image.png` + `image.txt`.

`5_RishiNaruto` trains each image 5 times per epoch with "RishiNaruto" as the caption of
images that have no caption file; `10_sls 1girl` uses "sls 1girl". Regularisation sets use
the same layout under their own root.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

from .captions import CaptionError, encoding_report, read_caption
from .images import ImageReadError, decoded_sizes, hidden_images, is_image_file, list_images, unusable_files
from ..errors import UserError

FOLDER_PATTERN = re.compile(r"^(\d+)_(.+)$")
OTHER_CAPTION_EXTENSIONS = (".txt", ".caption")


class DatasetError(UserError, ValueError):
    """A dataset that cannot be trained on; the message says what to fix."""


@dataclass
class Concept:
    folder: str
    repeats: int
    name: str  # the folder name after "N_", the caption of uncaptioned images
    is_reg: bool = False
    # A dataset config's subset (dataset/dataset_config.py SubsetSpec): its own caption and image
    # settings; None for a <repeats>_<concept> folder, which takes the run's.
    subset: Any = None
    dataset: int = 0  # its [[datasets]] entry: batches never mix two


@dataclass
class ImageItem:
    path: str
    caption: str
    concept: Concept
    size: tuple[int, int]  # (width, height) after EXIF rotation
    caption_from_file: bool


@dataclass
class DatasetScan:
    items: list[ImageItem] = field(default_factory=list)
    concepts: list[Concept] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    warnings: list[str] = field(default_factory=list)
    hidden: int = 0  # hidden files (.name.png, ._name.png) left out, as kohya leaves them out
    datasets: list = field(default_factory=list)  # a dataset config's DatasetSpecs; empty for folders

    def train_items(self) -> list[ImageItem]:
        return [item for item in self.items if not item.concept.is_reg]

    def reg_items(self) -> list[ImageItem]:
        return [item for item in self.items if item.concept.is_reg]


def suggested_name(name: str) -> str:
    """A <repeats>_<concept> name for a folder that has none, or a repeat count below 1
    (`0_concept` -> `10_concept`, not `10_0_concept`)."""
    match = re.match(r"^\d+_(.+)$", name)
    return f"10_{match.group(1) if match else name}"


def parse_concept_folder(name: str) -> tuple[int, str] | None:
    match = FOLDER_PATTERN.match(name)
    if not match or int(match.group(1)) < 1:
        return None
    return int(match.group(1)), match.group(2).strip()


def scan_dataset(train_data_dir: str, reg_data_dir: str = "", caption_extension: str = ".txt",
                 min_side: int = 64, keep_lines: bool = False) -> DatasetScan:
    """Find concepts, images and captions; skip unusable images and say why.

    Raises DatasetError when nothing can be trained on, or when captions cannot be read
    (training on the wrong captions silently would waste the whole run).
    """
    scan = DatasetScan()
    caption_problems: list[str] = []
    roots = [(train_data_dir, False)] + ([(reg_data_dir, True)] if reg_data_dir else [])
    for root, is_reg in roots:
        for concept in _find_concepts(root, is_reg, scan):
            _scan_concept(concept, caption_extension, min_side, scan, caption_problems, keep_lines)
    if caption_problems:
        raise DatasetError("Some captions cannot be used:\n  - " + "\n  - ".join(caption_problems))
    if not scan.train_items():
        reasons = "".join(f"\n  - {path}: {reason}" for path, reason in scan.skipped)
        raise DatasetError(f"No usable training images in {train_data_dir}.{reasons}")
    return scan


def scan_subsets(subsets: list[tuple[Concept, str]], min_side: int = 64) -> DatasetScan:
    """A dataset config's subsets, each a concept folder with its own caption extension; raises
    DatasetError as `scan_dataset` does."""
    scan = DatasetScan()
    caption_problems: list[str] = []
    for concept, caption_extension in subsets:
        scan.concepts.append(concept)
        _scan_concept(concept, caption_extension, min_side, scan, caption_problems)
    if caption_problems:
        raise DatasetError("Some captions cannot be used:\n  - " + "\n  - ".join(caption_problems))
    if not scan.train_items():
        reasons = "".join(f"\n  - {path}: {reason}" for path, reason in scan.skipped)
        raise DatasetError(f"No usable training images in the dataset config's subsets.{reasons}")
    return scan


def _find_concepts(root: str, is_reg: bool, scan: DatasetScan) -> list[Concept]:
    what = "reg_data_dir" if is_reg else "train_data_dir"
    if not root:
        raise DatasetError(f"{what} is not set: give the folder that holds your <repeats>_<concept> folders")
    if not os.path.isdir(root):
        problem = "is a file, not a folder" if os.path.exists(root) else "does not exist"
        raise DatasetError(f"{what} {root} {problem}: give the folder that holds your <repeats>_<concept> folders")
    concepts, ignored = [], []
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if not os.path.isdir(path) or name.startswith("."):
            continue
        parsed = parse_concept_folder(name)
        if parsed is None:
            ignored.append(name)
            continue
        concepts.append(Concept(folder=path, repeats=parsed[0], name=parsed[1], is_reg=is_reg))
    for name in ignored:
        scan.warnings.append(f"{os.path.join(root, name)} ignored: its name does not start with <repeats>_ "
                             f"(rename it to e.g. {suggested_name(name)})")
    if concepts:
        scan.concepts.extend(concepts)
        return concepts
    loose = [name for name in os.listdir(root) if is_image_file(name)]
    if loose:
        raise DatasetError(
            f"{what} {root} holds {len(loose)} images directly. It must be the folder *above* the image "
            f"folders: move the images into a subfolder named <repeats>_<concept>, e.g. {root}/10_myconcept")
    hint = f" (found {', '.join(ignored)}: rename to e.g. {suggested_name(ignored[0])})" if ignored else ""
    raise DatasetError(f"{what} {root} has no <repeats>_<concept> folder{hint}: put your images and captions "
                       f"in a subfolder named <repeats>_<concept>, e.g. {root}/10_myconcept")


def _scan_concept(concept: Concept, caption_extension: str, min_side: int, scan: DatasetScan,
                  caption_problems: list[str], keep_lines: bool = False) -> None:
    images = list_images(concept.folder)
    scan.hidden += hidden_images(concept.folder)
    scan.skipped.extend(unusable_files(concept.folder))
    if not images:
        scan.warnings.append(f"{concept.folder} has no images (png, jpg, jpeg, webp, bmp, tif, gif)")
        return
    found_captions = 0
    not_utf8, non_ascii = [], []
    for path, size in zip(images, decoded_sizes(images)):
        if isinstance(size, ImageReadError):
            scan.skipped.append((path, str(size).split(": ", 1)[-1]))
            continue
        width, height = size
        if min(width, height) < min_side:
            scan.skipped.append((path, f"too small ({width}x{height}); needs at least {min_side} px per side"))
            continue
        caption_path = os.path.splitext(path)[0] + caption_extension
        caption, from_file = concept.name, False
        if os.path.isfile(caption_path):
            try:
                caption, from_file = read_caption(caption_path, keep_lines), True
                found_captions += 1
                if not caption:
                    scan.warnings.append(f"{caption_path} is empty: the image trains with an empty caption")
                elif not caption.isascii():
                    non_ascii.append(caption_path)
            except CaptionError:
                not_utf8.append(caption_path)
        scan.items.append(ImageItem(path, caption, concept, (width, height), from_file))
    refusal, warning = encoding_report(concept.folder, not_utf8, non_ascii)
    caption_problems.extend([refusal] if refusal else [])
    scan.warnings.extend([warning] if warning else [])
    if found_captions == 0:
        _explain_missing_captions(concept, caption_extension, caption_problems, scan)


def _explain_missing_captions(concept: Concept, caption_extension: str, caption_problems: list[str],
                              scan: DatasetScan) -> None:
    """kohya's default caption extension is `.caption`; a folder full of them trained as
    `.txt` would silently train on the folder name. Stop and say so."""
    for other in OTHER_CAPTION_EXTENSIONS:
        if other == caption_extension:
            continue
        count = sum(1 for name in os.listdir(concept.folder) if name.lower().endswith(other))
        if count:
            caption_problems.append(
                f"{concept.folder} has {count} {other} caption files but no {caption_extension} files: "
                f"set caption_extension to {other} (--caption_extension {other}) or rename them")
            return
    if concept.subset is not None and not concept.name:
        scan.warnings.append(f"{concept.folder}: no {caption_extension} captions and no class_tokens in its subset, "
                             "so every image trains with an empty caption")
        return
    source = "its subset's class_tokens" if concept.subset is not None else "its folder name"
    scan.warnings.append(f"{concept.folder}: no {caption_extension} captions, "
                         f"every image is captioned with {source} {concept.name!r}")
