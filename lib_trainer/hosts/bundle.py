"""The model bundle: what a host hands the trainer, whatever the model's origin.

The trainer never asks which host it runs on: it needs the denoiser, a way to turn
prompts into conditioning and pixels into latents, the noise schedule and prediction
type, and the layers a network may adapt with the key names they carry in the file.
"""
from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from ..formats.kohya_names import TargetLayer
from .stored_layers import cast_held, held_parameter_bytes, stored_layers
from .upcast_layers import upcast_forwards


@dataclass
class Conditioning:
    """What the denoiser is conditioned on besides the noisy latents and the timestep."""
    context: torch.Tensor                 # (B, tokens, dim): cross-attention input
    pooled: torch.Tensor | None = None    # (B, dim): SDXL's pooled OpenCLIP embedding

    def to(self, device: torch.device | str) -> "Conditioning":
        pooled = None if self.pooled is None else self.pooled.to(device)
        return Conditioning(self.context.to(device), pooled)

    def detach(self) -> "Conditioning":
        pooled = None if self.pooled is None else self.pooled.detach()
        return Conditioning(self.context.detach(), pooled)

    def rows(self) -> list["Conditioning"]:
        """One Conditioning per prompt (batch dimension kept, size 1)."""
        return [Conditioning(self.context[i: i + 1], None if self.pooled is None else self.pooled[i: i + 1])
                for i in range(self.context.shape[0])]

    @staticmethod
    def cat(parts: list["Conditioning"]) -> "Conditioning":
        pooled = None if parts[0].pooled is None else torch.cat([p.pooled for p in parts])
        return Conditioning(torch.cat([p.context for p in parts]), pooled)


class ModelBundle:
    family: str = "sd1"                    # sd1, sd2, sdxl
    prediction_type: str = "epsilon"       # or "v_prediction"
    model_name: str = ""                   # shown as ss_sd_model_name
    # kohya's base-model hashes (hosts/model_hashes.py): ss_sd_model_hash, ss_new_sd_model_hash
    sd_model_hash: str = ""
    new_sd_model_hash: str = ""
    alphas_cumprod: torch.Tensor           # (1000,) noise schedule
    # A bundle that loaded its own copy may cast it to the compute dtype; one that borrows a
    # live model (the WebUI's) must not, since casting down and back is not lossless.
    owns_weights: bool = True
    notes: tuple[str, ...] = ()            # what loading noticed and the user should know
    # The dtype the base weights had where they were loaded from (a checkpoint file's UNet);
    # None: not known. Says whether base_weights_dtype holds them exactly.
    source_dtype: torch.dtype | None = None
    # A host with its own txt2img hands it here: a callable (prompt, sampler, seed) -> PIL
    # image (train/txt2img.py describes it). None: the trainer samples in plain torch.
    sample_backend = None

    def denoiser(self) -> nn.Module:
        raise NotImplementedError

    def text_encoders(self) -> list[nn.Module]:
        raise NotImplementedError

    def vae(self) -> nn.Module:
        raise NotImplementedError

    def target_layers(self, include_conv: bool, train_unet: bool = True, train_text_encoder: bool = True,
                      top_level: bool = False, norms: bool = False) -> list[TargetLayer]:
        """The layers a network may adapt, under their file names (formats/kohya_names.py):
        the UNet's attention blocks, with include_conv its ResNet/sampler blocks, with top_level
        conv_in/conv_out/the time embedding, with norms the norm layers in those blocks; the
        text encoders' attention and MLP blocks."""
        raise NotImplementedError

    def encode_prompts(self, prompts: list[str], max_token_length: int = 75) -> Conditioning:
        """Conditioning for a batch of prompts; gradients flow when text-encoder layers train."""
        raise NotImplementedError

    # weighted_captions: a host that reads (word:1.2) emphasis in captions says so and encodes them.
    supports_weighted_captions: bool = False

    def encode_weighted_prompts(self, prompts: list[str], max_token_length: int = 75) -> Conditioning:
        """`encode_prompts` with the captions' emphasis weights applied (weighted_captions)."""
        raise NotImplementedError

    def predict(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, conditioning: Conditioning,
                sizes: torch.Tensor | None = None) -> torch.Tensor:
        """The model output. `sizes` (B, 6) is SDXL's size conditioning per image: original
        height, width, crop top, left, target height, width; None means uncropped at the
        latents' size. Other families ignore it."""
        raise NotImplementedError

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> scaled latents (B, 4, H/8, W/8)."""
        raise NotImplementedError

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents (B, 4, H/8, W/8) -> pixels (B, 3, H, W) in [-1, 1], float32."""
        raise NotImplementedError

    def vae_fingerprint(self) -> str:
        raise NotImplementedError

    def count_tokens(self, prompt: str) -> int:
        raise NotImplementedError

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        raise NotImplementedError

    # --- textual-inversion embeddings ----------------------------------------------------
    def token_embeddings(self) -> list[nn.Embedding]:
        """Each text encoder's token-embedding table (SDXL: CLIP-L's, then OpenCLIP's)."""
        raise NotImplementedError

    def token_ids(self, text: str) -> list[int]:
        """The CLIP token ids of `text`, without start and end tokens."""
        raise NotImplementedError

    def embedding_widths(self) -> list[int]:
        return [table.weight.shape[1] for table in self.token_embeddings()]

    def token_vectors(self, text: str) -> list[torch.Tensor]:
        """The vectors the text's tokens have in each text encoder (an embedding's start)."""
        ids = torch.tensor(self.token_ids(text), dtype=torch.long)
        return [table.weight.detach()[ids.to(table.weight.device)].float().cpu() for table in self.token_embeddings()]

    def prompt_embeddings(self, embeddings: dict[str, list[torch.Tensor]]) -> contextlib.AbstractContextManager:
        """A context in which a prompt naming one of `embeddings` (name -> one [n, width] tensor
        per text encoder) is conditioned on its vectors, gradients flowing to them."""
        raise NotImplementedError

    def modules(self) -> list[nn.Module]:
        return [self.denoiser(), *self.text_encoders(), self.vae()]

    def training_dtypes(self, weight_dtype: torch.dtype, no_half_vae: bool = False,
                        denoiser_dtype: torch.dtype | None = None) -> list[tuple[nn.Module, torch.dtype | None]]:
        """Each module with the dtype training holds its weights in (None: as they are). A
        bundle that owns its weights holds the denoiser and text encoders in the compute
        dtype and the VAE in fp32 (SD's VAE overflows in fp16); a borrowed model stays as it is,
        but for its VAE with no_half_vae (fp32, given back in its own dtype: lossless).
        `denoiser_dtype` (fp8_base's storage dtype) applies to an owned denoiser only."""
        dtype = weight_dtype if self.owns_weights else None
        denoiser = denoiser_dtype if denoiser_dtype is not None and self.owns_weights else dtype
        vae = torch.float32 if self.owns_weights or no_half_vae else None
        return [(self.denoiser(), denoiser), *((encoder, dtype) for encoder in self.text_encoders()),
                (self.vae(), vae)]

    def stored_layer_modules(self) -> list[nn.Module]:
        """The modules whose Linear/Conv2d weights base_weights_dtype stores in 16 bits (see
        stored_layers.py): an owned denoiser and text encoders; a borrowed model is left as it is."""
        return [self.denoiser(), *self.text_encoders()] if self.owns_weights else []

    def held_weight_bytes(self, weight_dtype: torch.dtype, layer_dtype: torch.dtype | None = None) -> int:
        """Bytes of the weights as training will hold them (what `frozen_for_training` makes):
        the memory estimate counts this, so it matches what is on the device."""
        stored = self.stored_layer_modules() if layer_dtype is not None else []
        return sum(held_parameter_bytes(module, dtype, layer_dtype if module in stored else None)
                   for module, dtype in self.training_dtypes(weight_dtype))

    @contextlib.contextmanager
    def frozen_for_training(self, device: torch.device, weight_dtype: torch.dtype,
                            layer_dtype: torch.dtype | None = None, **overrides) -> Iterator[None]:
        """Base weights frozen, on the device, in the dtypes of `training_dtypes` (`overrides`:
        its no_half_vae and denoiser_dtype); with `layer_dtype` (base_weights_dtype) the Linear/Conv2d
        weights of `stored_layer_modules` are held in it and up-cast as each layer computes. The
        modules' previous state (and forwards) come back afterwards, whatever happens."""
        saved = [ModuleState(module) for module in self.modules()]
        stored = self.stored_layer_modules() if layer_dtype is not None else []
        try:
            with contextlib.ExitStack() as stack:
                for module in self.modules():
                    module.requires_grad_(False)
                for module, dtype in self.training_dtypes(weight_dtype, **overrides):
                    _cast_then_move(module, device, dtype, layer_dtype if module in stored else None)
                    module.eval()
                for module in stored:
                    stack.enter_context(upcast_forwards(stored_layers(module)))
                self.denoiser().train()  # train mode enables checkpointing
                yield
        finally:
            for state in saved:
                state.restore()


def _cast_then_move(module: nn.Module, device: torch.device, dtype: torch.dtype | None,
                    layer_dtype: torch.dtype | None = None) -> None:
    """Cast where the weights are (the CPU, after loading), then move: the device never holds
    an fp32 copy of weights that train in 16 bits. Cast only when the dtype really changes
    (diffusers warns on every cast); with layer_dtype tensor by tensor (stored_layers.py)."""
    if layer_dtype is not None:
        cast_held(module, dtype, layer_dtype)
    elif dtype is not None and any(p.dtype != dtype for p in module.parameters()):
        module.to(dtype)
    module.to(device)


class ModuleState:
    """A module's requires_grad, train/eval mode, device and dtype of every tensor."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.requires_grad = {name: p.requires_grad for name, p in module.named_parameters()}
        self.training = {name: m.training for name, m in module.named_modules()}
        self.placement = {name: (t.device, t.dtype) for name, t in _tensors(module)}

    def restore(self) -> None:
        for name, tensor in _tensors(self.module):
            device, dtype = self.placement[name]
            if tensor.device != device or tensor.dtype != dtype:
                tensor.data = tensor.data.to(device, dtype)
        for name, parameter in self.module.named_parameters():
            parameter.requires_grad_(self.requires_grad[name])
        for name, submodule in self.module.named_modules():
            submodule.training = self.training[name]


def _tensors(module: nn.Module):
    yield from module.named_parameters()
    yield from module.named_buffers()


def uncropped_sizes(height: int, width: int, count: int) -> torch.Tensor:
    """SDXL size conditioning (original h, w, crop top, left, target h, w) of `count` images
    shown whole at height x width."""
    return torch.tensor([[height, width, 0, 0, height, width]] * count, dtype=torch.float32)


def latent_sizes(latents: torch.Tensor) -> torch.Tensor:
    """Uncropped size conditioning at the latents' own size."""
    return uncropped_sizes(latents.shape[-2] * 8, latents.shape[-1] * 8, latents.shape[0])


def module_fingerprint(module: nn.Module) -> str:
    """A short hash of a module's weights: latent caches are only reused with the same VAE."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def scaled_linear_alphas_cumprod(steps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> torch.Tensor:
    """The DDPM schedule every SD model was trained with: betas linear in sqrt space."""
    betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, steps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).float()
