"""`python -m lib_trainer bench`: seconds per step and peak memory of training, and the same
for a bare forward+backward of the denoiser (the floor), with their ratios. Any training
flag (--resolution, --train_batch_size, --mixed_precision, --gradient_checkpointing,
--network_train_unet_only, --pretrained_model_name_or_path...) sets up what is measured.
Loading the model is timed too, with its peak RAM against the size of the weights. A step is
then split by phase (data, text encoder forward/backward, UNet forward/backward, optimizer,
the adapters' overhead), each against the floor, and the time to the first step into its
parts; a machine busy before the start is said.

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
    from ..bench import figures, report, run_benchmark
    from ..train.auto_precision import with_resolved_precision
    from ..train.first_step import process_age_s, started_for_this_run

    import os

    # the time this process took to get here (Python, torch and our modules): "imports"
    imports_s = process_age_s() if started_for_this_run() else None

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
    result = run_benchmark(config, args.steps, args.warmup, imports_s)
    print(report(config, result))
    if args.json:
        import json

        from ..fileio import write_text_atomic

        write_text_atomic(args.json, json.dumps(figures(result), indent=1))
    return 0
