"""Saving the trained files during and after a run, with kohya's file names.

`name-000002.safetensors` after epoch 2, `name-step00000100.safetensors` after step 100
(and when a run is stopped early), `name.safetensors` at the end. A file is only written
when every weight is finite, and always atomically, so a good file is never replaced by
a broken or half-written one. The extension is the trainable's: `.pt` for hypernetworks.

A save that fails anyway (the folder became read-only, the disk filled up during the run)
does not lose the run: the file, its config and its state go to a rescue folder in the
user's home (or the temporary folder) instead, and the run says where.

kohya's save options live here too: `save_model_as` (the LoRA file's extension),
`no_metadata`, `save_n_epoch_ratio`, and `save_last_n_epochs` / `save_last_n_steps`, which
delete older epoch / step files as new ones are written (never the final file).
"""
from __future__ import annotations

import contextlib
import math
import os
import re
import tempfile
import time
from typing import Callable, ContextManager, Sequence

from ..config import TrainConfig
from ..config_files import save_config
from ..formats.metadata import AVERAGE_LOSS_KEY, VALIDATION_LOSS_KEY, checkpoint_metadata, minimum_metadata
from ..networks.trainable import Trainable
from .precision import SAVE_DTYPES
from ..errors import UserError

RESCUE_FOLDER = "lib_trainer-rescued"


class UnsafeToSave(UserError, RuntimeError):
    pass


class SaveFailed(UserError, OSError):
    """Neither the output folder nor a rescue folder could take a trained file."""


def rescue_folders(output_name: str) -> list[str]:
    """Where a file goes when output_dir refuses it: the home folder first, then the temp folder."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    homes = [os.path.expanduser("~"), tempfile.gettempdir()]
    return [os.path.join(home, RESCUE_FOLDER, f"{output_name}-{stamp}") for home in homes]


def epoch_path(output_dir: str, name: str, epoch: int) -> str:
    return os.path.join(output_dir, f"{name}-{epoch:06d}.safetensors")


def step_path(output_dir: str, name: str, step: int) -> str:
    return os.path.join(output_dir, f"{name}-step{step:08d}.safetensors")


def final_path(output_dir: str, name: str) -> str:
    return os.path.join(output_dir, f"{name}.safetensors")


def epoch_save_interval(config: TrainConfig, epochs: int) -> int:
    """Epochs between epoch files: save_every_n_epochs, unless save_n_epoch_ratio asks for about
    N files in all (floor(epochs / N), at least 1), which replaces it as in sd-scripts."""
    if config.save_n_epoch_ratio:
        return math.floor(epochs / config.save_n_epoch_ratio) or 1
    return config.save_every_n_epochs


def older_files(output_dir: str, name: str, kind: str, below: int) -> list[str]:
    """This run's epoch ('epoch') or step ('step') files numbered below `below`, in any of the
    formats save_model_as writes; the final file (no number) never matches."""
    if not os.path.isdir(output_dir):
        return []
    number = r"-step(\d{8})" if kind == "step" else r"-(\d{6})"
    pattern = re.compile(re.escape(name) + number + r"\.(safetensors|ckpt|pt)")
    found = []
    for entry in sorted(os.listdir(output_dir)):
        match = pattern.fullmatch(entry)
        if match and int(match.group(1)) < below:
            found.append(os.path.join(output_dir, entry))
    return found


class CheckpointWriter:
    def __init__(self, config: TrainConfig, trainable: Trainable, base_metadata: dict[str, str],
                 recent_losses: Sequence[float] = (), progress=None, ema=None,
                 validation_loss: Callable[[], float | None] | None = None,
                 weights: Callable[[], ContextManager] = contextlib.nullcontext) -> None:
        self.config = config
        self.ema = ema  # train/ema.py: its file goes beside each saved one
        self.weights = weights  # a context with the weights to save in the trainable (schedule-free: x)
        self.progress = progress
        self.rescue_dir: str | None = None  # where files go once output_dir has refused one
        self.trainable = trainable
        self.base_metadata = base_metadata
        # The loop's window of recent losses: each file records their mean, which the
        # comparison lists beside the file.
        self.recent_losses = recent_losses
        # The newest validation loss (train/validation.py) when this run computes one.
        self.validation_loss = validation_loss
        self.saved: list[str] = []

    def save(self, path: str, epoch: int, step: int, interrupted: bool = False) -> str:
        with self.weights():
            return self._save(path, epoch, step, interrupted)

    def _save(self, path: str, epoch: int, step: int, interrupted: bool) -> str:
        path = self.file_path(path)
        if not self.trainable.all_finite():
            raise UnsafeToSave(f"not writing {path}: the trained weights are not finite")
        metadata = checkpoint_metadata(self.base_metadata, epoch, step, time.time(), interrupted)
        if self.recent_losses:
            metadata[AVERAGE_LOSS_KEY] = f"{sum(self.recent_losses) / len(self.recent_losses):.6g}"
        latest = self.validation_loss() if self.validation_loss is not None else None
        if latest is not None:
            metadata[VALIDATION_LOSS_KEY] = f"{latest:.6g}"
        if self.config.no_metadata:
            metadata = minimum_metadata(metadata)
        if self.rescue_dir is not None:
            path = os.path.join(self.rescue_dir, os.path.basename(path))
        try:
            self._write(path, metadata, interrupted)
        except OSError as error:
            path = self._rescue(path, metadata, interrupted, error)
        self.saved.append(path)
        return path

    def file_path(self, path: str) -> str:
        """The trainable's file for `path`, with save_model_as's extension for a LoRA-family
        file (config checks keep ckpt/pt away from embeddings and hypernetworks)."""
        path = self.trainable.file_path(path)
        if self.config.save_model_as != "safetensors" and path.endswith(".safetensors"):
            path = path[:-len(".safetensors")] + "." + self.config.save_model_as
        return path

    def prune(self, kind: str, number: int, interval: int) -> list[str]:
        """After saving epoch/step `number`: delete what save_last_n_epochs / save_last_n_steps
        no longer keeps, and return it. Epochs keep the last N files (kohya deletes epoch
        number - interval x N); steps keep the files of the last N steps (kohya deletes those
        numbered below number - N)."""
        if kind == "epoch":
            keep, below = self.config.save_last_n_epochs, number - interval * self.config.save_last_n_epochs + 1
        else:
            keep, below = self.config.save_last_n_steps, number - self.config.save_last_n_steps
        if not keep:
            return []
        folder = os.path.dirname(self.saved[-1]) if self.saved else self.config.output_dir
        removed = []
        for path in older_files(folder, self.config.output_name, kind, below):
            try:
                os.remove(path)
            except OSError:
                continue  # gone already, or not ours to delete: keeping a file is harmless
            removed.append(path)
            if self.progress is not None:
                self.progress.status(f"removed the older file {path} (save_last_n_{kind}s)")
        return removed

    def _write(self, path: str, metadata: dict[str, str], interrupted: bool) -> None:
        self.trainable.write_file(path, metadata, SAVE_DTYPES[self.config.save_precision])
        if self.ema is not None:
            self.ema.write_beside(self.trainable, path, metadata, SAVE_DTYPES[self.config.save_precision])
        # The config goes next to the files it produced, so a run can be repeated. A stopped
        # run's goes beside its own name-stepN file: it must not replace a finished run's.
        config_name = os.path.splitext(os.path.basename(path))[0] if interrupted else self.config.output_name
        save_config(self.config, os.path.join(os.path.dirname(path), f"{config_name}.toml"))

    def _rescue(self, path: str, metadata: dict[str, str], interrupted: bool, error: OSError) -> str:
        """Write the file to a rescue folder after `path` failed; later files go there too."""
        reason = error.strerror or str(error)
        # A name the file system refused (too long) is shortened; the file keeps its step/epoch suffix.
        name = os.path.basename(path)
        if len(name.encode("utf-8")) > 200:
            name = name[:40] + name[-60:]
        tried = rescue_folders(self.config.output_name[:40])
        for folder in tried:
            target = os.path.join(folder, name)
            try:
                os.makedirs(folder, exist_ok=True)
                self._write(target, metadata, interrupted)
            except OSError:
                continue
            self.rescue_dir = folder
            if self.progress is not None:
                self.progress.status(f"could not write {path} ({reason}): the trained weights were saved to "
                                     f"{target} instead; later files of this run go there too")
            return target
        raise SaveFailed(f"could not write {path} ({reason}), nor into {' or '.join(tried)}: free some space or "
                         "fix the folders' permissions") from error
