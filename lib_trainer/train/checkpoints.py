"""Saving the trained files during and after a run, with kohya's file names.

`name-000002.safetensors` after epoch 2, `name-step00000100.safetensors` after step 100
(and when a run is stopped early), `name.safetensors` at the end. A file is only written
when every weight is finite, and always atomically, so a good file is never replaced by
a broken or half-written one. The extension is the trainable's: `.pt` for hypernetworks.
"""
from __future__ import annotations

import os
import time
from typing import Sequence

from ..config import TrainConfig
from ..config_files import save_config
from ..formats.metadata import AVERAGE_LOSS_KEY, checkpoint_metadata
from ..networks.trainable import Trainable
from .precision import SAVE_DTYPES
from ..errors import UserError


class UnsafeToSave(UserError, RuntimeError):
    pass


def epoch_path(output_dir: str, name: str, epoch: int) -> str:
    return os.path.join(output_dir, f"{name}-{epoch:06d}.safetensors")


def step_path(output_dir: str, name: str, step: int) -> str:
    return os.path.join(output_dir, f"{name}-step{step:08d}.safetensors")


def final_path(output_dir: str, name: str) -> str:
    return os.path.join(output_dir, f"{name}.safetensors")


class CheckpointWriter:
    def __init__(self, config: TrainConfig, trainable: Trainable, base_metadata: dict[str, str],
                 recent_losses: Sequence[float] = ()) -> None:
        self.config = config
        self.trainable = trainable
        self.base_metadata = base_metadata
        # The loop's window of recent losses: each file records their mean, which the
        # comparison lists beside the file.
        self.recent_losses = recent_losses
        self.saved: list[str] = []

    def save(self, path: str, epoch: int, step: int, interrupted: bool = False) -> str:
        path = self.trainable.file_path(path)
        if not self.trainable.all_finite():
            raise UnsafeToSave(f"not writing {path}: the trained weights are not finite")
        metadata = checkpoint_metadata(self.base_metadata, epoch, step, time.time(), interrupted)
        if self.recent_losses:
            metadata[AVERAGE_LOSS_KEY] = f"{sum(self.recent_losses) / len(self.recent_losses):.6g}"
        self.trainable.write_file(path, metadata, SAVE_DTYPES[self.config.save_precision])
        # The config goes next to the files it produced, so a run can be repeated. A stopped
        # run's goes beside its own name-stepN file: it must not replace a finished run's.
        config_name = os.path.splitext(os.path.basename(path))[0] if interrupted else self.config.output_name
        save_config(self.config, os.path.join(os.path.dirname(path), f"{config_name}.toml"))
        self.saved.append(path)
        return path
