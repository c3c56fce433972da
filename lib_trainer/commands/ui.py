"""`python -m lib_trainer ui`: the LoRA Train page in the browser, without the WebUI.

Serves the same Gradio UI as the WebUI tab. Training runs in a background thread of
this process, one queued run after another; the queue is kept in
<state-dir>/queue.json, so it survives a restart (it then waits for "Run queue").
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings

DEFAULT_STATE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "lib_trainer", "ui")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 opens it to "
                             "the network, without any login)")
    parser.add_argument("--port", type=int, default=7870, help="port (default 7870)")
    parser.add_argument("--model", default="tiny:sd1",
                        help="base model the form starts with: a checkpoint file, a diffusers folder or tiny:sd1")
    parser.add_argument("--output-dir", default="output", help="output folder the form starts with")
    parser.add_argument("--state-dir", default=os.environ.get("LIB_TRAINER_UI_STATE", DEFAULT_STATE_DIR),
                        help=f"where the queue is kept (default {DEFAULT_STATE_DIR}, or $LIB_TRAINER_UI_STATE)")
    parser.add_argument("--config", default=None, help="a config file (TOML/JSON) to fill the form with")


def make_service(state_dir: str):
    from ..jobs import LocalTrainService, TrainQueue

    os.makedirs(state_dir, exist_ok=True)
    return LocalTrainService(TrainQueue(os.path.join(state_dir, "queue.json")))


def run(args: argparse.Namespace) -> int:
    from ..config import TrainConfig
    from ..ui import launch_standalone
    from ..config_import import read_config_file

    defaults = TrainConfig().replace(pretrained_model_name_or_path=args.model, output_dir=args.output_dir)
    if args.config:
        defaults, notes = read_config_file(args.config, defaults)
        for note in notes:
            print(f"note: {args.config}: {note}", file=sys.stderr)
    service = make_service(args.state_dir)
    if service.queue.load_notice:
        print(f"warning: {service.queue.load_notice}", file=sys.stderr)
    if args.model and not args.model.startswith("tiny:") and not os.path.exists(args.model):
        print(f"warning: --model {args.model} does not exist; choose the model in the form", file=sys.stderr)
    # gradio 3.41 builds an empty altair chart for every no-op update of the loss plot.
    warnings.filterwarnings("ignore", message="I don't know how to infer vegalite type")
    print(f"LoRA Train: http://{args.host}:{args.port}/  (queue in {args.state_dir}; Ctrl-C to quit)", flush=True)
    launch_standalone(service, defaults, args.host, args.port, block=True)
    return 0
