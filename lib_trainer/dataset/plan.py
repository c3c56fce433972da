"""The plan shown before training: what will be trained, how often, with which prompts."""
from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass, field
from typing import Callable

from ..config import TrainConfig
from .buckets import BucketAssigner, BucketSettings
from .captions import CaptionOptions, training_caption
from .folders import scan_dataset
from .training_set import TrainingSet, steps_per_epoch

PREVIEW_COUNT = 3


@dataclass
class TrainingPlan:
    config: TrainConfig
    training_set: TrainingSet
    steps_per_epoch: int
    total_steps: int
    epochs: int
    previews: list[tuple[str, str]] = field(default_factory=list)  # (image, prompt of its first step)
    over_length: list[tuple[str, int]] = field(default_factory=list)  # (image, tokens) beyond max_token_length

    @property
    def uncaptioned(self) -> int:
        return sum(1 for item in self.training_set.scan.items if not item.caption_from_file)

    def summary(self) -> str:
        c, ts = self.config, self.training_set
        lines = [f"Dataset {c.train_data_dir}"]
        for concept in ts.scan.concepts:
            count = sum(1 for item in ts.scan.items if item.concept is concept)
            kind = "reg " if concept.is_reg else ""
            lines.append(f"  {kind}{os.path.basename(concept.folder)}: {count} images x {concept.repeats} repeats "
                         f"= {count * concept.repeats}")
        if ts.num_reg_images:
            lines.append(f"  regularisation images per epoch: {ts.num_reg_images} (as many as training images)")
        lines.append(f"  images without a caption file: {self.uncaptioned} (captioned with their folder name)")
        for path, reason in ts.scan.skipped:
            lines.append(f"  skipped {path}: {reason}")
        for warning in ts.scan.warnings:
            lines.append(f"  warning: {warning}")
        buckets = ", ".join(f"{w}x{h}: {n}" for (w, h), n in ts.bucket_counts().items())
        lines.append(f"Buckets (images x repeats): {buckets}")
        lines.append(
            f"Steps: {ts.num_train_images + ts.num_reg_images} examples / batch {c.train_batch_size} = "
            f"{ts.batches_per_epoch()} batches per epoch; / gradient accumulation {c.gradient_accumulation_steps} "
            f"= {self.steps_per_epoch} steps per epoch; x {self.epochs} epochs = {self.total_steps} steps"
        )
        if self.over_length:
            lines.append(f"  {len(self.over_length)} captions are longer than max_token_length={c.max_token_length} "
                         f"and will be cut, e.g. {self.over_length[0][0]} ({self.over_length[0][1]} tokens)")
        lines.append("Prompt previews (first step):")
        lines += [f"  {os.path.basename(path)}: {prompt!r}" for path, prompt in self.previews]
        return "\n".join(lines)


def bucket_settings(config: TrainConfig) -> BucketSettings:
    return BucketSettings(config.resolution_wh(), config.enable_bucket, config.min_bucket_reso,
                          config.max_bucket_reso, config.bucket_reso_steps, config.bucket_no_upscale)


def caption_options(config: TrainConfig) -> CaptionOptions:
    # The trigger word is put first and stays first: shuffling and tag dropout never move it.
    keep = max(config.keep_tokens, 1 if config.trigger_word.strip() else 0)
    return CaptionOptions(config.shuffle_caption, keep, config.caption_separator,
                          config.caption_dropout_rate, config.caption_tag_dropout_rate)


def make_plan(config: TrainConfig, count_tokens: Callable[[str], int] | None = None) -> TrainingPlan:
    """Scan the dataset and count steps; raises DatasetError / ConfigError with what to fix."""
    config.validate()
    scan = scan_dataset(config.train_data_dir, config.reg_data_dir, config.caption_extension,
                        min_side=min(64, config.bucket_reso_steps))
    training_set = TrainingSet(scan, BucketAssigner(bucket_settings(config)), config.train_batch_size,
                               config.trigger_word, config.caption_separator, config.prior_loss_weight)
    per_epoch = steps_per_epoch(training_set.batches_per_epoch(), config.gradient_accumulation_steps)
    epochs = config.max_train_epochs
    total = per_epoch * epochs
    if config.max_train_steps:
        total = min(total, config.max_train_steps)
        epochs = math.ceil(total / per_epoch)
    preview_rng = random.Random(config.seed)
    previews = [(e.path, training_caption(e.caption, caption_options(config), preview_rng))
                for e in training_set.examples[:PREVIEW_COUNT]]
    over = []
    if count_tokens is not None:
        for example in training_set.examples:
            tokens = count_tokens(example.caption)
            if tokens > config.max_token_length:
                over.append((example.path, tokens))
    return TrainingPlan(config, training_set, per_epoch, total, epochs, previews, over)
