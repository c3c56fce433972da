"""The examples of one run and the batches of each epoch, counted as kohya counts them."""
from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import dataclass

from .buckets import BucketAssigner, Placement
from .captions import put_trigger_first
from .folders import DatasetScan, ImageItem


@dataclass(frozen=True)
class Example:
    """One image as it is trained: its bucket, its base caption and its loss weight."""
    item: ImageItem
    placement: Placement
    caption: str
    loss_weight: float = 1.0

    @property
    def path(self) -> str:
        return self.item.path


class TrainingSet:
    def __init__(self, scan: DatasetScan, assigner: BucketAssigner, batch_size: int, trigger_word: str = "",
                 separator: str = ",", prior_loss_weight: float = 1.0) -> None:
        self.scan = scan
        self.batch_size = batch_size
        self.examples = [
            Example(item, assigner.place(item.size), put_trigger_first(item.caption, trigger_word, separator),
                    prior_loss_weight if item.concept.is_reg else 1.0)
            for item in scan.items
        ]
        train = [e for e in self.examples if not e.item.concept.is_reg]
        reg = [e for e in self.examples if e.item.concept.is_reg]
        self.epoch_examples = _repeat(train) + _balance_reg(_repeat(reg), len(_repeat(train)))

    @property
    def num_train_images(self) -> int:
        """Images x repeats of the training folders (kohya's 'num train images * repeats')."""
        return sum(1 for e in self.epoch_examples if not e.item.concept.is_reg)

    @property
    def num_reg_images(self) -> int:
        return sum(1 for e in self.epoch_examples if e.item.concept.is_reg)

    def bucket_counts(self) -> dict[tuple[int, int], int]:
        counts: dict[tuple[int, int], int] = defaultdict(int)
        for example in self.epoch_examples:
            counts[example.placement.bucket] += 1
        return dict(sorted(counts.items()))

    def batches_per_epoch(self) -> int:
        """A batch never mixes buckets, so each bucket rounds up on its own."""
        return sum(math.ceil(count / self.batch_size) for count in self.bucket_counts().values())

    def epoch_batches(self, rng: random.Random) -> list[list[Example]]:
        """Shuffle within each bucket, cut into batches, then shuffle the batches."""
        by_bucket: dict[tuple[int, int], list[Example]] = defaultdict(list)
        for example in self.epoch_examples:
            by_bucket[example.placement.bucket].append(example)
        batches = []
        for bucket in sorted(by_bucket):
            members = by_bucket[bucket]
            rng.shuffle(members)
            batches += [members[i: i + self.batch_size] for i in range(0, len(members), self.batch_size)]
        rng.shuffle(batches)
        return batches


def _repeat(examples: list[Example]) -> list[Example]:
    return [e for e in examples for _ in range(e.item.concept.repeats)]


def _balance_reg(reg: list[Example], train_count: int) -> list[Example]:
    """kohya uses as many regularisation images per epoch as training images: the reg set
    is cycled when smaller and cut when larger."""
    if not reg:
        return []
    return [reg[i % len(reg)] for i in range(train_count)]


def steps_per_epoch(batches_per_epoch: int, gradient_accumulation_steps: int) -> int:
    return math.ceil(batches_per_epoch / gradient_accumulation_steps)


def total_steps(batches_per_epoch: int, gradient_accumulation_steps: int, epochs: int, max_steps: int = 0) -> int:
    steps = steps_per_epoch(batches_per_epoch, gradient_accumulation_steps) * epochs
    return min(steps, max_steps) if max_steps > 0 else steps
