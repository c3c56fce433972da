"""Loss masks (masked_loss with conditioning_data_dir, alpha_mask): masked-out pixels do not train."""
from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import quick_config
from lib_trainer.config import TrainConfig
from lib_trainer.dataset.buckets import Placement
from lib_trainer.dataset.folders import Concept, DatasetError, ImageItem
from lib_trainer.dataset.latent_cache import LatentCache
from lib_trainer.dataset.masks import MaskSource, find_mask
from lib_trainer.dataset.training_set import Example
from lib_trainer.demo_data import DEMO_FOLDER, make_demo_dataset
from lib_trainer.hosts.bundle import scaled_linear_alphas_cumprod
from lib_trainer.progress import Progress
from lib_trainer.train.step_loss import batch_loss


def half_mask(path, size, white_left=True):
    """A mask whose left (or right) half is white."""
    array = np.zeros((size[1], size[0], 3), np.uint8)
    half = size[0] // 2
    array[:, :half] = 255 if white_left else 0
    array[:, half:] = 0 if white_left else 255
    Image.fromarray(array).save(path)


class PlusParameter:
    """A stand-in model: prediction = noisy latents + a trainable tensor, so each element's
    loss depends on that element alone."""
    prediction_type = "epsilon"

    def __init__(self, shape):
        self.offset = torch.zeros(shape, requires_grad=True)

    def predict(self, noisy, timesteps, conditioning, sizes):
        return noisy + self.offset


class Item:
    """A stand-in example: its weight, and a concept of no dataset config subset."""
    loss_weight = 1.0

    class item:
        class concept:
            subset = None


def loss_and_grad(x0, masks):
    model = PlusParameter(x0.shape)
    loss = batch_loss(TrainConfig(), model, [Item()] * x0.shape[0], lambda b, f, r: (x0, None, masks),
                      lambda b, r: None, scaled_linear_alphas_cumprod(), torch.device("cpu"), random.Random(0),
                      torch.Generator().manual_seed(0))
    loss.backward()
    return loss.detach(), model.offset.grad


def test_a_masked_out_region_does_not_move_the_loss_and_gets_no_gradient():
    x0 = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    masks = torch.ones(2, 1, 8, 8)
    masks[:, :, :, 4:] = 0  # the right half is ignored
    changed = x0.clone()
    changed[:, :, :, 4:] += 5.0
    loss, grad = loss_and_grad(x0, masks)
    loss_changed, _ = loss_and_grad(changed, masks)
    assert torch.equal(loss, loss_changed)
    assert grad[..., 4:].abs().max() == 0 and grad[..., :4].abs().max() > 0
    unmasked, _ = loss_and_grad(changed, None)
    assert not torch.equal(unmasked, loss_and_grad(x0, None)[0])  # without the mask the change counts


def test_mask_images_follow_the_resize_crop_and_flip_and_read_the_red_channel(tmp_path):
    image = tmp_path / "10_c" / "a.png"
    image.parent.mkdir()
    Image.new("RGB", (128, 64), "gray").save(image)
    masks = tmp_path / "masks"
    masks.mkdir()
    half_mask(masks / "a.png", (128, 64))  # white for x < 64
    source = MaskSource(str(masks))
    placement, crop = Placement((64, 64), (128, 64)), (32, 0)  # the crop shows x = 32..95
    mask = source.load(str(image), placement, crop, False, (8, 8))
    assert mask.shape == (1, 8, 8)
    assert torch.equal(mask[0, :, :4], torch.ones(8, 4)) and torch.equal(mask[0, :, 4:], torch.zeros(8, 4))
    assert torch.equal(source.load(str(image), placement, crop, True, (8, 8)), mask.flip(-1))
    # only red counts
    Image.new("RGB", (128, 64), (0, 255, 255)).save(masks / "a.png")
    assert source.load(str(image), placement, crop, False, (8, 8)).max() == 0


def test_masks_are_found_beside_or_in_the_concepts_folder(tmp_path):
    (tmp_path / "m" / "10_c").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "m" / "b.jpg")
    Image.new("RGB", (8, 8)).save(tmp_path / "m" / "10_c" / "a.webp")
    assert find_mask(str(tmp_path / "m"), "/data/10_c/a.png").endswith(os.path.join("10_c", "a.webp"))
    assert find_mask(str(tmp_path / "m"), "/data/10_c/b.png").endswith("b.jpg")
    assert find_mask(str(tmp_path / "m"), "/data/10_c/c.png") is None


def test_alpha_mask_reads_the_pngs_transparency(tmp_path):
    rgba = np.full((64, 64, 4), 255, np.uint8)
    rgba[:32, :, 3] = 0  # top half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    Image.new("RGB", (64, 64)).save(tmp_path / "opaque.png")
    source = MaskSource("")
    mask = source.load(str(tmp_path / "a.png"), Placement((64, 64), (64, 64)), (0, 0), False, (8, 8))
    assert torch.equal(mask[0, :4], torch.zeros(4, 8)) and torch.equal(mask[0, 4:], torch.ones(4, 8))
    opaque = source.load(str(tmp_path / "opaque.png"), Placement((64, 64), (64, 64)), (0, 0), False, (8, 8))
    assert torch.equal(opaque, torch.ones(1, 8, 8))


def stand_in_vae(pixels):
    return pixels[:, :, ::8, ::8].repeat(1, 2, 1, 1)[:, :4].clone()


def test_cached_masks_flip_with_the_latents_and_come_back_from_disk(tmp_path):
    image = tmp_path / "10_c" / "a.png"
    image.parent.mkdir()
    Image.new("RGB", (64, 64), "red").save(image)
    (tmp_path / "m").mkdir()
    half_mask(tmp_path / "m" / "a.png", (64, 64))
    concept = Concept(str(image.parent), 1, "c")
    example = Example(ImageItem(str(image), "c", concept, (64, 64), False), Placement((64, 64), (64, 64)), "c")
    source = MaskSource(str(tmp_path / "m"))
    cache = LatentCache(stand_in_vae, "vae", flip_aug=True, to_disk=True, masks=source)
    cache.fill([example], Progress())
    plain, flipped = cache.get_mask(example, False), cache.get_mask(example, True)
    assert torch.equal(plain, source.load(str(image), example.placement, (0, 0), False, (8, 8)))
    assert torch.equal(flipped, source.load(str(image), example.placement, (0, 0), True, (8, 8)))
    again = LatentCache(stand_in_vae, "vae", flip_aug=True, to_disk=True, masks=source)
    again.fill([example], Progress())
    assert again.reused_from_disk == 1 and torch.equal(again.get_mask(example, True), flipped)
    half_mask(tmp_path / "m" / "a.png", (64, 64), white_left=False)  # a changed mask is read again
    third = LatentCache(stand_in_vae, "vae", flip_aug=True, to_disk=True, masks=source)
    third.fill([example], Progress())
    assert third.reused_from_disk == 0 and torch.equal(third.get_mask(example, False), flipped)


def test_mask_options_and_missing_masks_are_refused_by_name(tmp_path):
    assert any("masked_loss needs its masks" in p for p in TrainConfig(masked_loss=True).problems())
    assert any("masked_loss is off" in p for p in TrainConfig(conditioning_data_dir=str(tmp_path)).problems())
    assert not [p for p in TrainConfig(alpha_mask=True).problems() if "mask" in p]
    from lib_trainer.dataset.plan import make_plan

    root = make_demo_dataset(str(tmp_path / "data"), count=3, size=64)
    masks = tmp_path / "masks"
    masks.mkdir()
    half_mask(masks / "ball_00.png", (64, 64))
    half_mask(masks / "ball_01.png", (32, 32))
    config = quick_config(root, str(tmp_path / "out"), masked_loss=True, conditioning_data_dir=str(masks))
    with pytest.raises(DatasetError) as error:
        make_plan(config)
    assert "ball_02.png" in str(error.value) and "ball_00.png" not in str(error.value).split("mask in")[-1]
    assert "ball_01.png is 32x32" in str(error.value)
    half_mask(masks / "ball_01.png", (64, 64))
    half_mask(masks / "ball_02.png", (64, 64))
    half_mask(masks / "stray.png", (64, 64))
    plan = make_plan(config)
    assert "masks of no training image, not used (1): stray.png" in plan.summary()


def test_a_run_with_black_masks_leaves_the_lora_untouched(tmp_path):
    from safetensors.torch import load_file

    from lib_trainer.train.loop import train

    root = make_demo_dataset(str(tmp_path / "data"), count=2, size=64)
    masks = tmp_path / "masks" / DEMO_FOLDER
    masks.mkdir(parents=True)
    for name in ("ball_00", "ball_01"):
        Image.new("RGB", (64, 64), "black").save(masks / f"{name}.png")
    config = quick_config(root, str(tmp_path / "out"), masked_loss=True, conditioning_data_dir=str(tmp_path / "masks"),
                          flip_aug=True, max_train_steps=2, network_train_unet_only=True)
    result = train(config)
    weights = load_file(result.final_path)
    ups = [tensor for key, tensor in weights.items() if "lora_up" in key]
    assert ups and all(tensor.abs().max() == 0 for tensor in ups)  # nothing trained: every pixel was masked
    assert result.losses == [0.0, 0.0]
    from safetensors import safe_open

    with safe_open(result.final_path, "pt") as handle:
        assert handle.metadata()["ss_masked_loss"] == "True"
