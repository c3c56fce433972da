"""Single-file SD checkpoints, the `.safetensors`/`.ckpt` files the WebUI loads, as the
diffusers/transformers modules of our standalone host, and back.

Loading builds the modules on the meta device (no memory), checks that the file's keys and
shapes are exactly those of one architecture config, then reads the tensors one at a time,
each converted straight to the target dtype and assigned into its module: the model is never
held twice in memory. Every key of the file is either loaded or in IGNORED_KEYS; anything else
is reported, so a checkpoint we would silently load wrong is refused instead.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import torch
from torch import nn

from ..formats.original_layout import (
    CHECKPOINT_PLACES,
    CONV1X1,
    SAME,
    UNET_PREFIX,
    VAE_PREFIX,
    KeyPair,
    checkpoint_key_pairs,
    module_tensor,
    vae_key_pairs,
    with_prefix,
)
from .checkpoint_file import CheckpointError, CheckpointReader, open_checkpoint
from .components import (
    ModelComponents,
    architecture,
    architecture_names,
    build_components,
)
from .single_file_rules import (
    DEFAULT_SOURCE,
    EPSILON,
    V_PREDICTION,
    check_layout,
    detect_family,
    extra_layer_pairs,
    prediction_hint,
    zero_terminal_snr_hint,
)
from .single_file_save import save_single_file
from .stored_layers import stored_layers, stored_parameter_names
from .upcast_layers import upcast_forwards


@dataclass(frozen=True)
class CheckpointInfo:
    family: str               # sd1, sd2, sdxl
    architecture: str         # the model_configs name the file matches: sd1, tiny-sd1, ...
    prediction_type: str      # "epsilon" or "v_prediction"
    prediction_source: str    # what decided it: argument, the .yaml beside the file, v_pred key, ...
    zero_terminal_snr: bool   # the file has a `ztsnr` key: trained with zero terminal SNR
    model_name: str           # the file name without its extension
    unet_dtype: torch.dtype | None = None  # the dtype the file stores the UNet's weights in


@dataclass
class _Match:
    components: ModelComponents   # on the meta device
    pairs: list[list[KeyPair]]    # per component, in CHECKPOINT_PLACES order


def detect_checkpoint(path: str, v_parameterization: bool = False) -> CheckpointInfo:
    """Family, architecture and prediction type of a checkpoint, without loading its weights.
    An SD2 file with no hint says epsilon here; `load_single_file` also runs the WebUI's test."""
    path = os.fspath(path)
    with open_checkpoint(path) as reader:
        family = detect_family(reader)
        match = _match_architecture(reader, family, vae_required=False)
        return _info(path, reader, family, match.components.architecture, v_parameterization)


def load_single_file(path: str, vae_path: str | None = None, v_parameterization: bool = False,
                     dtype: torch.dtype = torch.float32,
                     layer_dtype: torch.dtype | None = None) -> tuple[ModelComponents, CheckpointInfo]:
    """The components of a single-file checkpoint (on the CPU, in eval mode) and what it is.
    With `vae_path` that VAE file replaces the bundled one (which is then not read, and may be
    absent). With `layer_dtype` (base_weights_dtype) the UNet's and text encoders' Linear/Conv2d
    weights are read straight into it (stored_layers.py): no fp32 copy of them is ever held."""
    path = os.fspath(path)
    with open_checkpoint(path) as reader:
        family = detect_family(reader)
        match = _match_architecture(reader, family, vae_required=not vae_path)
        components = match.components
        if vae_path:
            load_vae_file(vae_path, components.vae, dtype)
        modules = [components.unet, components.vae, *components.text_encoders]
        for place, module, pairs in zip(CHECKPOINT_PLACES[family], modules, match.pairs):
            if place.component == "vae" and vae_path:
                continue
            _load_module(module, pairs, reader, dtype, None if place.component == "vae" else layer_dtype)
        info = _info(path, reader, family, components.architecture, v_parameterization)
    if family == "sd2" and info.prediction_source == DEFAULT_SOURCE:
        info = _with_sd2_test(info, components.unet, dtype)
    return components, info


def _info(path: str, reader: CheckpointReader, family: str, architecture_name: str,
          v_parameterization: bool) -> CheckpointInfo:
    keys = set(reader.keys())
    prediction, source = prediction_hint(path, keys, v_parameterization)
    unet_dtype = reader.tensor(UNET_PREFIX + "input_blocks.0.0.weight").dtype  # a small tensor
    return CheckpointInfo(family, architecture_name, prediction, source, zero_terminal_snr_hint(keys),
                          os.path.splitext(os.path.basename(path))[0], unet_dtype)


# ---------------------------------------------------------------------------------------------
# Which architecture config the file is.

def _match_architecture(reader: CheckpointReader, family: str, vae_required: bool) -> _Match:
    keys = set(reader.keys())
    text_model_level = not any(key.startswith("cond_stage_model.transformer.embeddings.") for key in keys)
    has_vae = any(key.startswith(VAE_PREFIX) for key in keys)  # some files ship without one
    if vae_required and not has_vae:
        raise CheckpointError(f"{reader.path} has no VAE (no {VAE_PREFIX}* keys): choose a VAE file to use with it.")
    problems_by_name: dict[str, list[str]] = {}
    for name in [name for name in architecture_names() if architecture(name)["family"] == family]:
        config = architecture(name)
        problem = _conv_in_problem(reader, config)
        if problem:
            problems_by_name[name] = [problem]
            continue
        components = build_components(name, device="meta", seed=None)
        states = [module.state_dict() for module in (components.unet, components.vae, *components.text_encoders)]
        pairs = checkpoint_key_pairs(family, config["unet"], config["vae"], [list(state) for state in states],
                                     text_model_level)
        expected = [(pair, state[pair.module_key].shape)
                    for place, state, component_pairs in zip(CHECKPOINT_PLACES[family], states, pairs)
                    if place.component != "vae" or has_vae for pair in component_pairs]
        layers_in_file = [entry["layers_in_file"] for entry in config["text_encoders"]]
        optional = {pair.file_key for pair, _, _ in
                    extra_layer_pairs(family, components.text_encoders, layers_in_file, text_model_level)}
        problems = check_layout(reader, expected, keys, optional)
        if not problems:
            return _Match(components, pairs)
        problems_by_name[name] = problems
    report = "\n".join(f"  as {name}: " + "; ".join(problems) for name, problems in problems_by_name.items())
    raise CheckpointError(
        f"{reader.path} looks like an {family} checkpoint but matches none of its architectures:\n{report}\n"
        "It may be a variant this trainer does not support, or a damaged or partly converted file.")


def _conv_in_problem(reader: CheckpointReader, config: dict) -> str:
    key = UNET_PREFIX + "input_blocks.0.0.weight"
    if key not in set(reader.keys()):
        return f"no UNet ({key} is missing)"
    unet = config["unet"]
    expected = (unet["block_out_channels"][0], unet["in_channels"], 3, 3)
    found = reader.shape(key)
    return "" if found == expected else f"UNet input conv has shape {found}, this architecture has {expected}"


# ---------------------------------------------------------------------------------------------
# Reading tensors into meta modules.

def _load_module(module: nn.Module, pairs: list[KeyPair], reader: CheckpointReader, dtype: torch.dtype,
                 layer_dtype: torch.dtype | None = None) -> None:
    state: dict[str, torch.Tensor] = {}
    stored = stored_parameter_names(module) if layer_dtype is not None else set()
    cached_key, cached = None, None  # q, k and v come from one fused tensor, read once
    for pair in pairs:
        wanted = layer_dtype if pair.module_key in stored else dtype
        if (pair.file_key, wanted) != cached_key:
            cached_key, cached = (pair.file_key, wanted), reader.tensor(pair.file_key, wanted)
        state[pair.module_key] = _compact(module_tensor(pair.kind, cached))
    cached = None
    module.load_state_dict(state, strict=True, assign=True)
    _rebuild_constant_buffers(module)


def _compact(tensor: torch.Tensor) -> torch.Tensor:
    """A contiguous tensor owning exactly its own storage: a slice of a fused q/k/v tensor must
    not keep the whole of it alive."""
    if tensor.is_contiguous() and tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size():
        return tensor
    return tensor.clone(memory_format=torch.contiguous_format)


def _rebuild_constant_buffers(module: nn.Module) -> None:
    """Non-persistent buffers are not in any file and stay on the meta device after an assigning
    load; CLIP's position ids are the only ones these models have."""
    for name, buffer in list(module.named_buffers()):
        if not buffer.is_meta:
            continue
        owner_name, _, attribute = name.rpartition(".")
        if attribute != "position_ids":
            raise CheckpointError(f"{type(module).__name__}.{name} is not in the checkpoint and cannot be rebuilt")
        owner = module.get_submodule(owner_name)
        owner.register_buffer(attribute, torch.arange(buffer.shape[-1]).expand(buffer.shape), persistent=False)
    left = [name for name, tensor in module.state_dict(keep_vars=True).items() if tensor.is_meta]
    if left:
        raise CheckpointError(f"{type(module).__name__}: not loaded: {', '.join(left[:5])}")


def _with_sd2_test(info: CheckpointInfo, unet: nn.Module, dtype: torch.dtype) -> CheckpointInfo:
    """The WebUI's test for SD2 files without a hint (modules/sd_models_config.py): a v-prediction
    UNet's output at t=999 on a flat grey latent lies far below the input, an epsilon one's not.
    It computes in `dtype`, the layers stored in 16 bits up-cast (base_weights_dtype)."""
    with torch.no_grad(), upcast_forwards(stored_layers(unet)):
        latent = torch.full((1, 4, 8, 8), 0.5, dtype=dtype)
        context = torch.full((1, 2, unet.config.cross_attention_dim), 0.5, dtype=dtype)
        output = unet(latent, torch.tensor([999]), encoder_hidden_states=context).sample
        v_prediction = float((output - latent).float().mean()) < -1
    prediction = V_PREDICTION if v_prediction else EPSILON
    return dataclasses.replace(info, prediction_type=prediction,
                               prediction_source="UNet test (as the WebUI does for SD2)")


# ---------------------------------------------------------------------------------------------
# A separate VAE file.

VAE_FILE_PREFIXES = ("first_stage_model.", "vae.", "")
VAE_FILE_IGNORED_PREFIXES = ("model_ema.", "loss.")  # training leftovers: EMA bookkeeping, discriminator/LPIPS
LEGACY_DIFFUSERS_ATTENTION = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}


def load_vae_file(path: str, vae_module: nn.Module, dtype: torch.dtype = torch.float32) -> None:
    """Replace `vae_module`'s weights (meta or real) with those of a VAE file: ldm layout
    (`encoder.down.0...`, with or without `first_stage_model.`, as in a full checkpoint) or
    diffusers layout (`encoder.down_blocks.0...`, including the old query/key/value names)."""
    path = os.fspath(path)
    with open_checkpoint(path) as reader:
        keys = set(reader.keys())
        prefix = next((p for p in VAE_FILE_PREFIXES if any(k.startswith(p + "encoder.") for k in keys)), None)
        if prefix is None:
            raise CheckpointError(f"{path} holds no VAE weights (no encoder.* keys)")
        considered = {key for key in keys if key.startswith(prefix)
                      and not key[len(prefix):].startswith(VAE_FILE_IGNORED_PREFIXES)}
        module_state = vae_module.state_dict(keep_vars=True)
        if any(key.startswith(prefix + "encoder.down.") for key in keys):
            pairs = with_prefix(vae_key_pairs(module_state, dict(vae_module.config)), prefix)
        else:
            pairs = _diffusers_vae_pairs(module_state, considered, prefix)
        expected = [(pair, module_state[pair.module_key].shape) for pair in pairs]
        problems = check_layout(reader, expected, considered, set(), ignore=False)
        if problems:
            raise CheckpointError(f"{path} does not fit this model's VAE: " + "; ".join(problems))
        _load_module(vae_module, pairs, reader, dtype)


def _diffusers_vae_pairs(module_keys, file_keys: set[str], prefix: str) -> list[KeyPair]:
    pairs = []
    for key in module_keys:
        stored = prefix + key
        if stored not in file_keys:
            for name, legacy in LEGACY_DIFFUSERS_ATTENTION.items():
                stored = stored.replace(f".attentions.0.{name}.", f".attentions.0.{legacy}.")
        is_attention_weight = ".attentions." in key and key.endswith(".weight") and "group_norm" not in key
        # old diffusers files stored these as 1x1 convolutions
        pairs.append(KeyPair(key, stored, CONV1X1 if is_attention_weight else SAME))
    return pairs


__all__ = ["CheckpointError", "CheckpointInfo", "detect_checkpoint", "load_single_file", "load_vae_file",
           "save_single_file"]
