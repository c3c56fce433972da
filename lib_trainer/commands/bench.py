"""`python -m lib_trainer bench`: seconds per step and peak memory of training, and the same
for a bare forward+backward of the denoiser (the floor), with their ratios. Any training
flag (--resolution, --train_batch_size, --mixed_precision, --gradient_checkpointing,
--network_train_unet_only, --pretrained_model_name_or_path...) sets up what is measured.
Loading the model is timed too, with its peak RAM against the size of the weights.

`--make-checkpoint sd1` first writes a full-size SD1.5-architecture checkpoint with random
weights (fp16, original single-file layout) to the --pretrained_model_name_or_path file
when that file does not exist yet, so the benchmark needs no download. `--doctor` measures the dataset doctor instead.
`--compare-config A.toml B.toml` measures two configs alternately, in fresh processes, and
prints their ratios (bench_compare.py)."""
from __future__ import annotations

import argparse
import sys

from ..cli_args import add_config_arguments, config_from_args
from ..config import TrainConfig

BENCH_DEFAULTS = TrainConfig().replace(resolution="128", min_bucket_reso=64, max_bucket_reso=256,
                                       train_batch_size=2, lr_scheduler="constant")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=20, help="timed steps (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--make-checkpoint", metavar="ARCHITECTURE", default="",
                        help="write a random-weight checkpoint of this architecture (sd1, sd2, sdxl, tiny-sd1...) "
                             "to --pretrained_model_name_or_path first, unless the file exists")
    parser.add_argument("--doctor", nargs="?", const=500, type=int, default=0, metavar="IMAGES",
                        help="instead: the dataset doctor's images/s on this many drawn pictures (500), against "
                             "decoding them")
    parser.add_argument("--compare-config", nargs=2, metavar=("A", "B"), default=None,
                        help="instead: measure config files A and B alternately (A B A B ...), each in a fresh "
                             "process, and print the ratios B/A with their min/median/max")
    parser.add_argument("--rounds", type=int, default=3, help="with --compare-config: how many A B pairs")
    parser.add_argument("--json", metavar="FILE", default=None, help="also write the figures to this JSON file")
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from ..bench import report, run_benchmark
    from ..train.auto_precision import with_resolved_precision

    import os

    if args.doctor:
        from ..dataset.doctor.bench import bench_doctor, report_text

        print(report_text(bench_doctor(args.doctor)))
        return 0
    if args.compare_config:
        from ..bench_compare import compare_configs

        for path in args.compare_config:
            if not os.path.isfile(path):
                print(f"error: --compare-config: {path} is not a file", file=sys.stderr)
                return 2
        print(compare_configs(tuple(args.compare_config), args.rounds, args.steps, args.warmup))
        return 0
    config = with_resolved_precision(config_from_args(args, base=BENCH_DEFAULTS))
    if args.make_checkpoint and not os.path.exists(config.pretrained_model_name_or_path):
        from ..bench import write_random_checkpoint

        print(f"writing a random {args.make_checkpoint} checkpoint to {config.pretrained_model_name_or_path}")
        write_random_checkpoint(args.make_checkpoint, config.pretrained_model_name_or_path)
    measurements, model_mb = run_benchmark(config, args.steps, args.warmup)
    print(report(config, measurements, model_mb))
    if args.json:
        write_figures(args.json, measurements)
    return 0


def write_figures(path: str, measurements) -> None:
    import json

    from ..fileio import write_text_atomic

    floor, training, loading = measurements
    write_text_atomic(path, json.dumps({
        "floor_s": floor.seconds_per_step, "floor_peak_mb": floor.peak_memory_mb,
        "training_step_s": training.seconds_per_step, "training_peak_mb": training.peak_memory_mb,
        "loading_s": loading.seconds_per_step, "loading_peak_mb": loading.peak_memory_mb}))
