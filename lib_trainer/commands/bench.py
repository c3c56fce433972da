"""`python -m lib_trainer bench`: seconds per step and peak memory of training, and the same
for a bare forward+backward of the denoiser (the floor), with their ratios. Any training
flag (--resolution, --train_batch_size, --mixed_precision, --gradient_checkpointing,
--network_train_unet_only, --pretrained_model_name_or_path...) sets up what is measured."""
from __future__ import annotations

import argparse

from ..cli_args import add_config_arguments, config_from_args
from ..config import TrainConfig

BENCH_DEFAULTS = TrainConfig().replace(resolution="128", min_bucket_reso=64, max_bucket_reso=256,
                                       train_batch_size=2, lr_scheduler="constant")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, default=20, help="timed steps (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from ..bench import report, run_benchmark

    config = config_from_args(args, base=BENCH_DEFAULTS)
    print(report(config, run_benchmark(config, args.steps, args.warmup)))
    return 0
