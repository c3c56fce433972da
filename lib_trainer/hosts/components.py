"""The parts of an SD model as diffusers/transformers modules, built from the architecture
configs that ship in model_configs/ (no download): sd1, sd2, sdxl at full size, and tiny-*
versions with the same module structure and names for tests, the demo and benchmarks.
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
from dataclasses import dataclass, field

import torch
from torch import nn

CONFIG_FOLDER = os.path.join(os.path.dirname(__file__), "model_configs")


@dataclass
class ModelComponents:
    family: str                                   # sd1, sd2, sdxl
    unet: nn.Module
    vae: nn.Module
    text_encoders: list[nn.Module]                # one, or two for SDXL (CLIP-L, then OpenCLIP bigG)
    tokenizers: list = field(default_factory=list)
    architecture: str = ""                        # the model_configs name it was built from


def architecture_names() -> list[str]:
    return sorted(name[:-5] for name in os.listdir(CONFIG_FOLDER) if name.endswith(".json"))


@functools.lru_cache(maxsize=None)
def _read_architecture(name: str) -> str:
    path = os.path.join(CONFIG_FOLDER, f"{name}.json")
    if not os.path.isfile(path):
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(architecture_names())}")
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def architecture(name: str) -> dict:
    """A fresh copy of an architecture config: family, unet, vae and text_encoders entries."""
    return json.loads(_read_architecture(name))


def build_components(name: str, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                     seed: int | None = 0) -> ModelComponents:
    """Modules of the named architecture in eval mode. With `device="meta"` no memory is
    allocated (for loading weights with `load_state_dict(assign=True)`); otherwise weights are
    drawn from `seed` without changing the caller's random state."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    config = architecture(name)
    with _isolated_rng(seed), torch.device(device):
        unet = UNet2DConditionModel(**config["unet"])
        text_encoders = [build_text_encoder(entry) for entry in config["text_encoders"]]
        vae = AutoencoderKL(**config["vae"])
    modules = [unet, vae, *text_encoders]
    for module in modules:
        module.eval()
        if dtype != torch.float32 and device != "meta":
            module.to(dtype)
    tokenizers = [build_tokenizer(entry) for entry in config["text_encoders"]]
    return ModelComponents(config["family"], unet, vae, text_encoders, tokenizers, name)


def build_text_encoder(entry: dict) -> nn.Module:
    import transformers

    model_class = getattr(transformers, entry["class"])
    return model_class(transformers.CLIPTextConfig(**entry["config"]))


def build_tokenizer(entry: dict):
    from .clip_tokenizer import load_clip_tokenizer

    return load_clip_tokenizer(pad_token=entry["pad_token"])


@contextlib.contextmanager
def _isolated_rng(seed: int | None):
    if seed is None:
        yield
        return
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        yield
    finally:
        torch.random.set_rng_state(state)  # building a model must not change the caller's seed
