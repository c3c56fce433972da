"""A bundle over a live CompVis ldm (SD1/SD2) or Stability sgm (SDXL) model: the WebUI's
`shared.sd_model`, used in place, never copied or cast.

Plain PyTorch over the model object's own API, so it is tested with the real ldm classes
outside the WebUI; `lib_trainer/webui/` adds what needs the WebUI (its settings, the Lora
extension, --lowvram, the job queue, its txt2img). What it relies on:
- text: SD1/SD2 `get_learned_conditioning(prompts)`, which in the WebUI is its own prompt
  handling (75-token chunks, emphasis, clip skip, embeddings); SDXL the conditioner's text
  embedders called one by one, their 3-D outputs concatenated as the context and the 2-D
  one (OpenCLIP's pooled output) kept, then the size embedders fed each image's own sizes;
- the UNet `model.diffusion_model(x, timesteps, context[, y])`;
- the VAE `encode_first_stage` / `get_first_stage_encoding` (the WebUI gives sgm the latter);
- the schedule `alphas_cumprod` and `parameterization` ("eps" or "v").
LoRA targets carry the kohya names of the family: SD1/SD2 UNet layers by their diffusers
path (mapped from the ldm path through `formats.original_layout`), SDXL's by the sgm path.
"""
from __future__ import annotations

import contextlib
import functools
import re
from typing import Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..formats.kohya_names import (TargetLayer, clip_text_encoder_targets, find_targets, kohya_name,
                                   top_level_targets)
from ..formats.original_layout import OPENCLIP_LAYER_PARTS, unet_module_from_original
from .bundle import Conditioning, ModelBundle, latent_sizes, module_fingerprint
from .fused_attention import ProjectionView, projection_views, split_projections
from ..errors import UserError

LDM_ATTENTION_BLOCKS = ("SpatialTransformer",)
LDM_CONV_BLOCKS = ("ResBlock", "Downsample", "Upsample")
# kohya_names.UNET_TOP_LEVEL in the ldm/sgm layout.
LDM_TOP_LEVEL = ("input_blocks.0.0", "time_embed.0", "time_embed.2", "out.2")
# Blocks whose forward wraps `_forward` in ldm/sgm's own checkpoint function: it computes
# gradients only for the block's parameters, so an adapter hooked inside would get none.
CHECKPOINTED_BLOCKS = ("BasicTransformerBlock", "ResBlock")
SIZE_KEYS = ("original_size_as_tuple", "crop_coords_top_left", "target_size_as_tuple")
OPENCLIP_BLOCK = re.compile(r"(?:^|\.)transformer\.resblocks\.(\d+)$")
TEXT_PREFIXES = {"sd1": ["lora_te"], "sd2": ["lora_te"], "sdxl": ["lora_te1", "lora_te2"]}


class UnsupportedModel(UserError, ValueError):
    """The loaded model is not one this trainer can train on; the message says which and why."""


def model_family(sd_model: nn.Module) -> str:
    unet = sd_model.model.diffusion_model
    if getattr(sd_model, "is_sd3", False):
        raise UnsupportedModel("SD3 checkpoints cannot be trained here yet; load an SD1.x, SD2.x or SDXL checkpoint")
    if unet.in_channels != 4:
        raise UnsupportedModel(f"the loaded checkpoint's UNet takes {unet.in_channels} input channels (an inpainting "
                               "or instruct-pix2pix model); load the base model to train a LoRA")
    if hasattr(sd_model, "conditioner"):
        if len(text_embedders(sd_model)) != 2:
            raise UnsupportedModel("the loaded SDXL checkpoint has one text encoder (the refiner); load an SDXL base")
        return "sdxl"
    return "sd2" if _openclip_blocks(sd_model.cond_stage_model) else "sd1"


def text_embedders(sd_model: nn.Module) -> list[nn.Module]:
    return [e for e in sd_model.conditioner.embedders if getattr(e, "input_key", None) == "txt"]


def _openclip_blocks(encoder: nn.Module) -> dict[int, nn.Module]:
    """The residual blocks of an OpenCLIP text tower by layer index (empty for HF CLIP)."""
    found = {}
    for path, module in encoder.named_modules():
        match = OPENCLIP_BLOCK.search(path)
        if match and isinstance(getattr(module, "attn", None), nn.MultiheadAttention) and ".visual." not in path:
            found[int(match.group(1))] = module
    return found


def ldm_unet_config(unet: nn.Module) -> dict:
    """The diffusers block layout of an ldm/sgm UNet: what `original_layout` maps paths with."""
    layers = list(unet.num_res_blocks)
    levels = len(layers)
    down_types, index = [], 1  # input_blocks.0 is the input convolution
    for level in range(levels):
        has_attention = len(unet.input_blocks[index]) > 1  # resnet, then the transformer
        down_types.append("CrossAttnDownBlock2D" if has_attention else "DownBlock2D")
        index += layers[level] + (1 if level < levels - 1 else 0)
    up_types = [t.replace("Down", "Up") for t in reversed(down_types)]
    return {"down_block_types": down_types, "up_block_types": up_types, "layers_per_block": layers}


def openclip_targets(encoder: nn.Module, prefix: str) -> tuple[list[TargetLayer], dict]:
    """LoRA targets of an OpenCLIP text tower under kohya's HF names, and the q/k/v views
    (per attention) that must be active while they train."""
    targets, split = [], {}
    for layer, block in sorted(_openclip_blocks(encoder).items()):
        base = f"text_model.encoder.layers.{layer}"
        views = projection_views(block.attn)
        split[block.attn] = views
        for name, view in views.items():
            targets.append(TargetLayer(kohya_name(prefix, f"{base}.self_attn.{name}_proj"), view, "text_encoder", False))
        for hf_path, openclip_path in OPENCLIP_LAYER_PARTS.items():
            if openclip_path.startswith(("attn.", "mlp.")):  # the layer norms take no LoRA
                targets.append(TargetLayer(kohya_name(prefix, f"{base}.{hf_path}"), block.get_submodule(openclip_path),
                                           "text_encoder", False))
    return targets, split


class LiveSDBundle(ModelBundle):
    owns_weights = False  # casting a borrowed model down and back is not lossless

    def __init__(self, sd_model: nn.Module, model_name: str = "") -> None:
        self.sd_model = sd_model
        self.family = model_family(sd_model)
        self.prediction_type = "v_prediction" if getattr(sd_model, "parameterization", "eps") == "v" else "epsilon"
        # The schedule the model was trained with (the WebUI keeps it apart when a setting
        # changes the one used for sampling).
        schedule = getattr(sd_model, "alphas_cumprod_original", None)
        self.alphas_cumprod = (schedule if schedule is not None else sd_model.alphas_cumprod).detach().float().cpu()
        self.model_name = model_name
        # The WebUI's own hashes of the loaded file (its CheckpointInfo: `hash` is the legacy
        # one, `sha256` the whole file's, None until the WebUI has computed it); never re-read
        # the file here.
        info = getattr(sd_model, "sd_checkpoint_info", None)
        self.sd_model_hash = str(getattr(info, "hash", "") or "")
        self.new_sd_model_hash = str(getattr(info, "sha256", "") or "")
        self.unet = sd_model.model.diffusion_model
        self._split: dict[nn.MultiheadAttention, dict[str, ProjectionView]] = {}
        self._checkpointing = False
        self._tokenizer = None

    # --- the parts ---------------------------------------------------------------------
    def denoiser(self) -> nn.Module:
        return self.unet

    def text_encoders(self) -> list[nn.Module]:
        if self.family == "sdxl":
            return text_embedders(self.sd_model)
        return [self.sd_model.cond_stage_model]

    def vae(self) -> nn.Module:
        return self.sd_model.first_stage_model

    def target_layers(self, include_conv, train_unet=True, train_text_encoder=True, top_level=False, norms=False):
        targets = []
        if train_unet:
            blocks = LDM_ATTENTION_BLOCKS + (LDM_CONV_BLOCKS if include_conv else ())
            targets += find_targets(self.unet, "lora_unet", "unet", blocks, include_conv3x3=include_conv,
                                    path_in_file=self._unet_path_in_file(), norms=norms)
            if top_level:
                targets += top_level_targets(self.unet, LDM_TOP_LEVEL, include_conv, self._unet_path_in_file())
        if train_text_encoder:
            for encoder, prefix in zip(self.text_encoders(), TEXT_PREFIXES[self.family]):
                if _openclip_blocks(encoder):
                    found, split = openclip_targets(encoder, prefix)
                    self._split.update(split)
                    targets += found
                else:
                    targets += clip_text_encoder_targets(encoder, prefix)
        return targets

    def _unet_path_in_file(self):
        if self.family == "sdxl":
            return None  # kohya names SDXL layers by the sgm path itself
        config = ldm_unet_config(self.unet)
        return lambda path: unet_module_from_original(path, config)

    # --- training ------------------------------------------------------------------------
    @contextlib.contextmanager
    def frozen_for_training(self, device, weight_dtype, **overrides) -> Iterator[None]:
        with super().frozen_for_training(device, weight_dtype, **overrides), split_projections(self._split), \
                self._block_forwards():
            yield

    @contextlib.contextmanager
    def _block_forwards(self) -> Iterator[None]:
        """Blocks run `_forward` directly, or through torch's checkpoint when gradient
        checkpointing is on, instead of ldm/sgm's checkpoint, which drops adapter gradients."""
        blocks = [m for m in self.unet.modules()
                  if type(m).__name__ in CHECKPOINTED_BLOCKS and hasattr(m, "_forward")]
        for block in blocks:
            block.forward = functools.partial(self._block_forward, block)
        try:
            yield
        finally:
            for block in blocks:
                del block.forward

    def _block_forward(self, block: nn.Module, *args, **kwargs):
        if self._checkpointing and torch.is_grad_enabled():
            return checkpoint(block._forward, *args, use_reentrant=False, **kwargs)
        return block._forward(*args, **kwargs)

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        self._checkpointing = enabled

    # --- computing -----------------------------------------------------------------------
    def encode_prompts(self, prompts: list[str], max_token_length: int = 75) -> Conditioning:
        """Prompt length is the host's business here: the WebUI chunks long prompts itself."""
        if self.family != "sdxl":
            return Conditioning(self.sd_model.get_learned_conditioning(list(prompts)))
        contexts, pooled = [], []
        for embedder in text_embedders(self.sd_model):
            output = embedder(list(prompts))
            for part in output if isinstance(output, (tuple, list)) else (output,):
                (contexts if part.dim() == 3 else pooled).append(part)
        return Conditioning(torch.cat(contexts, dim=-1), torch.cat(pooled, dim=-1) if pooled else None)

    def predict(self, noisy_latents, timesteps, conditioning, sizes=None):
        dtype = next(self.unet.parameters()).dtype
        context = conditioning.context.to(noisy_latents.device, dtype)
        extra = {}
        if self.family == "sdxl":
            extra["y"] = self._vector(conditioning.pooled, noisy_latents, sizes).to(dtype)
        return self.unet(noisy_latents.to(dtype), timesteps=timesteps, context=context, **extra)

    def _vector(self, pooled: torch.Tensor, latents: torch.Tensor, sizes: torch.Tensor | None) -> torch.Tensor:
        """SDXL's vector input: the pooled text, then each size embedder fed its two columns of
        `sizes` (original, crop, target), in the conditioner's order."""
        sizes = (latent_sizes(latents) if sizes is None else sizes).to(latents.device, torch.float32)
        parts = [pooled.to(latents.device)]
        for embedder in self.sd_model.conditioner.embedders:
            key = getattr(embedder, "input_key", None)
            if key in SIZE_KEYS:
                column = 2 * SIZE_KEYS.index(key)
                parts.append(embedder(sizes[:, column:column + 2]).to(parts[0].dtype))
        return torch.cat(parts, dim=1)

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        parameter = next(self.vae().parameters())
        with torch.no_grad():
            encoded = self.sd_model.encode_first_stage(pixels.to(parameter.device, parameter.dtype))
            return self.sd_model.get_first_stage_encoding(encoded).float()

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        parameter = next(self.vae().parameters())
        with torch.no_grad():
            return self.sd_model.decode_first_stage(latents.to(parameter.device, parameter.dtype)).float()

    def vae_fingerprint(self) -> str:
        return module_fingerprint(self.vae())

    def count_tokens(self, prompt: str) -> int:
        return len(self.token_ids(prompt))

    def token_ids(self, text: str) -> list[int]:
        if self._tokenizer is None:
            from .clip_tokenizer import load_clip_tokenizer

            self._tokenizer = load_clip_tokenizer()  # every SD text encoder uses this vocabulary
        return self._tokenizer(text, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]

    def token_embeddings(self) -> list[nn.Embedding]:
        """The encoders' token tables: HF CLIP's `...token_embedding`, OpenCLIP's `token_embedding`;
        in the WebUI each is wrapped by its embedding hijack (`.wrapped`)."""
        tables = []
        for encoder in self.text_encoders():
            found = [module for path, module in encoder.named_modules() if isinstance(module, nn.Embedding)
                     and path.endswith(("token_embedding", "token_embedding.wrapped")) and ".visual." not in path]
            if not found:
                raise UnsupportedModel(f"the loaded {self.family.upper()} text encoder has no token embedding table "
                                       "this trainer recognises, so no embedding can be trained on it")
            tables.append(found[0])
        return tables

    def prompt_embeddings(self, embeddings):
        """The text here is the host's own (get_learned_conditioning): only the WebUI's, with its
        embedding database, knows embeddings (webui/model.py)."""
        raise UnsupportedModel("training an embedding on a live ldm/sgm model needs the WebUI's prompt handling "
                               "(its embedding database); outside the WebUI, train on the checkpoint file instead")
