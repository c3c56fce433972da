"""The plan shown before training: what will be trained, how often, with which prompts."""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Callable

from ..config import TrainConfig
from ..train.schedulers import effective_scheduler, warmup_steps
from .buckets import BucketAssigner, BucketSettings
from .captions import CaptionOptions
from .folders import Concept, DatasetError, DatasetScan, scan_dataset, scan_subsets
from .masks import mask_file_problems, unmatched_mask_warning
from .training_set import Example, TrainingSet, steps_per_epoch
from .validation_split import fixed_batches, split_validation

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
    # Held-out images (validation_split) in the fixed batches each validation pass scores.
    validation_batches: list[list[Example]] = field(default_factory=list)

    @property
    def validation_examples(self) -> list[Example]:
        return [example for batch in self.validation_batches for example in batch]

    @property
    def cached_examples(self) -> list[Example]:
        """What the latent and text caches hold: the training and the validation examples."""
        return self.training_set.examples + self.validation_examples

    @property
    def uncaptioned(self) -> int:
        return sum(1 for item in self.training_set.scan.items if not item.caption_from_file)

    def summary(self) -> str:
        c, ts = self.config, self.training_set
        lines = [f"Dataset config {c.dataset_config}" if c.dataset_config else f"Dataset {c.train_data_dir}"]
        if c.dataset_config and (c.train_data_dir or c.reg_data_dir):
            lines.append("  warning: train_data_dir and reg_data_dir are ignored: the dataset config names the "
                         "folders (as sd-scripts does)")
        for index, spec in enumerate(ts.scan.datasets):
            (width, height), buckets = spec.buckets.resolution, "buckets" if spec.buckets.enable_bucket else "no buckets"
            lines.append(f"  [[datasets]] #{index + 1}: {width}x{height}, batch {spec.batch_size}, {buckets}")
        for concept in ts.scan.concepts:
            count = sum(1 for item in ts.scan.items if item.concept is concept)
            kind = "reg " if concept.is_reg else ""
            where = f"#{concept.dataset + 1} " if ts.scan.datasets else ""
            lines.append(f"  {where}{kind}{os.path.basename(concept.folder)}: {count} images x {concept.repeats} "
                         f"repeats = {count * concept.repeats}")
        if ts.num_reg_images:
            lines.append(f"  regularisation examples per epoch: {ts.num_reg_images} (reg images x repeats "
                         f"{ts.reg_images_with_repeats}, balanced to the {ts.num_train_images} training examples "
                         "as kohya does)")
        source = "their subset's class_tokens" if ts.scan.datasets else "their folder name"
        lines.append(f"  images without a caption file: {self.uncaptioned} (captioned with {source})")
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
        lines += validation_lines(self)
        lines.append(
            f"Steps: {ts.num_train_images + ts.num_reg_images} examples / batch "
            f"{', '.join(str(size) for _, size in ts.datasets)} = "
            f"{ts.batches_per_epoch()} batches per epoch; / gradient accumulation {c.gradient_accumulation_steps} "
            f"= {self.steps_per_epoch} steps per epoch"
        )
        lines.append(f"Length: {self.length}")
        lines += [f"  warning: {text}" for text in length_warning(c, self.steps_per_epoch, self.total_steps)]
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


def validation_lines(plan: TrainingPlan) -> list[str]:
    c = plan.config
    if not plan.validation_batches:
        if c.validate_every_n_steps or c.validate_every_n_epochs or c.max_validation_steps:
            return ["Validation: no image is held out (validation_split is 0), so no validation loss is computed"]
        return []
    passes = [f"every {c.validate_every_n_steps} steps"] if c.validate_every_n_steps else []
    passes.append(f"every {c.validate_every_n_epochs} epochs" if c.validate_every_n_epochs else "after every epoch")
    batches = len(plan.validation_batches)
    scored = min(batches, c.max_validation_steps) if c.max_validation_steps else batches
    return [f"Validation: {len(plan.validation_examples)} images held out (never trained on), {scored} of "
            f"{batches} batches scored {', '.join(passes)} and at the end"]


def make_plan(config: TrainConfig, count_tokens: Callable[[str], int] | None = None) -> TrainingPlan:
    """Scan the dataset and count steps; raises DatasetError / ConfigError with what to fix."""
    config.validate()
    return plan_from_scan(config, scan_config_dataset(config), count_tokens)


def scan_config_dataset(config: TrainConfig) -> DatasetScan:
    """The run's images: its dataset config's subsets when it has one, else train_data_dir's folders."""
    if config.dataset_config:
        from .dataset_config import read_dataset_config

        specs = read_dataset_config(config.dataset_config, config)
        subsets = [(Concept(subset.image_dir, subset.num_repeats, subset.class_tokens or "", subset.is_reg,
                            subset=subset, dataset=index), subset.caption_extension)
                   for index, spec in enumerate(specs) for subset in spec.subsets]
        steps = min(spec.buckets.bucket_reso_steps for spec in specs)
        scan = scan_subsets(subsets, min_side=min(64, steps))
        scan.datasets = specs
        return scan
    return scan_dataset(config.train_data_dir, config.reg_data_dir, config.caption_extension,
                        min_side=min(64, config.bucket_reso_steps), keep_lines=config.enable_wildcard)


def dataset_assigners(config: TrainConfig, scan: DatasetScan) -> list[tuple[BucketAssigner, int]]:
    """(bucket assigner, batch size) of each dataset: a dataset config's own, else the run's."""
    if scan.datasets:
        return [(BucketAssigner(spec.buckets), spec.batch_size) for spec in scan.datasets]
    return [(BucketAssigner(bucket_settings(config)), config.train_batch_size)]


def plan_from_scan(config: TrainConfig, scan: DatasetScan,
                   count_tokens: Callable[[str], int] | None = None) -> TrainingPlan:
    """`make_plan` over a scan already made (the step planner tries repeats on one scan)."""
    mask_problems = mask_file_problems(config, scan.items)
    if mask_problems:
        raise DatasetError("\n".join(mask_problems))
    scan.warnings.extend(unmatched_mask_warning(config, scan.items))
    datasets = dataset_assigners(config, scan)
    scan, held_out = split_validation(scan, config)
    training_set = TrainingSet(scan, datasets[0][0], config.train_batch_size, config.trigger_word,
                               config.caption_separator, config.prior_loss_weight, datasets)
    validation = TrainingSet(dataclasses.replace(scan, items=held_out), datasets[0][0], config.train_batch_size,
                             config.trigger_word, config.caption_separator, 1.0, datasets).examples
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
    return TrainingPlan(config, training_set, per_epoch, total, epochs, previews, over, length,
                        fixed_batches(validation, [size for _, size in datasets]))


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
              f"{total} steps: neither max_train_epochs nor max_train_steps is set, so kohya's default "
              f"max_train_steps={total}")
    last = total - (epochs - 1) * per_epoch
    if last == per_epoch:
        return total, epochs, f"{option} runs {epochs} whole epochs of {per_epoch} steps = {total} steps"
    return total, epochs, (f"{option} stops the run after {last} of {per_epoch} steps of epoch {epochs} "
                           f"({total} steps)")


def length_warning(config: TrainConfig, per_epoch: int, total: int) -> list[str]:
    """Said when kohya's default length (neither option set) ends the run inside its first
    epoch: a large dataset would otherwise be cut without anyone having asked for it."""
    if config.max_train_epochs or config.max_train_steps or total >= per_epoch:
        return []
    return [f"kohya's default of {total} steps ends the run after {total} of the {per_epoch} steps of the first "
            f"epoch, so part of the dataset is never trained: set max_train_epochs (e.g. 1 = {per_epoch} steps) "
            "or max_train_steps"]
