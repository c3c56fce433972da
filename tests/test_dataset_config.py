"""--dataset_config: sd-scripts' dataset TOML, read into the run's training set.

Several datasets with their own resolution, buckets and batch size; per-subset caption and
image settings with sd-scripts' fallbacks (subset, dataset, [general], the run's option);
bad files refused with the file, dataset, subset and key named."""
from __future__ import annotations

import json
import os
import random

import pytest
import torch
from PIL import Image

from lib_trainer.config import ConfigError, TrainConfig
from lib_trainer.dataset.captions import training_caption
from lib_trainer.dataset.dataset_config import example_caption_options, example_flip_aug
from lib_trainer.dataset.plan import caption_options, make_plan
from lib_trainer.train.step_loss import batch_loss

from conftest import quick_config

CAPTION = "alpha, beta, gamma, delta, epsilon"


def _folder(path, count: int, size=(64, 64), caption: str | None = CAPTION) -> str:
    os.makedirs(path, exist_ok=True)
    for index in range(count):
        Image.new("RGB", size, (40 * index % 255, 90, 160)).save(os.path.join(path, f"img_{index:02d}.png"))
        if caption is not None:
            with open(os.path.join(path, f"img_{index:02d}.txt"), "w", encoding="utf-8") as handle:
                handle.write(caption)
    return path


def _toml(tmp_path, text: str, name: str = "datasets.toml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def _config(tmp_path, toml: str, **changes) -> TrainConfig:
    settings = dict(train_data_dir="", trigger_word="", dataset_config=toml)
    settings.update(changes)
    return quick_config("", str(tmp_path / "out"), **settings)


@pytest.fixture(scope="module")
def two_resolutions(tmp_path_factory):
    """Dataset 1: four 64x64 pictures at resolution 64, batch 2; dataset 2: three 128x96
    pictures at resolution 128, batch 1."""
    root = tmp_path_factory.mktemp("two")
    small = _folder(str(root / "small"), 4)
    wide = _folder(str(root / "wide"), 3, size=(128, 96))
    toml = _toml(root, f"""
[general]
caption_extension = ".txt"
[[datasets]]
resolution = 64
batch_size = 2
  [[datasets.subsets]]
  image_dir = "{small}"
[[datasets]]
resolution = 128
batch_size = 1
max_bucket_reso = 256
  [[datasets.subsets]]
  image_dir = "{wide}"
""")
    return root, toml


def test_two_datasets_keep_their_own_buckets_and_batch_sizes(two_resolutions):
    root, toml = two_resolutions
    plan = make_plan(_config(root, toml))
    ts = plan.training_set
    buckets = {e.item.concept.dataset: e.placement.bucket for e in ts.examples}
    assert buckets == {0: (64, 64), 1: (128, 128)}
    assert ts.batches_per_epoch() == 2 + 3 == plan.steps_per_epoch  # 4 / 2 plus 3 / 1
    batches = ts.epoch_batches(random.Random(0))
    for batch in batches:
        datasets = {e.item.concept.dataset for e in batch}
        assert len(datasets) == 1  # a batch never mixes datasets
        assert len(batch) == (2 if datasets == {0} else 1)
    # the epoch goes through every example of both datasets
    assert sorted(e.path for b in batches for e in b) == sorted(e.path for e in ts.epoch_examples)
    assert "[[datasets]] #2: 128x128, batch 1" in plan.summary()


def test_two_datasets_train_at_their_own_sizes(two_resolutions):
    """One epoch trains on latents of both sizes; ss_datasets describes both datasets."""
    from lib_trainer.formats.lora_file import read_metadata
    from lib_trainer.hosts import load_bundle
    from lib_trainer.train.loop import train

    root, toml = two_resolutions
    bundle = load_bundle("tiny:sd1", False, 1, "")
    shapes, predict = [], bundle.predict
    bundle.predict = lambda noisy, *rest: shapes.append(tuple(noisy.shape)) or predict(noisy, *rest)
    result = train(_config(root, toml, max_train_steps=5, output_name="two"), bundle)
    # two batches of two 64 px latents, three single 128 px ones
    assert sorted(shapes) == [(1, 4, 16, 16)] * 3 + [(2, 4, 8, 8)] * 2
    datasets = json.loads(read_metadata(result.final_path)["ss_datasets"])
    assert [(d["resolution"], d["batch_size_per_device"]) for d in datasets] == [([64, 64], 2), ([128, 128], 1)]
    assert [d["subsets"][0]["image_dir"] for d in datasets] == ["small", "wide"]


def test_caption_settings_fall_back_subset_dataset_general_run(tmp_path):
    one, two, three = (_folder(str(tmp_path / name), 1) for name in ("one", "two", "three"))
    toml = _toml(tmp_path, f"""
[general]
keep_tokens = 2
[[datasets]]
keep_tokens = 3
  [[datasets.subsets]]
  image_dir = "{one}"
  keep_tokens = 1
  shuffle_caption = true
  [[datasets.subsets]]
  image_dir = "{two}"
[[datasets]]
  [[datasets.subsets]]
  image_dir = "{three}"
""")
    plan = make_plan(_config(tmp_path, toml, shuffle_caption=False, caption_tag_dropout_rate=0.0))
    base = caption_options(plan.config)
    options = {os.path.basename(e.item.concept.folder): example_caption_options(base, e)
               for e in plan.training_set.examples}
    assert [(options[n].keep_tokens, options[n].shuffle_caption) for n in ("one", "two", "three")] == \
        [(1, True), (3, False), (2, False)]
    # Nothing set anywhere: the run's own option.
    plain = _toml(tmp_path, f'[[datasets]]\n  [[datasets.subsets]]\n  image_dir = "{three}"\n', "plain.toml")
    plan = make_plan(_config(tmp_path, plain, keep_tokens=4, shuffle_caption=True))
    example = plan.training_set.examples[0]
    assert example_caption_options(caption_options(plan.config), example).keep_tokens == 4


def test_subset_keep_tokens_and_shuffle_take_effect_on_the_prompt(tmp_path):
    fixed, shuffled = _folder(str(tmp_path / "fixed"), 1), _folder(str(tmp_path / "shuffled"), 1)
    toml = _toml(tmp_path, f"""
[[datasets]]
  [[datasets.subsets]]
  image_dir = "{fixed}"
  [[datasets.subsets]]
  image_dir = "{shuffled}"
  shuffle_caption = true
  keep_tokens = 2
""")
    plan = make_plan(_config(tmp_path, toml))
    base = caption_options(plan.config)
    by_name = {os.path.basename(e.item.concept.folder): e for e in plan.training_set.examples}
    prompts = {name: {training_caption(e.caption, example_caption_options(base, e), random.Random(seed))
                      for seed in range(20)} for name, e in by_name.items()}
    assert prompts["fixed"] == {CAPTION}
    assert len(prompts["shuffled"]) > 3
    assert all(p.startswith("alpha, beta, ") and sorted(p.split(", ")) == sorted(CAPTION.split(", "))
               for p in prompts["shuffled"])


def test_subset_num_repeats_class_tokens_and_is_reg(tmp_path):
    dogs = _folder(str(tmp_path / "dogs"), 2, caption=None)
    reg = _folder(str(tmp_path / "reg"), 8, caption=None)
    toml = _toml(tmp_path, f"""
[[datasets]]
  [[datasets.subsets]]
  image_dir = "{dogs}"
  num_repeats = 3
  class_tokens = "sks dog"
  [[datasets.subsets]]
  image_dir = "{reg}"
  is_reg = true
  class_tokens = "dog"
""")
    plan = make_plan(_config(tmp_path, toml, prior_loss_weight=0.5))
    ts = plan.training_set
    train = [e for e in ts.epoch_examples if not e.item.concept.is_reg]
    reg_examples = [e for e in ts.epoch_examples if e.item.concept.is_reg]
    assert len(train) == 2 * 3 and {e.caption for e in train} == {"sks dog"}
    # kohya balances reg images to the 6 training examples: 6 of the 8, once each.
    assert len(reg_examples) == 6 and {e.caption for e in reg_examples} == {"dog"}
    assert {e.loss_weight for e in reg_examples} == {0.5} and {e.loss_weight for e in train} == {1.0}
    assert ts.reg_images_with_repeats == 8


def test_subset_flip_aug_flips_only_its_own_images(tmp_path):
    plain, mirrored = _folder(str(tmp_path / "plain"), 2), _folder(str(tmp_path / "mirrored"), 2)
    toml = _toml(tmp_path, f"""
[[datasets]]
batch_size = 4
  [[datasets.subsets]]
  image_dir = "{plain}"
  [[datasets.subsets]]
  image_dir = "{mirrored}"
  flip_aug = true
""")
    config = _config(tmp_path, toml, flip_aug=False)
    batch = make_plan(config).training_set.examples
    assert [example_flip_aug(config, e) for e in batch] == [False, False, True, True]
    seen = []

    def latents(examples, flips, rng):
        seen.append(flips)
        return torch.zeros(len(examples), 4, 8, 8), torch.zeros(len(examples), 6), None  # no loss masks

    class Bundle:
        prediction_type = "epsilon"

        @staticmethod
        def predict(noisy, timesteps, conditioning, sizes):
            return torch.zeros_like(noisy)

    rng, noise = random.Random(0), torch.Generator().manual_seed(0)
    for _ in range(16):
        batch_loss(config.replace(max_timestep=10), Bundle, batch, latents, lambda b, r: None, torch.linspace(0.99, 0.01, 10),
                   torch.device("cpu"), rng, noise)
    assert not any(flips[0] or flips[1] for flips in seen)
    assert {flips[2] for flips in seen} == {True, False} and {flips[3] for flips in seen} == {True, False}


def test_train_data_dir_is_ignored_with_a_dataset_config(tmp_path, small_root):
    only = _folder(str(tmp_path / "only"), 2)
    toml = _toml(tmp_path, f'[[datasets]]\n  [[datasets.subsets]]\n  image_dir = "{only}"\n')
    plan = make_plan(_config(tmp_path, toml, train_data_dir=small_root))
    assert {os.path.dirname(e.path) for e in plan.training_set.examples} == {only}
    assert "train_data_dir and reg_data_dir are ignored" in plan.summary()


def test_relative_image_dir_is_read_from_the_config_folder(tmp_path, monkeypatch):
    _folder(str(tmp_path / "set" / "pics"), 2)
    toml = _toml(tmp_path / "set", '[[datasets]]\n  [[datasets.subsets]]\n  image_dir = "pics"\n')
    monkeypatch.chdir(tmp_path)
    assert len(make_plan(_config(tmp_path, toml)).training_set.examples) == 2


@pytest.mark.parametrize("text, fragment", [
    ('[[datasets]]\n  [[datasets.subsets]]\n  image_dir = "{dir}"\n  num_repeat = 2\n',
     "[[datasets]] #1, [[datasets.subsets]] #1: unknown key 'num_repeat' (did you mean num_repeats?)"),
    ('[[datasets]]\n  [[datasets.subsets]]\n  image_dir = "{dir}"\n  num_repeats = "2"\n',
     "[[datasets]] #1, [[datasets.subsets]] #1: num_repeats='2' must be a whole number"),
    ('[[datasets]]\n  [[datasets.subsets]]\n  image_dir = "{dir}"\n[[datasets]]\n  [[datasets.subsets]]\n'
     '  num_repeats = 2\n', "[[datasets]] #2, [[datasets.subsets]] #1: image_dir is missing"),
    ('[[datasets]]\n  [[datasets.subsets]]\n  image_dir = "{dir}/nope"\n', "is not a folder"),
    ('[[datasets]]\nimage_dir = "{dir}"\n  [[datasets.subsets]]\n  image_dir = "{dir}"\n',
     "[[datasets]] #1: unknown key 'image_dir'; it belongs in a subset"),
    ('[general]\nbatch_size = 0\n[[datasets]]\n  [[datasets.subsets]]\n  image_dir = "{dir}"\n',
     "[[datasets]] #1: batch_size=0 must be at least 1"),
    ('[[datasets]]\nresolution = [64]\n  [[datasets.subsets]]\n  image_dir = "{dir}"\n',
     "resolution=[64] must be a number or [width, height]"),
    ('[[datasets]]\n  [[datasets.subsets]]\n  metadata_file = "meta.json"\n', "fine-tuning subsets (metadata_file"),
    ('resolution = 512\n', "no [[datasets]] entry"),
    ('resolution = 512\n', "at the top: unknown key 'resolution'"),
    ('[[datasets]]\n  [[datasets.subsets]]\n  image_dir = "{dir}"\n  num_repeats = 0\n', "num_repeats=0 must be at least 1"),
    ('[[datasets]]\n  [[datasets.subsets]]\n  image_dir = "{dir}"\n  random_crop = true\n',
     "random_crop needs a fresh crop every step"),
    ('[[datasets]\n', "is not valid TOML"),
])
def test_bad_dataset_configs_are_refused_with_where_and_what(tmp_path, text, fragment):
    folder = _folder(str(tmp_path / "pics"), 1)
    toml = _toml(tmp_path, text.replace("{dir}", folder))
    config = _config(tmp_path, toml)
    problems = config.problems()
    assert any(fragment in p for p in problems), problems
    assert all(toml in p for p in problems)  # the file is named
    with pytest.raises(ConfigError):
        make_plan(config)


def test_a_missing_dataset_config_is_named(tmp_path):
    problems = _config(tmp_path, str(tmp_path / "none.toml")).problems()
    assert problems == [f"dataset_config: Config file {tmp_path / 'none.toml'} does not exist"]


def test_dataset_config_from_the_command_line(tmp_path):
    import argparse

    from lib_trainer.cli_args import add_config_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    config = config_from_args(parser.parse_args(["--dataset_config", "d.toml", "--validation_split", "0.25",
                                                 "--validation_seed", "3", "--validate_every_n_steps", "10",
                                                 "--max_validation_steps", "2"]))
    assert (config.dataset_config, config.validation_split, config.validation_seed, config.validate_every_n_steps,
            config.max_validation_steps) == ("d.toml", 0.25, 3, 10, 2)


def test_subset_alpha_mask_must_agree_with_the_run(tmp_path):
    """Loss masks are one source for the whole run (dataset/masks.py): a subset asking for
    alpha masks that the run does not use is refused, naming the subset; agreeing is fine."""
    masked, plain = _folder(str(tmp_path / "masked"), 1), _folder(str(tmp_path / "plain"), 1)
    toml = _toml(tmp_path, f"""
[[datasets]]
  [[datasets.subsets]]
  image_dir = "{masked}"
  alpha_mask = true
  [[datasets.subsets]]
  image_dir = "{plain}"
""")
    with pytest.raises(ConfigError, match=r"subsets\]\] #1: alpha_mask cannot differ between subsets"):
        make_plan(_config(tmp_path, toml))
    examples = make_plan(_config(tmp_path, toml).replace(alpha_mask=True)).training_set.examples
    assert len(examples) == 2
