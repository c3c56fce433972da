"""Reading a config file, whoever wrote it: this trainer, sd-scripts, lora-scripts or the
kohya_ss GUI. The CLI (`--config`), the standalone page (`ui --config`) and the UI's Load
config all read files here, so a file imports the same way everywhere.

- **Our files** (`--save-config`, Save config, or written by hand) are read strictly: a key
  that is not an option is an error naming the file and the key, with a "did you mean".
- **Other tools' files** hold many options this trainer has no use for (the kohya_ss GUI
  saves every field of its form). Those are listed back in the notes instead of failing the
  import; a known key with a bad value is still an error naming it.
  - sd-scripts' `--config_file` TOML and lora-scripts' TOML: sd-scripts' own names, often in
    sections (`[training_arguments]`), which are flattened; lora-scripts' GUI writes them
    flat with its `model_train_type`.
  - kohya_ss GUI JSON: a few other names (`epoch`, `max_resolution`, `LoRA_type`, `lr_warmup`
    in percent, `xformers` as a string, `noise_offset_type`, the sample prompts themselves
    instead of a file), translated here.
"""
from __future__ import annotations

import os
from typing import Any

from .config import ConfigError, TrainConfig, coerce_values, field_specs, without_kohya_only_options
from .config_files import flatten_sections, load_config_data
from .fileio import write_text_atomic

OURS, SD_SCRIPTS, LORA_SCRIPTS, KOHYA_SS_GUI = "lib_trainer", "sd-scripts", "lora-scripts", "kohya_ss GUI"

# Keys only sd-scripts' own flat files have (its --output_config writes every argument).
SD_SCRIPTS_KEYS = {"v2", "dataset_config", "output_config", "save_model_as", "max_data_loader_n_workers",
                   "persistent_data_loader_workers", "huggingface_repo_id", "log_with", "mem_eff_attn", "sdpa"}
# Keys only the kohya_ss GUI writes (every GUI config has several of them).
KOHYA_SS_GUI_KEYS = {"LoRA_type", "epoch", "max_resolution", "lr_warmup", "model_list", "save_model_as",
                     "lora_network_weights", "sdxl", "use_wandb", "optimizer"}


def _resolution(value: Any) -> dict[str, Any]:
    width, _, height = str(value).partition(",")
    same = not height.strip() or height.strip() == width.strip()
    return {"resolution": width.strip() if same else f"{width.strip()},{height.strip()}"}


def _network_type(value: Any) -> dict[str, Any]:
    """The GUI's LoRA_type. It saves conv_dim with every config, whatever the type, and passes it
    to sd-scripts only for the LoCon types: so "Standard" means no convolution LoRA."""
    text = str(value).lower()
    if "locon" in text:  # LoCon, Kohya LoCon, LyCORIS/LoCon: conv_dim / conv_alpha come with the file
        return {}
    if text in ("standard", "lora"):
        return {"conv_dim": 0}
    raise ConfigError(f"LoRA_type={value!r}: only Standard (LoRA) and LoCon can be trained here")


def _xformers(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        return {"xformers": value.strip().lower() in ("xformers", "true", "1")}
    return {"xformers": bool(value)}


def _noise_offset_type(value: Any) -> dict[str, Any]:
    """The GUI's noise_offset_type. It saves the fields of both kinds and passes sd-scripts only
    the chosen kind's: Original (noise_offset, its random strength, adaptive_noise_scale) or
    Multires (multires_noise_iterations and _discount); the other kind stays at its default."""
    if str(value).lower() == "multires":
        return {"noise_offset": 0.0, "noise_offset_random_strength": False, "adaptive_noise_scale": 0.0}
    return {"multires_noise_iterations": 0, "multires_noise_discount": 0.3}


# kohya_ss GUI name -> function(value) -> {our names: values}
KOHYA_SS_GUI_NAMES = {
    "epoch": lambda v: {"max_train_epochs": v},
    "max_resolution": _resolution,
    "optimizer": lambda v: {"optimizer_type": v},
    "lr_warmup": lambda v: {"lr_warmup_steps": float(v) / 100},  # the GUI's warm-up is a percentage
    "LoRA_type": _network_type,
    "xformers": _xformers,
    "noise_offset_type": _noise_offset_type,
}


def config_format(path: str, data: dict[str, Any]) -> str:
    """Which tool wrote the file, from its keys: OURS, SD_SCRIPTS, LORA_SCRIPTS or KOHYA_SS_GUI."""
    if "config_version" in data:
        return OURS
    if path.lower().endswith(".json") and KOHYA_SS_GUI_KEYS & set(data):
        return KOHYA_SS_GUI
    if "model_train_type" in data:
        return LORA_SCRIPTS
    if any(isinstance(value, dict) for value in data.values()) or SD_SCRIPTS_KEYS & set(data):
        return SD_SCRIPTS  # sections: sd-scripts' --config_file layout, also lora-scripts' older files
    return OURS


def read_config_file(path: str, base: TrainConfig) -> tuple[TrainConfig, list[str]]:
    """`base` with the file's values; returns (config, notes about what was not used)."""
    data = load_config_data(path)
    kind = config_format(path, data)
    values, notes = without_kohya_only_options(flatten_sections(data))
    if kind == OURS:
        config = base.replace(**coerce_values(values, path))
    else:
        config, unused = _foreign_config(values, path, base)
        notes += unused
    if path.lower().endswith(".json") and _holds_prompt_text(config.sample_prompts):
        config = _prompts_to_file(config)
        notes.append(f"sample_prompts: the kohya_ss GUI's prompts were written to {config.sample_prompts}")
    return config, notes


def _foreign_config(values: dict[str, Any], path: str, base: TrainConfig) -> tuple[TrainConfig, list[str]]:
    specs = field_specs()
    usable: dict[str, Any] = {}
    translated: dict[str, Any] = {}
    unused, notes = [], []
    for key, value in values.items():
        if value == "" and key in specs and "None" not in str(specs[key].type) and _is_number(specs[key]):
            continue  # the kohya_ss GUI writes "" for numbers left empty
        if key in KOHYA_SS_GUI_NAMES:
            translated.update(KOHYA_SS_GUI_NAMES[key](value))
        elif key in specs:
            usable[key] = "" if value is None and str(specs[key].type).startswith("str") else value
        else:
            unused.append(key)
    # The GUI's own names decide over the raw keys they stand for (LoRA_type over conv_dim),
    # whatever their order in the file.
    usable.update(translated)
    if unused:
        notes.append(f"not used here ({len(unused)}): " + ", ".join(sorted(unused)))
    return base.replace(**coerce_values(usable, path)), notes


def _holds_prompt_text(value: str) -> bool:
    """The kohya_ss GUI keeps the prompts themselves in sample_prompts; sd-scripts and we keep
    the path of a .txt file."""
    return bool(value.strip()) and ("\n" in value or not value.strip().lower().endswith(".txt"))


def _prompts_to_file(config: TrainConfig) -> TrainConfig:
    """Where the kohya_ss GUI itself writes them when it starts a run."""
    path = os.path.join(config.output_dir, "sample", "prompt.txt")
    write_text_atomic(path, config.sample_prompts.rstrip("\n") + "\n")
    return config.replace(sample_prompts=path)


def _is_number(spec) -> bool:
    return str(spec.type).split(" ")[0] in ("int", "float")
