"""The kohya_ss GUI's saved JSON, translated into sd-scripts' argument names the way the GUI
itself translates its form when it starts a run (kohya_gui/lora_gui.py, `train_model`).

The GUI saves every field of its form under its own names and in its own units; most are
sd-scripts' names already, and config_import.py maps those. The special cases are here, as
tables: `LoRA_type` (the network module and its network_args), `epoch` and `lr_warmup`
(a percentage), fields where the GUI writes 0 for "off" and passes nothing to sd-scripts,
the learning rates that decide which parts train, `noise_offset_type`, option strings
(`optimizer_args`, `additional_parameters`) and `max_resolution`, `optimizer`, `xformers`.
"""
from __future__ import annotations

import shlex
from dataclasses import fields
from typing import Any

from .config import ConfigError, TrainConfig

# The GUI's model switches for scripts of other model families: none of them is SD1/SD2/SDXL.
OTHER_MODEL_SWITCHES = {"flux1_checkbox": "FLUX.1", "sd3_checkbox": "SD3", "hunyuan_image_checkbox": "HunyuanImage",
                        "anima_checkbox": "Anima", "lumina_checkbox": "Lumina"}

# Fields the GUI writes as 0 when they are off, and then leaves out of sd-scripts' arguments.
ZERO_IS_OFF = {"max_train_epochs", "max_train_steps", "min_snr_gamma", "ip_noise_gamma", "min_timestep",
               "max_timestep", "multires_noise_iterations", "sample_every_n_epochs", "sample_every_n_steps",
               "save_every_n_epochs", "save_every_n_steps", "save_last_n_epochs", "save_last_n_epochs_state",
               "save_last_n_steps", "save_last_n_steps_state", "seed", "clip_skip", "v_pred_like_loss",
               "vae_batch_size", "stop_text_encoder_training", "adaptive_noise_scale", "noise_offset"}

# LoRA_type -> (network_module, LyCORIS algo or None, whether conv_dim/conv_alpha are passed,
# the GUI fields passed as network_args: GUI name -> network_args key).
_LYCORIS = {"LyCORIS_preset": "preset", "use_tucker": "use_tucker", "train_norm": "train_norm",
            "rank_dropout_scale": "rank_dropout_scale"}
_LYCORIS_LORA = {**_LYCORIS, "dora_wd": "dora_wd", "bypass_mode": "bypass_mode", "use_scalar": "use_scalar"}
LORA_TYPES: dict[str, tuple[str, str | None, bool, dict[str, str]]] = {
    "Standard": ("networks.lora", None, False, {}),
    "Kohya LoCon": ("networks.lora", None, True, {}),
    "LoCon": ("lycoris.kohya", "locon", True, _LYCORIS_LORA),
    "LyCORIS/LoCon": ("lycoris.kohya", "locon", True, _LYCORIS_LORA),
    "LyCORIS/LoHa": ("lycoris.kohya", "loha", True, _LYCORIS_LORA),
    "LyCORIS/LoKr": ("lycoris.kohya", "lokr", True, {**_LYCORIS_LORA, "factor": "factor", "use_cp": "use_cp",
                                                     "decompose_both": "decompose_both"}),
    "LyCORIS/iA3": ("lycoris.kohya", "ia3", True, {"LyCORIS_preset": "preset", "train_on_input": "train_on_input"}),
    "LyCORIS/Native Fine-Tuning": ("lycoris.kohya", "full", False, {"LyCORIS_preset": "preset",
                                                                    "train_norm": "train_norm",
                                                                    "rank_dropout_scale": "rank_dropout_scale"}),
    "LyCORIS/Diag-OFT": ("lycoris.kohya", "diag-oft", True, {**_LYCORIS, "constrain": "constraint",
                                                             "rescaled": "rescaled"}),
    "LyCORIS/BOFT": ("lycoris.kohya", "boft", True, _LYCORIS),
    "Kohya LoHa": ("networks.loha", None, True, {"use_tucker": "use_tucker"}),
    "Kohya LoKr": ("networks.lokr", None, True, {"use_tucker": "use_tucker", "factor": "factor"}),
}
REFUSED_TYPES = {
    "LyCORIS/DyLoRA": "DyLoRA (a rank chosen anew at each step) is not trained here",
    "Kohya DyLoRA": "DyLoRA (a rank chosen anew at each step) is not trained here",
    "LyCORIS/GLoRA": "GLoRA is not trained here",
    "LoRA-FA": "LoRA-FA (networks.lora_fa) is not trained here",
}
# Every GUI field that only feeds a LoRA type's network_args: consumed with LoRA_type.
_TYPE_FIELDS = {"LyCORIS_preset", "use_tucker", "train_norm", "rank_dropout_scale", "dora_wd", "bypass_mode",
                "use_scalar", "factor", "use_cp", "decompose_both", "train_on_input", "constrain", "rescaled", "unit"}
# Passed as network_args by the GUI when set: block weights (Standard, Kohya LoCon) and LoRA+ (all).
_BLOCK_ARGS = ("down_lr_weight", "mid_lr_weight", "up_lr_weight", "block_lr_zero_threshold", "block_dims",
               "block_alphas", "conv_block_dims", "conv_block_alphas")
_LORAPLUS_ARGS = ("loraplus_lr_ratio", "loraplus_unet_lr_ratio", "loraplus_text_encoder_lr_ratio")
# LyCORIS' own defaults: an argument at its default is left out, as if not typed.
_ARG_DEFAULTS = {"preset": "full", "factor": "-1", "constraint": "0"}


def translate(values: dict[str, Any], parse_flags) -> tuple[dict[str, Any], list[str]]:
    """The GUI's fields as sd-scripts' names; `parse_flags(text)` -> ({name: value}, unused words)
    reads additional_parameters as our command line does. Returns (values, notes)."""
    for switch, family in OTHER_MODEL_SWITCHES.items():
        if _truthy(values.get(switch)):
            raise ConfigError(f"{switch} is on: this kohya_ss GUI config trains {family}, which is out of scope "
                              "here (SD1, SD2 and SDXL only)")
    v = {key: value for key, value in values.items() if key not in OTHER_MODEL_SWITCHES}
    defaults, notes = TrainConfig(), []
    for key in ZERO_IS_OFF & set(v):
        if _number(v[key]) == 0:
            if hasattr(defaults, key):
                v[key] = getattr(defaults, key)  # off, in our terms
            else:
                del v[key]  # off, and the GUI passes nothing: nothing to import
    _length(v)
    _warmup(v)
    _network_type(v)
    _learning_rates(v)
    _noise_offset_type(v, defaults)
    for key in ("optimizer_args", "lr_scheduler_args"):
        if isinstance(v.get(key), str):  # the GUI drops quotes and splits on spaces
            v[key] = v[key].replace('"', "").split()
    if "max_resolution" in v:
        v["resolution"] = _resolution(v.pop("max_resolution"))
    if "optimizer" in v:
        v["optimizer_type"] = v.pop("optimizer")
    if str(v.get("dynamo_backend", "no")).lower() not in ("no", ""):
        v.setdefault("torch_compile", True)  # the GUI hands it to accelerate, which then compiles
    if isinstance(v.get("xformers"), str):  # "xformers", "sdpa" (always used here) or "none"
        v["xformers"] = v["xformers"].strip().lower() in ("xformers", "true", "1")
    extra = str(v.pop("additional_parameters", "") or "").strip()
    if extra:  # appended to the GUI's command line, so they win over the form
        given, unused = parse_flags(extra)
        v.update(given)
        if unused:
            notes.append("additional_parameters not used here: " + " ".join(unused))
    return v, notes


def parse_flags_with(parser_factory):
    """A parse_flags for `translate` over an argparse parser of our flags."""
    def parse(text: str) -> tuple[dict[str, Any], list[str]]:
        known, unused = parser_factory().parse_known_args(shlex.split(text.replace('"', "")))
        names = {spec.name for spec in fields(TrainConfig)}
        return {key: value for key, value in vars(known).items() if key in names}, unused
    return parse


def _length(v: dict[str, Any]) -> None:
    """`epoch` counts only when neither max_train_epochs nor max_train_steps is set: the GUI then
    computes max_train_steps from it (which is `epoch` epochs of the dataset)."""
    epoch = v.pop("epoch", None)
    if not _number(v.get("max_train_epochs")) and not _number(v.get("max_train_steps")) and _number(epoch):
        v["max_train_epochs"] = int(_number(epoch))


def _warmup(v: dict[str, Any]) -> None:
    """`lr_warmup` is a percentage of the steps, used when lr_warmup_steps is not above 0."""
    percent = _number(v.pop("lr_warmup", None))
    if percent and not _number(v.get("lr_warmup_steps")):
        v["lr_warmup_steps"] = percent / 100


def _network_type(v: dict[str, Any]) -> None:
    kind = v.pop("LoRA_type", None)
    fields_ = {key: v.pop(key) for key in list(v) if key in _TYPE_FIELDS}
    if kind is None:
        return
    kind = str(kind)
    if kind in REFUSED_TYPES:
        raise ConfigError(f"LoRA_type={kind!r}: {REFUSED_TYPES[kind]}; choose Standard, LoCon, LoHa, LoKr, iA3, "
                          "Native Fine-Tuning, Diag-OFT or BOFT")
    if kind not in LORA_TYPES:
        raise ConfigError(f"LoRA_type={kind!r} is out of scope here (SD1, SD2 and SDXL LoRA types only: "
                          f"{', '.join(LORA_TYPES)})")
    module, algo, passes_conv, arg_fields = LORA_TYPES[kind]
    args = [f"algo={algo}"] if algo else []
    for gui_name, key in arg_fields.items():
        text = _arg_text(fields_.get(gui_name))
        if text is not None and text != _ARG_DEFAULTS.get(key, "False"):
            args.append(f"{key}={text}")
    for key in (*(_BLOCK_ARGS if module == "networks.lora" else ()), *_LORAPLUS_ARGS):
        text = _arg_text(v.pop(key, None))
        if text not in (None, "", "0", "0.0"):
            args.append(f"{key}={text}")
    existing = v.get("network_args") or []
    v["network_args"] = args + (existing.split() if isinstance(existing, str) else list(existing))
    v["network_module"] = module
    if not passes_conv:
        v["conv_dim"] = 0  # the GUI saves conv_dim with every type, and passes it only to these


def _learning_rates(v: dict[str, Any]) -> None:
    """0 means "not set" (learning_rate is used); a 0 for one part with the other set trains only
    the other part, as the GUI's train flags do."""
    unet, text = _number(v.get("unet_lr")), _number(v.get("text_encoder_lr"))
    if unet == 0 and "unet_lr" in v:
        v["unet_lr"] = None
    if text == 0 and "text_encoder_lr" in v:
        v["text_encoder_lr"] = None
    if text == 0 and unet:
        v["network_train_unet_only"] = True
    elif unet == 0 and text:
        v["network_train_text_encoder_only"] = True


def _noise_offset_type(v: dict[str, Any], defaults: TrainConfig) -> None:
    """Only the chosen kind of noise offset reaches sd-scripts; the other's fields are off."""
    kind = v.pop("noise_offset_type", None)
    if kind is None:
        return
    off = ("multires_noise_iterations", "multires_noise_discount") if kind == "Original" else \
        ("noise_offset", "adaptive_noise_scale", "noise_offset_random_strength")
    for key in off:
        if key in v:
            if hasattr(defaults, key):
                v[key] = getattr(defaults, key)
            else:
                del v[key]


def _resolution(value: Any) -> str:
    width, _, height = str(value).partition(",")
    same = not height.strip() or height.strip() == width.strip()
    return width.strip() if same else f"{width.strip()},{height.strip()}"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _truthy(value: Any) -> bool:
    return value is True or str(value).strip().lower() in ("true", "1")


def _arg_text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
