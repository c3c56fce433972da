"""Writing components as a single-file checkpoint in the original layout of their family, as
the WebUI, ComfyUI and kohya read it (tests and the benchmark make their checkpoints with it)."""
from __future__ import annotations

import math
import os

import torch

from ..fileio import atomic_path
from ..formats.original_layout import checkpoint_key_pairs, original_state
from .components import ModelComponents, architecture
from .single_file_rules import (
    EPSILON,
    SD2_UNUSED_OPENCLIP,
    V_PREDICTION,
    extra_layer_pairs,
)


def save_single_file(components: ModelComponents, path: str, prediction_type: str = EPSILON,
                     dtype: torch.dtype | None = None, zero_terminal_snr: bool = False) -> None:
    """Write `.safetensors` (or, for `.ckpt`/`.pt`, a `{"state_dict": ...}` pickle of tensors).
    `dtype` (e.g. torch.float16) converts the floating-point tensors; v-prediction and zero
    terminal SNR are recorded as the `v_pred` / `ztsnr` marker keys ComfyUI and Forge read."""
    if prediction_type not in (EPSILON, V_PREDICTION):
        raise ValueError(f"prediction_type must be {EPSILON!r} or {V_PREDICTION!r}, not {prediction_type!r}")
    tensors = original_tensors(components)
    if prediction_type == V_PREDICTION:
        tensors["v_pred"] = torch.tensor([])
    if zero_terminal_snr:
        tensors["ztsnr"] = torch.tensor([])
    for key, tensor in tensors.items():
        if dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        tensors[key] = tensor.detach().contiguous()
    path = os.fspath(path)
    with atomic_path(path) as temporary:
        if path.lower().endswith(".safetensors"):
            from safetensors.torch import save_file

            save_file(tensors, temporary, metadata={"format": "pt"})
        else:
            torch.save({"state_dict": tensors}, temporary)


def original_tensors(components: ModelComponents) -> dict[str, torch.Tensor]:
    """Every tensor of the checkpoint, by its key in the original layout."""
    family = components.family
    modules = [components.unet, components.vae, *components.text_encoders]
    states = [module.state_dict() for module in modules]
    pairs = checkpoint_key_pairs(family, dict(components.unet.config), dict(components.vae.config),
                                 [list(state) for state in states])
    tensors: dict[str, torch.Tensor] = {}
    for component_pairs, state in zip(pairs, states):
        tensors.update(original_state(component_pairs, state))
    tensors.update(_unused_layers(components, states[2:]))
    if family == "sd2":
        hidden = components.text_encoders[0].config.hidden_size
        projection, logit_scale = SD2_UNUSED_OPENCLIP
        tensors[projection] = torch.zeros(hidden, hidden)  # unused by SD2; its shape tells readers the width
        tensors[logit_scale] = torch.tensor(math.log(100.0))
    return tensors


def _unused_layers(components: ModelComponents, text_states: list[dict]) -> dict[str, torch.Tensor]:
    """Zero weights for the text-encoder layers files carry but the model does not use, so the
    file has the layout of a real one (SD2: the 24th OpenCLIP layer)."""
    extra = extra_layer_pairs(components.family, components.text_encoders, _layers_in_file(components))
    tensors = {}
    for index, state in enumerate(text_states):
        pairs = [(pair, source) for pair, source, encoder in extra if encoder == index]
        zeros = {pair.module_key: torch.zeros_like(state[source]) for pair, source in pairs}
        tensors.update(original_state([pair for pair, _ in pairs], zeros))
    return tensors


def _layers_in_file(components: ModelComponents) -> list[int]:
    if components.architecture:
        return [entry["layers_in_file"] for entry in architecture(components.architecture)["text_encoders"]]
    extra = 1 if components.family == "sd2" else 0
    return [encoder.config.num_hidden_layers + extra for encoder in components.text_encoders]
