"""The dataset doctor: the advice of the LoRA tutorials, measured on the user's own folder.

`examine(config)` scans the dataset as the trainer does (same folders, captions, buckets),
measures every picture once and returns a `Report` of findings, each with a severity, a
one-line reason and what to do. It only reads: setting duplicates aside, removing a tag from
all captions and renaming folders are separate calls the user confirms.
"""
from __future__ import annotations

import os
import time
from typing import Callable

from ...config import TrainConfig
from ..buckets import BucketAssigner
from ..plan import bucket_settings, dataset_assigners, scan_config_dataset
from ..training_set import TrainingSet
from .captions import caption_findings, tag_frequency
from .concepts import concept_findings, concept_rows
from .duplicates import duplicate_findings
from .images import ImageStats, image_findings, measure_all
from .report import FINE, LOOK, PROBLEM, Finding, ImageRow, Report

__all__ = ["examine", "default_token_counter", "Report", "Finding", "PROBLEM", "LOOK", "FINE"]


def default_token_counter() -> Callable[[str], int] | None:
    """The CLIP tokenizer's count (offline, from open_clip's vocabulary); None where it is not
    installed, and the length check is then left out."""
    from ...errors import Unavailable
    from ...hosts.clip_tokenizer import load_clip_tokenizer

    try:
        tokenizer = load_clip_tokenizer()
    except (Unavailable, ImportError):
        return None
    return lambda text: len(tokenizer(text, add_special_tokens=False, truncation=False, verbose=False)["input_ids"])


def examine(config: TrainConfig, trigger_word: str | None = None,
            count_tokens: Callable[[str], int] | None = None) -> Report:
    """Check `config.train_data_dir` (and reg_data_dir) for training at `config`'s resolution
    and buckets. `trigger_word`: the word every caption should have (default: the config's,
    else each concept's first word). Raises DatasetError when there is nothing to train on."""
    start = time.perf_counter()
    trigger = config.trigger_word if trigger_word is None else trigger_word
    scan = scan_config_dataset(config)
    training_set = TrainingSet(scan, BucketAssigner(bucket_settings(config)), config.train_batch_size,
                               config.trigger_word, config.caption_separator, config.prior_loss_weight,
                               dataset_assigners(config, scan))
    resolution = config.resolution_wh()
    report = Report(os.path.abspath(config.train_data_dir), resolution)
    train = [e for e in training_set.examples if not e.item.concept.is_reg]
    measured = measure_all([(e.path, e.placement) for e in train])
    stats = [m for m in measured if isinstance(m, ImageStats)]
    for example, result in zip(train, measured):
        if not isinstance(result, ImageStats):
            report.findings.append(Finding(PROBLEM, "unreadable", str(result), "remove or re-save it", [example.path]))
    for path, reason in scan.skipped:
        report.findings.append(Finding(PROBLEM, "skipped", f"{os.path.basename(path)} is not trained: {reason}",
                                       "fix or remove the file", [path]))
    for warning in scan.warnings:
        report.findings.append(Finding(LOOK, "folder", warning, "see the message", []))
    report.findings += image_findings(stats, resolution)
    report.findings += duplicate_findings(stats)
    report.findings += concept_findings(training_set)
    for concept in scan.concepts:
        items = [item for item in scan.items if item.concept is concept]
        report.findings += caption_findings(concept, items, trigger, config.caption_separator,
                                            config.max_token_length, count_tokens)
        report.tag_frequency[os.path.basename(concept.folder)] = tag_frequency(items, config.caption_separator)
    report.images = _rows(stats, train)
    report.concepts = concept_rows(training_set)
    report.seconds = time.perf_counter() - start
    return report


def _rows(stats: list[ImageStats], train) -> list[ImageRow]:
    concept_of = {e.path: os.path.basename(e.item.concept.folder) for e in train}
    shared: dict[tuple[int, int], int] = {}
    for s in stats:
        shared[s.placement.bucket] = shared.get(s.placement.bucket, 0) + 1
    return [ImageRow(s.path, concept_of[s.path], s.size, s.placement.bucket, shared[s.placement.bucket],
                     round(s.scale, 3), round(s.sharpness, 4), round(s.brightness, 1), round(s.contrast, 1),
                     s.alpha, s.orientation != 1) for s in stats]
