"""The plan shown before training: what will be trained, how often, with which prompts."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Callable

from ..config import TrainConfig
from ..train.schedulers import effective_scheduler, warmup_steps
from .buckets import BucketAssigner, BucketSettings
from .captions import CaptionOptions
from .folders import DatasetError, DatasetScan, scan_dataset
from .masks import mask_file_problems, unmatched_mask_warning
from .training_set import TrainingSet, steps_per_epoch

PREVIEW_COUNT = 3
# The side each family was trained at: a suggested resolution never goes above it.
NATIVE_SIDE = {"sd1": 512, "sd2": 768, "sdxl": 1024}
# sd-scripts' default --max_train_steps, used when neither length option is set.
KOHYA_DEFAULT_MAX_TRAIN_STEPS = 1600


@dataclass
class TrainingPlan:
    config: TrainConfig
    training_set: TrainingSet
    steps_per_epoch: int
    total_steps: int
    epochs: int
    previews: list[tuple[str, str]] = field(default_factory=list)  # (image, caption as trained or as written)
    over_length: list[tuple[str, int]] = field(default_factory=list)  # (image, tokens) beyond max_token_length
    length: str = ""  # which option ended the count, in words

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
            lines.append(f"  regularisation examples per epoch: {ts.num_reg_images} (reg images x repeats "
                         f"{ts.reg_images_with_repeats}, balanced to the {ts.num_train_images} training examples "
                         "as kohya does)")
        lines.append(f"  images without a caption file: {self.uncaptioned} (captioned with their folder name)")
        for path, reason in ts.scan.skipped:
            lines.append(f"  skipped {path}: {reason}")
        if ts.scan.hidden:
            lines.append(f"  hidden files left out: {ts.scan.hidden} (names starting with '.', as kohya leaves them "
                         "out; macOS's ._ files are not images)")
        for warning in ts.scan.warnings:
            lines.append(f"  warning: {warning}")
        buckets = ", ".join(f"{w}x{h}: {n}" for (w, h), n in ts.bucket_counts().items())
        lines.append(f"Buckets (images x repeats): {buckets}")
        lines += [f"  warning: {text}" for text in upscale_warning(ts)]
        lines.append(
            f"Steps: {ts.num_train_images + ts.num_reg_images} examples / batch {c.train_batch_size} = "
            f"{ts.batches_per_epoch()} batches per epoch; / gradient accumulation {c.gradient_accumulation_steps} "
            f"= {self.steps_per_epoch} steps per epoch"
        )
        lines.append(f"Length: {self.length}")
        warmup = warmup_steps(c.lr_warmup_steps, self.total_steps)
        if effective_scheduler(c.lr_scheduler, warmup) != c.lr_scheduler:
            lines.append(f"  lr_scheduler=constant with {warmup} warm-up steps trains as constant_with_warmup "
                         "(kohya refuses this pair)")
        if self.over_length:
            lines.append(f"  {len(self.over_length)} captions are longer than max_token_length={c.max_token_length} "
                         f"and will be cut, e.g. {self.over_length[0][0]} ({self.over_length[0][1]} tokens)")
        if caption_options(c, self.total_steps).is_random:
            lines.append("Prompt previews (caption as written; shuffled/dropped anew at each step):")
        else:
            lines.append("Prompt previews (as trained):")
        lines += [f"  {os.path.basename(path)}: {prompt!r}" for path, prompt in self.previews]
        return "\n".join(lines)


def upscale_warning(training_set: TrainingSet) -> list[str]:
    """One line when pictures are smaller than their bucket and would be blown up to fill it."""
    upscaled = {}
    for example in training_set.examples:
        (width, height), (wide, high) = example.item.size, example.placement.resized
        if wide > width or high > height:
            upscaled[example.path] = (example.item.size, example.placement.bucket)
    if not upscaled:
        return []
    path, ((width, height), (bucket_w, bucket_h)) = next(iter(upscaled.items()))
    total = len({example.path for example in training_set.examples})
    return [f"{len(upscaled)} of {total} pictures are smaller than their bucket and are upscaled (e.g. "
            f"{os.path.basename(path)}: {width}x{height} -> {bucket_w}x{bucket_h}), which trains blur: lower "
            "resolution towards their size, or set bucket_no_upscale"]


def suggested_resolution(sizes: list[tuple[int, int]], family: str | None, step: int = 64) -> int:
    """A resolution for a dataset: the side of its most common picture size (by area), rounded to
    the bucket step, at least 64, and at most the family's native side (512 when not known)."""
    if not sizes:
        return NATIVE_SIDE.get(family or "", 512)
    counts: dict[tuple[int, int], int] = {}
    for size in sizes:
        counts[size] = counts.get(size, 0) + 1
    width, height = max(counts, key=lambda size: (counts[size], size))
    side = max(64, step, round(math.sqrt(width * height) / step) * step)
    return min(side, NATIVE_SIDE.get(family or "", 512))


def bucket_settings(config: TrainConfig) -> BucketSettings:
    return BucketSettings(config.resolution_wh(), config.enable_bucket, config.min_bucket_reso,
                          config.max_bucket_reso, config.bucket_reso_steps, config.bucket_no_upscale)


def caption_options(config: TrainConfig, total_steps: int = 0) -> CaptionOptions:
    """The run's caption options; `total_steps` resolves a token_warmup_step below 1 (a
    fraction of the run, rounded down as kohya does)."""
    # The trigger word is put first and stays first: shuffling and tag dropout never move it.
    keep = max(config.keep_tokens, 1 if config.trigger_word.strip() else 0)
    warmup = config.token_warmup_step
    warmup_steps = math.floor(warmup * total_steps) if warmup < 1 else int(warmup)
    return CaptionOptions(config.shuffle_caption, keep, config.caption_separator,
                          config.caption_dropout_rate, config.caption_tag_dropout_rate,
                          config.keep_tokens_separator, config.secondary_separator, config.enable_wildcard,
                          config.caption_prefix, config.caption_suffix, config.caption_dropout_every_n_epochs,
                          config.token_warmup_min, warmup_steps)


def make_plan(config: TrainConfig, count_tokens: Callable[[str], int] | None = None) -> TrainingPlan:
    """Scan the dataset and count steps; raises DatasetError / ConfigError with what to fix."""
    config.validate()
    return plan_from_scan(config, scan_config_dataset(config), count_tokens)


def scan_config_dataset(config: TrainConfig) -> DatasetScan:
    return scan_dataset(config.train_data_dir, config.reg_data_dir, config.caption_extension,
                        min_side=min(64, config.bucket_reso_steps), keep_lines=config.enable_wildcard)


def plan_from_scan(config: TrainConfig, scan: DatasetScan,
                   count_tokens: Callable[[str], int] | None = None) -> TrainingPlan:
    """`make_plan` over a scan already made (the step planner tries repeats on one scan)."""
    mask_problems = mask_file_problems(config, scan.items)
    if mask_problems:
        raise DatasetError("\n".join(mask_problems))
    scan.warnings.extend(unmatched_mask_warning(config, scan.items))
    training_set = TrainingSet(scan, BucketAssigner(bucket_settings(config)), config.train_batch_size,
                               config.trigger_word, config.caption_separator, config.prior_loss_weight)
    per_epoch = steps_per_epoch(training_set.batches_per_epoch(), config.gradient_accumulation_steps)
    total, epochs, length = run_length(config, per_epoch)
    # Shuffling and dropout draw anew at every step, so no single draw is "the" prompt:
    # show the caption they start from.
    previews = [(e.path, e.caption) for e in training_set.examples[:PREVIEW_COUNT]]
    over = []
    if count_tokens is not None:
        for example in training_set.examples:
            # one line of a caption of several lines trains at a time (enable_wildcard)
            tokens = max(count_tokens(line) for line in example.caption.split("\n"))
            if tokens > config.max_token_length:
                over.append((example.path, tokens))
    return TrainingPlan(config, training_set, per_epoch, total, epochs, previews, over, length)


def run_length(config: TrainConfig, per_epoch: int) -> tuple[int, int, str]:
    """(total steps, epochs, which option set them, in words), as sd-scripts' train_network
    resolves them: max_train_epochs, when set, gives epochs x steps per epoch and replaces
    max_train_steps; otherwise max_train_steps (1600 when not set) runs ceil(steps / steps
    per epoch) epochs, the last one cut short."""
    if config.max_train_epochs:
        epochs = config.max_train_epochs
        total = epochs * per_epoch
        text = f"max_train_epochs={epochs} sets the length: {epochs} epochs x {per_epoch} steps = {total} steps"
        if config.max_train_steps:
            text += f" (max_train_steps={config.max_train_steps} is ignored when epochs are set, as in kohya)"
        return total, epochs, text
    total = config.max_train_steps or KOHYA_DEFAULT_MAX_TRAIN_STEPS
    epochs = math.ceil(total / per_epoch)
    option = (f"max_train_steps={total}" if config.max_train_steps else
              f"max_train_steps is not set, so kohya's default of {total}")
    last = total - (epochs - 1) * per_epoch
    if last == per_epoch:
        return total, epochs, f"{option} runs {epochs} whole epochs of {per_epoch} steps = {total} steps"
    return total, epochs, (f"{option} stops the run after {last} of {per_epoch} steps of epoch {epochs} "
                           f"({total} steps)")
