"""The plan counts a folder as sd-scripts does (DreamBoothDataset's reg balancing,
train_network's length rule) and says which option ended the count; the ss_* counts in
the file are the ones the run resolves to. Expected values are worked by hand from
sd-scripts' code, not taken from this code."""
from __future__ import annotations

from collections import Counter

import pytest
from PIL import Image

from lib_trainer.config import TrainConfig
from lib_trainer.dataset.buckets import BucketAssigner, BucketSettings
from lib_trainer.dataset.folders import Concept, DatasetScan, ImageItem
from lib_trainer.dataset.plan import make_plan
from lib_trainer.dataset.training_set import TrainingSet
from lib_trainer.formats.metadata import training_metadata

SQUARE = (512, 512)


def training_set(train: list[tuple[int, int]], reg: list[tuple[int, int]], batch: int) -> TrainingSet:
    """train / reg: (repeats, image count) per folder, every image square."""
    scan = DatasetScan()
    for is_reg, folders in ((False, train), (True, reg)):
        for index, (repeats, count) in enumerate(folders):
            concept = Concept(f"/{'reg' if is_reg else 'd'}/{repeats}_c{index}", repeats, f"c{index}", is_reg)
            scan.concepts.append(concept)
            for n in range(count):
                scan.items.append(ImageItem(f"{concept.folder}/{n}.png", "c", concept, SQUARE, False))
    return TrainingSet(scan, BucketAssigner(BucketSettings()), batch)


def reg_uses(ts: TrainingSet) -> dict[str, int]:
    return dict(Counter(e.path for e in ts.epoch_examples if e.item.concept.is_reg))


def test_reg_folder_with_repeats_is_taken_whole_up_to_the_training_count():
    # 5 images x 3 repeats = 15 training examples; reg 4_c0 with 4 images. kohya registers reg
    # images in order with their 4 repeats until n >= 15: 4, 8, 12, 16 -> 16 reg examples,
    # 31 in all, batch 5: ceil(31 / 5) = 7 steps (cycling to exactly 15 would give 6).
    ts = training_set([(3, 5)], [(4, 4)], batch=5)
    assert ts.num_train_images == 15
    assert ts.num_reg_images == 16
    assert set(reg_uses(ts).values()) == {4}
    assert ts.batches_per_epoch() == 7


def test_missing_reg_repeats_go_one_each_from_the_first_image():
    # 10 training examples; reg 2_c0 with 3 images: first 2 + 2 + 2 = 6, then one more each in
    # turn: r0 3, r1 3, r2 3 (9), r0 4 (10). Cycling the repeated list would give 4, 4, 2.
    ts = training_set([(2, 5)], [(2, 3)], batch=2)
    assert reg_uses(ts) == {"/reg/2_c0/0.png": 4, "/reg/2_c0/1.png": 3, "/reg/2_c0/2.png": 3}


def test_reg_folders_in_order_the_last_one_reached_whole():
    # 7 training examples; reg 1_c0 (2 images) then 3_c1 (2 images): 1, 2, 5, 8 -> 8, each
    # image once with its own folder's repeats.
    ts = training_set([(7, 1)], [(1, 2), (3, 2)], batch=1)
    assert reg_uses(ts) == {"/reg/1_c0/0.png": 1, "/reg/1_c0/1.png": 1, "/reg/3_c1/0.png": 3, "/reg/3_c1/1.png": 3}
    # kohya's ss_num_reg_images is the folders' images x repeats: 1 x 2 + 3 x 2 = 8
    assert ts.reg_images_with_repeats == 8


def test_images_beyond_the_training_count_are_not_used():
    # 3 training examples; reg 3_c0 with 2 images: the first reaches 3, the second is unused.
    ts = training_set([(3, 1)], [(3, 2)], batch=1)
    assert reg_uses(ts) == {"/reg/3_c0/0.png": 3}
    assert ts.reg_images_with_repeats == 6


# --- the length: max_train_epochs, max_train_steps, kohya's default ---

@pytest.fixture()
def dataset(tmp_path):
    """10_a with 4 images: 40 examples, batch 2 -> 20 steps per epoch."""
    folder = tmp_path / "train" / "10_a"
    folder.mkdir(parents=True)
    for n in range(4):
        Image.new("RGB", (64, 64), (90, 40, 200)).save(folder / f"a{n}.png")
        (folder / f"a{n}.txt").write_text("sks, a photo", encoding="utf-8")
    return str(tmp_path / "train")


def plan_for(root: str, **changes):
    return make_plan(TrainConfig().replace(train_data_dir=root, train_batch_size=2, resolution="64",
                                           min_bucket_reso=64, max_bucket_reso=128, **changes))


@pytest.mark.parametrize("changes, total, epochs, words", [
    # epochs win over steps, as train_network overrides max_train_steps with epochs x steps
    (dict(max_train_epochs=3, max_train_steps=25), 60, 3,
     "max_train_epochs=3 sets the length: 3 epochs x 20 steps = 60 steps (max_train_steps=25 is ignored"),
    (dict(max_train_epochs=2), 40, 2, "max_train_epochs=2 sets the length: 2 epochs x 20 steps = 40 steps"),
    (dict(max_train_steps=6), 6, 1, "max_train_steps=6 stops the run after 6 of 20 steps of epoch 1 (6 steps)"),
    (dict(max_train_steps=25), 25, 2, "max_train_steps=25 stops the run after 5 of 20 steps of epoch 2"),
    (dict(max_train_steps=40), 40, 2, "max_train_steps=40 runs 2 whole epochs of 20 steps = 40 steps"),
    # neither set: sd-scripts' default --max_train_steps 1600 = 80 epochs of 20
    (dict(), 1600, 80, "1600 steps: neither max_train_epochs nor max_train_steps is set, so kohya's default "
     "max_train_steps=1600 runs 80 whole epochs of 20 steps"),
    # 200 steps alone are 200 steps (not capped by a default epoch count): 10 per epoch with
    # accumulation 2 -> 20 epochs
    (dict(max_train_steps=200, gradient_accumulation_steps=2), 200, 20,
     "max_train_steps=200 runs 20 whole epochs of 10 steps = 200 steps"),
])
def test_run_length_follows_kohya_and_says_why(dataset, changes, total, epochs, words):
    plan = plan_for(dataset, **changes)
    assert (plan.total_steps, plan.epochs) == (total, epochs)
    assert words in plan.summary()


def test_constant_with_warmup_is_said_in_the_plan(dataset):
    summary = plan_for(dataset, max_train_steps=20, lr_scheduler="constant", lr_warmup_steps=0.1).summary()
    assert "lr_scheduler=constant with 2 warm-up steps trains as constant_with_warmup" in summary
    assert "trains as constant_with_warmup" not in plan_for(dataset, lr_scheduler="constant").summary()


def test_previews_are_labelled_for_random_captions(dataset):
    fixed = plan_for(dataset).summary()
    assert "Prompt previews (as trained):" in fixed
    shuffled = plan_for(dataset, shuffle_caption=True, caption_tag_dropout_rate=0.1).summary()
    assert "Prompt previews (caption as written; shuffled/dropped anew at each step):" in shuffled
    assert "'sks, a photo'" in shuffled
    assert "first step" not in shuffled


def metadata_for(plan) -> dict[str, str]:
    return training_metadata(plan.config, plan.training_set, "sd1", "epsilon", "model", "id", 0.0,
                             plan.total_steps, "AdamW", {"network_dim": 4, "network_alpha": 2.0}, 0)


@pytest.mark.parametrize("changes, num_epochs, max_steps, batches", [
    # max_train_steps=6 ends in epoch 1 of 20 steps: kohya writes ceil(6 / 20) = 1 epoch
    (dict(max_train_steps=6), "1", "6", "20"),
    (dict(max_train_steps=25), "2", "25", "20"),
    (dict(max_train_epochs=3, max_train_steps=25), "3", "60", "20"),
    # accumulation 2: 10 steps per epoch, ceil(25 / 10) = 3 epochs; batches stay 20
    (dict(max_train_steps=25, gradient_accumulation_steps=2), "3", "25", "20"),
])
def test_metadata_counts_are_what_the_run_resolves_to(dataset, changes, num_epochs, max_steps, batches):
    meta = metadata_for(plan_for(dataset, **changes))
    assert (meta["ss_num_epochs"], meta["ss_max_train_steps"], meta["ss_num_batches_per_epoch"]) == \
        (num_epochs, max_steps, batches)
    assert meta["ss_num_train_images"] == "40"


def test_metadata_reg_count_is_kohyas(dataset, tmp_path):
    reg = tmp_path / "reg" / "3_person"
    reg.mkdir(parents=True)
    for n in range(2):
        Image.new("RGB", (64, 64), (200, 40, 90)).save(reg / f"r{n}.png")
    plan = plan_for(dataset, reg_data_dir=str(tmp_path / "reg"), max_train_steps=6)
    # reg images x repeats = 2 x 3 = 6 (kohya's num_reg_images); balanced to 40 per epoch:
    # 3 + 3, then one more each in turn: 20 + 20
    assert metadata_for(plan)["ss_num_reg_images"] == "6"
    assert plan.training_set.num_reg_images == 40
