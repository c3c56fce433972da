"""SD1, SD2 and SDXL conditioning as the WebUI and diffusers compute it, clip skip per
family, SDXL size conditioning, the zero-terminal-SNR schedule and the text-encoder cache."""
from __future__ import annotations

import pytest
import torch

from lib_trainer.config import ConfigError
from lib_trainer.dataset.buckets import Placement
from lib_trainer.dataset.pixels import size_condition
from lib_trainer.formats.lora_file import load_lora
from lib_trainer.hosts.tiny import build_tiny_bundle
from lib_trainer.train.loop import train
from lib_trainer.train.noise import ZERO_TERMINAL_ABAR, rescale_zero_terminal_snr

from conftest import diffusers_pipeline, quick_config

PROMPTS = ["ltdemo, red ball, white background", "a photo of a cat"]


def reference_pipeline(bundle):
    return diffusers_pipeline(bundle.components)


@torch.no_grad()
def test_sdxl_conditioning_equals_diffusers_encode_prompt():
    bundle = build_tiny_bundle("sdxl")
    pipe = reference_pipeline(bundle)
    context, _, pooled, _ = pipe.encode_prompt(PROMPTS, device="cpu", num_images_per_prompt=1,
                                               do_classifier_free_guidance=False)
    ours = bundle.encode_prompts(PROMPTS)
    assert ours.context.shape == (2, 77, 96)
    torch.testing.assert_close(ours.context, context)
    torch.testing.assert_close(ours.pooled, pooled)


@torch.no_grad()
def test_sd1_clip_skip_is_the_webuis():
    """Clip skip 2: the second-to-last layer's states, then the final norm (diffusers'
    clip_skip=1; its own code for it needs transformers 4, so the reference is spelt out)."""
    plain, skipped = build_tiny_bundle("sd1", clip_skip=1), build_tiny_bundle("sd1", clip_skip=2)
    pipe = reference_pipeline(plain)
    reference, _ = pipe.encode_prompt(PROMPTS, "cpu", 1, False)
    torch.testing.assert_close(plain.encode_prompts(PROMPTS).context, reference)
    ids = pipe.tokenizer(PROMPTS, padding="max_length", max_length=77, return_tensors="pt").input_ids
    encoder = pipe.text_encoder
    states = encoder(ids, output_hidden_states=True).hidden_states[-2]
    norm = getattr(encoder, "text_model", encoder).final_layer_norm
    torch.testing.assert_close(skipped.encode_prompts(PROMPTS).context, norm(states))
    assert not torch.allclose(plain.encode_prompts(PROMPTS).context, skipped.encode_prompts(PROMPTS).context)


@torch.no_grad()
def test_sd2_uses_the_penultimate_openclip_layer_whatever_the_clip_skip():
    plain, skipped = build_tiny_bundle("sd2", clip_skip=1), build_tiny_bundle("sd2", clip_skip=2)
    reference, _ = reference_pipeline(plain).encode_prompt(PROMPTS, "cpu", 1, False)
    torch.testing.assert_close(plain.encode_prompts(PROMPTS).context, reference)
    assert torch.equal(plain.encode_prompts(PROMPTS).context, skipped.encode_prompts(PROMPTS).context)
    tokenizer = plain.tokenizers[0]
    assert tokenizer.pad_token_id == 0, "OpenCLIP pads with '!' as the WebUI does"


@torch.no_grad()
def test_sdxl_clip_skip_moves_only_clip_l_like_the_webui_option():
    default = build_tiny_bundle("sdxl", clip_skip=1).encode_prompts(PROMPTS)
    two = build_tiny_bundle("sdxl", clip_skip=2).encode_prompts(PROMPTS)
    three = build_tiny_bundle("sdxl", clip_skip=3).encode_prompts(PROMPTS)
    assert torch.equal(default.context, two.context), "2 is the penultimate layer SDXL uses anyway"
    clip_l_width = 32
    assert not torch.allclose(default.context[..., :clip_l_width], three.context[..., :clip_l_width])
    assert torch.equal(default.context[..., clip_l_width:], three.context[..., clip_l_width:])
    assert torch.equal(default.pooled, three.pooled)


@torch.no_grad()
def test_sdxl_prediction_depends_on_size_conditioning():
    bundle = build_tiny_bundle("sdxl")
    conditioning = bundle.encode_prompts(PROMPTS)
    latents, timesteps = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([5, 900])
    uncropped = torch.tensor([[64, 64, 0, 0, 64, 64]] * 2, dtype=torch.float32)
    default = bundle.predict(latents, timesteps, conditioning)
    assert torch.equal(default, bundle.predict(latents, timesteps, conditioning, uncropped))
    cropped = torch.tensor([[300, 200, 10, 0, 64, 64]] * 2, dtype=torch.float32)
    assert not torch.allclose(default, bundle.predict(latents, timesteps, conditioning, cropped))


def test_size_condition_is_original_crop_target_height_first():
    placement = Placement(bucket=(64, 128), resized=(70, 140))
    assert size_condition((700, 1400), placement, (3, 6)) == [1400, 700, 6, 3, 128, 64]


def test_zero_terminal_snr_schedule():
    base = build_tiny_bundle("sd2").alphas_cumprod
    rescaled = rescale_zero_terminal_snr(base)
    assert rescaled[0] == pytest.approx(base[0].item(), rel=1e-6), "the first step keeps its signal"
    assert rescaled[-1].item() == pytest.approx(ZERO_TERMINAL_ABAR)
    assert base[-1] > 1e-3 and torch.all(rescaled[1:] < rescaled[:-1]), "still decreasing, now to ~0"
    root = rescaled.double().sqrt()
    linear_map = (base.double().sqrt() - base[-1].double().sqrt()) / (base[0].double().sqrt() - base[-1].double().sqrt())
    torch.testing.assert_close(root[:-1] / root[0], linear_map[:-1], rtol=1e-5, atol=1e-6)


def test_text_encoder_cache_trains_like_encoding_every_step(small_root, tmp_path):
    common = dict(network_train_unet_only=True, max_train_steps=3)
    plain = train(quick_config(small_root, str(tmp_path / "a"), **common))
    cached = train(quick_config(small_root, str(tmp_path / "b"), cache_text_encoder_outputs=True, **common))
    for losses in zip(plain.losses, cached.losses):
        assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    first, second = load_lora(plain.final_path), load_lora(cached.final_path)
    assert all(torch.allclose(first[k], second[k], rtol=1e-3, atol=1e-6) for k in first)


@pytest.mark.parametrize("changes, message", [
    (dict(shuffle_caption=True, network_train_unet_only=True), "turn off shuffle_caption"),
    (dict(caption_dropout_rate=0.1, network_train_unet_only=True), "turn off caption_dropout_rate"),
    (dict(), "set network_train_unet_only"),
])
def test_text_encoder_cache_refuses_what_it_cannot_cache(small_root, tmp_path, changes, message):
    with pytest.raises(ConfigError, match=message):
        quick_config(small_root, str(tmp_path), cache_text_encoder_outputs=True, **changes).validate()
