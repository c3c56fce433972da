"""The LoRA axes in the WebUI's own X/Y/Z plot (scripts/xyz_grid.py, in 1.10 and Forge).

What each axis does to a cell is in compare/axes.py; here they become records of the loaded
xyz_grid module's own `AxisOption` class. They must be of that very class: its UI keeps the
options with `type(x) == AxisOption` (both tabs) or a matching img2img/txt2img subclass, and
selects them by index in that list, so ours are appended at its end before the script builds
its UI (`on_before_ui`, scripts/lora_xyz.py).

The module is found among the loaded scripts by its file name: 1.10 loads it under the name
"xyz_grid.py" without putting it in sys.modules, Forge puts it there, other forks may name it
otherwise. "Reload UI" loads it again (a fresh list, which gets the axes again); a list that
already has ours is left alone, so they are never there twice.

Nothing is cached: the file axis lists the Lora folder whenever its values are asked for, and
before a grid starts the WebUI's list of networks is refreshed for a name it does not know
yet, so the files of a run still going, or finished after start-up, are there without a restart.
"""
from __future__ import annotations

import inspect
import logging
import os
from typing import Callable

from ..compare.axes import (NONE, AxisError, apply_embedding_file, apply_file, apply_weight,
                            embedding_file_choices, file_choices, file_label, lora_tags, mark_file_axis,
                            parse_weights, weight_label)
from ..compare import hypernetwork_axes
from .lora_networks import lora_extension

log = logging.getLogger("lib_trainer")

XYZ_SCRIPT = "xyz_grid.py"
MARK = "lib_trainer_axis"          # set on each of our AxisOptions, to find them again
FILE_AXIS = "LoRA Train: LoRA file"
WEIGHT_AXES = {"weight": "LoRA Train: LoRA weight", "unet": "LoRA Train: UNet weight",
               "te": "LoRA Train: Text-encoder weight"}
# The grid draws the costliest axis outermost: files change least often, so each is read from
# disk once per row or column, not once per cell (a checkpoint, at 1.0, still goes first).
FILE_COST = 0.4
EMBEDDING_AXIS = "LoRA Train: Embedding file"
HYPERNETWORK_MARK = "lib_trainer_hypernetwork_axis"
HYPERNETWORK_FILE_AXIS = "LoRA Train: Hypernetwork file"
HYPERNETWORK_STRENGTH_AXIS = "LoRA Train: Hypernetwork strength"


def webui_lora_dir() -> str:
    """The folder the built-in Lora lists (`--lora-dir`): only its files load from `<lora:…>`."""
    from modules import paths_internal, shared  # on use: this module is imported by tests too

    return getattr(shared.cmd_opts, "lora_dir", "") or os.path.join(paths_internal.models_path, "Lora")


def webui_embeddings_dir() -> str:
    from modules import shared  # on use, as above

    return shared.cmd_opts.embeddings_dir


def xyz_module(scripts_data):
    """The loaded X/Y/Z plot module (from `modules.scripts.scripts_data`), or None."""
    for script in scripts_data:
        module = getattr(script, "module", None)
        if (os.path.basename(getattr(script, "path", "") or "") == XYZ_SCRIPT
                and hasattr(module, "AxisOption") and isinstance(getattr(module, "axis_options", None), list)):
            return module
    return None


def register_axes(scripts_data, folder: Callable[[], str]) -> int:
    """Append our axes to the X/Y/Z plot's `axis_options` unless they are there; how many were added."""
    module = xyz_module(scripts_data)
    if module is None:
        log.info("lib_trainer: the X/Y/Z plot script is not loaded, so its LoRA axes are not added")
        return 0
    if any(getattr(option, MARK, False) for option in module.axis_options):
        return 0
    options = build_axes(module.AxisOption, folder)
    module.axis_options.extend(options)
    return len(options)


def build_axes(axis_option: type, folder: Callable[[], str],
               embedding_folder: Callable[[], str] = webui_embeddings_dir) -> list:
    """The file axis, the three weight axes and the embedding file axis as `axis_option`
    records; `folder` gives the Lora folder each time it is read, `embedding_folder` the
    embeddings folder."""
    # `prepare` (the values' own parser) came with WebUI 1.6; without it the script's float
    # ranges are used, which can add one step past the end.
    has_prepare = "prepare" in inspect.signature(axis_option).parameters
    options = [axis_option(
        FILE_AXIS, str, lambda p, x, xs: apply_file(p, x),
        format_value=lambda p, opt, x: file_label(folder(), x),
        confirm=lambda p, xs: confirm_files(p, xs, folder()), cost=FILE_COST,
        choices=lambda: file_choices(folder()))]
    for part in WEIGHT_AXES:
        extra = {"prepare": weight_values} if has_prepare else {}
        options.append(axis_option(
            WEIGHT_AXES[part], float, _weight_apply(part), format_value=_weight_format(part),
            confirm=confirm_weights, **extra))
    options.append(axis_option(
        EMBEDDING_AXIS, str, lambda p, x, xs: apply_embedding_file(p, x), cost=FILE_COST,
        choices=lambda: embedding_file_choices(embedding_folder())))
    for option in options:
        setattr(option, MARK, True)
    return options


def _weight_apply(part: str):
    return lambda p, x, xs: apply_weight(p, x, part)


def _weight_format(part: str):
    return lambda p, opt, x: weight_label(part, x)


def weight_values(text: str) -> list[str]:
    """Our parse of a weight axis' text, handed back as plain decimals for the script to turn
    into floats (never `1e-05`, which its range pattern would misread)."""
    return [f"{weight:.8f}".rstrip("0").rstrip(".") for weight in parse_weights(text)]


def confirm_files(p, names, folder: str) -> None:
    """Before any cell: mark the grid as having a file axis, and check every file loads from
    `<lora:name>`."""
    mark_file_axis(p)
    wanted = [name for name in names if name != NONE]
    missing = unknown_networks(wanted, folder)
    if missing:
        raise AxisError(f"no LoRA file {', '.join(missing)} in the Lora folder {folder}")


def confirm_weights(p, values) -> None:
    """Before any cell: the WebUI learns of a file the prompt names that appeared since it
    listed its networks (a weight grid over a file saved a moment ago)."""
    prompt = getattr(p, "prompt", "")
    if isinstance(prompt, str):
        unknown_networks([tag.name for tag in lora_tags(prompt)], None)


def unknown_networks(names: list[str], folder: str | None) -> list[str]:
    """The names the built-in Lora cannot find, after refreshing its list for any it did not
    know. Without the Lora extension loaded, the names not in `folder` (when given)."""
    networks = lora_extension()
    if networks is None:
        present = set(file_choices(folder)) if folder else set(names)
        return [name for name in names if name not in present]

    def missing():
        known = {**getattr(networks, "available_network_aliases", {}), **getattr(networks, "available_networks", {})}
        return [name for name in names if name not in known]

    if missing() and hasattr(networks, "list_available_networks"):
        networks.list_available_networks()
    return missing()


# --- the hypernetwork axes (compare/hypernetwork_axes.py) -------------------------------------------

def webui_hypernetwork_dir() -> str:
    """The folder the WebUI lists hypernetworks from (`--hypernetwork-dir`)."""
    from modules import paths_internal, shared

    return getattr(shared.cmd_opts, "hypernetwork_dir", "") or os.path.join(paths_internal.models_path,
                                                                            "hypernetworks")


def register_hypernetwork_axes(scripts_data, folder: Callable[[], str]) -> int:
    """Append the Hypernetwork file and strength axes unless they are there; how many were added."""
    module = xyz_module(scripts_data)
    if module is None or any(getattr(option, HYPERNETWORK_MARK, False) for option in module.axis_options):
        return 0
    options = build_hypernetwork_axes(module.AxisOption, folder)
    module.axis_options.extend(options)
    return len(options)


def build_hypernetwork_axes(axis_option: type, folder: Callable[[], str]) -> list:
    has_prepare = "prepare" in inspect.signature(axis_option).parameters
    extra = {"prepare": weight_values} if has_prepare else {}
    options = [
        axis_option(HYPERNETWORK_FILE_AXIS, str, lambda p, x, xs: hypernetwork_axes.apply_file(p, x),
                    format_value=lambda p, opt, x: file_label(folder(), x),
                    confirm=lambda p, xs: confirm_hypernetwork_files(p, xs, folder()), cost=FILE_COST,
                    choices=lambda: hypernetwork_axes.file_choices(folder())),
        axis_option(HYPERNETWORK_STRENGTH_AXIS, float, lambda p, x, xs: hypernetwork_axes.apply_strength(p, x),
                    format_value=lambda p, opt, x: hypernetwork_axes.strength_label(x),
                    confirm=lambda p, xs: unknown_hypernetworks(hypernetwork_axes.hypernetwork_names(
                        getattr(p, "prompt", "") or "")), **extra)]
    for option in options:
        setattr(option, HYPERNETWORK_MARK, True)
    return options


def confirm_hypernetwork_files(p, names, folder: str) -> None:
    hypernetwork_axes.mark_file_axis(p)
    missing = unknown_hypernetworks([name for name in names if name != NONE])
    if missing:
        raise AxisError(f"no hypernetwork {', '.join(missing)} in the hypernetworks folder {folder}")


def unknown_hypernetworks(names: list[str]) -> list[str]:
    """The names the WebUI's list of hypernetworks lacks, after reloading it for any it did not know."""
    from modules import shared

    if any(name not in shared.hypernetworks for name in names):
        shared.reload_hypernetworks()
    return [name for name in names if name not in shared.hypernetworks]
