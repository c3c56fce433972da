"""Writing a config as an sd-scripts `--config_file` TOML, for train_network.py or
sdxl_train_network.py.

sd-scripts reads such a file flat (sections merged), puts each key on its argument
namespace under the same name, and lets the command line override it; the values are taken
as written, not parsed again. So each value is written in the type of sd-scripts' argument
(sd_scripts_args.txt), and an option is left out where sd-scripts has no value for "off":
a count of 0 (its counts use None, and some divide by them), False for a flag, an empty
text. Options sd-scripts does not have are left out and listed in a comment at the top, and
LoRA settings sd-scripts takes inside network_args (conv_dim, ...) are written there.
"""
from __future__ import annotations

import dataclasses
from dataclasses import fields
from typing import Any

from .config import TrainConfig
from .config_files import _toml_value
from .errors import InvalidInput
from .fileio import write_text_atomic
from .sd_scripts_args import sd_scripts_arguments
from .train.auto_precision import with_resolved_precision

# Our fields that sd-scripts takes as network_args key=value (networks/lora.py, lycoris.kohya).
NETWORK_ARGS_FIELDS = ("conv_dim", "conv_alpha", "rank_dropout", "module_dropout")
# sd-scripts names that mean something else here, so they are not exported: why.
NOT_EXPORTED = {
    "resume": "our run states are not accelerate's state folders",
    "output_config": "it would make sd-scripts write a config and exit",
}
# What to do in sd-scripts instead, for our options that users miss there.
HINTS = {"trigger_word": "in sd-scripts: caption_prefix, with keep_tokens at least 1"}
# Where our value means sd-scripts' "not given" although it is not 0, False or empty.
KOHYA_UNSET = {"max_token_length": 75}
# Counts where 0 is a real value (elsewhere a 0 count is "not given").
ZERO_IS_A_VALUE = {"seed"}


def kohya_name(spec: dataclasses.Field) -> str:
    return spec.metadata.get("kohya") or spec.name


def export_values(config: TrainConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """(sd-scripts' values by its names, our own options that differ from their default)."""
    if config.network_module in ("embedding", "hypernetwork") or config.pivotal_tuning:
        raise InvalidInput("the sd-scripts export writes a train_network.py config, for LoRA-family networks: "
                           f"network_module={config.network_module}"
                           + (" with pivotal_tuning" if config.pivotal_tuning else "") + " is not one")
    arguments, defaults = sd_scripts_arguments(), TrainConfig()
    # sd-scripts has no "auto": it gets what auto means on this machine.
    config = with_resolved_precision(config)
    exported: dict[str, Any] = {}
    ours: dict[str, Any] = {}
    network_args = list(config.network_args)
    for spec in fields(config):
        value, name = getattr(config, spec.name), kohya_name(spec)
        if spec.name in NETWORK_ARGS_FIELDS:
            if value and value != getattr(defaults, spec.name) and not _names_arg(network_args, spec.name):
                network_args.append(f"{spec.name}={value:g}")
            continue
        argument = arguments.get(name)
        if argument is None or not argument.for_networks or spec.name in NOT_EXPORTED:
            if value != getattr(defaults, spec.name) and spec.metadata["group"] != "meta":
                ours[spec.name] = value
            continue
        if spec.name == "network_args":
            continue
        converted = _as_kind(value, argument.kind, spec.name)
        if converted is not None:
            exported[name] = converted
    if network_args:
        exported["network_args"] = network_args
    return dict(sorted(exported.items())), ours


def _names_arg(args: list[str], key: str) -> bool:
    return any(arg.split("=", 1)[0].strip() == key for arg in args)


def _as_kind(value: Any, kind: str, name: str) -> Any:
    """`value` in the type sd-scripts' argument holds, or None where it means "not given"."""
    if value is None or value == "" or value == [] or value == KOHYA_UNSET.get(name, object()):
        return None
    if kind == "flag":
        return True if value else None
    if kind.endswith("*"):
        items = value if isinstance(value, list) else [value]
        return [_as_kind(item, kind[:-1], name) for item in items]
    if kind == "int":
        return int(value) if value or name in ZERO_IS_A_VALUE else None
    if kind == "int_or_float":  # sd-scripts reads a float as a fraction of the steps, an int as steps
        return int(value) if float(value) >= 1 or value == 0 else float(value)
    if kind == "float":
        return float(value)
    return str(value)


def sd_scripts_toml(config: TrainConfig) -> tuple[str, list[str]]:
    """The TOML text, and notes on what was left out."""
    exported, ours = export_values(config)
    header = ["# sd-scripts --config_file for train_network.py (SD1/SD2) or sdxl_train_network.py (SDXL),",
              "# written by lib_trainer: python train_network.py --config_file this.toml"]
    notes = []
    if "cache_text_encoder_outputs" in exported:
        header.append("# cache_text_encoder_outputs is an sdxl_train_network.py option.")
    if ours:
        header.append("# Left out: options of lib_trainer that sd-scripts does not have, as this run sets them:")
        header += [f"#   {name} = {_toml_value(value)}" + (f"  ({HINTS[name]})" if name in HINTS else "")
                   for name, value in ours.items()]
        notes.append(f"left out ({len(ours)}), sd-scripts has no such option: " + ", ".join(ours))
    body = [f"{name} = {_toml_value(value)}" for name, value in exported.items()]
    return "\n".join(header + [""] + body) + "\n", notes


def export_sd_scripts_toml(config: TrainConfig, path: str) -> list[str]:
    """Write the file; returns the notes (options left out)."""
    text, notes = sd_scripts_toml(config)
    write_text_atomic(path, text)
    return notes
