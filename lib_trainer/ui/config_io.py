"""Config files in the UI: our TOML/JSON, sd-scripts TOML and kohya_ss GUI JSON.

Our files and sd-scripts' load through `load_config_file`. The kohya_ss GUI saves its
own JSON with a few other names (`epoch`, `max_resolution`, `LoRA_type`, `lr_warmup` in
percent, `xformers` as a string, the sample prompts themselves instead of a file...); those
are translated here. Keys that mean nothing
to this trainer are listed back to the user instead of failing the import; a known key
with a bad value is an error naming it.
"""
from __future__ import annotations

import os
from typing import Any

from ..config import ConfigError, TrainConfig, coerce_values, field_specs, load_config_file, without_kohya_only_options
from ..fileio import write_text_atomic


def _resolution(value: Any) -> str:
    width, _, height = str(value).partition(",")
    return width.strip() if not height.strip() or height.strip() == width.strip() else f"{width.strip()},{height.strip()}"


def _network_type(value: Any) -> dict[str, Any]:
    text = str(value).lower()
    if "locon" in text:
        return {}  # conv_dim / conv_alpha come with the file
    if text in ("standard", "lora"):
        return {"conv_dim": 0}
    raise ConfigError(f"LoRA_type={value!r}: only Standard (LoRA) and LoCon can be trained here")


def _xformers(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        return {"xformers": value.strip().lower() in ("xformers", "true", "1")}
    return {"xformers": bool(value)}


# kohya_ss GUI name -> function(value) -> {our names: values}
KOHYA_GUI_NAMES = {
    "epoch": lambda v: {"max_train_epochs": v},
    "max_resolution": lambda v: {"resolution": _resolution(v)},
    "optimizer": lambda v: {"optimizer_type": v},
    "lr_warmup": lambda v: {"lr_warmup_steps": float(v) / 100},  # the GUI's warm-up is a percentage
    "LoRA_type": _network_type,
    "xformers": _xformers,
}


def read_config_file(path: str, base: TrainConfig) -> tuple[TrainConfig, list[str]]:
    """`base` with the file's values; returns (config, notes about what was not used)."""
    values, notes = without_kohya_only_options(load_config_file(path))
    specs = field_specs()
    usable: dict[str, Any] = {}
    unused = []
    for key, value in values.items():
        if value == "" and key in specs and "None" not in str(specs[key].type) and _is_number(specs[key]):
            continue  # the kohya_ss GUI writes "" for numbers left empty
        if key in KOHYA_GUI_NAMES:
            usable.update(KOHYA_GUI_NAMES[key](value))
        elif key in specs:
            usable[key] = "" if value is None and str(specs[key].type).startswith("str") else value
        else:
            unused.append(key)
    if unused:
        notes.append(f"not used here ({len(unused)}): " + ", ".join(sorted(unused)))
    config = base.replace(**coerce_values(usable, path))
    if path.lower().endswith(".json") and _holds_prompt_text(config.sample_prompts):
        config = _prompts_to_file(config)
        notes.append(f"sample_prompts: the kohya_ss GUI's prompts were written to {config.sample_prompts}")
    return config, notes


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
