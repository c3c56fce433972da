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
    """The examples of a run, in one dataset (a train_data_dir) or several (a dataset config's
    [[datasets]]): each dataset has its own buckets and batch size, a batch never mixes two,
    and an epoch goes through all of them, as sd-scripts' DatasetGroup does."""

    def __init__(self, scan: DatasetScan, assigner: BucketAssigner, batch_size: int, trigger_word: str = "",
                 separator: str = ",", prior_loss_weight: float = 1.0,
                 datasets: list[tuple[BucketAssigner, int]] | None = None) -> None:
        """`datasets`: (bucket assigner, batch size) of each dataset a concept's `dataset` index
        names; None: one dataset of `assigner` and `batch_size`."""
        self.scan = scan
        self.batch_size = batch_size
        self.datasets = datasets or [(assigner, batch_size)]
        self.examples = [
            Example(item, self.datasets[item.concept.dataset][0].place(item.size),
                    put_trigger_first(item.caption, trigger_word, separator),
                    prior_loss_weight if item.concept.is_reg else 1.0)
            for item in scan.items
        ]
        self.epoch_examples = []
        for index in range(len(self.datasets)):
            own = [e for e in self.examples if e.item.concept.dataset == index]
            train = [e for e in own if not e.item.concept.is_reg]
            reg = [e for e in own if e.item.concept.is_reg]
            # Regularisation images balance against their own dataset's training images, as in kohya.
            self.epoch_examples += _repeat(train) + [
                e for e, times in balanced_reg_repeats(reg, len(_repeat(train))) for _ in range(times)]

    @property
    def num_train_images(self) -> int:
        """Images x repeats of the training folders (kohya's 'num train images * repeats')."""
        return sum(1 for e in self.epoch_examples if not e.item.concept.is_reg)

    @property
    def num_reg_images(self) -> int:
        """Regularisation examples in each epoch, after balancing (see balanced_reg_repeats)."""
        return sum(1 for e in self.epoch_examples if e.item.concept.is_reg)

    @property
    def reg_images_with_repeats(self) -> int:
        """Images x repeats of the regularisation folders before balancing: what kohya logs
        as "num reg images" and writes as ss_num_reg_images."""
        return sum(e.item.concept.repeats for e in self.examples if e.item.concept.is_reg)

    def bucket_counts(self, dataset: int | None = None) -> dict[tuple[int, int], int]:
        """Examples per bucket in an epoch: of one dataset, or of all (for the summary and metadata)."""
        counts: dict[tuple[int, int], int] = defaultdict(int)
        for example in self.epoch_examples:
            if dataset is None or example.item.concept.dataset == dataset:
                counts[example.placement.bucket] += 1
        return dict(sorted(counts.items()))

    def batches_per_epoch(self) -> int:
        """A batch never mixes buckets (nor datasets), so each bucket rounds up on its own."""
        return sum(math.ceil(count / batch_size) for index, (_, batch_size) in enumerate(self.datasets)
                   for count in self.bucket_counts(index).values())

    def epoch_batches(self, rng: random.Random) -> list[list[Example]]:
        """Shuffle within each bucket, cut into batches, then shuffle the batches."""
        batches = []
        for index, (_, batch_size) in enumerate(self.datasets):
            by_bucket: dict[tuple[int, int], list[Example]] = defaultdict(list)
            for example in self.epoch_examples:
                if example.item.concept.dataset == index:
                    by_bucket[example.placement.bucket].append(example)
            for bucket in sorted(by_bucket):
                members = by_bucket[bucket]
                rng.shuffle(members)
                batches += [members[i: i + batch_size] for i in range(0, len(members), batch_size)]
        rng.shuffle(batches)
        return batches


def _repeat(examples: list[Example]) -> list[Example]:
    return [e for e in examples for _ in range(e.item.concept.repeats)]


def balanced_reg_repeats(reg: list[Example], train_count: int) -> list[tuple[Example, int]]:
    """How often each regularisation image is used per epoch: sd-scripts' DreamBoothDataset
    rule, so a folder gives kohya's step count. Reg images are taken in order, each with
    its folder's repeats, until they reach the number of training examples (images x
    repeats); the image that reaches it is taken whole, so the total may overshoot. If all
    of them are not enough, each gets one more repeat in turn, from the first, until the
    count is reached exactly. Images not reached are not used."""
    counts: list[list] = []
    total = 0
    for example in reg:
        if total >= train_count:
            break
        counts.append([example, example.item.concept.repeats])
        total += example.item.concept.repeats
    while counts and total < train_count:
        for entry in counts:
            entry[1] += 1
            total += 1
            if total >= train_count:
                break
    return [(example, times) for example, times in counts]


def steps_per_epoch(batches_per_epoch: int, gradient_accumulation_steps: int) -> int:
    return math.ceil(batches_per_epoch / gradient_accumulation_steps)
