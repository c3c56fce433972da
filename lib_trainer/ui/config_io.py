"""Config files in the UI: our TOML/JSON, sd-scripts TOML and kohya_ss GUI JSON.

Our files and sd-scripts' load through `load_config_file`. The kohya_ss GUI saves its
own JSON with a few other names (`epoch`, `max_resolution`, `LoRA_type`, `lr_warmup` in
percent, `xformers` as a string...); those are translated here. Keys that mean nothing
to this trainer are listed back to the user instead of failing the import; a known key
with a bad value is an error naming it.
"""
from __future__ import annotations

from typing import Any

from ..config import ConfigError, TrainConfig, coerce_values, field_specs, load_config_file, without_kohya_only_options


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
    return base.replace(**coerce_values(usable, path)), notes


def _is_number(spec) -> bool:
    return str(spec.type).split(" ")[0] in ("int", "float")
