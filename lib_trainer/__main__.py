"""`python -m lib_trainer <command>`: the command-line entry point.

Each sub-command lives in its own module with `add_arguments(parser)` and `run(args)`;
modules are imported only when their command runs, so `--help` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import signal
import sys
import traceback

# name -> (module, one-line help)
COMMANDS = {
    "demo": ("lib_trainer.commands.demo", "draw the demo dataset and train a LoRA on the tiny model"),
    "train": ("lib_trainer.commands.train", "train a LoRA (kohya-style flags or --config file)"),
    "bench": ("lib_trainer.commands.bench", "seconds per step and peak memory, against a bare forward+backward"),
    "preprocess": ("lib_trainer.commands.preprocess", "focal-point crop, resize, split and flip a folder of pictures"),
    "tag": ("lib_trainer.commands.tag", "caption pictures with a WD14, deepbooru or BLIP tagger"),
    "tags": ("lib_trainer.commands.tags", "batch edit the tags in a folder's caption files"),
    "doctor": ("lib_trainer.commands.doctor", "check a dataset folder before training, and plan its steps"),
    "compare": ("lib_trainer.commands.compare", "a run's saved files x weights in one labelled image grid"),
    "ui": ("lib_trainer.commands.ui", "the LoRA Train page in the browser (train, queue, dataset, tags)"),
    "options": ("lib_trainer.commands.options", "every training option: default, sd-scripts' name, where ours differs"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lib_trainer", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    subparsers = parser.add_subparsers(dest="command", metavar="command")
    for name, (module_name, summary) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=summary, description=summary)
        sub.set_defaults(_module=module_name)
    return parser


DEBUG_HELP = "also print the traceback of errors that have a message (unexpected errors always print theirs)"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = False
    while argv and argv[0] == "--debug":  # `python -m lib_trainer --debug <command> ...`
        debug = True
        argv.pop(0)
    parser = build_parser()
    if not argv or argv[0] not in COMMANDS:
        parser.parse_args(argv or ["--help"])
        return 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    sub = argparse.ArgumentParser(prog=f"python -m lib_trainer {argv[0]}", description=COMMANDS[argv[0]][1])
    module.add_arguments(sub)
    # `preprocess --debug` is its own option (focal-point views); the others take it after the
    # command too
    own_debug = any("--debug" in action.option_strings for action in sub._actions)
    if not own_debug:
        sub.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    args = sub.parse_args(argv[1:])
    debug = debug or (not own_debug and args.debug)
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt as interrupt:
        # A second stop signal (stop_signals.Aborted) or a Ctrl-C where nothing handles it:
        # a message, no traceback, and the shell's status for the signal.
        from .stop_signals import say

        signum = getattr(interrupt, "signum", signal.SIGINT)
        say(f"\naborted ({signal.Signals(signum).name})")
        return 128 + signum
    except Exception as error:  # noqa: BLE001 - every error ends as a message; bugs also with their traceback
        return report_error(error, debug)


def report_error(error: BaseException, debug: bool = False) -> int:
    """Print an error for the person at the terminal; returns the exit status (1).

    An expected error (errors.UserError, a file system error) is its message alone, which says
    what to change; with --debug its traceback comes first. Anything else is a bug, and its
    traceback is printed for the report."""
    from .errors import is_expected, user_message

    if debug or not is_expected(error):
        traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
    print(f"error: {user_message(error)}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    from .allocator import restart_with_tcmalloc

    restart_with_tcmalloc(sys.argv[1:])  # before torch is imported: see allocator.py
    sys.exit(main())
