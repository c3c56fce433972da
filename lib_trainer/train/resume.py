"""The run state: everything a run needs to go on bit for bit where it stopped.

`--save_state` writes it next to each saved file as `<file name>-state/` (kohya's names:
`name-000002-state`, `name-step00000100-state`, `name-state`); a stopped or crashed run
writes one too. `--resume DIR` continues from it: same step, same place inside the epoch,
same random draws, same optimizer moments and schedule, so a resumed run ends with the
weights an uninterrupted run would have had.

A state folder holds `train_state.bin` (tensors and plain values only, read back with
torch's weights-only loader: no code in it can run), `state.json` (what a person or the UI
reads: step, epoch, the output name) and the run's `config.toml`.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch

from ..config import ConfigError, TrainConfig
from ..config_files import save_config

# Not .pt: the WebUI's Lora extension lists every .pt/.ckpt/.safetensors under its folder as a
# network, and the states sit beside the LoRA files there.
STATE_FILE = "train_state.bin"
INFO_FILE = "state.json"
STATE_VERSION = 1
# Options that may change between the saved run and its resumption, because they do not
# change what the steps so far computed: how long to go on, the learning rate, where and
# how often files and samples are written, logging, and how the same math is run.
RESUMABLE_CHANGES = {
    "max_train_epochs", "max_train_steps", "learning_rate", "unet_lr", "text_encoder_lr",
    "output_dir", "output_name", "save_precision", "save_every_n_epochs", "save_every_n_steps", "save_state",
    "save_state_on_train_end", "save_last_n_epochs_state", "save_last_n_steps_state", "resume",
    "sample_every_n_steps", "sample_every_n_epochs", "sample_at_first", "sample_prompts", "sample_sampler",
    "logging_dir", "log_prefix", "training_comment", "device", "gradient_checkpointing", "xformers",
    "cache_latents_to_disk", "latents_cache_dir", "network_weights", "config_version",
    "ema_for_samples",
    "save_last_n_epochs", "save_last_n_steps", "save_n_epoch_ratio", "save_model_as", "output_config", "no_metadata",
    "metadata_title", "metadata_author", "metadata_description", "metadata_license", "metadata_tags",
    "max_data_loader_n_workers", "persistent_data_loader_workers",
    "lowram", "highvram",
}


@dataclass
class TrainState:
    step: int                  # optimizer steps done
    epoch: int                 # the epoch in progress (1-based)
    batches_done: int          # batches of that epoch already trained
    epoch_rng: Any             # the data generator's state when the epoch began (re-creates its batches)
    data_rng: Any              # ... and now (flips, crops, caption shuffles to come)
    noise_rng: torch.Tensor    # noise and timesteps
    torch_rng: torch.Tensor    # torch's global generator (dropout, VAE sampling)
    cuda_rng: list             # every CUDA device's generator
    python_rng: Any            # Python's global `random`
    optimizer: dict
    scheduler: dict
    scaler: dict
    trainable: dict            # the trainable's own state_dict
    fingerprint: dict          # what must not change: model family, dataset, network shape
    config: dict
    losses: list
    version: int = STATE_VERSION
    ema: dict | None = None    # the weight average (train/ema.py), when ema_decay is set


def state_dir_for(file_path: str) -> str:
    """`out/name-000002.safetensors` -> `out/name-000002-state`."""
    return os.path.splitext(file_path)[0] + "-state"


def capture_generators(data_rng: random.Random, noise_rng: torch.Generator) -> dict:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return {"data_rng": data_rng.getstate(), "noise_rng": noise_rng.get_state(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": cuda, "python_rng": random.getstate()}


def restore_generators(state: TrainState, data_rng: random.Random, noise_rng: torch.Generator) -> None:
    data_rng.setstate(_as_tuple(state.data_rng))
    noise_rng.set_state(state.noise_rng)
    torch.set_rng_state(state.torch_rng)
    if state.cuda_rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state.cuda_rng)
    random.setstate(_as_tuple(state.python_rng))


def write_state(folder: str, state: TrainState, config: TrainConfig) -> str:
    """Write the state folder whole or not at all: a partial one never replaces a good one."""
    parent = os.path.dirname(os.path.abspath(folder))
    os.makedirs(parent, exist_ok=True)
    temporary = folder + ".partial"
    shutil.rmtree(temporary, ignore_errors=True)
    os.makedirs(temporary)
    try:
        torch.save(asdict(state), os.path.join(temporary, STATE_FILE))
        info = {"version": STATE_VERSION, "step": state.step, "epoch": state.epoch,
                "batches_done": state.batches_done, "output_name": config.output_name}
        with open(os.path.join(temporary, INFO_FILE), "w", encoding="utf-8") as handle:
            json.dump(info, handle, indent=1)
        save_config(config, os.path.join(temporary, "config.toml"))
        old = folder + ".old"
        if os.path.isdir(folder):
            shutil.rmtree(old, ignore_errors=True)
            os.replace(folder, old)
        os.replace(temporary, folder)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return folder


def read_state(folder: str) -> TrainState:
    path = os.path.join(folder, STATE_FILE)
    if not os.path.isfile(path):
        raise ConfigError(f"resume={folder!r}: no {STATE_FILE} there; give a '<name>-state' folder that a run "
                          "saved (--save_state, or a stopped run)")
    try:
        # torch.serialization.load, not torch.load: the WebUI replaces torch.load with its own
        # safe unpickler, which refuses files of current torch versions (returning None). The
        # weights-only loader is as safe.
        values = torch.serialization.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # any unreadable file reads the same to the user
        raise ConfigError(f"resume={folder!r}: {STATE_FILE} cannot be read ({type(error).__name__}: {error}); "
                          "it may be truncated: resume from an earlier state folder") from error
    if not isinstance(values, dict) or values.get("version") != STATE_VERSION:
        raise ConfigError(f"resume={folder!r}: the state was written by another version of lib_trainer")
    known = {spec.name for spec in fields(TrainState)}
    return TrainState(**{key: value for key, value in values.items() if key in known})


def read_state_info(folder: str) -> dict | None:
    """state.json of a state folder, or None when it is not one."""
    try:
        with open(os.path.join(folder, INFO_FILE), encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def resume_notes(state: TrainState, config: TrainConfig, fingerprint: dict) -> list[str]:
    """Refuse a resumption that cannot continue the same run (saying what differs); return
    notes on the options that changed and may."""
    differs = [f"{name}: saved {state.fingerprint.get(name)!r}, now {value!r}"
               for name, value in fingerprint.items() if state.fingerprint.get(name) != value]
    if differs:
        raise ConfigError("cannot resume: this is not the run the state was saved from\n  - " +
                          "\n  - ".join(_fingerprint_words(differs)))
    saved = state.config
    changed = {name: (saved.get(name), value) for name, value in config.to_dict().items()
               if name in saved and saved.get(name) != value}
    refused = sorted(name for name in changed if name not in RESUMABLE_CHANGES)
    if refused:
        raise ConfigError("cannot resume with these options changed (they change what the steps so far computed); "
                          "put them back or start a new run:\n  - " +
                          "\n  - ".join(f"{name}: saved {changed[name][0]!r}, now {changed[name][1]!r}"
                                        for name in refused))
    return [f"resuming with {name} changed: {old!r} -> {new!r}" for name, (old, new) in sorted(changed.items())
            if name not in ("resume", "config_version")]


def fingerprint(family: str, prediction_type: str, training_set, trainable) -> dict:
    return {"model family": f"{family} ({prediction_type})", "dataset": dataset_fingerprint(training_set),
            "network": _short_hash(json.dumps(trainable.shape_signature(), sort_keys=True)),
            "network type": trainable.kind}


def dataset_fingerprint(training_set) -> str:
    """Folders, repeats, files (name and size), captions and buckets: what the epochs are made of."""
    rows = []
    for example in training_set.examples:
        item = example.item
        size = os.path.getsize(item.path) if os.path.exists(item.path) else -1
        rows.append([os.path.basename(item.concept.folder), item.concept.repeats, item.concept.is_reg,
                     os.path.basename(item.path), size, example.caption, list(example.placement.bucket)])
    return _short_hash(json.dumps(sorted(rows), ensure_ascii=False))


def prune_states(output_dir: str, name: str, keep_last: int, kind: str) -> list[str]:
    """Remove all but the `keep_last` newest epoch ('epoch') or step ('step') states of `name`."""
    if keep_last <= 0 or not os.path.isdir(output_dir):
        return []
    marker = f"{name}-step" if kind == "step" else f"{name}-"
    found = []
    for entry in os.listdir(output_dir):
        if not (entry.startswith(marker) and entry.endswith("-state")):
            continue
        number = entry[len(marker):-len("-state")]
        if number.isdigit():
            found.append((int(number), entry))
    removed = []
    for _, entry in sorted(found)[:-keep_last]:
        shutil.rmtree(os.path.join(output_dir, entry), ignore_errors=True)
        removed.append(entry)
    return removed


def _fingerprint_words(differs: list[str]) -> list[str]:
    hints = {"dataset": "the images, captions, repeats or buckets changed",
             "network": "network_dim, conv_dim or the layers trained changed"}
    return [line + (f" ({hints[line.split(':')[0]]})" if line.split(":")[0] in hints else "") for line in differs]


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _as_tuple(value):
    """random.setstate wants tuples; a saved state may come back with lists."""
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value


class RunPosition:
    """Where the run stands as of its last optimizer step: what a state saved now records.

    Batches are only re-created at the start of an epoch, from the data generator, so the
    position keeps that generator's state at the epoch's start beside the generators' states
    after the last step. A resumed run re-creates the epoch's batches, skips those done, and
    goes on with the generators as they were.
    """

    def __init__(self, generators: dict, saved: TrainState | None = None) -> None:
        self.step = saved.step if saved else 0
        self.epoch = saved.epoch if saved else 1
        self.batches_done = saved.batches_done if saved else 0
        self.epoch_rng = saved.epoch_rng if saved else None
        self.file_epoch = max(1, self.epoch - (1 if saved and not saved.batches_done else 0))
        self.generators = generators
        self.losses: list[float] = list(saved.losses) if saved else []
        self.resumed_at = self.step
        self.skip = 0  # batches of the current epoch trained before a resumption
        self._saved = saved

    @classmethod
    def start(cls, data_rng: random.Random, noise_rng: torch.Generator) -> "RunPosition":
        return cls(capture_generators(data_rng, noise_rng))

    @classmethod
    def resumed(cls, saved: TrainState) -> "RunPosition":
        return cls({}, saved)

    def epoch_batches(self, training_set, epoch: int, data_rng: random.Random, noise_rng: torch.Generator) -> list:
        saved, self._saved, self.skip = self._saved, None, 0
        if saved is not None and saved.batches_done:
            # Mid-epoch: the epoch's order from its start, then every generator as it was.
            data_rng.setstate(_as_tuple(saved.epoch_rng))
            batches = training_set.epoch_batches(data_rng)
            restore_generators(saved, data_rng, noise_rng)
            self.skip = saved.batches_done
            return batches
        if saved is not None:  # saved at an epoch's end: the generators are where the next epoch starts
            restore_generators(saved, data_rng, noise_rng)
        self.epoch, self.batches_done, self.epoch_rng = epoch, 0, data_rng.getstate()
        return training_set.epoch_batches(data_rng)

    def after_step(self, step: int, epoch: int, batches_done: int, batches_in_epoch: int, losses: list[float],
                   data_rng: random.Random, noise_rng: torch.Generator) -> None:
        self.step, self.file_epoch, self.losses = step, epoch, losses
        if batches_done == batches_in_epoch:  # the next epoch starts from the generators as they are now
            self.epoch, self.batches_done, self.epoch_rng = epoch + 1, 0, data_rng.getstate()
        else:
            self.epoch, self.batches_done = epoch, batches_done
        self.generators = capture_generators(data_rng, noise_rng)


class StateWriter:
    """Writes run states: beside saved files when asked (--save_state), and always when a run
    stops or fails, so that it can be resumed."""

    def __init__(self, config: TrainConfig, trainable, optimizer, scheduler, scaler, checks: dict, progress,
                 ema=None) -> None:
        self.config, self.trainable, self.progress, self.ema = config, trainable, progress, ema
        self.optimizer, self.scheduler, self.scaler, self.checks = optimizer, scheduler, scaler, checks
        self.last: str | None = None

    def write(self, folder: str, run: RunPosition) -> str:
        state = TrainState(
            step=run.step, epoch=run.epoch, batches_done=run.batches_done, epoch_rng=run.epoch_rng,
            optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
            scaler=self.scaler.state_dict(), trainable=self.trainable.state_dict(), fingerprint=self.checks,
            config=self.config.to_dict(), losses=list(run.losses),
            ema=self.ema.state_dict() if self.ema is not None else None, **run.generators)
        write_state(folder, state, self.config.replace(resume=""))
        self.last = folder
        self.progress.state_saved(folder)
        return folder

    def saved_file(self, path: str, run: RunPosition, kind: str) -> None:
        """A file was saved during the run ('epoch' or 'step'): report it, add its state if asked."""
        self.progress.saved(path)
        if not self.config.save_state:
            return
        self.write(state_dir_for(path), run)
        # As sd-scripts: without their own count, epoch states follow the epoch files' (save_last_n_epochs).
        c = self.config
        keep = (c.save_last_n_epochs_state or c.save_last_n_epochs) if kind == "epoch" else c.save_last_n_steps_state
        for removed in prune_states(os.path.dirname(path) or ".", self.config.output_name, keep, kind):
            self.progress.status(f"removed the older run state {removed}")

    def for_resume(self, path: str, run: RunPosition) -> str:
        """The state of a stopped or failed run, and the command that continues it."""
        folder = self.write(state_dir_for(path), run)
        config_file = os.path.join(folder, "config.toml")
        self.progress.status(f"to continue this run: python -m lib_trainer train --config \"{config_file}\" "
                             f"--resume \"{folder}\"")
        return folder
