"""Holding images out of training for the validation loss (`validation_split`).

Each training folder (subset) is split on its own, as sd-scripts splits each subset: its
images are shuffled by a generator seeded with `validation_seed` (the run's `seed` when not
set) and the last round(count x split) are held out; `validation_split = 1.0` holds out the
whole folder. Regularisation folders are never held out. A held-out image is in no training
batch; it is scored once per validation pass, in fixed batches (train/validation.py).
"""
from __future__ import annotations

import dataclasses
import random
from collections import defaultdict

from ..config import TrainConfig
from .folders import Concept, DatasetError, DatasetScan, ImageItem
from .training_set import Example


def concept_split(concept: Concept, config: TrainConfig) -> tuple[float, int]:
    """(fraction held out, seed) of one folder: its subset's own, else the run's."""
    subset = concept.subset
    fraction = subset.validation_split if subset is not None else config.validation_split
    seed = subset.validation_seed if subset is not None and subset.validation_seed is not None else None
    if seed is None:
        seed = config.validation_seed if config.validation_seed is not None else config.seed
    return (0.0 if concept.is_reg else fraction), seed


def held_out(items: list[ImageItem], fraction: float, seed: int) -> list[ImageItem]:
    """The images of one folder held out for validation. sd-scripts keeps ceil(count x (1 -
    split)) for training and validates on the last round(count x split), so with an odd count
    one image can land in both; here the held-out ones are only ever validated."""
    if fraction <= 0 or not items:
        return []
    order = list(items)
    random.Random(seed).shuffle(order)
    count = len(order) if fraction >= 1.0 else round(len(order) * fraction)
    return order[len(order) - count:]


def split_validation(scan: DatasetScan, config: TrainConfig) -> tuple[DatasetScan, list[ImageItem]]:
    """(the scan without the held-out images, the held-out images in scan order)."""
    by_concept: dict[int, list[ImageItem]] = defaultdict(list)
    for item in scan.items:
        by_concept[id(item.concept)].append(item)
    validation: set[int] = set()
    for concept in scan.concepts:
        fraction, seed = concept_split(concept, config)
        validation |= {id(item) for item in held_out(by_concept[id(concept)], fraction, seed)}
    if not validation:
        return scan, []
    kept = [item for item in scan.items if id(item) not in validation]
    if not any(not item.concept.is_reg for item in kept):
        raise DatasetError("validation_split holds out every training image: lower it, or keep at least one "
                           "training folder (subset) below 1.0")
    return dataclasses.replace(scan, items=kept), [item for item in scan.items if id(item) in validation]


def fixed_batches(examples: list[Example], batch_sizes: list[int]) -> list[list[Example]]:
    """Each example once, in batches that never mix datasets or buckets, in a fixed order (by
    dataset, bucket, then path), so every validation pass scores the same batches."""
    groups: dict[tuple, list[Example]] = defaultdict(list)
    for example in examples:
        groups[(example.item.concept.dataset, example.placement.bucket)].append(example)
    batches = []
    for (dataset, _), members in sorted(groups.items()):
        members.sort(key=lambda e: e.path)
        size = batch_sizes[dataset]
        batches += [members[i: i + size] for i in range(0, len(members), size)]
    return batches
