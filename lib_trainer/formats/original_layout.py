"""Names of SD weights in the original layout (CompVis ldm, Stability sgm, OpenCLIP), the one
single-file checkpoints, the WebUI and ComfyUI use, next to the diffusers/transformers layout
our standalone host builds its modules in.

Everything is derived from the architecture config (see hosts/model_configs/), so the same
code names the layers of SD1, SD2, SDXL and their tiny test versions:

- UNet: the diffusers blocks are numbered flat in the original. Down level i with n layers
  contributes n `input_blocks` (resnet at .0, attention at .1) and, except the last level, one
  more holding the downsampler (`.0.op`); up levels likewise fill `output_blocks`, with the
  upsampler after the last layer's resnet (and attention): `output_blocks.K.1|2.conv`.
  Resnet parts are renamed (norm1 -> in_layers.0, ...), attention blocks keep their names.
- VAE: `down_blocks.i.resnets.j` -> `down.i.block.j`; the decoder's up levels count from the
  other end (`up_blocks.0` -> `up.3`); the mid-block attention uses 1x1 convolutions where
  diffusers uses Linear layers, so those weights gain two trailing unit dimensions.
- Text encoders: the HF CLIP layout is stored as it is (SD1, SDXL's first encoder); the
  OpenCLIP layout (SD2, SDXL's second encoder) fuses q, k, v into one `in_proj` (the layout of
  `torch.nn.MultiheadAttention`) and stores the projection as the matrix of `x @ P`, i.e. the
  transposed Linear weight.

Module paths map with `unet_module_to_original` / `unet_module_from_original` (and the `vae_`
pair); whole state dicts through `KeyPair` lists, which also say how each tensor changes.
"""
from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch

# How a tensor differs between the two layouts (KeyPair.kind).
SAME = "same"
CONV1X1 = "conv1x1"        # Linear weight (out, in) <-> 1x1 conv weight (out, in, 1, 1)
TRANSPOSED = "transposed"  # Linear weight (out, in) <-> matrix P of x @ P, (in, out)
FUSED_PARTS = ("q", "k", "v")  # a third of a fused in_proj, in this order along dim 0


@dataclass(frozen=True)
class KeyPair:
    module_key: str   # key in the diffusers/transformers module's state_dict
    file_key: str     # key in the original-layout checkpoint (without the component prefix
                      # until `with_prefix` adds it)
    kind: str = SAME  # SAME, CONV1X1, TRANSPOSED or one of FUSED_PARTS


def with_prefix(pairs: list[KeyPair], prefix: str) -> list[KeyPair]:
    return [KeyPair(pair.module_key, prefix + pair.file_key, pair.kind) for pair in pairs]


# ---------------------------------------------------------------------------------------------
# Module-path translation: a table of block prefixes, each with the renames inside the block.

UNET_RESNET_PARTS = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                     "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
VAE_RESNET_PARTS = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2",
                    "conv_shortcut": "nin_shortcut"}
VAE_ATTENTION_PARTS = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
KEEP_NAMES = None  # the block's inner names are the same in both layouts

BlockTable = dict[str, tuple[str, "dict[str, str] | None"]]


def _translate(path: str, table: BlockTable) -> str:
    """Replace the longest block prefix of `path` found in `table`, then rename inside it."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        entry = table.get(".".join(parts[:cut]))
        if entry is None:
            continue
        target, inner = entry
        rest = parts[cut:]
        if inner is not KEEP_NAMES and rest:
            rest = _rename_inside(rest, inner, path)
        return ".".join([target, *rest])
    raise ValueError(f"{path!r} has no counterpart in the other layout")


def _rename_inside(rest: list[str], inner: dict[str, str], path: str) -> list[str]:
    for cut in range(len(rest), 0, -1):
        renamed = inner.get(".".join(rest[:cut]))
        if renamed is not None:
            return [renamed, *rest[cut:]]
    raise ValueError(f"{path!r} has no counterpart in the other layout")


def _inverse(table: BlockTable) -> BlockTable:
    inverse: BlockTable = {}
    for source, (target, inner) in table.items():
        inverse[target] = (source, None if inner is None else {value: key for key, value in inner.items()})
    return inverse


def _per_level(value, levels: int) -> list[int]:
    return [value] * levels if isinstance(value, int) else list(value)


def _unet_table(config: dict) -> BlockTable:
    down_types, up_types = config["down_block_types"], config["up_block_types"]
    levels = len(down_types)
    layers = _per_level(config.get("layers_per_block", 2), levels)
    table: BlockTable = {
        "conv_in": ("input_blocks.0.0", KEEP_NAMES),
        "time_embedding.linear_1": ("time_embed.0", KEEP_NAMES),
        "time_embedding.linear_2": ("time_embed.2", KEEP_NAMES),
        "conv_norm_out": ("out.0", KEEP_NAMES),
        "conv_out": ("out.2", KEEP_NAMES),
    }
    if config.get("addition_embed_type") == "text_time":  # SDXL's size/crop/pooled-text embedding
        table["add_embedding.linear_1"] = ("label_emb.0.0", KEEP_NAMES)
        table["add_embedding.linear_2"] = ("label_emb.0.2", KEEP_NAMES)
    elif config.get("addition_embed_type") or config.get("class_embed_type"):
        raise ValueError("only the SDXL text_time extra embedding is supported")

    index = 1  # input_blocks.0 is conv_in
    for level, block_type in enumerate(down_types):
        for layer in range(layers[level]):
            table[f"down_blocks.{level}.resnets.{layer}"] = (f"input_blocks.{index}.0", UNET_RESNET_PARTS)
            if "CrossAttn" in block_type:
                table[f"down_blocks.{level}.attentions.{layer}"] = (f"input_blocks.{index}.1", KEEP_NAMES)
            index += 1
        if level < levels - 1:
            table[f"down_blocks.{level}.downsamplers.0"] = (f"input_blocks.{index}.0", {"conv": "op"})
            index += 1

    mid_type = config.get("mid_block_type", "UNetMidBlock2DCrossAttn")
    if mid_type != "UNetMidBlock2DCrossAttn":
        raise ValueError(f"unsupported mid block {mid_type}")
    table["mid_block.resnets.0"] = ("middle_block.0", UNET_RESNET_PARTS)
    table["mid_block.attentions.0"] = ("middle_block.1", KEEP_NAMES)
    table["mid_block.resnets.1"] = ("middle_block.2", UNET_RESNET_PARTS)

    index = 0
    for level, (block_type, count) in enumerate(zip(up_types, reversed(layers))):
        has_attention = "CrossAttn" in block_type
        for layer in range(count + 1):  # up levels have one layer more (they take the skip of the downsampler)
            table[f"up_blocks.{level}.resnets.{layer}"] = (f"output_blocks.{index}.0", UNET_RESNET_PARTS)
            if has_attention:
                table[f"up_blocks.{level}.attentions.{layer}"] = (f"output_blocks.{index}.1", KEEP_NAMES)
            index += 1
        if level < levels - 1:  # the upsampler follows the last layer's resnet (and attention)
            table[f"up_blocks.{level}.upsamplers.0"] = (f"output_blocks.{index - 1}.{2 if has_attention else 1}",
                                                       KEEP_NAMES)
    return table


def _vae_table(config: dict) -> BlockTable:
    levels = len(config["down_block_types"])
    layers = config.get("layers_per_block", 2)
    table: BlockTable = {"quant_conv": ("quant_conv", KEEP_NAMES), "post_quant_conv": ("post_quant_conv", KEEP_NAMES)}
    for part in ("encoder", "decoder"):
        table[f"{part}.conv_in"] = (f"{part}.conv_in", KEEP_NAMES)
        table[f"{part}.conv_norm_out"] = (f"{part}.norm_out", KEEP_NAMES)
        table[f"{part}.conv_out"] = (f"{part}.conv_out", KEEP_NAMES)
        table[f"{part}.mid_block.resnets.0"] = (f"{part}.mid.block_1", VAE_RESNET_PARTS)
        table[f"{part}.mid_block.attentions.0"] = (f"{part}.mid.attn_1", VAE_ATTENTION_PARTS)
        table[f"{part}.mid_block.resnets.1"] = (f"{part}.mid.block_2", VAE_RESNET_PARTS)
    for level in range(levels):
        for layer in range(layers):
            table[f"encoder.down_blocks.{level}.resnets.{layer}"] = (f"encoder.down.{level}.block.{layer}",
                                                                     VAE_RESNET_PARTS)
        if level < levels - 1:
            table[f"encoder.down_blocks.{level}.downsamplers.0"] = (f"encoder.down.{level}.downsample", KEEP_NAMES)
        original_level = levels - 1 - level  # the decoder counts its levels from the lowest resolution
        for layer in range(layers + 1):
            table[f"decoder.up_blocks.{level}.resnets.{layer}"] = (f"decoder.up.{original_level}.block.{layer}",
                                                                   VAE_RESNET_PARTS)
        if level < levels - 1:
            table[f"decoder.up_blocks.{level}.upsamplers.0"] = (f"decoder.up.{original_level}.upsample", KEEP_NAMES)
    return table


def _config_key(config: dict) -> str:
    """A hashable form of a config (a plain dict or a diffusers module's `.config`)."""
    return json.dumps(config, sort_keys=True, default=str)


@functools.lru_cache(maxsize=32)
def _tables(kind: str, config_json: str) -> tuple[BlockTable, BlockTable]:
    table = (_unet_table if kind == "unet" else _vae_table)(json.loads(config_json))
    return table, _inverse(table)


def unet_module_to_original(path: str, unet_config: dict) -> str:
    """The ldm/sgm path of a diffusers UNet module or state-dict key, e.g. (SDXL)
    `down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q` ->
    `input_blocks.4.1.transformer_blocks.0.attn1.to_q`; relative to `model.diffusion_model`."""
    return _translate(path, _tables("unet", _config_key(unet_config))[0])


def unet_module_from_original(path: str, unet_config: dict) -> str:
    """The inverse of `unet_module_to_original`."""
    return _translate(path, _tables("unet", _config_key(unet_config))[1])


# ---------------------------------------------------------------------------------------------
# State-dict key pairs for each component.

def unet_key_pairs(module_keys, unet_config: dict) -> list[KeyPair]:
    table = _tables("unet", _config_key(unet_config))[0]
    return [KeyPair(key, _translate(key, table)) for key in module_keys]


VAE_ATTENTION_WEIGHTS = re.compile(r"\.mid\.attn_1\.(q|k|v|proj_out)\.weight$")


def vae_key_pairs(module_keys, vae_config: dict) -> list[KeyPair]:
    table = _tables("vae", _config_key(vae_config))[0]
    pairs = []
    for key in module_keys:
        original = _translate(key, table)
        pairs.append(KeyPair(key, original, CONV1X1 if VAE_ATTENTION_WEIGHTS.search(original) else SAME))
    return pairs


def _text_key(key: str) -> str | None:
    """A text encoder's key without the `text_model.` level (transformers 5's CLIPTextModel has
    none, CLIPTextModelWithProjection has it); None for buffers that are not weights."""
    key = key.removeprefix("text_model.")
    return None if key.endswith("position_ids") else key


def clip_key_pairs(module_keys, text_model_level: bool = True) -> list[KeyPair]:
    """HF CLIP stored as it is, under `text_model.` (some old SD1 files lack that level)."""
    pairs = []
    for key in module_keys:
        text_key = _text_key(key)
        if text_key is None:
            continue
        stored = text_key if text_key.startswith("text_projection.") or not text_model_level else "text_model." + text_key
        pairs.append(KeyPair(key, stored))
    return pairs


OPENCLIP_NAMES = {
    "embeddings.token_embedding.weight": ("token_embedding.weight", SAME),
    "embeddings.position_embedding.weight": ("positional_embedding", SAME),
    "final_layer_norm.weight": ("ln_final.weight", SAME),
    "final_layer_norm.bias": ("ln_final.bias", SAME),
    "text_projection.weight": ("text_projection", TRANSPOSED),
}
OPENCLIP_LAYER_PARTS = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "self_attn.out_proj": "attn.out_proj",
                        "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
HF_LAYER = re.compile(r"^encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$")
FUSED_PROJECTION = re.compile(r"^self_attn\.([qkv])_proj$")


def openclip_key_pairs(module_keys) -> list[KeyPair]:
    """The OpenCLIP text tower (`transformer.resblocks.N...`) for HF CLIP text-model keys."""
    pairs = []
    for key in module_keys:
        text_key = _text_key(key)
        if text_key is None:
            continue
        if text_key in OPENCLIP_NAMES:
            stored, kind = OPENCLIP_NAMES[text_key]
            pairs.append(KeyPair(key, stored, kind))
            continue
        match = HF_LAYER.match(text_key)
        if match is None:
            raise ValueError(f"{key!r} has no counterpart in the OpenCLIP layout")
        layer, part, tensor = match.groups()
        fused = FUSED_PROJECTION.match(part)
        if fused:
            pairs.append(KeyPair(key, f"transformer.resblocks.{layer}.attn.in_proj_{tensor}", fused.group(1)))
        elif part in OPENCLIP_LAYER_PARTS:
            pairs.append(KeyPair(key, f"transformer.resblocks.{layer}.{OPENCLIP_LAYER_PARTS[part]}.{tensor}"))
        else:
            raise ValueError(f"{key!r} has no counterpart in the OpenCLIP layout")
    return pairs


def text_key_pairs(layout: str, module_keys, text_model_level: bool = True) -> list[KeyPair]:
    """Key pairs for a text encoder stored in `layout`: "clip" (HF) or "openclip"."""
    if layout == "clip":
        return clip_key_pairs(module_keys, text_model_level)
    if layout == "openclip":
        return openclip_key_pairs(module_keys)
    raise ValueError(f"unknown text encoder layout {layout!r}")


# ---------------------------------------------------------------------------------------------
# Tensors: one module tensor from its file tensor, and file tensors from module tensors.

def module_tensor(kind: str, stored: torch.Tensor) -> torch.Tensor:
    """The module's tensor for a file tensor (a view where possible: callers copy it)."""
    if kind == SAME:
        return stored
    if kind == CONV1X1:
        return stored.reshape(stored.shape[0], stored.shape[1]) if stored.ndim == 4 else stored
    if kind == TRANSPOSED:
        return stored.t()
    if kind in FUSED_PARTS:
        return stored.chunk(3, dim=0)[FUSED_PARTS.index(kind)]
    raise ValueError(f"unknown tensor kind {kind!r}")


def module_state(pairs: list[KeyPair], stored: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Module state dict from an original-layout one (all of `pairs` must be present)."""
    return {pair.module_key: module_tensor(pair.kind, stored[pair.file_key]) for pair in pairs}


def original_state(pairs: list[KeyPair], state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Original-layout tensors from a module state dict; fused q, k, v are concatenated."""
    result: dict[str, torch.Tensor] = {}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    for pair in pairs:
        tensor = state[pair.module_key]
        if pair.kind in FUSED_PARTS:
            fused.setdefault(pair.file_key, {})[pair.kind] = tensor
        elif pair.kind == CONV1X1:
            result[pair.file_key] = tensor.reshape(*tensor.shape, 1, 1)
        elif pair.kind == TRANSPOSED:
            result[pair.file_key] = tensor.t().contiguous()
        else:
            result[pair.file_key] = tensor
    for file_key, parts in fused.items():
        if set(parts) != set(FUSED_PARTS):
            raise ValueError(f"{file_key}: needs q, k and v, got {sorted(parts)}")
        result[file_key] = torch.cat([parts[name] for name in FUSED_PARTS], dim=0)
    return result


# ---------------------------------------------------------------------------------------------
# Where each component sits in a single-file checkpoint of each family.

@dataclass(frozen=True)
class ComponentPlace:
    component: str        # "unet", "vae" or "text_encoder"
    prefix: str           # key prefix in the checkpoint
    text_layout: str = ""  # for text encoders: "clip" (HF layout) or "openclip"


UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CHECKPOINT_PLACES = {
    "sd1": (ComponentPlace("unet", UNET_PREFIX), ComponentPlace("vae", VAE_PREFIX),
            ComponentPlace("text_encoder", "cond_stage_model.transformer.", "clip")),
    "sd2": (ComponentPlace("unet", UNET_PREFIX), ComponentPlace("vae", VAE_PREFIX),
            ComponentPlace("text_encoder", "cond_stage_model.model.", "openclip")),
    "sdxl": (ComponentPlace("unet", UNET_PREFIX), ComponentPlace("vae", VAE_PREFIX),
             ComponentPlace("text_encoder", "conditioner.embedders.0.transformer.", "clip"),
             ComponentPlace("text_encoder", "conditioner.embedders.1.model.", "openclip")),
}


def checkpoint_key_pairs(family: str, unet_config: dict, vae_config: dict, module_keys: list,
                         text_model_level: bool = True) -> list[list[KeyPair]]:
    """Key pairs with full checkpoint keys for each component, in CHECKPOINT_PLACES order
    (unet, vae, text encoders); `module_keys` holds each component's state-dict keys in that order."""
    places = CHECKPOINT_PLACES[family]
    if len(module_keys) != len(places):
        raise ValueError(f"{family} has {len(places)} components, got keys for {len(module_keys)}")
    result = []
    for place, keys in zip(places, module_keys):
        if place.component == "unet":
            pairs = unet_key_pairs(keys, unet_config)
        elif place.component == "vae":
            pairs = vae_key_pairs(keys, vae_config)
        else:
            pairs = text_key_pairs(place.text_layout, keys, text_model_level)
        result.append(with_prefix(pairs, place.prefix))
    return result
