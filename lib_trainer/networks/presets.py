"""LyCORIS' presets (`--network_args "preset=attn-mlp"`): which layers a LyCORIS network adapts.

LyCORIS (lycoris/config.py) chooses by the class of the blocks around a layer, in sd-scripts'
UNet and the transformers CLIP: Transformer2DModel (the attention blocks), ResnetBlock2D,
Down/Upsample2D, CrossAttention (attn1/attn2 inside the transformer blocks), CLIPAttention and
CLIPMLP, plus the UNet's conv_in, conv_out and time embedding by name. Here the same choice is
made on the bundle's layers (hosts name them as kohya does, whatever the host): by the block a
layer was found in, and attention by its name (`attn1`/`attn2`, `self_attn`).

| preset                | UNet                                            | text encoder | 3x3 convs |
| full (default)        | attention, ResNet, samplers, conv_in/out, time  | attn + MLP   | yes       |
| full-lin              | attention, ResNet, time embedding               | attn + MLP   | no        |
| attn-mlp              | attention blocks                                | attn + MLP   | no        |
| attn-only             | attn1/attn2                                     | attention    | no        |
| unet-only             | as full                                         | -            | yes       |
| unet-transformer-only | attention blocks                                | -            | no        |
| unet-convblock-only   | ResNet, samplers, conv_in/out                   | -            | yes       |

"3x3 convs: yes" needs conv_dim > 0 here, as with networks.lora; without it the presets that
have them leave out the conv blocks and the layers outside any block, so a plain run keeps
networks.lora's layers. LyCORIS' `ia3` preset (named layers with per-layer options) is not offered.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..formats.kohya_names import TOP_LEVEL, TargetLayer

TRANSFORMER, RESNET, SAMPLER, ATTENTION = "transformer", "resnet", "sampler", "attention"
# The block classes of each host (diffusers, the WebUI's ldm/sgm) -> what LyCORIS calls them.
UNET_BLOCKS = {"Transformer2DModel": TRANSFORMER, "SpatialTransformer": TRANSFORMER,
               "ResnetBlock2D": RESNET, "ResBlock": RESNET,
               "Downsample2D": SAMPLER, "Upsample2D": SAMPLER, "Downsample": SAMPLER, "Upsample": SAMPLER}
TIME_EMBEDDING = "time_embedding"
CONV_IN_OUT = "conv_in_out"


@dataclass(frozen=True)
class Preset:
    unet: frozenset           # TRANSFORMER, RESNET, SAMPLER, ATTENTION (attn1/attn2 only)
    top_level: frozenset      # TIME_EMBEDDING, CONV_IN_OUT
    text_encoder: frozenset   # "self_attn", "mlp"
    conv: bool                # whether 3x3 convs are adapted (with conv_dim)

    @property
    def conv_blocks_only(self) -> bool:
        """Adapts nothing but conv blocks, so nothing at all without conv_dim."""
        return self.conv and not self.unet & {TRANSFORMER, ATTENTION} and not self.text_encoder

    @property
    def needs_conv_blocks(self) -> bool:
        return bool(self.unet & {RESNET, SAMPLER} or self.top_level)

    def selects(self, target: TargetLayer, conv: bool) -> bool:
        """Whether the preset adapts this layer; `conv`: 3x3 convs are adapted (conv_dim > 0)."""
        if target.is_conv3x3 and not (self.conv and conv):
            return False
        if target.component == "text_encoder":
            return any(f"_{part}_" in target.name for part in self.text_encoder)
        if target.block == TOP_LEVEL:
            part = TIME_EMBEDDING if "time_embed" in target.name else CONV_IN_OUT
            return part in self.top_level and (conv or not self.conv)
        kind = UNET_BLOCKS.get(target.block)
        if kind is None:
            return False
        if kind != TRANSFORMER and self.conv and not conv:
            return False  # conv blocks of a conv preset come with conv_dim, as networks.lora
        if ATTENTION in self.unet and kind == TRANSFORMER:
            return "_attn1_" in target.name or "_attn2_" in target.name
        return kind in self.unet


def _preset(unet=(), top_level=(), text_encoder=("self_attn", "mlp"), conv=False) -> Preset:
    return Preset(frozenset(unet), frozenset(top_level), frozenset(text_encoder), conv)


_FULL_UNET = dict(unet=(TRANSFORMER, RESNET, SAMPLER), top_level=(TIME_EMBEDDING, CONV_IN_OUT), conv=True)
PRESETS: dict[str, Preset] = {
    "full": _preset(**_FULL_UNET),
    "full-lin": _preset(unet=(TRANSFORMER, RESNET), top_level=(TIME_EMBEDDING,)),
    "attn-mlp": _preset(unet=(TRANSFORMER,)),
    "attn-only": _preset(unet=(ATTENTION,), text_encoder=("self_attn",)),
    "unet-only": _preset(**_FULL_UNET, text_encoder=()),
    "unet-transformer-only": _preset(unet=(TRANSFORMER,), text_encoder=()),
    "unet-convblock-only": _preset(unet=(RESNET, SAMPLER), top_level=(CONV_IN_OUT,), text_encoder=(), conv=True),
}


def preset_targets(bundle, preset_name: str, conv: bool, train_unet: bool, train_text_encoder: bool,
                   norms: bool = False) -> list[TargetLayer]:
    """The bundle's layers the preset adapts; `conv`: 3x3 convs are adapted (conv_dim > 0);
    `norms`: the norm layers in the chosen blocks too (train_norm)."""
    preset = PRESETS[preset_name]
    found = bundle.target_layers(include_conv=preset.needs_conv_blocks, train_unet=train_unet,
                                 train_text_encoder=train_text_encoder and bool(preset.text_encoder),
                                 top_level=bool(preset.top_level), norms=norms)
    return [target for target in found if preset.selects(target, conv)]
