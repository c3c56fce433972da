"""`python -m lib_trainer <command>`: the command-line entry point.

Each sub-command lives in its own module with `add_arguments(parser)` and `run(args)`;
modules are imported only when their command runs, so `--help` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS = {
    "demo": ("lib_trainer.commands.demo", "draw the demo dataset and train a LoRA on the tiny model"),
    "train": ("lib_trainer.commands.train", "train a LoRA (kohya-style flags or --config file)"),
    "bench": ("lib_trainer.commands.bench", "seconds per step and peak memory, against a bare forward+backward"),
    "preprocess": ("lib_trainer.commands.preprocess", "focal-point crop, resize, split and flip a folder of pictures"),
    "tag": ("lib_trainer.commands.tag", "caption pictures with a WD14, deepbooru or BLIP tagger"),
    "tags": ("lib_trainer.commands.tags", "batch edit the tags in a folder's caption files"),
    "ui": ("lib_trainer.commands.ui", "the LoRA Train page in the browser (train, queue, dataset, tags)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lib_trainer", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", metavar="command")
    for name, (module_name, summary) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=summary, description=summary)
        sub.set_defaults(_module=module_name)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] not in COMMANDS:
        parser.parse_args(argv or ["--help"])
        return 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    sub = argparse.ArgumentParser(prog=f"python -m lib_trainer {argv[0]}", description=COMMANDS[argv[0]][1])
    module.add_arguments(sub)
    return int(module.run(sub.parse_args(argv[1:])) or 0)


if __name__ == "__main__":
    sys.exit(main())
