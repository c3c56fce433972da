"""Aspect-ratio buckets, the examples of an epoch and the step count shown before training."""
from __future__ import annotations

import os
import random
from collections import Counter

import pytest
from PIL import Image

from lib_trainer.config import TrainConfig
from lib_trainer.dataset.buckets import BucketAssigner, BucketSettings, bucket_resolutions
from lib_trainer.dataset.folders import Concept, DatasetScan, ImageItem
from lib_trainer.dataset.plan import make_plan
from lib_trainer.dataset.training_set import TrainingSet, steps_per_epoch

# Worked by hand for resolution 512 (area 262144), steps 64, sides 256..1024: for each width w
# the tallest height is floor(262144 / w / 64) * 64, capped at 1024, e.g. 262144 / 704 = 372.4 -> 320.
BUCKETS_512 = {
    (256, 1024), (320, 768), (384, 640), (448, 576), (512, 512), (576, 448), (640, 384),
    (704, 320), (768, 320), (832, 256), (896, 256), (960, 256), (1024, 256),
    (320, 704), (256, 832), (256, 896), (256, 960),
}


def test_bucket_resolutions_512():
    buckets = bucket_resolutions(BucketSettings())
    assert set(buckets) == BUCKETS_512
    assert len(buckets) == len(set(buckets))
    for must in [(512, 512), (448, 576), (576, 448), (256, 1024), (1024, 256)]:
        assert must in buckets
    for width, height in buckets:
        assert width * height <= 512 * 512
        assert width % 64 == 0 and height % 64 == 0
        assert 256 <= width <= 1024 and 256 <= height <= 1024


def test_bucket_resolutions_rectangular_resolution_uses_its_area():
    buckets = bucket_resolutions(BucketSettings(resolution=(512, 768)))
    assert all(w * h <= 512 * 768 for w, h in buckets)
    # square: floor(sqrt(393216) = 627.1 / 64) * 64 = 576
    assert (576, 576) in buckets and (512, 768) in buckets and (768, 512) in buckets


def test_wide_image_goes_to_closest_ratio_and_covers_it():
    assigner = BucketAssigner(BucketSettings())
    # 1000x500 has ratio 2.0; nearest bucket ratios are 704/320 = 2.2 and 640/384 = 1.67
    placement = assigner.place((1000, 500))
    assert placement.bucket == (704, 320)
    # scale = max(704/1000, 320/500) = 0.704 -> 704x352, then cropped to 704x320
    assert placement.resized == (704, 352)
    # the tall twin
    assert assigner.place((500, 1000)).bucket == (320, 704)
    assert assigner.place((500, 1000)).resized == (352, 704)


@pytest.mark.parametrize("size", [(1000, 500), (96, 128), (128, 96), (300, 200), (2000, 333), (777, 777)])
def test_resized_covers_bucket_and_keeps_aspect(size):
    placement = BucketAssigner(BucketSettings()).place(size)
    (bw, bh), (rw, rh) = placement.bucket, placement.resized
    assert rw >= bw and rh >= bh
    assert rw == bw or rh == bh  # the smallest cover: one side fits exactly
    assert abs(rw / rh - size[0] / size[1]) < 0.02


def test_no_upscale_keeps_small_image_small():
    placement = BucketAssigner(BucketSettings(bucket_no_upscale=True)).place((300, 200))
    # 300 -> 256 and 200 -> 192, rounded down to the step of 64; never enlarged
    assert placement.bucket == (256, 192)
    rw, rh = placement.resized
    assert rw <= 300 and rh <= 200
    assert rw >= 256 and rh >= 192


@pytest.mark.parametrize("side", [520, 1000, 2048, 3000])
def test_no_upscale_shrinks_large_square_to_the_area_limit(side):
    placement = BucketAssigner(BucketSettings(bucket_no_upscale=True)).place((side, side))
    assert placement.bucket == (512, 512)
    assert placement.resized == (512, 512)


# kohya's BucketManager.select_bucket with no_upscale, worked by hand at resolution 512
# (area 262144), steps 64. round(x) = int(x + 0.5) - that % 64 ("round_to_steps").
# Within the area: no resize, the bucket is each side rounded down to 64.
# Above it: w = sqrt(262144 * ratio), h = 262144 / w; either the width is rounded (and the
# height follows from the ratio) or the height is; the closer ratio wins, the height on a tie.
NO_UPSCALE_KOHYA = [
    # size, bucket, resized
    # 724.08 x 362.04: width first 704 x round(352) = 320 -> ratio 2.2; height first
    # 320 x round(640) = 640 -> ratio 2.0 exactly: height first, 640 x 320
    ((2000, 1000), (640, 320), (640, 320)),
    # area 60000 <= 262144: kept at 300 x 200 and cropped to 256 x 192
    ((300, 200), (256, 192), (300, 200)),
    ((600, 400), (576, 384), (600, 400)),
    # 682.67 x 384.0: width first 640 x round(360) = 320 -> 2.0 (error 0.222); height first
    # round(682.67) = 640 x 384 -> 1.667 (error 0.111): resized int(384 * 16/9 + 0.5) = 683 x 384
    ((1920, 1080), (640, 384), (683, 384)),
    # 1254.1 x 209.0: width first 1216 x round(202.7) = 192 -> 6.33; height first 192 x 1152 -> 6.0
    ((3000, 500), (1152, 192), (1152, 192)),
    # 209.0 x 1254.1: width first 192 x 1152 -> 1/6 exactly; height first round(202.7) = 192 x 1216
    ((500, 3000), (192, 1152), (192, 1152)),
    # 611.96 x 428.37: width first 576 x round(403.2) = 384 -> 1.5 (error 0.071); height first
    # round(548.6) = 512 x 384 -> 1.333 (error 0.095): width first, resized 576 x int(403.7) = 403
    ((1000, 700), (576, 384), (576, 403)),
    # 418.05 x 627.07: both ways 384 x 576 (a tie: height first), resized 384 x 576
    ((1000, 1500), (384, 576), (384, 576)),
    ((1024, 1024), (512, 512), (512, 512)),
]


@pytest.mark.parametrize("size, bucket, resized", NO_UPSCALE_KOHYA)
def test_no_upscale_picks_kohyas_bucket(size, bucket, resized):
    placement = BucketAssigner(BucketSettings(bucket_no_upscale=True)).place(size)
    assert (placement.bucket, placement.resized) == (bucket, resized)


def test_bucketing_off_uses_the_resolution():
    assigner = BucketAssigner(BucketSettings(enable_bucket=False))
    assert assigner.buckets == [(512, 512)]
    placement = assigner.place((1000, 500))
    assert placement.bucket == (512, 512)
    assert placement.resized == (1024, 512)  # scale max(0.512, 1.024): covers, then centre crop


# --- the examples of an epoch ---

def make_scan(groups, reg_groups=()) -> DatasetScan:
    """groups: (repeats, [(width, height), ...]) per concept."""
    scan = DatasetScan()
    for is_reg, spec in [(False, groups), (True, reg_groups)]:
        for index, (repeats, sizes) in enumerate(spec):
            concept = Concept(f"/d/{repeats}_c{index}", repeats, f"c{index}", is_reg)
            scan.concepts.append(concept)
            for n, size in enumerate(sizes):
                scan.items.append(ImageItem(f"{concept.folder}/{n}.png", f"c{index}", concept, size, False))
    return scan


SQUARE, WIDE = (512, 512), (1000, 500)


def training_set(groups, reg_groups=(), batch=2) -> TrainingSet:
    return TrainingSet(make_scan(groups, reg_groups), BucketAssigner(BucketSettings()), batch)


def test_batches_round_up_per_bucket():
    ts = training_set([(1, [SQUARE] * 3 + [WIDE] * 3)])
    assert ts.bucket_counts() == {(512, 512): 3, (704, 320): 3}
    # 3 -> 2 batches and 3 -> 2 batches: 4, not ceil(6 / 2) = 3
    assert ts.batches_per_epoch() == 4
    assert len(ts.epoch_batches(random.Random(0))) == 4


def test_repeats_multiply():
    ts = training_set([(5, [SQUARE] * 2), (10, [SQUARE])])
    assert ts.num_train_images == 5 * 2 + 10 * 1
    assert ts.batches_per_epoch() == 10


def test_reg_images_cycled_to_the_training_count():
    ts = training_set([(3, [SQUARE] * 2)], reg_groups=[(1, [SQUARE] * 2)])
    assert ts.num_train_images == 6
    assert ts.num_reg_images == 6
    reg_paths = [e.path for e in ts.epoch_examples if e.item.concept.is_reg]
    assert Counter(reg_paths) == {"/d/1_c0/0.png": 3, "/d/1_c0/1.png": 3}
    assert ts.batches_per_epoch() == 6  # 12 examples / 2


def test_reg_images_cut_to_the_training_count():
    ts = training_set([(1, [SQUARE] * 3)], reg_groups=[(1, [SQUARE] * 10)])
    assert ts.num_reg_images == 3


def test_reg_loss_weight():
    ts = TrainingSet(make_scan([(1, [SQUARE])], [(1, [SQUARE])]), BucketAssigner(BucketSettings()), 1,
                     prior_loss_weight=0.5)
    weights = {e.item.concept.is_reg: e.loss_weight for e in ts.examples}
    assert weights == {False: 1.0, True: 0.5}


def test_epoch_batches_never_mix_buckets_and_cover_every_example_once():
    ts = training_set([(2, [SQUARE] * 3 + [WIDE] * 2), (1, [(500, 1000)] * 3)], batch=4)
    expected = Counter(id(e) for e in ts.epoch_examples)
    assert sum(expected.values()) == 2 * 5 + 3
    for seed in range(5):
        batches = ts.epoch_batches(random.Random(seed))
        assert len(batches) == ts.batches_per_epoch() == 2 + 1 + 1  # 6 square, 4 wide, 3 tall
        for batch in batches:
            assert 1 <= len(batch) <= 4
            assert len({e.placement.bucket for e in batch}) == 1
        assert Counter(id(e) for batch in batches for e in batch) == expected


def test_epoch_batches_same_seed_same_order():
    ts = training_set([(1, [SQUARE] * 6 + [WIDE] * 4)])
    order = lambda seed: [[e.path for e in b] for b in ts.epoch_batches(random.Random(seed))]  # noqa: E731
    assert order(3) == order(3)
    assert order(3) != order(4)


def test_trigger_word_put_first_in_example_captions():
    scan = make_scan([(1, [SQUARE])])
    scan.items[0].caption = "1girl, sks, smile"
    ts = TrainingSet(scan, BucketAssigner(BucketSettings()), 1, trigger_word="sks")
    assert ts.examples[0].caption == "sks, 1girl, smile"


def test_steps_per_epoch():
    assert steps_per_epoch(20, 1) == 20
    assert steps_per_epoch(20, 3) == 7


# --- the plan shown before training ---

def draw(path, size):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", size, (40, 90, 200)).save(path)


@pytest.fixture()
def kohya_dataset(tmp_path):
    """`5_a` with 4 portrait images, `10_b` with 2 landscape images, all captioned."""
    root = tmp_path / "train"
    for n in range(4):
        draw(root / "5_a" / f"a{n}.png", (96, 128))
        (root / "5_a" / f"a{n}.txt").write_text(f"a photo, sks, pose {n}", encoding="utf-8")
    for n in range(2):
        draw(root / "10_b" / f"b{n}.png", (128, 96))
        (root / "10_b" / f"b{n}.txt").write_text("outdoors, sks", encoding="utf-8")
    return str(root)


def plan_config(root, **changes) -> TrainConfig:
    settings = dict(train_data_dir=root, train_batch_size=2, max_train_epochs=3, trigger_word="sks")
    settings.update(changes)
    return TrainConfig().replace(**settings)


def test_plan_kohya_step_formula(kohya_dataset):
    plan = make_plan(plan_config(kohya_dataset))
    # (4 x 5 + 2 x 10) / batch 2 = 20 steps per epoch; x 3 epochs = 60
    assert plan.training_set.num_train_images == 40
    assert plan.steps_per_epoch == 20
    assert plan.total_steps == 60
    assert plan.epochs == 3
    summary = plan.summary()
    assert "5_a: 4 images x 5 repeats = 20" in summary
    assert "10_b: 2 images x 10 repeats = 20" in summary
    assert "20 batches per epoch" in summary
    assert "60 steps" in summary
    assert "images without a caption file: 0" in summary


def test_plan_with_accumulation_and_max_steps(kohya_dataset):
    plan = make_plan(plan_config(kohya_dataset, gradient_accumulation_steps=2))
    assert (plan.steps_per_epoch, plan.total_steps) == (10, 30)
    plan = make_plan(plan_config(kohya_dataset, max_train_epochs=0, max_train_steps=25))
    # 25 steps need ceil(25 / 20) = 2 epochs
    assert (plan.total_steps, plan.epochs) == (25, 2)


def test_plan_previews_show_trigger_first(kohya_dataset):
    plan = make_plan(plan_config(kohya_dataset))
    assert len(plan.previews) == 3
    for path, prompt in plan.previews:
        assert prompt.startswith("sks, ")
        assert prompt.count("sks") == 1
    assert "'sks, " in plan.summary()


def test_plan_reports_captions_over_max_token_length(kohya_dataset):
    long_caption = " ".join(f"w{i}" for i in range(80))
    long_path = os.path.join(kohya_dataset, "10_b", "b1.png")
    with open(os.path.splitext(long_path)[0] + ".txt", "w", encoding="utf-8") as handle:
        handle.write(long_caption)

    def count_words(text: str) -> int:
        return len(text.split())

    plan = make_plan(plan_config(kohya_dataset), count_tokens=count_words)
    # the trigger is put first ("sks, w0 w1 ..."), so 1 + 80 words
    assert plan.over_length == [(long_path, 81)]
    assert "longer than max_token_length=75" in plan.summary()
    assert make_plan(plan_config(kohya_dataset, max_token_length=150), count_tokens=count_words).over_length == []


def test_plan_counts_reg_images(kohya_dataset, tmp_path):
    for n in range(3):
        draw(tmp_path / "reg" / "1_person" / f"r{n}.png", (96, 128))
    plan = make_plan(plan_config(kohya_dataset, reg_data_dir=str(tmp_path / "reg")))
    # 40 training examples + 40 reg examples (3 images, 1 repeat, then 13 + 13 + 12 more), batch 2
    assert plan.training_set.num_reg_images == 40
    assert plan.steps_per_epoch == 40
    assert "regularisation examples per epoch: 40 (reg images x repeats 3" in plan.summary()
