"""Command-line flags derived from TrainConfig, with kohya's names (`--network_dim 16`).

Precedence: defaults < `--config` file < flags given on the command line.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from .config import TrainConfig
from .config_import import read_config_file


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "--config_file", dest="config_file", default=None,
                        help="TOML or JSON config file (ours, sd-scripts, lora-scripts or kohya_ss GUI); flags override it")
    parser.add_argument("--save-config", "--save_config", dest="save_config", default=None,
                        help="write the resulting config to this file and exit")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for spec in fields(TrainConfig):
        meta = spec.metadata
        if meta["group"] == "meta":
            continue
        group = groups.setdefault(meta["group"], parser.add_argument_group(meta["group"]))
        kind = str(spec.type)
        default_text = f" (default: {spec.default!r})" if not kind.startswith("list") else ""
        arguments = dict(dest=spec.name, default=argparse.SUPPRESS, help=meta["help"] + default_text)
        # Other tools' names for the same option (the WebUI's --init_text for init_word; sd-scripts'
        # own name where it differs, kohya=).
        kohya = (f"--{meta['kohya']}",) if meta.get("kohya") and meta["kohya"] != spec.name else ()
        names = (f"--{spec.name}", *meta.get("aliases", ()), *kohya)
        if kind.startswith("bool"):
            group.add_argument(*names, action=argparse.BooleanOptionalAction, **arguments)
        elif kind.startswith("list"):
            group.add_argument(*names, nargs="*", metavar="KEY=VALUE", **arguments)
        else:
            if meta.get("choices") and not meta.get("open_choices"):  # open: checked by problems()
                arguments["choices"] = meta["choices"]
            arguments["type"] = {"int": int, "float": float}.get(kind.split(" ")[0], str)
            group.add_argument(*names, **arguments)


def config_from_args(args: argparse.Namespace, base: TrainConfig | None = None) -> TrainConfig:
    config = base or TrainConfig()
    if getattr(args, "config_file", None):
        # the same importer as the UI's Load config: ours, sd-scripts, lora-scripts, kohya_ss GUI
        config, notes = read_config_file(args.config_file, config)
        for note in notes:
            print(f"note: {args.config_file}: {note}", file=sys.stderr)
    given = {spec.name: getattr(args, spec.name) for spec in fields(TrainConfig) if hasattr(args, spec.name)}
    return config.replace(**given)
