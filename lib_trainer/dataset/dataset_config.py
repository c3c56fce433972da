"""`dataset_config`: sd-scripts' dataset TOML (library/config_util.py's layout), read and checked.

    [general]                  # settings every dataset and subset falls back to
    shuffle_caption = true
    [[datasets]]               # its own resolution, buckets and batch size
    resolution = 512
    batch_size = 2
      [[datasets.subsets]]     # one folder of images (and captions)
      image_dir = "data/sls"
      num_repeats = 10
      class_tokens = "sls 1girl"

A subset's setting is looked up in the subset, then its dataset, then [general], then the
run's own option of that name (the CLI flag or form field), then sd-scripts' default, as
sd-scripts' BlueprintGenerator does. Unknown keys, wrong types and bad values are refused,
each named by file, dataset and subset number and key. The result is a list of
`DatasetSpec`s with every value resolved; plan.py scans and buckets them.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
from dataclasses import dataclass
from typing import Any

from ..config import ConfigError, TrainConfig
from .buckets import BucketSettings
from .captions import CaptionOptions


class DatasetConfigError(ConfigError):
    """A dataset config that cannot be used; the message lists each problem and where it is."""


_BOOL, _INT, _FLOAT, _STR = "true or false", "a whole number", "a number", "text in quotes"
# Keys a subset, its dataset or [general] may set (sd-scripts' SUBSET_ASCENDABLE, DO_ and DB_ schemas).
SUBSET_KEYS = {
    "num_repeats": _INT, "shuffle_caption": _BOOL, "keep_tokens": _INT, "caption_separator": _STR,
    "keep_tokens_separator": _STR, "secondary_separator": _STR, "enable_wildcard": _BOOL,
    "caption_prefix": _STR, "caption_suffix": _STR, "caption_dropout_rate": _FLOAT,
    "caption_dropout_every_n_epochs": _INT, "caption_tag_dropout_rate": _FLOAT, "token_warmup_min": _INT,
    "token_warmup_step": _FLOAT, "flip_aug": _BOOL, "random_crop": _BOOL, "color_aug": _BOOL,
    "face_crop_aug_range": "two numbers, [low, high]", "resize_interpolation": _STR,
    "custom_attributes": "a table", "caption_extension": _STR, "class_tokens": _STR, "cache_info": _BOOL,
    # Ours as well at subset level: a subset can be held out whole (validation_split = 1.0).
    "validation_split": _FLOAT, "validation_seed": _INT,
}
SUBSET_ONLY_KEYS = {"image_dir": _STR, "is_reg": _BOOL, "alpha_mask": _BOOL}
# Keys a dataset or [general] may set (sd-scripts' DATASET_ASCENDABLE_SCHEMA).
DATASET_KEYS = {
    "batch_size": _INT, "resolution": "a number or [width, height]", "enable_bucket": _BOOL,
    "min_bucket_reso": _INT, "max_bucket_reso": _INT, "bucket_reso_steps": _INT, "bucket_no_upscale": _BOOL,
    "network_multiplier": _FLOAT,
}
# sd-scripts' kinds of subsets this trainer does not train.
REFUSED_KEYS = {
    "metadata_file": "fine-tuning subsets (metadata_file, a JSON of captions) are not supported: use image_dir "
                     "with a caption file beside each image",
    "conditioning_data_dir": "ControlNet subsets (conditioning_data_dir) are not supported here",
}
# sd-scripts' defaults where the run's config has no option of that name.
KOHYA_DEFAULTS = {"num_repeats": 1, "class_tokens": None, "is_reg": False, "alpha_mask": False,
                  "network_multiplier": 1.0, "cache_info": False, "custom_attributes": None,
                  "face_crop_aug_range": None, "validation_seed": None}
# The run's config names for a key whose name differs there.
CONFIG_NAMES = {"batch_size": "train_batch_size"}
# CaptionOptions' names for the caption keys (the others carry kohya's names there).
CAPTION_FIELDS = {"caption_separator": "separator"}
# The caption keys: they reach CaptionOptions (dataset/captions.py) per example.
CAPTION_KEYS = ("shuffle_caption", "keep_tokens", "caption_separator", "keep_tokens_separator",
                "secondary_separator", "enable_wildcard", "caption_prefix", "caption_suffix", "caption_dropout_rate",
                "caption_dropout_every_n_epochs", "caption_tag_dropout_rate", "token_warmup_min", "token_warmup_step")


@dataclass(frozen=True)
class SubsetSpec:
    """One [[datasets.subsets]] entry with every setting resolved."""
    image_dir: str
    num_repeats: int
    is_reg: bool
    class_tokens: str | None
    caption_extension: str
    captions: tuple[tuple[str, Any], ...]  # CaptionOptions field -> value, this subset's caption settings
    flip_aug: bool
    random_crop: bool
    alpha_mask: bool
    validation_split: float
    validation_seed: int | None

    def caption_options(self, base: CaptionOptions) -> CaptionOptions:
        return dataclasses.replace(base, **dict(self.captions))


@dataclass(frozen=True)
class DatasetSpec:
    """One [[datasets]] entry: its buckets, its batch size and its subsets."""
    buckets: BucketSettings
    batch_size: int
    subsets: tuple[SubsetSpec, ...]


def read_dataset_config(path: str, config: TrainConfig) -> list[DatasetSpec]:
    """The datasets of a .toml (or .json) dataset config; raises DatasetConfigError listing
    every problem."""
    from ..config_files import load_config_data

    try:
        data = load_config_data(path)
    except ConfigError as error:
        raise DatasetConfigError(f"dataset_config: {error}") from None
    problems: list[str] = []
    specs = _datasets(data, config, os.path.dirname(os.path.abspath(path)), problems)
    if problems:
        raise DatasetConfigError(f"The dataset config {path} has problems:\n  - " + "\n  - ".join(problems))
    return specs


def dataset_config_problems(config: TrainConfig) -> list[str]:
    """For TrainConfig.problems(): what is wrong with the run's dataset config, one line each."""
    try:
        read_dataset_config(config.dataset_config, config)
    except DatasetConfigError as error:
        lines = str(error).splitlines()
        if len(lines) == 1:  # the file itself cannot be read; the message names it
            return lines
        return [f"dataset_config {config.dataset_config}: {line.strip(' -')}" for line in lines[1:]]
    return []


def _datasets(data: dict, config: TrainConfig, base_dir: str, problems: list[str]) -> list[DatasetSpec]:
    general = data.get("general", {})
    datasets = data.get("datasets")
    for key in data:
        if key not in ("general", "datasets"):
            problems.append(_unknown(key, ("general", "datasets"), "at the top"))
    if not isinstance(general, dict):
        problems.append("[general] must be a table of settings")
        general = {}
    general_ok = _check_table(general, {**SUBSET_KEYS, **DATASET_KEYS}, "[general]", problems)
    if not isinstance(datasets, list) or not datasets:
        problems.append("no [[datasets]] entry: add at least one [[datasets]] with a [[datasets.subsets]] "
                        "that names an image_dir")
        return []
    specs = []
    for number, dataset in enumerate(datasets, 1):
        where = f"[[datasets]] #{number}"
        if not isinstance(dataset, dict):
            problems.append(f"{where} must be a table")
            continue
        if not _check_table(dataset, {**SUBSET_KEYS, **DATASET_KEYS, "subsets": "a list of [[datasets.subsets]]"},
                            where, problems) or not general_ok:
            continue  # values of the wrong type: fix those first
        spec = _dataset(dataset, general, config, base_dir, where, problems)
        if spec is not None:
            specs.append(spec)
    return specs


def _dataset(dataset: dict, general: dict, config: TrainConfig, base_dir: str, where: str,
             problems: list[str]) -> DatasetSpec | None:
    chain = [dataset, general]
    subsets = dataset.get("subsets")
    if not isinstance(subsets, list) or not subsets:
        problems.append(f"{where} has no [[datasets.subsets]]: add one with an image_dir")
        return None
    resolution = _resolution(_lookup("resolution", chain, config), where, problems)
    buckets = BucketSettings(resolution, *(_lookup(key, chain, config) for key in (
        "enable_bucket", "min_bucket_reso", "max_bucket_reso", "bucket_reso_steps", "bucket_no_upscale")))
    batch_size = _lookup("batch_size", chain, config)
    problems += [f"{where}: {text}" for text in _dataset_value_problems(buckets, batch_size)]
    if _lookup("network_multiplier", chain, config) != 1.0:
        problems.append(f"{where}: network_multiplier is not supported here (every dataset trains at 1.0)")
    specs = []
    for number, subset in enumerate(subsets, 1):
        here = f"{where}, [[datasets.subsets]] #{number}"
        if not isinstance(subset, dict):
            problems.append(f"{here} must be a table")
            continue
        if not _check_table(subset, {**SUBSET_KEYS, **SUBSET_ONLY_KEYS}, here, problems):
            continue
        spec = _subset([subset, *chain], config, base_dir, here, problems)
        if spec is not None:
            specs.append(spec)
    return DatasetSpec(buckets, batch_size, tuple(specs)) if specs else None


def _subset(chain: list[dict], config: TrainConfig, base_dir: str, where: str,
            problems: list[str]) -> SubsetSpec | None:
    image_dir = chain[0].get("image_dir")
    if not isinstance(image_dir, str) or not image_dir.strip():
        problems.append(f"{where}: image_dir is missing: give the folder of this subset's images")
        return None
    folder = _folder(image_dir, base_dir)
    if folder is None:
        problems.append(f"{where}: image_dir {image_dir!r} is not a folder (relative paths are read from the "
                        f"working folder, then from the dataset config's folder)")
        return None
    value = {key: _lookup(key, chain, config) for key in (*SUBSET_KEYS, *SUBSET_ONLY_KEYS)}
    if value["num_repeats"] < 1:
        problems.append(f"{where}: num_repeats={value['num_repeats']} must be at least 1 (sd-scripts skips such a "
                        "subset: remove it instead)")
    for key in ("keep_tokens", "caption_dropout_every_n_epochs"):
        if isinstance(value[key], int) and value[key] < 0:
            problems.append(f"{where}: {key}={value[key]} must be at least 0")
    for key in ("caption_dropout_rate", "caption_tag_dropout_rate", "validation_split"):
        if isinstance(value[key], (int, float)) and not 0.0 <= value[key] <= 1.0:
            problems.append(f"{where}: {key}={value[key]} must be between 0 and 1")
    if value["random_crop"] and config.cache_latents:
        problems.append(f"{where}: random_crop needs a fresh crop every step: turn off cache_latents "
                        "(--no-cache_latents)")
    captions = _caption_settings(value, config, where, problems)
    for key in ("color_aug", "face_crop_aug_range", "resize_interpolation", "alpha_mask"):
        if value[key] != _run_value(key, config):
            problems.append(f"{where}: {key} cannot differ between subsets here: set it for the whole run "
                            f"(--{key}) and leave it out of the dataset config")
    return SubsetSpec(folder, value["num_repeats"], value["is_reg"], value["class_tokens"],
                      value["caption_extension"], captions, value["flip_aug"], value["random_crop"],
                      value["alpha_mask"], float(value["validation_split"]), value["validation_seed"])


def _caption_settings(value: dict, config: TrainConfig, where: str, problems: list[str]) -> tuple:
    """The subset's caption settings as CaptionOptions fields; a caption key CaptionOptions does
    not know is refused where it would change anything."""
    known = {spec.name for spec in dataclasses.fields(CaptionOptions)}
    settings = {}
    for key in CAPTION_KEYS:
        name = CAPTION_FIELDS.get(key, key)
        if name in known:
            settings[name] = value[key]
        elif value[key] != _run_value(key, config):
            problems.append(f"{where}: {key} is not available in this trainer")
    # The trigger word is put first and stays first, as caption_options() keeps it (plan.py).
    if "keep_tokens" in settings and config.trigger_word.strip():
        settings["keep_tokens"] = max(settings["keep_tokens"], 1)
    if config.cache_text_encoder_outputs and dataclasses.replace(CaptionOptions(), **settings).is_random:
        problems.append(f"{where}: cache_text_encoder_outputs needs fixed captions: turn off shuffle_caption and "
                        "the caption dropouts in this subset")
    return tuple(sorted(settings.items()))


def _lookup(key: str, chain: list[dict], config: TrainConfig) -> Any:
    """The first table in the chain that sets `key`, else the run's option, else sd-scripts' default."""
    for table in chain:
        if table.get(key) is not None:
            return table[key]
    return _run_value(key, config)


def _run_value(key: str, config: TrainConfig) -> Any:
    if key == "resolution":
        return config.resolution_wh()
    name = CONFIG_NAMES.get(key, key)
    return getattr(config, name) if hasattr(config, name) else KOHYA_DEFAULTS.get(key)


def _folder(image_dir: str, base_dir: str) -> str | None:
    for candidate in (image_dir, os.path.join(base_dir, image_dir)):
        if os.path.isdir(candidate):
            return os.path.normpath(candidate)
    return None


def _resolution(value: Any, where: str, problems: list[str]) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return value, value
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(
            isinstance(side, int) and not isinstance(side, bool) for side in value):
        return int(value[0]), int(value[1])
    problems.append(f"{where}: resolution={value!r} must be a number or [width, height]")
    return 512, 512


def _dataset_value_problems(buckets: BucketSettings, batch_size: int) -> list[str]:
    found = []
    width, height = buckets.resolution
    if width < 64 or height < 64 or width % 8 or height % 8:
        found.append(f"resolution {width}x{height}: sides must be multiples of 8, at least 64")
    if isinstance(batch_size, int) and batch_size < 1:
        found.append(f"batch_size={batch_size} must be at least 1")
    if buckets.bucket_reso_steps < 8:
        found.append(f"bucket_reso_steps={buckets.bucket_reso_steps} must be at least 8")
    if buckets.min_bucket_reso > buckets.max_bucket_reso:
        found.append("min_bucket_reso must not be larger than max_bucket_reso")
    elif buckets.enable_bucket and not buckets.bucket_no_upscale and max(width, height) > buckets.max_bucket_reso:
        found.append(f"resolution {width}x{height} is larger than max_bucket_reso={buckets.max_bucket_reso}: raise "
                     "max_bucket_reso or lower the resolution")
    return found


def _check_table(table: dict, allowed: dict[str, str], where: str, problems: list[str]) -> bool:
    """Unknown keys and values of the wrong type, as sd-scripts' schema refuses them; False when
    a value has the wrong type."""
    ok = True
    for key, value in table.items():
        if key in REFUSED_KEYS:
            problems.append(f"{where}: {REFUSED_KEYS[key]}")
        elif key not in allowed:
            problems.append(_unknown(key, allowed, where))
        elif not _fits(allowed[key], value):
            problems.append(f"{where}: {key}={value!r} must be {allowed[key]}")
            ok = False
    return ok


def _unknown(key: str, allowed, where: str) -> str:
    close = difflib.get_close_matches(key, list(allowed), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    placed = [name for name, keys in (("a subset", {**SUBSET_KEYS, **SUBSET_ONLY_KEYS}),
                                      ("a dataset or [general]", DATASET_KEYS)) if key in keys]
    where_it_goes = f"; it belongs in {placed[0]}" if placed else ""
    return f"{where}: unknown key {key!r}{hint}{where_it_goes}"


def _fits(kind: str, value: Any) -> bool:
    if kind == _BOOL:
        return isinstance(value, bool)
    if kind == _INT:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == _FLOAT:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == _STR:
        return isinstance(value, str)
    if kind.startswith("two numbers"):
        return isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) for v in value)
    if kind == "a table":
        return isinstance(value, dict)
    if kind.startswith("a list"):
        return isinstance(value, list)
    return True  # resolution: checked when it is read


# --- a subset's settings, per example (an example of a train_data_dir folder takes the run's) ---

def example_caption_options(base: CaptionOptions, example) -> CaptionOptions:
    subset = example.item.concept.subset
    return base if subset is None else subset.caption_options(base)


def example_flip_aug(config: TrainConfig, example) -> bool:
    subset = example.item.concept.subset
    return config.flip_aug if subset is None else subset.flip_aug


def example_random_crop(config: TrainConfig, example) -> bool:
    subset = example.item.concept.subset
    return config.random_crop if subset is None else subset.random_crop
