"""A bundle over diffusers/transformers SD1.x-style components (used without the WebUI).

diffusers and transformers give us well-tested model code and the independent LoRA
loader the tests compare against; they are used only by this standalone host, never by
the dataset, network, training or format code, which also run inside the WebUI.
"""
from __future__ import annotations

import hashlib
import os

import torch
from torch import nn

from ..formats.kohya_names import clip_text_encoder_targets, diffusers_unet_targets
from .bundle import ModelBundle, scaled_linear_alphas_cumprod
from .prompt_chunks import batch_chunk_ids


class DiffusersSDBundle(ModelBundle):
    def __init__(self, unet, text_encoder, tokenizer, vae, family: str = "sd1", prediction_type: str = "epsilon",
                 clip_skip: int = 1, model_name: str = "", alphas_cumprod: torch.Tensor | None = None) -> None:
        self.unet, self.text_encoder, self.tokenizer, self.vae_model = unet, text_encoder, tokenizer, vae
        self.family, self.prediction_type, self.clip_skip, self.model_name = family, prediction_type, clip_skip, model_name
        self.alphas_cumprod = alphas_cumprod if alphas_cumprod is not None else scaled_linear_alphas_cumprod()
        self.scaling_factor = float(getattr(vae.config, "scaling_factor", 0.18215))
        self._comma_id = tokenizer.convert_tokens_to_ids(",</w>")
        self._fingerprint: str | None = None

    def denoiser(self) -> nn.Module:
        return self.unet

    def text_encoders(self) -> list[nn.Module]:
        return [self.text_encoder]

    def vae(self) -> nn.Module:
        return self.vae_model

    def target_layers(self, include_conv, train_unet=True, train_text_encoder=True):
        targets = []
        if train_unet:
            targets += diffusers_unet_targets(self.unet, include_conv)
        if train_text_encoder:
            targets += clip_text_encoder_targets(self.text_encoder, "lora_te")
        return targets

    def tokenize(self, prompts: list[str]) -> list[list[int]]:
        return [self.tokenizer(p, add_special_tokens=False, truncation=False, verbose=False)["input_ids"] for p in prompts]

    def count_tokens(self, prompt: str) -> int:
        return len(self.tokenize([prompt])[0])

    def encode_prompts(self, prompts: list[str], max_token_length: int = 75) -> torch.Tensor:
        chunks = batch_chunk_ids(
            self.tokenize(prompts), self._comma_id, max_token_length // 75,
            bos_id=self.tokenizer.bos_token_id, eos_id=self.tokenizer.eos_token_id,
            pad_id=self.tokenizer.pad_token_id,
        )
        device = next(self.text_encoder.parameters()).device
        encoded = [self._encode_chunk(torch.tensor(ids, device=device)) for ids in chunks]
        return torch.cat(encoded, dim=1)

    def _encode_chunk(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The WebUI's clip skip: the N-th last layer's hidden states, then the final norm."""
        output = self.text_encoder(input_ids, output_hidden_states=self.clip_skip > 1)
        if self.clip_skip <= 1:
            return output.last_hidden_state
        hidden = output.hidden_states[-self.clip_skip]
        # transformers 4 keeps the norm under .text_model, transformers 5 on the model itself.
        return getattr(self.text_encoder, "text_model", self.text_encoder).final_layer_norm(hidden)

    def predict(self, noisy_latents, timesteps, conditioning):
        return self.unet(noisy_latents, timesteps, encoder_hidden_states=conditioning).sample

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        parameter = next(self.vae_model.parameters())
        latents = self.vae_model.encode(pixels.to(parameter.device, parameter.dtype)).latent_dist.sample()
        return latents * self.scaling_factor

    def vae_fingerprint(self) -> str:
        if self._fingerprint is None:
            digest = hashlib.sha256()
            for name, tensor in sorted(self.vae_model.state_dict().items()):
                digest.update(name.encode())
                digest.update(tensor.detach().float().cpu().numpy().tobytes())
            self._fingerprint = digest.hexdigest()[:16]
        return self._fingerprint

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        # transformers 5 renamed the switches; its enable also hooks the input embeddings to
        # require grad, a hook that its disable leaves behind unless removed explicitly.
        encoder = self.text_encoder
        if enabled:
            self.unet.enable_gradient_checkpointing()
            getattr(encoder, "activation_checkpointing_enable", encoder.gradient_checkpointing_enable)()
        else:
            self.unet.disable_gradient_checkpointing()
            getattr(encoder, "activation_checkpointing_disable", encoder.gradient_checkpointing_disable)()
            if hasattr(encoder, "disable_input_require_grads") and hasattr(encoder, "_require_grads_hook"):
                encoder.disable_input_require_grads()

    def set_xformers(self, enabled: bool) -> None:
        if enabled:
            self.unet.enable_xformers_memory_efficient_attention()


def load_diffusers_folder(folder: str, v_parameterization: bool = False, clip_skip: int = 1) -> DiffusersSDBundle:
    """An SD1.x/SD2.x diffusers folder (model_index.json with unet/, vae/, text_encoder/, tokenizer/)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    if not os.path.isfile(os.path.join(folder, "model_index.json")):
        raise ValueError(f"{folder} is not a diffusers model folder (no model_index.json)")
    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
    prediction = _prediction_type(folder, v_parameterization)
    return DiffusersSDBundle(
        unet=unet,
        text_encoder=CLIPTextModel.from_pretrained(folder, subfolder="text_encoder"),
        tokenizer=CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer"),
        vae=AutoencoderKL.from_pretrained(folder, subfolder="vae"),
        family="sd2" if unet.config.cross_attention_dim == 1024 else "sd1",
        prediction_type=prediction, clip_skip=clip_skip, model_name=os.path.basename(os.path.normpath(folder)),
    )


def _prediction_type(folder: str, v_parameterization: bool) -> str:
    import json

    if v_parameterization:
        return "v_prediction"
    scheduler_config = os.path.join(folder, "scheduler", "scheduler_config.json")
    if os.path.isfile(scheduler_config):
        with open(scheduler_config, encoding="utf-8") as handle:
            return json.load(handle).get("prediction_type", "epsilon")
    return "epsilon"
