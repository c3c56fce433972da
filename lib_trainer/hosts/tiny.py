"""Tiny models with the real SD1.x module structure and names, random weights, built from
config in a second. For tests, the demo and benchmarks: no download, same key names as a
full-size model (4 UNet levels, 2 layers each, cross-attention in the first three; a CLIP
text encoder with the real tokenizer and 77-token windows; a 4-level VAE, 8x down).
"""
from __future__ import annotations

import torch

from .clip_tokenizer import load_clip_tokenizer
from .diffusers_sd import DiffusersSDBundle

TINY_CROSS_ATTENTION_DIM = 64


def tiny_unet_config() -> dict:
    return dict(
        sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        block_out_channels=(32, 32, 64, 64), layers_per_block=2,
        cross_attention_dim=TINY_CROSS_ATTENTION_DIM, attention_head_dim=8, norm_num_groups=32,
    )


def tiny_vae_config() -> dict:
    return dict(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(32, 32, 32, 32), layers_per_block=2, norm_num_groups=32, sample_size=128,
    )


def tiny_text_encoder_config() -> dict:
    return dict(
        vocab_size=49408, hidden_size=TINY_CROSS_ATTENTION_DIM, intermediate_size=256, num_hidden_layers=4,
        num_attention_heads=4, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=64,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    )


def build_tiny_components(seed: int = 0):
    """(unet, text_encoder, tokenizer, vae) with weights drawn from `seed`, on the CPU, fp32."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**tiny_unet_config())
        text_encoder = CLIPTextModel(CLIPTextConfig(**tiny_text_encoder_config()))
        vae = AutoencoderKL(**tiny_vae_config())
    finally:
        torch.random.set_rng_state(generator_state)  # building a model must not change the caller's seed
    for module in (unet, text_encoder, vae):
        module.eval()
    return unet, text_encoder, load_clip_tokenizer(), vae


def build_tiny_bundle(variant: str = "sd1", v_parameterization: bool = False, clip_skip: int = 1,
                      seed: int = 0) -> DiffusersSDBundle:
    if variant != "sd1":
        raise ValueError(f"tiny:{variant}: the tiny model families are: sd1")
    unet, text_encoder, tokenizer, vae = build_tiny_components(seed)
    return DiffusersSDBundle(
        unet, text_encoder, tokenizer, vae, family="sd1",
        prediction_type="v_prediction" if v_parameterization else "epsilon",
        clip_skip=clip_skip, model_name=f"tiny-{variant}",
    )
