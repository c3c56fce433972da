"""A bundle over diffusers/transformers components of SD1.x, SD2.x and SDXL (used without
the WebUI).

diffusers and transformers give us well-tested model code and the independent LoRA
loader the tests compare against; they are used only by this standalone host, never by
the dataset, network, training or format code, which also run inside the WebUI.
"""
from __future__ import annotations

import json
import os

import torch
from torch import nn

from ..formats.kohya_names import clip_text_encoder_targets, diffusers_unet_targets
from .bundle import Conditioning, ModelBundle, latent_sizes, module_fingerprint, scaled_linear_alphas_cumprod
from .components import ModelComponents
from .prompt_chunks import batch_chunks_with_embeddings, split_into_chunks
from .prompt_weights import chunk_weights, weighted_token_ids
from .prompt_embeddings import PromptEmbeddings, vectors_in_slots
from ..errors import InvalidInput

# kohya's key prefix of each text encoder in the LoRA file.
TEXT_ENCODER_PREFIXES = {"sd1": ["lora_te"], "sd2": ["lora_te"], "sdxl": ["lora_te1", "lora_te2"]}


class DiffusersSDBundle(ModelBundle):
    def __init__(self, components: ModelComponents, prediction_type: str = "epsilon", clip_skip: int = 1,
                 model_name: str = "", alphas_cumprod: torch.Tensor | None = None) -> None:
        self.components = components
        self.unet, self.vae_model = components.unet, components.vae
        self.encoders, self.tokenizers = components.text_encoders, components.tokenizers
        self.family, self.prediction_type, self.clip_skip, self.model_name = (
            components.family, prediction_type, clip_skip, model_name)
        self.alphas_cumprod = alphas_cumprod if alphas_cumprod is not None else scaled_linear_alphas_cumprod()
        self.scaling_factor = float(getattr(self.vae_model.config, "scaling_factor", 0.18215))
        # Every SD text encoder uses the same CLIP BPE vocabulary; they differ in padding.
        self._comma_id = self.tokenizers[0].convert_tokens_to_ids(",</w>")
        self._fingerprint: str | None = None
        self.embeddings = PromptEmbeddings(self.token_ids)

    def denoiser(self) -> nn.Module:
        return self.unet

    def text_encoders(self) -> list[nn.Module]:
        return list(self.encoders)

    def vae(self) -> nn.Module:
        return self.vae_model

    def target_layers(self, include_conv, train_unet=True, train_text_encoder=True, top_level=False, norms=False):
        targets = []
        if train_unet:
            targets += diffusers_unet_targets(self.unet, include_conv, self._unet_path_in_file(), top_level, norms)
        if train_text_encoder:
            for encoder, prefix in zip(self.encoders, TEXT_ENCODER_PREFIXES[self.family]):
                targets += clip_text_encoder_targets(encoder, prefix)
        return targets

    def _unet_path_in_file(self):
        """kohya names SDXL UNet layers by their path in the original sgm UNet
        (`input_blocks_4_1_…`), SD1/SD2 layers by their diffusers path."""
        if self.family != "sdxl":
            return None
        from ..formats.original_layout import unet_module_to_original

        config = dict(self.unet.config)
        return lambda path: unet_module_to_original(path, config)

    def tokenize(self, prompts: list[str]) -> list[list[int]]:
        tokenizer = self.tokenizers[0]
        return [tokenizer(p, add_special_tokens=False, truncation=False, verbose=False)["input_ids"] for p in prompts]

    def count_tokens(self, prompt: str) -> int:
        return len(self.tokenize([prompt])[0])

    def token_ids(self, text: str) -> list[int]:
        return self.tokenize([text])[0]

    def token_embeddings(self) -> list[nn.Embedding]:
        return [encoder.get_input_embeddings() for encoder in self.encoders]

    def prompt_embeddings(self, embeddings):
        return self.embeddings.using(embeddings)

    def encode_prompts(self, prompts: list[str], max_token_length: int = 75) -> Conditioning:
        """The WebUI's long prompts: 75-token chunks encoded apart and concatenated; SDXL's
        pooled embedding comes from the first chunk, as in the WebUI."""
        return self._encode(self.tokenize(prompts), max_token_length)

    supports_weighted_captions = True

    def encode_weighted_prompts(self, prompts: list[str], max_token_length: int = 75) -> Conditioning:
        """weighted_captions: (word:1.2) emphasis multiplies the words' hidden states, as
        sd-scripts does (hosts/prompt_weights.py); the pooled embedding is left as it is."""
        if self.embeddings.vectors:
            raise InvalidInput("weighted_captions cannot be used while an embedding trains: turn one off")
        parsed = [weighted_token_ids(prompt, self.token_ids) for prompt in prompts]
        return self._encode([ids for ids, _ in parsed], max_token_length, [weights for _, weights in parsed])

    def _encode(self, token_ids: list[list[int]], max_token_length: int,
                token_weights: list[list[float]] | None = None) -> Conditioning:
        find = self.embeddings.find if self.embeddings.vectors else None
        contexts, pooled = [], None
        for index, (encoder, tokenizer) in enumerate(zip(self.encoders, self.tokenizers)):
            chunks, fixes = batch_chunks_with_embeddings(
                token_ids, self._comma_id, max_token_length // 75, bos_id=tokenizer.bos_token_id,
                eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id, find_embedding=find)
            device = next(encoder.parameters()).device
            hidden = []
            for chunk_index, ids in enumerate(chunks):
                vectors = [(row, slot, self.embeddings.vectors[name][index]) for row, slot, name in fixes[chunk_index]]
                with vectors_in_slots(encoder.get_input_embeddings(), vectors):
                    states, chunk_pooled = self._encode_chunk(index, torch.tensor(ids, device=device))
                if token_weights is not None:
                    states = states * self._chunk_weights(token_ids, token_weights, max_token_length,
                                                          chunk_index, len(chunks)).to(states)
                hidden.append(states)
                if chunk_index == 0 and chunk_pooled is not None:
                    pooled = chunk_pooled
            contexts.append(torch.cat(hidden, dim=1))
        return Conditioning(torch.cat(contexts, dim=-1), pooled)

    def _chunk_weights(self, token_ids, token_weights, max_token_length, chunk_index, count) -> torch.Tensor:
        """(batch, 77, 1) weights of one chunk of every prompt (chunks follow the prompt's order)."""
        rows = []
        for ids, weights in zip(token_ids, token_weights):
            lengths = [len(chunk) for chunk in split_into_chunks(ids, self._comma_id, max_token_length // 75)]
            rows.append(chunk_weights(weights, lengths, count)[chunk_index])
        return torch.stack(rows).unsqueeze(-1)

    def _encode_chunk(self, index: int, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The hidden states the WebUI takes from each text encoder, and SDXL's pooled output.
        - SD1: clip skip N = the N-th last layer's states, then the final norm;
        - SD2: the penultimate OpenCLIP layer with the final norm, whatever the clip skip (the
          WebUI ignores it there); the models here already end at that layer;
        - SDXL: the penultimate layer of both encoders without the final norm; with clip skip
          of 2 or more CLIP-L takes the N-th last layer, like the WebUI's "SDXL CLIP-L skip".
        """
        encoder = self.encoders[index]
        if self.family == "sd2" or (self.family == "sd1" and self.clip_skip <= 1):
            return encoder(input_ids).last_hidden_state, None
        output = encoder(input_ids, output_hidden_states=True)
        if self.family == "sd1":
            hidden = output.hidden_states[-self.clip_skip]
            # transformers 4 keeps the norm under .text_model, transformers 5 on the model itself.
            return getattr(encoder, "text_model", encoder).final_layer_norm(hidden), None
        layer = -self.clip_skip if index == 0 and self.clip_skip >= 2 else -2
        return output.hidden_states[layer], getattr(output, "text_embeds", None)

    def predict(self, noisy_latents, timesteps, conditioning, sizes=None):
        extra = {}
        if self.family == "sdxl":
            if sizes is None:
                sizes = latent_sizes(noisy_latents)
            extra["added_cond_kwargs"] = {"text_embeds": conditioning.pooled,
                                          "time_ids": sizes.to(noisy_latents.device, conditioning.context.dtype)}
        return self.unet(noisy_latents, timesteps, encoder_hidden_states=conditioning.context, **extra).sample

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        parameter = next(self.vae_model.parameters())
        latents = self.vae_model.encode(pixels.to(parameter.device, parameter.dtype)).latent_dist.sample()
        return latents * self.scaling_factor

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        parameter = next(self.vae_model.parameters())
        scaled = latents.to(parameter.device, parameter.dtype) / self.scaling_factor
        return self.vae_model.decode(scaled).sample.float()

    def vae_fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = module_fingerprint(self.vae_model)
        return self._fingerprint

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        # transformers 5 renamed the switches; its enable also hooks the input embeddings to
        # require grad, a hook that its disable leaves behind unless removed explicitly.
        if enabled:
            self.unet.enable_gradient_checkpointing()
        else:
            self.unet.disable_gradient_checkpointing()
        for encoder in self.encoders:
            if enabled:
                getattr(encoder, "activation_checkpointing_enable", encoder.gradient_checkpointing_enable)()
                continue
            getattr(encoder, "activation_checkpointing_disable", encoder.gradient_checkpointing_disable)()
            if hasattr(encoder, "disable_input_require_grads") and hasattr(encoder, "_require_grads_hook"):
                encoder.disable_input_require_grads()

    def set_xformers(self, enabled: bool) -> None:
        if enabled:
            self.unet.enable_xformers_memory_efficient_attention()


def load_diffusers_folder(folder: str, v_parameterization: bool = False, clip_skip: int = 1) -> DiffusersSDBundle:
    """An SD1.x/SD2.x/SDXL diffusers folder (model_index.json with unet/, vae/,
    text_encoder/, tokenizer/ and for SDXL text_encoder_2/, tokenizer_2/)."""
    import transformers
    from diffusers import AutoencoderKL, UNet2DConditionModel

    index_path = os.path.join(folder, "model_index.json")
    if not os.path.isfile(index_path):
        raise InvalidInput(f"{folder} is not a diffusers model folder (no model_index.json)")
    index = _part(folder, "model_index.json", lambda: _read_index(index_path))
    is_xl = "text_encoder_2" in index
    encoder_folders = ["text_encoder", "text_encoder_2"] if is_xl else ["text_encoder"]
    needed = ["unet", "vae", *encoder_folders, *(name.replace("text_encoder", "tokenizer") for name in encoder_folders)]
    missing = [name for name in needed if not os.path.isdir(os.path.join(folder, name))]
    if missing:
        raise InvalidInput(f"{folder} is an incomplete diffusers model folder: it has no {', '.join(missing)} "
                           "subfolder; download the whole model again (or use a single-file checkpoint)")
    unet = _part(folder, "unet", lambda: UNet2DConditionModel.from_pretrained(folder, subfolder="unet"))
    encoders, tokenizers = [], []
    for name in encoder_folders:
        class_name = index[name][1]  # e.g. ["transformers", "CLIPTextModelWithProjection"]
        encoders.append(_part(folder, name, lambda: getattr(transformers, class_name).from_pretrained(
            folder, subfolder=name)))
        tokenizer = name.replace("text_encoder", "tokenizer")
        tokenizers.append(_part(folder, tokenizer, lambda: transformers.CLIPTokenizer.from_pretrained(
            folder, subfolder=tokenizer)))
    # SD2's OpenCLIP text encoder is the one with plain GELU (CLIP-L uses quick_gelu).
    family = "sdxl" if is_xl else "sd2" if encoders[0].config.hidden_act == "gelu" else "sd1"
    vae = _part(folder, "vae", lambda: AutoencoderKL.from_pretrained(folder, subfolder="vae"))
    components = ModelComponents(family, unet, vae, encoders, tokenizers)
    for module in (unet, components.vae, *encoders):
        module.eval()
    return DiffusersSDBundle(components, prediction_type=_prediction_type(folder, v_parameterization),
                             clip_skip=clip_skip, model_name=os.path.basename(os.path.normpath(folder)))


def _read_index(path: str) -> dict:
    with open(path, encoding="utf-8") as handle:
        index = json.load(handle)
    if not isinstance(index, dict) or not isinstance(index.get("text_encoder"), list):
        raise ValueError("expected a table naming text_encoder, unet and vae")
    return index


def _part(folder: str, name: str, load):
    """One part of a diffusers folder; whatever its loader raises on a damaged or missing file
    (OSError, ValueError, a pickle or safetensors error...) becomes one message naming it."""
    try:
        return load()
    except Exception as error:  # noqa: BLE001 - every loader failure is the folder's, said as such
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:240]
        raise InvalidInput(f"{folder}: its {name} cannot be loaded ({reason}); a file there is damaged or "
                           "missing: download the model again (or use a single-file checkpoint)") from error


def _prediction_type(folder: str, v_parameterization: bool) -> str:
    if v_parameterization:
        return "v_prediction"
    scheduler_config = os.path.join(folder, "scheduler", "scheduler_config.json")
    if os.path.isfile(scheduler_config):
        with open(scheduler_config, encoding="utf-8") as handle:
            return json.load(handle).get("prediction_type", "epsilon")
    return "epsilon"
