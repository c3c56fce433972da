"""Tiny models with the real module structure and names of SD1.x, SD2.x and SDXL, random
weights, built from config in a second: for tests, the demo and benchmarks, no download.

- tiny:sd1: 4 UNet levels with cross-attention in the first three, a CLIP-L-style text encoder;
- tiny:sd2: the same UNet with linear projections, an OpenCLIP-style text encoder (GELU,
  padded with "!"), v-prediction like SD2's 768-v models;
- tiny:sdxl: 3 UNet levels (no attention in the first, transformer depth growing), two text
  encoders whose outputs are concatenated, pooled text and size conditioning.
All use the real tokenizer and 77-token windows and a 4-level VAE (8x down).
"""
from __future__ import annotations

from .components import ModelComponents, build_components
from .diffusers_sd import DiffusersSDBundle
from ..errors import InvalidInput

TINY_FAMILIES = ("sd1", "sd2", "sdxl")


def build_tiny_components(variant: str = "sd1", seed: int = 0) -> ModelComponents:
    if variant not in TINY_FAMILIES:
        raise InvalidInput(f"tiny:{variant}: the tiny model families are: {', '.join(TINY_FAMILIES)}")
    return build_components(f"tiny-{variant}", seed=seed)


def build_tiny_bundle(variant: str = "sd1", v_parameterization: bool = False, clip_skip: int = 1,
                      seed: int = 0) -> DiffusersSDBundle:
    v_prediction = v_parameterization or variant == "sd2"
    return DiffusersSDBundle(
        build_tiny_components(variant, seed), prediction_type="v_prediction" if v_prediction else "epsilon",
        clip_skip=clip_skip, model_name=f"tiny-{variant}",
    )
