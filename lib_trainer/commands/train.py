"""`python -m lib_trainer train`: train a LoRA from flags or a config file."""
from __future__ import annotations

import argparse
import os
import signal
import sys

from ..cli_args import add_config_arguments, config_from_args
from ..config_export import export_sd_scripts_toml
from ..config_files import save_config
from ..errors import InvalidInput
from ..stop_signals import StopOnSignals, exit_status


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--export-sd-scripts-toml", "--export_sd_scripts_toml", dest="export_sd_scripts",
                        default=None, metavar="FILE",
                        help="write the resulting config as an sd-scripts --config_file TOML (its argument names; "
                             "options it has not are listed in a comment) and exit")


def run(args: argparse.Namespace) -> int:
    # errors reach __main__.main, which prints a message (and a bug's traceback)
    target = None
    if getattr(args, "output_config", False) and args.config_file:
        # sd-scripts' --output_config: --config_file names the file to write, not one to read
        target = args.config_file if args.config_file.endswith(".toml") else args.config_file + ".toml"
        args.config_file = None
    config = config_from_args(args)
    if args.export_sd_scripts:
        notes = export_sd_scripts_toml(config.validate(), args.export_sd_scripts)
        print(f"sd-scripts config written to {args.export_sd_scripts}" + "".join(f"\nnote: {n}" for n in notes))
        return 0
    if config.output_config:
        return _output_config(config, target)
    if args.save_config:
        save_config(config.validate(), args.save_config)
        print(f"config written to {args.save_config}")
        return 0
    result, status = run_training(config)
    if result.final_path:
        print(result.final_path)
    else:
        print("stopped before the first step: nothing was trained", file=sys.stderr)
    return status


def _output_config(config, target: str | None) -> int:
    """output_config: write the resolved config and train nothing; like sd-scripts, an existing
    file is refused rather than replaced."""
    target = target or os.path.join(config.output_dir, f"{config.output_name}.toml")
    if os.path.exists(target):
        raise InvalidInput(f"output_config: {target} exists already; give --config_file a new file name "
                           "(an existing config is not replaced)")
    save_config(config.replace(output_config=False).validate(), target)
    print(f"config written to {target} (output_config: nothing trained)")
    return 0


def run_training(config, bundle=None):
    """Train with a terminal progress bar; returns (the TrainResult, the exit status). The first
    Ctrl-C, SIGTERM or SIGHUP (a closed terminal) stops after the current step and saves, and
    the status is then 128 + that signal (130 for Ctrl-C); a second Ctrl-C or SIGTERM aborts
    with `Aborted` (the loop still saves what was trained on its way out)."""
    from ..progress import Progress
    from ..terminal import TerminalSink
    from ..train.loop import train

    sinks = [TerminalSink()]
    if config.logging_dir:
        from ..train.tensorboard import TensorBoardSink

        sinks.append(TensorBoardSink(config.logging_dir, config.log_prefix))
    progress = Progress(sinks)
    stopper = StopOnSignals(progress.commands.request_stop, "stopping after this step and saving")
    try:
        with stopper:
            result = train(config, bundle=bundle, progress=progress)
    finally:
        for sink in sinks:
            if hasattr(sink, "close"):
                sink.close()
    if not result.stopped_early:
        return result, 0
    return result, exit_status(stopper.signum or signal.SIGINT)
