"""Sample images during training, with sd-scripts' options.

When: before the first step (sample_at_first), after every N optimizer steps
(sample_every_n_steps) and after every N completed epochs, the last one included
(sample_every_n_epochs; as in sd-scripts it takes precedence over sample_every_n_steps).

What: one image per prompt of the prompt file (sample_prompts.py), with the network as
trained so far. The seed is the prompt's --d, or else the run's seed plus the prompt's
index, so every round uses the same seeds and a run repeats exactly. The images come from
the host's txt2img if its bundle brings one (the WebUI's), else from plain torch
(txt2img.py). A round runs in eval mode, and every global generator (torch on the CPU and
each CUDA device in use, Python's `random`, numpy's) is given back as it was, whatever the
backend draws or reseeds: with samples on or off, a run trains the same weights.

Where: <output_dir>/sample/<output_name>_<e000002 after epoch 2 | 000100 after step 100>_<index>_<seed>.png
(sd-scripts' names without its timestamp; the samples before training are e000000),
with the WebUI's infotext in the PNG's `parameters` text, so the WebUI's PNG Info tab
reads the prompt and settings back. Each image also goes out as a progress IMAGE event.

A sample that fails is reported and training goes on: a preview must not cost the run.
A bad prompt file is found earlier, when the config is checked.
"""
from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch
from PIL import Image, PngImagePlugin

from ..config import TrainConfig
from ..fileio import atomic_path
from ..hosts.bundle import ModelBundle, ModuleState
from ..progress import Progress
from .precision import autocast
from .sample_prompts import SamplePrompt, read_sample_prompts
from .samplers import SAMPLERS
from .txt2img import sample_backend


def due_after_step(config: TrainConfig, step: int) -> bool:
    every = config.sample_every_n_steps
    return bool(every) and not config.sample_every_n_epochs and step % every == 0


def due_after_epoch(config: TrainConfig, epoch: int) -> bool:
    every = config.sample_every_n_epochs
    return bool(every) and epoch % every == 0


def sample_seed(run_seed: int, index: int, prompt: SamplePrompt) -> int:
    return prompt.seed if prompt.seed is not None else run_seed + index


def sample_path(output_dir: str, output_name: str, label: str, index: int, seed: int) -> str:
    return os.path.join(output_dir, "sample", f"{output_name}_{label}_{index:02d}_{seed}.png")


def infotext(prompt: SamplePrompt, sampler: str, seed: int) -> str:
    """The WebUI's generation parameters text (what its PNG Info tab reads)."""
    lines = [prompt.prompt]
    if prompt.negative_prompt:
        lines.append(f"Negative prompt: {prompt.negative_prompt}")
    lines.append(f"Steps: {prompt.steps}, Sampler: {SAMPLERS[sampler].webui_name}, CFG scale: {prompt.cfg_scale:g}, "
                 f"Seed: {seed}, Size: {prompt.width}x{prompt.height}")
    return "\n".join(lines)


def save_png(path: str, image: Image.Image, parameters: str, **texts: str) -> None:
    """Atomically, with the infotext as `parameters` and any other text chunks given."""
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", parameters)
    for key, value in texts.items():
        info.add_text(key, value)
    with atomic_path(path) as temporary:
        image.save(temporary, format="PNG", pnginfo=info)


@contextlib.contextmanager
def eval_mode(modules: list[torch.nn.Module]):
    """Every module in eval mode (no dropout, no gradient checkpointing), and each
    submodule's own mode back afterwards."""
    saved = [ModuleState(module) for module in modules]
    try:
        for module in modules:
            module.eval()
        yield
    finally:
        for state in saved:
            state.restore()


@contextlib.contextmanager
def global_rng_kept(devices: list[torch.device]):
    """Every global random state as it was afterwards: torch's CPU generator and those of the
    CUDA devices given, Python's `random` and numpy's. (The WebUI's txt2img, for one, calls
    torch.manual_seed with the sample's seed.)"""
    cuda = sorted({torch.cuda.current_device() if d.index is None else d.index for d in devices if d.type == "cuda"})
    python_state, numpy_state = random.getstate(), np.random.get_state()
    mps_state = torch.mps.get_rng_state() if any(d.type == "mps" for d in devices) else None
    try:
        with torch.random.fork_rng(devices=cuda):
            yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        if mps_state is not None:
            torch.mps.set_rng_state(mps_state)


class SampleMaker:
    """Makes the prompt file's images when they are due; the loop calls the three hooks."""

    def __init__(self, config: TrainConfig, bundle: ModelBundle, network: torch.nn.Module, device: torch.device,
                 progress: Progress, ema=None, weights=contextlib.nullcontext) -> None:
        self.config, self.bundle, self.network, self.device, self.progress = config, bundle, network, device, progress
        # ema_for_samples: the weight average (train/ema.py) stands in while the images are drawn
        self.ema = ema if config.ema_for_samples else None
        self.weights = weights  # a context with the weights to sample with (schedule-free: x)
        self.prompts = read_sample_prompts(config.sample_prompts) if config.sampling_enabled() else []
        self.backend = sample_backend(bundle)
        if self.prompts:
            progress.status(f"sample images {_when(config)} into {os.path.join(config.output_dir, 'sample')}; "
                            f"prompts: {len(self.prompts)} from {config.sample_prompts}")
        if self.prompts and config.sample_every_n_steps and config.sample_every_n_epochs:
            progress.status("sample_every_n_steps is ignored: sample_every_n_epochs is set (as in sd-scripts)")

    def before_training(self) -> None:
        if self.config.sample_at_first:
            self._make("e000000", "before training")

    def after_step(self, step: int) -> None:
        if due_after_step(self.config, step):
            self._make(f"{step:06d}", f"step {step}")

    def after_epoch(self, epoch: int) -> None:
        if due_after_epoch(self.config, epoch):
            self._make(f"e{epoch:06d}", f"epoch {epoch}")

    def _make(self, label: str, when: str) -> None:
        written = []
        with global_rng_kept(self._devices()), eval_mode([self.network, *self.bundle.modules()]), self.weights(), \
                autocast(self.device, self.config.mixed_precision), \
                self.ema.applied() if self.ema is not None else contextlib.nullcontext():
            for index, prompt in enumerate(self.prompts):
                if self.progress.stop_requested:
                    break
                try:
                    written.append(self._make_one(label, when, index, prompt))
                except Exception as error:  # a preview must not end the run
                    self.progress.status(f"sample {index} ({when}) failed, training goes on: "
                                         f"{type(error).__name__}: {error}")
        if written:
            self.progress.status(f"samples {when}: {len(written)} of {len(self.prompts)} written to "
                                 f"{os.path.dirname(written[0])}")

    def _devices(self) -> list[torch.device]:
        """The training device and wherever the model's modules are."""
        found = {self.device}
        for module in self.bundle.modules():
            parameter = next(module.parameters(), None)
            if parameter is not None:
                found.add(parameter.device)
        return list(found)

    def _make_one(self, label: str, when: str, index: int, prompt: SamplePrompt) -> str:
        seed = sample_seed(self.config.seed, index, prompt)
        sampler = prompt.sampler or self.config.sample_sampler
        image = self.backend(prompt, sampler, seed)
        path = sample_path(self.config.output_dir, self.config.output_name, label, index, seed)
        save_png(path, image, infotext(prompt, sampler, seed))
        self.progress.image(image, f"{when}, #{index}: {prompt.prompt}")
        return path


def _when(config: TrainConfig) -> str:
    times = ["before training"] if config.sample_at_first else []
    if config.sample_every_n_epochs:
        times.append(f"every {config.sample_every_n_epochs} epochs")
    elif config.sample_every_n_steps:
        times.append(f"every {config.sample_every_n_steps} steps")
    return " and ".join(times)
