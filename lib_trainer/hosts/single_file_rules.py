"""What a single-file checkpoint is, from its keys: the family, the variants we refuse, the keys
we may skip, the prediction type, and whether keys and shapes are exactly those of a model."""
from __future__ import annotations

import os

import torch
from torch import nn

from ..formats.original_layout import (
    CHECKPOINT_PLACES,
    KeyPair,
    module_tensor,
    text_key_pairs,
    with_prefix,
)
from .checkpoint_file import CheckpointError, CheckpointReader

EPSILON, V_PREDICTION = "epsilon", "v_prediction"
DEFAULT_SOURCE = "default"  # CheckpointInfo.prediction_source when nothing said which

# The first marker found decides the family. SD1's CLIP-L keys may lack the `text_model.` level.
FAMILY_MARKERS = (
    ("sdxl", "conditioner.embedders.1.model.ln_final.weight"),
    ("sd2", "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"),
    ("sd1", "cond_stage_model.transformer.*"),
)

# Recognised but not supported: key prefix -> what the file is.
UNSUPPORTED_MARKERS = (
    ("conditioner.embedders.0.model.", "an SDXL refiner"),
    ("edm_vpred.", "an EDM v-prediction model (CosXL)"),
    ("edm_mean", "an EDM model (Playground v2.5)"),
    ("depth_model.", "an SD2 depth model"),
    ("embedder.model.", "an SD2 unCLIP model"),
    ("noise_augmentor.", "an SD2 unCLIP model"),
    ("model.diffusion_model.joint_blocks.", "an SD3 model"),
    ("model.diffusion_model.double_blocks.", "a Flux model"),
    ("lora_unet_", "a LoRA (train on the checkpoint it was made for)"),
    ("lora_te", "a LoRA (train on the checkpoint it was made for)"),
)
UNET_INPUT_CHANNELS = {9: "an inpainting model", 8: "an instruct-pix2pix model", 5: "a depth model",
                       7: "an upscaler"}

# Keys a checkpoint may carry that are not loaded (allowed, never required):
IGNORED_KEYS = frozenset({
    # the ldm/sgm wrapper's noise-schedule buffers; every SD1/SD2/SDXL file uses the standard one
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
    "denoiser.sigmas",
    # OpenCLIP parts SD2 does not use (it conditions on the penultimate hidden state) and the
    # contrastive temperature no SD model uses
    "cond_stage_model.model.text_projection", "cond_stage_model.model.logit_scale",
    "conditioner.embedders.1.model.logit_scale",
    # markers, read as hints (ComfyUI/Forge): v-prediction, zero terminal SNR
    "v_pred", "ztsnr",
})
IGNORED_PREFIXES = ("model_ema.",)  # the EMA copy of unpruned files; the WebUI loads the plain weights
IGNORED_SUFFIXES = (".embeddings.position_ids",)  # a constant older transformers versions saved
SD2_UNUSED_OPENCLIP = ("cond_stage_model.model.text_projection", "cond_stage_model.model.logit_scale")


def is_ignored(key: str) -> bool:
    return key in IGNORED_KEYS or key.startswith(IGNORED_PREFIXES) or key.endswith(IGNORED_SUFFIXES)


def detect_family(reader: CheckpointReader) -> str:
    keys = set(reader.keys())
    variant = _unsupported_variant(keys, reader)
    if variant:
        raise CheckpointError(f"{reader.path} is {variant}, which this trainer does not support. "
                              "Choose an SD1.x, SD2.x or SDXL base checkpoint.")
    for family, marker in FAMILY_MARKERS:
        if marker.endswith("*") and any(key.startswith(marker[:-1]) for key in keys) or marker in keys:
            return family
    looked_for = ", ".join(f"{family}: {marker}" for family, marker in FAMILY_MARKERS)
    examples = ", ".join(sorted(keys)[:5])
    raise CheckpointError(
        f"{reader.path} is not a Stable Diffusion checkpoint this trainer knows (sd1, sd2, sdxl). It has none "
        f"of the keys that mark them ({looked_for}); its first keys are: {examples}. "
        "A diffusers model is a folder: pass the folder; a VAE file goes in the VAE option.")


def _unsupported_variant(keys: set[str], reader: CheckpointReader) -> str:
    for prefix, description in UNSUPPORTED_MARKERS:
        if any(key.startswith(prefix) for key in keys):
            return description
    conv_in = "model.diffusion_model.input_blocks.0.0.weight"
    if conv_in in keys:
        channels = reader.shape(conv_in)[1]
        if channels != 4:
            return UNET_INPUT_CHANNELS.get(channels, f"a model with {channels} UNet input channels")
    return ""


def prediction_hint(path: str, keys: set[str], v_parameterization: bool) -> tuple[str, str]:
    """(prediction type, what decided it): the caller's flag, else a `.yaml` of the same name
    beside the checkpoint (the WebUI's convention; it decides, as in the WebUI, with ldm's
    default eps when it names none), else a `v_pred` key, else epsilon ("default")."""
    if v_parameterization:
        return V_PREDICTION, "argument"
    yaml_path = os.path.splitext(path)[0] + ".yaml"
    if os.path.isfile(yaml_path):
        return (V_PREDICTION if _yaml_parameterization(yaml_path) == "v" else EPSILON), yaml_path
    if "v_pred" in keys:
        return V_PREDICTION, "v_pred key"
    return EPSILON, DEFAULT_SOURCE


def _yaml_parameterization(path: str) -> str:
    import yaml  # a dependency of transformers

    try:
        with open(path, encoding="utf-8") as handle:
            config = yaml.safe_load(handle) or {}
    except (OSError, yaml.YAMLError) as error:
        raise CheckpointError(f"{path} (the config beside the checkpoint) cannot be read: {error}") from error
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} (the config beside the checkpoint) is not a YAML mapping")
    model = config.get("model")
    params = model.get("params") if isinstance(model, dict) else None
    params = params if isinstance(params, dict) else {}
    return str(config.get("parameterization") or params.get("parameterization") or "eps")


def zero_terminal_snr_hint(keys: set[str]) -> bool:
    return "ztsnr" in keys


def extra_layer_pairs(family: str, text_encoders: list[nn.Module], layers_in_file: list[int],
                      text_model_level: bool = True) -> list[tuple[KeyPair, str, int]]:
    """File layers a text encoder does not use (SD2's OpenCLIP has 24, the model uses 23), as
    (pair, the module key of the same tensor in the last used layer, text encoder index)."""
    places = [place for place in CHECKPOINT_PLACES[family] if place.component == "text_encoder"]
    result = []
    for index, (place, encoder, in_file) in enumerate(zip(places, text_encoders, layers_in_file)):
        used = encoder.config.num_hidden_layers
        last = f"encoder.layers.{used - 1}."
        sources = [key for key in encoder.state_dict() if last in key]
        for layer in range(used, in_file):
            renamed = {key.replace(last, f"encoder.layers.{layer}."): key for key in sources}
            for pair in with_prefix(text_key_pairs(place.text_layout, renamed, text_model_level), place.prefix):
                result.append((pair, renamed[pair.module_key], index))
    return result


def check_layout(reader: CheckpointReader, expected: list[tuple[KeyPair, torch.Size]], considered: set[str],
                 optional: set[str], ignore: bool = True) -> list[str]:
    """What keeps the file's `considered` keys from being exactly the `expected` tensors (each
    with the module shape it must give); `optional` keys and, with `ignore`, IGNORED_KEYS may
    also be there."""
    wanted: dict[str, list[tuple[str, torch.Size]]] = {}
    for pair, shape in expected:
        wanted.setdefault(pair.file_key, []).append((pair.kind, shape))
    missing = sorted(set(wanted) - considered)
    unknown = sorted(key for key in considered - set(wanted) - optional if not (ignore and is_ignored(key)))
    wrong = []
    for key, needs in wanted.items():
        if key in considered and not all(_gives(reader.shape(key), kind, shape) for kind, shape in needs):
            wrong.append(f"{key} {tuple(reader.shape(key))} vs {tuple(needs[0][1])}")
    problems = []
    if missing:
        problems.append(f"{len(missing)} keys missing ({_examples(missing)})")
    if unknown:
        problems.append(f"{len(unknown)} unknown keys ({_examples(unknown)})")
    if wrong:
        problems.append(f"{len(wrong)} tensors of another shape ({_examples(wrong)})")
    return problems


def _gives(stored_shape: tuple[int, ...], kind: str, shape: torch.Size) -> bool:
    try:
        return module_tensor(kind, torch.empty(stored_shape, device="meta")).shape == shape
    except (RuntimeError, IndexError):
        return False


def _examples(items: list[str], limit: int = 12) -> str:
    shown = ", ".join(items[:limit])
    return shown if len(items) <= limit else f"{shown}, ... {len(items) - limit} more"
