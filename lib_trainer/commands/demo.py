"""`python -m lib_trainer demo`: draw the demo dataset, train a LoRA on the tiny model, and
print where the file is. Any training flag can be added to change the run."""
from __future__ import annotations

import argparse
import os

from ..cli_args import add_config_arguments, config_from_args
from ..config import TrainConfig
from ..demo_data import TRIGGER, make_demo_dataset

DEMO_SETTINGS = dict(
    pretrained_model_name_or_path="tiny:sd1", output_name="ltdemo", trigger_word=TRIGGER,
    resolution="128", min_bucket_reso=64, max_bucket_reso=256, train_batch_size=2, max_train_epochs=3,
    network_dim=8, network_alpha=8.0, learning_rate=1e-3, lr_scheduler="cosine", lr_warmup_steps=0.05,
    save_every_n_epochs=1,
)


def demo_config(out_dir: str) -> TrainConfig:
    return TrainConfig().replace(train_data_dir=os.path.join(out_dir, "dataset"),
                                 output_dir=os.path.join(out_dir, "lora"), **DEMO_SETTINGS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo_output", help="folder for the dataset and the LoRA files")
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from .train import run_training

    make_demo_dataset(os.path.join(args.out, "dataset"))
    config = config_from_args(args, base=demo_config(args.out))
    result, status = run_training(config)
    if result.final_path:
        print(f"\nLoRA written to: {os.path.abspath(result.final_path)}")
        print(f"Use it in the WebUI as <lora:{config.output_name}:1> with the trigger word '{TRIGGER}'.")
    return status
