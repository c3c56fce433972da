"""`python -m lib_trainer train`: train a LoRA from flags or a config file."""
from __future__ import annotations

import argparse
import signal
import sys

from ..cli_args import add_config_arguments, config_from_args
from ..config_files import save_config
from ..stop_signals import StopOnSignals, exit_status


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    # errors reach __main__.main, which prints a message (and a bug's traceback)
    config = config_from_args(args)
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
