"""`python -m lib_trainer train`: train a LoRA from flags or a config file."""
from __future__ import annotations

import argparse
import signal
import sys

from ..cli_args import add_config_arguments, config_from_args
from ..config import save_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    # errors reach __main__.main, which prints a message (and a bug's traceback)
    config = config_from_args(args)
    if args.save_config:
        save_config(config.validate(), args.save_config)
        print(f"config written to {args.save_config}")
        return 0
    result = run_training(config)
    if result.final_path:  # None when stopped before the first step: nothing was written
        print(result.final_path)
    return 0 if not result.stopped_early else 130


def run_training(config, bundle=None):
    """Train with a terminal progress bar; the first Ctrl-C stops after the current step
    and saves, a second one aborts."""
    from ..progress import Progress
    from ..terminal import TerminalSink
    from ..train.loop import train

    sinks = [TerminalSink()]
    if config.logging_dir:
        from ..train.tensorboard import TensorBoardSink

        sinks.append(TensorBoardSink(config.logging_dir, config.log_prefix))
    progress = Progress(sinks)

    def stop_gracefully(signum, frame):
        print("\nstopping after this step and saving (Ctrl-C again to abort)", file=sys.stderr)
        progress.commands.request_stop()
        signal.signal(signal.SIGINT, previous)

    previous = signal.signal(signal.SIGINT, stop_gracefully)
    try:
        return train(config, bundle=bundle, progress=progress)
    finally:
        signal.signal(signal.SIGINT, previous)
        for sink in sinks:
            if hasattr(sink, "close"):
                sink.close()
