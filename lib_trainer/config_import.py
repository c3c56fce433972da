"""Reading a config file, whoever wrote it: this trainer, sd-scripts, lora-scripts or the
kohya_ss GUI. The CLI (`--config`), the standalone page (`ui --config`) and the UI's Load
config all read files here, so a file imports the same way everywhere.

- **Our files** (`--save-config`, Save config, or written by hand) are read strictly: a key
  that is not an option is an error naming the file and the key, with a "did you mean".
- **Other tools' files** hold many options this trainer has no use for (the kohya_ss GUI
  saves every field of its form). Those are listed back in the notes instead of failing the
  import, sorted into sd-scripts options not used here, options of sd-scripts' DiT / flow
  models (out of scope, with why) and keys sd-scripts does not know; a known key with a bad
  value is still an error naming it.
  - sd-scripts' `--config_file` TOML (also what the kohya_ss GUI writes for each run) and
    lora-scripts' TOML: sd-scripts' names, often in sections (`[training_arguments]`), which
    are flattened. A name maps onto the option of the same name, or the one whose `kohya=`
    metadata names it, so an option added with kohya's name imports by itself; the few
    other spellings are in FOREIGN_NAMES.
  - kohya_ss GUI JSON: its own names and units, translated first (config_import_gui.py).
"""
from __future__ import annotations

import argparse
import os
from typing import Any

from .config import TrainConfig, coerce_values, field_specs, without_kohya_only_options
from .config_files import flatten_sections, load_config_data
from .config_import_gui import parse_flags_with, translate
from .fileio import write_text_atomic
from .sd_scripts_args import OUT_OF_SCOPE, OUT_OF_SCOPE_WHY, sd_scripts_arguments

OURS, SD_SCRIPTS, LORA_SCRIPTS, KOHYA_SS_GUI = "lib_trainer", "sd-scripts", "lora-scripts", "kohya_ss GUI"

# Keys only the kohya_ss GUI writes (every GUI config has several of them).
KOHYA_SS_GUI_KEYS = {"LoRA_type", "epoch", "max_resolution", "lr_warmup", "model_list", "save_model_as",
                     "lora_network_weights", "sdxl", "use_wandb", "optimizer"}
# Other tools' spellings of our options, where they are not sd-scripts' current name.
FOREIGN_NAMES = {
    "lr_restart_cycles": "lr_scheduler_num_cycles",  # lora-scripts' older TOML (config/default.toml)
}


def config_format(path: str, data: dict[str, Any]) -> str:
    """Which tool wrote the file, from its keys: OURS, SD_SCRIPTS, LORA_SCRIPTS or KOHYA_SS_GUI."""
    if "config_version" in data:
        return OURS
    if path.lower().endswith(".json") and KOHYA_SS_GUI_KEYS & set(data):
        return KOHYA_SS_GUI
    if "model_train_type" in data:
        return LORA_SCRIPTS
    if any(isinstance(value, dict) for value in data.values()):
        return SD_SCRIPTS  # sections: sd-scripts' --config_file layout, also lora-scripts' older files
    # A flat file is sd-scripts' when it names an sd-scripts argument that is not ours; a file of
    # our names only is ours, read strictly, so a typo is an error.
    specs = field_specs()
    if any(key not in specs and (key in sd_scripts_arguments() or key in OUT_OF_SCOPE) for key in data):
        return SD_SCRIPTS
    return OURS


def read_config_file(path: str, base: TrainConfig) -> tuple[TrainConfig, list[str]]:
    """`base` with the file's values; returns (config, notes about what was not used)."""
    data = load_config_data(path)
    kind = config_format(path, data)
    values, notes = without_kohya_only_options(flatten_sections(data))
    if kind == OURS:
        config = base.replace(**coerce_values(values, path))
    else:
        if kind == KOHYA_SS_GUI:
            values, gui_notes = translate(values, parse_flags_with(_flag_parser))
            notes += gui_notes
            values, more = without_kohya_only_options(values)  # from additional_parameters too
            notes += more
        config, unused = _foreign_config(values, path, base)
        notes += unused
    if path.lower().endswith(".json") and _holds_prompt_text(config.sample_prompts):
        config = _prompts_to_file(config)
        notes.append(f"sample_prompts: the kohya_ss GUI's prompts were written to {config.sample_prompts}")
    return config, notes


def our_name(key: str) -> str | None:
    """The option an sd-scripts (or lora-scripts) key sets, or None."""
    specs = field_specs()
    if key in specs:
        return key
    for name, spec in specs.items():
        if spec.metadata.get("kohya") == key:
            return name
    return FOREIGN_NAMES.get(key)


def _foreign_config(values: dict[str, Any], path: str, base: TrainConfig) -> tuple[TrainConfig, list[str]]:
    specs = field_specs()
    usable: dict[str, Any] = {}
    unused: list[str] = []
    for key, value in values.items():
        name = our_name(key)
        if key == "dynamo_backend" and str(value).lower() == "no":
            continue  # accelerate's "no compiling", which is torch_compile's default here
        if name is None:
            unused.append(key)
            continue
        spec = specs[name]
        if value == "" and "None" not in str(spec.type) and _is_number(spec):
            continue  # the kohya_ss GUI writes "" for numbers left empty
        if isinstance(value, list) and _is_number(spec):
            # sd-scripts' text_encoder_lr is a list (one per text encoder); one rate is used here
            if len(set(value)) > 1:
                unused.append(f"{key} beyond its first value {value[0]} (one rate for every text encoder here)")
            value = value[0] if value else None
        usable[name] = "" if value is None and str(spec.type).startswith("str") else value
    return base.replace(**coerce_values(usable, path)), unused_notes(unused)


def unused_notes(keys: list[str]) -> list[str]:
    """What a file sets that is not used here, in three kinds."""
    out_of_scope = sorted(key for key in keys if key in OUT_OF_SCOPE)
    rest = sorted(key for key in keys if key not in OUT_OF_SCOPE)
    notes = []
    if rest:
        notes.append(f"not used here ({len(rest)}): " + ", ".join(rest))
    if out_of_scope:
        notes.append(f"out of scope here ({len(out_of_scope)}), {OUT_OF_SCOPE_WHY}: "
                     + "; ".join(f"{key} ({OUT_OF_SCOPE[key]})" for key in out_of_scope))
    return notes


def _flag_parser() -> argparse.ArgumentParser:
    from .cli_args import add_config_arguments  # cli_args imports this module

    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    add_config_arguments(parser)
    return parser


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
