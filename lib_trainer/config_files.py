"""Config files: reading a .toml or .json table of options (as written, sections kept) and
writing a config as flat TOML or JSON. Which tool wrote a file and how its names map onto
ours is config_import.py's business."""
from __future__ import annotations

import codecs
import json
import os
from dataclasses import fields
from typing import Any

from .config import ConfigError, TrainConfig


def load_config_data(path: str) -> dict[str, Any]:
    """The table in a .toml or .json file as written (sections kept); see config_import.py."""
    if not os.path.isfile(path):
        raise ConfigError(f"Config file {path} does not exist")
    text = _config_text(path)
    if path.lower().endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path} is not valid JSON: {error.msg} at line {error.lineno}, "
                              f"column {error.colno}") from error
    else:
        data = _read_toml(path, text)
    if not isinstance(data, dict):
        raise ConfigError(f"{path} holds a {type(data).__name__}; a config file holds a table of options "
                          "(key = value)")
    return data


def load_config_file(path: str) -> dict[str, Any]:
    """Flat key/values from a .toml or .json file; TOML sections (sd-scripts style) are flattened."""
    return flatten_sections(load_config_data(path))


def flatten_sections(data: dict[str, Any]) -> dict[str, Any]:
    """TOML sections (sd-scripts' [model_arguments] ...) merged into one flat dict."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    return flat


def _config_text(path: str) -> str:
    """The file as text: UTF-8, or UTF-16/32 with a byte-order mark (Windows' Notepad and
    PowerShell write those); anything else is refused with what to do."""
    with open(path, "rb") as handle:
        data = handle.read()
    for mark, encoding in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                           (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(mark):
            return data.decode(encoding)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path} is not UTF-8 text (byte {error.start} cannot be read): save it as UTF-8") from None


def _read_toml(path: str, text: str) -> dict[str, Any]:
    try:
        import tomllib  # Python 3.11+
    except ImportError:
        import tomli as tomllib  # Python 3.10
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path} is not valid TOML: {error}") from error


def config_to_toml(config: TrainConfig) -> str:
    """Flat TOML, grouped by UI section in comments; None values are left out (TOML has no null)."""
    lines, group = [], None
    for spec in fields(config):
        value = getattr(config, spec.name)
        if value is None:
            continue
        if spec.metadata["group"] != group:
            group = spec.metadata["group"]
            lines.append(f"\n# {group}")
        lines.append(f"{spec.name} = {_toml_value(value)}")
    return "\n".join(lines).lstrip() + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    # JSON string escapes are valid TOML basic strings; JSON leaves DEL raw, which TOML forbids.
    return json.dumps(str(value), ensure_ascii=False).replace("\x7f", "\\u007f")


def save_config(config: TrainConfig, path: str) -> None:
    from .fileio import write_text_atomic

    if path.lower().endswith(".json"):
        write_text_atomic(path, json.dumps(config.to_dict(), indent=2, ensure_ascii=False) + "\n")
    else:
        write_text_atomic(path, config_to_toml(config))
