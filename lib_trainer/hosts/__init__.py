"""Where the model comes from. A host hands the trainer a `ModelBundle` (see bundle.py)."""
from __future__ import annotations

import functools

from ..errors import InvalidInput


def load_bundle(model: str, v_parameterization: bool = False, clip_skip: int = 1, vae: str = "",
                layer_dtype=None):
    """The bundle for a `pretrained_model_name_or_path` value (and kohya's `--vae`). With
    `layer_dtype` (base_weights_dtype) the UNet's and text encoders' Linear/Conv2d weights are held
    in it: a checkpoint file's are read straight into it, other hosts' cast after loading."""
    import os

    if model.startswith("tiny:"):
        from .tiny import build_tiny_bundle

        bundle = build_tiny_bundle(model.split(":", 1)[1], v_parameterization=v_parameterization,
                                   clip_skip=clip_skip)
    elif os.path.isdir(model):
        from .diffusers_sd import load_diffusers_folder

        bundle = load_diffusers_folder(model, v_parameterization=v_parameterization, clip_skip=clip_skip)
    elif os.path.isfile(model):
        return _load_checkpoint_file(model, v_parameterization, clip_skip, vae, layer_dtype)
    else:
        raise InvalidInput(f"pretrained_model_name_or_path={model!r}: no such file or folder (a .safetensors or "
                           ".ckpt checkpoint, a diffusers folder, or tiny:sd1 / tiny:sd2 / tiny:sdxl)")
    if vae:
        from .single_file import load_vae_file

        load_vae_file(vae, bundle.vae_model)
    if layer_dtype is not None:
        from .stored_layers import cast_held

        for module in bundle.stored_layer_modules():
            cast_held(module, None, layer_dtype)
    return bundle


def _load_checkpoint_file(path: str, v_parameterization: bool, clip_skip: int, vae: str, layer_dtype=None):
    from .diffusers_sd import DiffusersSDBundle
    from .single_file import load_single_file

    components, info = load_single_file(path, vae_path=vae or None, v_parameterization=v_parameterization,
                                        layer_dtype=layer_dtype)
    bundle = DiffusersSDBundle(components, prediction_type=info.prediction_type, clip_skip=clip_skip,
                               model_name=info.model_name)
    bundle.source_dtype = info.unet_dtype
    kind = "v-prediction" if info.prediction_type == "v_prediction" else "epsilon"
    notes = [f"{info.model_name}: {info.family} ({info.architecture}), {kind} from {info.prediction_source}"]
    if info.zero_terminal_snr:
        notes.append("the checkpoint has a ztsnr key: it was trained with zero terminal SNR; "
                     "consider --zero_terminal_snr")
    bundle.notes = tuple(notes)
    from .model_hashes import model_hashes

    bundle.sd_model_hash, bundle.new_sd_model_hash = model_hashes(path)
    return bundle


def model_family(model: str) -> str | None:
    """"sd1", "sd2" or "sdxl" for a base model value, read from its keys or configs without
    loading it; None when it is not there or cannot be read."""
    import os

    try:
        if model.startswith("tiny:"):
            return model.split(":", 1)[1]
        if os.path.isfile(model):
            from .single_file import detect_checkpoint

            return detect_checkpoint(model).family
        if os.path.isdir(model):
            return _diffusers_folder_architecture(model)
    except Exception:  # noqa: BLE001 - a suggestion only; loading says what is wrong with the file
        return None
    return None


def meta_bundle(model: str):
    """A bundle of the architecture `model` would load, built on the meta device (no memory,
    no weights read; a second or two the first time): what the memory estimate counts before
    anything is loaded. None when the model is not there yet."""
    import os

    if model.startswith("tiny:"):
        name = f"tiny-{model.split(':', 1)[1]}"
    elif os.path.isfile(model):
        from .single_file import detect_checkpoint

        name = detect_checkpoint(model).architecture
    elif os.path.isdir(model):
        name = _diffusers_folder_architecture(model)
    else:
        return None
    return _meta_bundle(name)


def _diffusers_folder_architecture(folder: str) -> str:
    """The full-size architecture of a diffusers folder: SDXL has a second text encoder, SD2's
    OpenCLIP text encoder is the one with plain GELU."""
    import json
    import os

    if os.path.isdir(os.path.join(folder, "text_encoder_2")):
        return "sdxl"
    config = os.path.join(folder, "text_encoder", "config.json")
    if os.path.isfile(config):
        with open(config, encoding="utf-8") as handle:
            if json.load(handle).get("hidden_act") == "gelu":
                return "sd2"
    return "sd1"


@functools.lru_cache(maxsize=8)
def _meta_bundle(name: str):
    from .components import build_components
    from .diffusers_sd import DiffusersSDBundle

    return DiffusersSDBundle(build_components(name, device="meta", seed=None), model_name=name)
