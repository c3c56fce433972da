"""`python -m lib_trainer compare`: a run's files x weights in one labelled grid, without the WebUI.

Columns: the base model (None) and the run's files in training order, or the --files given;
rows: the weights, for each prompt (for an embedding run, one row per prompt, each cell's
prompt with the embedding's name replaced by its file's). The prompt, size and base model
default to the run's own: its trigger word (an embedding's name) and class with `smile`, its
most common bucket, the checkpoint it trained on.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys

from ..errors import InvalidInput
from ..train.samplers import SAMPLERS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, metavar="OUTPUT_DIR",
                        help="the folder the run saved its files in (its output_dir)")
    parser.add_argument("--name", default="", help="the run's output_name, when the folder holds several runs")
    parser.add_argument("--files", default="", help="comma-separated files to compare, in this order: names "
                        "(sls-000002), labels (sls epoch 2) or paths; None is the base model. "
                        "Default: None and every file of the run")
    parser.add_argument("--weights", default="",
                        help="weights, as the X/Y/Z plot reads them: 0.6,0.8,1 or 0.6-1 (+0.1) or 0-1 [5]; "
                        "default 0.6,0.8,1 (an embedding has none: its grid has one row per prompt)")
    parser.add_argument("--prompt", action="append", default=[],
                        help="a prompt (repeat for more rows); default: the run's trigger word and class, smile")
    parser.add_argument("--negative_prompt", default="lowres, bad anatomy, worst quality, low quality")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--sampler", default="euler_a", choices=sorted(SAMPLERS))
    parser.add_argument("--cfg_scale", type=float, default=7.0)
    parser.add_argument("--size", default="", help="WIDTHxHEIGHT; default: the run's most common bucket")
    parser.add_argument("--model", default="", help="base model; default: the one the run trained on "
                        "(from its saved config)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    parser.add_argument("--out", default="", help="the grid PNG; default: OUTPUT_DIR/compare/NAME-<time>.png")
    parser.add_argument("--no_cells", action="store_true", help="do not also save each cell's PNG")


def run(args: argparse.Namespace) -> int:
    from ..compare.defaults import base_model_options, run_defaults
    from ..compare.grid import GridRequest, default_grid_path, save_grid
    from ..compare.values import parse_numbers
    from ..hosts import load_bundle

    run_files = _run_files(args.run, args.name)
    files = _chosen_files(args.run, args.files, run_files)
    defaults = run_defaults(run_files)
    width, height = parse_size(args.size) if args.size else (defaults.width, defaults.height)
    request = GridRequest(files=files, prompts=args.prompt or [defaults.prompt],
                          weights=parse_numbers(args.weights or defaults.weights), negative_prompt=args.negative_prompt, seed=args.seed,
                          steps=args.steps, sampler=args.sampler, cfg_scale=args.cfg_scale, width=width,
                          height=height).checked()
    # The run's own base model, with its v-prediction, clip skip and VAE, unless --model says otherwise.
    model, options = base_model_options(run_files, args.model)
    if not model:
        raise InvalidInput(f"no saved config beside {run_files[-1].path} names the base model: give --model")
    print(f"{len(files)} columns x {len(request.row_weights) * len(request.used_prompts)} rows at {width}x{height} "
          f"on {model}", file=sys.stderr)
    grid = _draw(request, load_bundle(model, **options), args.device)
    path = save_grid(grid, args.out or default_grid_path(args.run, run_files[-1].run), cells=not args.no_cells)
    print(path)
    return 0


def _run_files(folder: str, name: str):
    from ..compare.runs import run_files, run_names

    if not os.path.isdir(folder):
        raise InvalidInput(f"--run {folder}: no such folder (give the run's output_dir)")
    names = run_names(folder)
    if not names:
        raise InvalidInput(f"--run {folder}: no network files there")
    if not name and len(names) > 1:
        raise InvalidInput(f"--run {folder} holds several runs ({', '.join(names)}): choose one with --name")
    name = name or names[0]
    if name not in names:
        raise InvalidInput(f"--name {name}: no run of that name in {folder} (there: {', '.join(names)})")
    return run_files(folder, name)


def _chosen_files(folder: str, text: str, run_files: list):
    from ..compare.runs import find_saved

    if not text.strip():
        return [None, *run_files]
    chosen = []
    for part in (part.strip() for part in text.split(",")):
        if part.lower() == "none":
            chosen.append(None)
        elif part:
            try:
                chosen.append(find_saved(folder, part))
            except LookupError as error:
                raise InvalidInput(f"--files: {error}") from None
    return chosen


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(side) for side in text.lower().replace(" ", "").split("x"))
    except ValueError:
        raise InvalidInput(f"--size {text!r}: write WIDTHxHEIGHT, e.g. 512x768") from None
    return width, height


def _draw(request, bundle, device: str):
    """The grid with a progress bar; Ctrl-C stops it between two images."""
    from ..compare.standalone import standalone_grid
    from ..progress import Progress
    from ..terminal import TerminalSink

    progress = Progress([TerminalSink()])

    def stop(signum, frame):
        print("\nstopping after this image (Ctrl-C again to abort)", file=sys.stderr)
        progress.commands.request_stop()
        signal.signal(signal.SIGINT, previous)

    previous = signal.signal(signal.SIGINT, stop)
    try:
        return standalone_grid(request, bundle, progress, device=device)
    finally:
        signal.signal(signal.SIGINT, previous)
