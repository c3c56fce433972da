"""Which layers a kohya LoRA adapts, and the key name each gets in the file.

kohya names a layer by its module path with dots turned into underscores: for SD1/SD2 in
the diffusers layout (`lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q`,
`lora_te_text_model_encoder_layers_0_self_attn_q_proj`), for SDXL in the original sgm
layout of the UNet (`lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q`) and with
`lora_te1_`/`lora_te2_` for the two text encoders. It adapts the Linear and 1x1 Conv
layers inside these blocks (sd-scripts `networks/lora.py`):
- UNet attention blocks (`Transformer2DModel`): proj_in/out, to_q/k/v/out, feed-forward;
- with `conv_dim` (LoCon) also the ResNet and down/up-sampling blocks, whose 3x3 convs get
  the conv rank and whose Linear/1x1 layers (time_emb_proj, conv_shortcut) the linear rank;
- text encoder attention and MLP blocks.
LyCORIS' presets (networks/presets.py) choose among these by the block each layer sits in, and
add the UNet's own layers outside any block (conv_in, conv_out, the time embedding: `top_level`)
and, with `train_norm`, the norm layers inside the chosen blocks.
Every host (diffusers models here, the WebUI's ldm modules later) produces its targets
through this module so that the same layer always gets the same key.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

UNET_PREFIX = "lora_unet"
TEXT_ENCODER_PREFIXES = ("lora_te", "lora_te1", "lora_te2")

UNET_ATTENTION_BLOCKS = ("Transformer2DModel",)
UNET_CONV_BLOCKS = ("ResnetBlock2D", "Downsample2D", "Upsample2D")
TEXT_ENCODER_BLOCKS = ("CLIPAttention", "CLIPSdpaAttention", "CLIPFlashAttention2", "CLIPMLP")
TOP_LEVEL = "top-level"  # TargetLayer.block of the UNet layers outside any block
# The UNet's layers outside any block that LyCORIS' full preset adapts, by diffusers path.
UNET_TOP_LEVEL = ("conv_in", "time_embedding.linear_1", "time_embedding.linear_2", "conv_out")
NORMS = (nn.GroupNorm, nn.LayerNorm)


@dataclass
class TargetLayer:
    name: str           # the key prefix in the file, e.g. lora_unet_mid_block_attentions_0_proj_in
    module: nn.Module   # the nn.Linear or nn.Conv2d that is adapted
    component: str      # "unet" or "text_encoder"
    is_conv3x3: bool    # gets conv_dim/conv_alpha instead of network_dim/network_alpha
    block: str = ""     # the class of the block it was found in (TOP_LEVEL: none)

    @property
    def is_norm(self) -> bool:
        return isinstance(self.module, NORMS)


def kohya_name(prefix: str, module_path: str) -> str:
    return f"{prefix}_{module_path}".replace(".", "_")


def find_targets(root: nn.Module, prefix: str, component: str, block_classes: tuple[str, ...],
                 include_conv3x3: bool, path_in_file: Callable[[str], str] | None = None,
                 norms: bool = False) -> list[TargetLayer]:
    """The adaptable layers inside blocks of the given classes, named as kohya names them:
    by their module path, or by `path_in_file(path)` where the file uses another layout.
    `norms`: the affine GroupNorm/LayerNorm layers in them too (LyCORIS' train_norm)."""
    targets: dict[str, TargetLayer] = {}
    for block_path, block in root.named_modules():
        if type(block).__name__ not in block_classes:
            continue
        for child_path, child in block.named_modules():
            is_norm = norms and isinstance(child, NORMS) and getattr(child, "weight", None) is not None
            if not isinstance(child, (nn.Linear, nn.Conv2d)) and not is_norm:
                continue
            is_conv3x3 = isinstance(child, nn.Conv2d) and child.kernel_size != (1, 1)
            if is_conv3x3 and not include_conv3x3:
                continue
            path = f"{block_path}.{child_path}" if child_path else block_path
            name = kohya_name(prefix, path_in_file(path) if path_in_file else path)
            targets.setdefault(name, TargetLayer(name, child, component, is_conv3x3, type(block).__name__))
    return list(targets.values())


def top_level_targets(unet: nn.Module, paths: tuple[str, ...], include_conv3x3: bool,
                      path_in_file: Callable[[str], str] | None = None) -> list[TargetLayer]:
    """The UNet layers at `paths` (its own layout), named by their diffusers path (SD1/SD2) or
    `path_in_file(path)`: conv_in, conv_out and the time embedding, which no block holds."""
    targets = []
    for path in paths:
        module = unet.get_submodule(path)
        is_conv3x3 = isinstance(module, nn.Conv2d) and module.kernel_size != (1, 1)
        if is_conv3x3 and not include_conv3x3:
            continue
        name = kohya_name(UNET_PREFIX, path_in_file(path) if path_in_file else path)
        targets.append(TargetLayer(name, module, "unet", is_conv3x3, TOP_LEVEL))
    return targets


def diffusers_unet_targets(unet: nn.Module, include_conv: bool,
                           path_in_file: Callable[[str], str] | None = None, top_level: bool = False,
                           norms: bool = False) -> list[TargetLayer]:
    """SD1/SD2 files name UNet layers by diffusers path; SDXL files by the original sgm path,
    which `path_in_file` gives."""
    blocks = UNET_ATTENTION_BLOCKS + (UNET_CONV_BLOCKS if include_conv else ())
    targets = find_targets(unet, UNET_PREFIX, "unet", blocks, include_conv3x3=include_conv,
                           path_in_file=path_in_file, norms=norms)
    if top_level:
        targets += top_level_targets(unet, UNET_TOP_LEVEL, include_conv, path_in_file)
    return targets


def clip_text_encoder_targets(text_encoder: nn.Module, prefix: str = "lora_te") -> list[TargetLayer]:
    """Text-encoder layers under the names of transformers 4's CLIPTextModel
    (`text_model.encoder.layers.N...`), which is what kohya files carry; transformers 5
    dropped the `text_model` level and the WebUI wraps the model in its own modules, so the
    path is rebuilt from the part that starts at `encoder.`."""
    targets = find_targets(text_encoder, prefix, "text_encoder", TEXT_ENCODER_BLOCKS, include_conv3x3=False)
    for target in targets:
        path = target.name[len(prefix) + 1:]
        start = path.find("encoder_layers_")
        if start < 0:
            raise ValueError(f"unexpected text encoder layer {path}: no encoder.layers in its path")
        target.name = kohya_name(prefix, "text_model_" + path[start:])
    return targets
