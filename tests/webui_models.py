"""Models shaped like the WebUI's `shared.sd_model`, for testing the WebUI host without the WebUI.

The layers are the real ones the WebUI runs: the CompVis `ldm` UNetModel, Encoder and Decoder
(package stable-diffusion-sdkit; the sgm UNet of SDXL has the same module names and is
built with the same class here), transformers' CLIPTextModel, and an OpenCLIP text tower on
torch's nn.MultiheadAttention. Only the thin top level is a stand-in: ldm's LatentDiffusion
and sgm's DiffusionEngine import pytorch_lightning and torchvision, which cannot be installed
beside the CPU torch here. `WebUIModel` offers what the WebUI gives the trainer:
`model.diffusion_model`, `first_stage_model`, `cond_stage_model` or `conditioner.embedders`,
`get_learned_conditioning`, `encode_first_stage`, `get_first_stage_encoding`,
`decode_first_stage`, `alphas_cumprod` and `parameterization`.

The weights come from a tiny diffusers model saved as a single-file checkpoint, so the same
model exists in both layouts and the two hosts can be compared.
"""
from __future__ import annotations

import contextlib
import copy
import sys
import types

import torch
from safetensors.torch import load_file
from torch import nn

from lib_trainer.hosts.bundle import scaled_linear_alphas_cumprod
from lib_trainer.hosts.clip_tokenizer import load_clip_tokenizer
from lib_trainer.hosts.components import ModelComponents, architecture, build_text_encoder
from lib_trainer.hosts.single_file import save_single_file


@contextlib.contextmanager
def omegaconf_stub():
    """ldm's UNetModel imports omegaconf (not installed) only to recognise its list type."""
    if "omegaconf" in sys.modules:
        yield
        return
    omegaconf = types.ModuleType("omegaconf")
    omegaconf.listconfig = types.ModuleType("omegaconf.listconfig")
    omegaconf.listconfig.ListConfig = type("ListConfig", (list,), {})
    sys.modules.update({"omegaconf": omegaconf, "omegaconf.listconfig": omegaconf.listconfig})
    try:
        yield
    finally:
        del sys.modules["omegaconf"], sys.modules["omegaconf.listconfig"]


def ldm_classes():
    with omegaconf_stub():
        from ldm.modules.diffusionmodules import model, openaimodel

    return openaimodel.UNetModel, model.Encoder, model.Decoder


def strip(tensors: dict, prefix: str) -> dict:
    return {key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)}


# --- text encoders as the WebUI holds them --------------------------------------------------

class OpenCLIPText(nn.Module):
    """OpenCLIP's text tower, written from its layout: `nn.MultiheadAttention` defines what the
    fused in_proj holds, and the projection is applied as `x @ text_projection`."""

    def __init__(self, tensors: dict, layers: int, heads: int):
        super().__init__()
        width = tensors["positional_embedding"].shape[1]
        self.token_embedding = nn.Embedding(tensors["token_embedding.weight"].shape[0], width)
        self.positional_embedding = nn.Parameter(torch.empty(77, width))
        self.transformer = nn.ModuleDict({"resblocks": nn.ModuleList(self._block(width, heads) for _ in range(layers))})
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, width))
        self.load_state_dict({k: v for k, v in tensors.items() if k != "logit_scale"
                              and not k.startswith(f"transformer.resblocks.{layers}.")}, strict=True)

    @staticmethod
    def _block(width: int, heads: int) -> nn.ModuleDict:
        mlp = nn.ModuleDict({"c_fc": nn.Linear(width, 4 * width), "c_proj": nn.Linear(4 * width, width)})
        return nn.ModuleDict({"ln_1": nn.LayerNorm(width), "attn": nn.MultiheadAttention(width, heads),
                              "ln_2": nn.LayerNorm(width), "mlp": mlp})

    def forward(self, ids, keep_layer: int | None = None):
        """(final states after ln_final, pooled); with `keep_layer` also the raw states after
        that many blocks."""
        x = (self.token_embedding(ids) + self.positional_embedding[: ids.shape[1]]).transpose(0, 1)
        mask = torch.full((ids.shape[1], ids.shape[1]), float("-inf")).triu(1)
        kept = None
        for index, block in enumerate(self.transformer.resblocks):
            h = block.ln_1(x)
            x = x + block.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
            x = x + block.mlp.c_proj(torch.nn.functional.gelu(block.mlp.c_fc(block.ln_2(x))))
            if keep_layer is not None and index + 1 == keep_layer:
                kept = x.transpose(0, 1)
        x = self.ln_final(x.transpose(0, 1))
        pooled = x[torch.arange(ids.shape[0]), ids.argmax(-1)] @ self.text_projection
        return x, pooled, kept


def _token_ids(tokenizer, prompts: list[str], pad_id: int) -> torch.Tensor:
    """BOS, up to 75 tokens, EOS, padded to 77: one window, as ldm's embedders truncate."""
    rows = []
    for prompt in prompts:
        ids = tokenizer(prompt, add_special_tokens=False, truncation=False, verbose=False)["input_ids"][:75]
        ids = [tokenizer.bos_token_id, *ids, tokenizer.eos_token_id]
        rows.append(ids + [pad_id] * (77 - len(ids)))
    return torch.tensor(rows)


class CLIPEmbedder(nn.Module):
    """ldm/sgm FrozenCLIPEmbedder: `.transformer` is transformers' CLIPTextModel. SD1 takes the
    last (normalised) states, SDXL the penultimate layer's raw states."""
    input_key = "txt"

    def __init__(self, transformer: nn.Module, layer: str) -> None:
        super().__init__()
        self.transformer = transformer
        self.layer = layer
        self.tokenizer = load_clip_tokenizer()

    def forward(self, prompts):
        ids = _token_ids(self.tokenizer, list(prompts), self.tokenizer.eos_token_id)
        output = self.transformer(input_ids=ids, output_hidden_states=self.layer == "penultimate")
        return output.hidden_states[-2] if self.layer == "penultimate" else output.last_hidden_state


class OpenCLIPEmbedder(nn.Module):
    """ldm's FrozenOpenCLIPEmbedder (SD2: penultimate layer through ln_final, as the tower here
    already stops there) or sgm's FrozenOpenCLIPEmbedder2 (SDXL: penultimate raw states and the
    pooled output)."""
    input_key = "txt"

    def __init__(self, tower: OpenCLIPText, sdxl: bool) -> None:
        super().__init__()
        self.model = tower
        self.sdxl = sdxl
        self.tokenizer = load_clip_tokenizer(pad_token="!")

    def forward(self, prompts):
        ids = _token_ids(self.tokenizer, list(prompts), 0)
        final, pooled, penultimate = self.model(ids, keep_layer=len(self.model.transformer.resblocks) - 1)
        return (penultimate, pooled) if self.sdxl else final


class SizeEmbedder(nn.Module):
    """sgm's ConcatTimestepEmbedderND: each of the two numbers as a sinusoidal embedding."""

    def __init__(self, input_key: str, dim: int) -> None:
        super().__init__()
        self.input_key, self.dim = input_key, dim

    def forward(self, sizes: torch.Tensor) -> torch.Tensor:
        from ldm.modules.diffusionmodules.util import timestep_embedding

        return timestep_embedding(sizes.flatten(), self.dim).reshape(sizes.shape[0], -1)


class FirstStage(nn.Module):
    """ldm's AutoencoderKL layers (encoder, decoder, quant convs) under its names."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module, channels: int = 4) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.quant_conv = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.post_quant_conv = nn.Conv2d(channels, channels, 1)


class WebUIModel(nn.Module):
    """The top level of LatentDiffusion / DiffusionEngine as the WebUI extends them."""

    def __init__(self, family: str, unet: nn.Module, first_stage: FirstStage, text: nn.Module,
                 scale_factor: float, parameterization: str) -> None:
        super().__init__()
        self.model = nn.Module()
        self.model.diffusion_model = unet
        self.first_stage_model = first_stage
        if family == "sdxl":
            self.conditioner = text
        else:
            self.cond_stage_model = text
        self.register_buffer("alphas_cumprod", scaled_linear_alphas_cumprod())
        self.scale_factor, self.parameterization, self.is_sdxl = scale_factor, parameterization, family == "sdxl"

    def get_learned_conditioning(self, prompts):
        return self.cond_stage_model(prompts)

    def encode_first_stage(self, pixels):
        mean, logvar = self.first_stage_model.quant_conv(self.first_stage_model.encoder(pixels)).chunk(2, dim=1)
        sample = mean + torch.exp(0.5 * logvar.clamp(-30, 20)) * torch.randn_like(mean)
        return sample * self.scale_factor if self.is_sdxl else sample  # sgm scales here

    def get_first_stage_encoding(self, encoded):
        return encoded if self.is_sdxl else encoded * self.scale_factor  # the WebUI's identity for sgm

    def decode_first_stage(self, latents):
        return self.first_stage_model.decoder(self.first_stage_model.post_quant_conv(latents / self.scale_factor))


# --- building one ------------------------------------------------------------------------------

def tiny_architecture(family: str) -> dict:
    """The tiny architecture of a family, in a form ldm's UNetModel can build: SDXL's growing
    transformer depth ([1, 1, 2]) becomes 1, which the ldm class supports."""
    config = architecture(f"tiny-{family}")
    if family == "sdxl":
        config["unet"]["transformer_layers_per_block"] = 1
    return config


def build_diffusers(family: str, seed: int = 1) -> ModelComponents:
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from lib_trainer.hosts.components import build_tokenizer

    config = tiny_architecture(family)
    torch.manual_seed(seed)
    unet, vae = UNet2DConditionModel(**config["unet"]).eval(), AutoencoderKL(**config["vae"]).eval()
    encoders = [build_text_encoder(entry).eval() for entry in config["text_encoders"]]
    tokenizers = [build_tokenizer(entry) for entry in config["text_encoders"]]
    return ModelComponents(config["family"], unet, vae, encoders, tokenizers, f"tiny-{family}")


def ldm_unet(family: str, tensors: dict, use_checkpoint: bool = False) -> nn.Module:
    unet_class, _, _ = ldm_classes()
    config = tiny_architecture(family)["unet"]
    base = config["block_out_channels"][0]
    heads = config["attention_head_dim"]
    head_setting = {"num_heads": heads} if isinstance(heads, int) else {"num_head_channels": base // heads[0]}
    if family == "sdxl":  # sgm: heads of a fixed width per level, like num_head_channels
        head_setting = {"num_head_channels": config["block_out_channels"][1] // heads[1]}
    levels = [i for i, kind in enumerate(config["down_block_types"]) if "CrossAttn" in kind]
    with omegaconf_stub():
        unet = unet_class(image_size=16, in_channels=4, out_channels=4, model_channels=base,
                          attention_resolutions=[2 ** i for i in levels], num_res_blocks=config["layers_per_block"],
                          channel_mult=[c // base for c in config["block_out_channels"]], use_spatial_transformer=True,
                          transformer_depth=1, context_dim=config["cross_attention_dim"],
                          use_linear_in_transformer=config.get("use_linear_projection", False), legacy=False,
                          use_checkpoint=use_checkpoint, **head_setting)
    if family == "sdxl":  # sgm's "sequential" label embedding of the pooled text and sizes
        width = 4 * base
        unet.num_classes = "sequential"
        unet.label_emb = nn.Sequential(nn.Sequential(
            nn.Linear(config["projection_class_embeddings_input_dim"], width), nn.SiLU(), nn.Linear(width, width)))
    unet.load_state_dict(strip(tensors, "model.diffusion_model."), strict=True)
    return unet.eval()


def webui_model(family: str, folder, seed: int = 1, use_checkpoint: bool = False) -> tuple[WebUIModel, ModelComponents]:
    """(the WebUI-style model, the diffusers components it was made from); same weights."""
    components = build_diffusers(family, seed)
    path = str(folder / f"tiny-{family}.safetensors")
    save_single_file(components, path)
    tensors = load_file(path)
    config = tiny_architecture(family)
    _, encoder_class, decoder_class = ldm_classes()
    vae = config["vae"]
    channels = vae["block_out_channels"][0]
    settings = {"double_z": True, "z_channels": 4, "resolution": 32, "in_channels": 3, "out_ch": 3, "ch": channels,
                "num_res_blocks": 2, "ch_mult": [c // channels for c in vae["block_out_channels"]],
                "attn_resolutions": [], "dropout": 0.0}
    first_stage = FirstStage(encoder_class(**settings), decoder_class(**settings))
    first_stage.load_state_dict(strip(tensors, "first_stage_model."), strict=True)

    entries = config["text_encoders"]
    if family == "sd1":
        text = CLIPEmbedder(copy.deepcopy(components.text_encoders[0]), "last")
    elif family == "sd2":
        text = OpenCLIPEmbedder(OpenCLIPText(strip(tensors, "cond_stage_model.model."),
                                             entries[0]["config"]["num_hidden_layers"],
                                             entries[0]["config"]["num_attention_heads"]), sdxl=False)
    else:
        tower = OpenCLIPText(strip(tensors, "conditioner.embedders.1.model."), entries[1]["config"]["num_hidden_layers"],
                             entries[1]["config"]["num_attention_heads"])
        dim = config["unet"]["addition_time_embed_dim"]
        text = nn.Module()
        text.embedders = nn.ModuleList([
            CLIPEmbedder(copy.deepcopy(components.text_encoders[0]), "penultimate"),
            OpenCLIPEmbedder(tower, sdxl=True),
            SizeEmbedder("original_size_as_tuple", dim), SizeEmbedder("crop_coords_top_left", dim),
            SizeEmbedder("target_size_as_tuple", dim)])
    scale = vae.get("scaling_factor", 0.18215)
    parameterization = "v" if family == "sd2" else "eps"
    model = WebUIModel(family, ldm_unet(family, tensors, use_checkpoint), first_stage, text, scale, parameterization)
    return model.eval(), components
