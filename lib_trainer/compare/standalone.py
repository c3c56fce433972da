"""Grids without the WebUI: each file applied to our own model, drawn by our own sampler.

A file is read into the network it describes (networks.registry.network_from_file) and
attached with the cell's weight as its multiplier, the same forward hooks training used, so a
weight of 0 and the base model's column give the base model's image bit for bit. The image is
train/txt2img.py's, from a CPU generator seeded with the grid's seed (the same noise on every
device). The infotext says `<lora:name:w>` (`<hypernet:name:w>`) as the WebUI would, so a cell pasted into the
WebUI's prompt gives the same file at the same weight.
"""
from __future__ import annotations

import torch

from ..hosts.bundle import ModelBundle
from ..networks.registry import network_from_file
from ..progress import Progress
from ..train.precision import autocast, resolve_device
from ..train.sample_prompts import SamplePrompt
from ..train.sampling import eval_mode, infotext
from ..train.txt2img import txt2img
from .grid import Cell, Grid, GridRequest, make_grid, network_tag


class StandaloneDrawer:
    """Draws cells on `bundle`, keeping the last file's network loaded (cells come file by file)."""

    def __init__(self, bundle: ModelBundle, device: torch.device) -> None:
        self.bundle, self.device = bundle, device
        self._loaded: tuple[str, torch.nn.Module] | None = None

    def __call__(self, cell: Cell, request: GridRequest):
        prompt = SamplePrompt(cell.prompt, request.negative_prompt, request.width, request.height, request.steps,
                              request.cfg_scale)
        generator = torch.Generator().manual_seed(request.seed)
        if cell.file is None:
            image = txt2img(self.bundle, prompt, request.sampler, generator)
            return image, infotext(prompt, request.sampler, request.seed)
        network = self._network(cell.file.path)
        network.set_multipliers(cell.weight, cell.weight)
        with network.attached(self.bundle):
            image = txt2img(self.bundle, prompt, request.sampler, generator)
        tagged = SamplePrompt(f"{cell.prompt}, {network_tag(cell.file, cell.weight, cell.weight)}",
                              request.negative_prompt, request.width, request.height, request.steps, request.cfg_scale)
        return image, infotext(tagged, request.sampler, request.seed)

    def _network(self, path: str) -> torch.nn.Module:
        if self._loaded is None or self._loaded[0] != path:
            self._loaded = None  # the previous file's tensors go before the next is read
            self._loaded = (path, network_from_file(path, self.bundle).to(self.device).eval())
        return self._loaded[1]


def standalone_grid(request: GridRequest, bundle: ModelBundle, progress: Progress, device: str = "auto",
                    mixed_precision: str | None = None) -> Grid:
    """The grid on `bundle`, on `device`; fp16 on a GPU and fp32 on the CPU unless told."""
    target = resolve_device(device)
    precision = mixed_precision or ("fp16" if target.type == "cuda" else "no")
    with torch.no_grad(), bundle.frozen_for_training(target, torch.float32), eval_mode(bundle.modules()), \
            autocast(target, precision):
        return make_grid(request, StandaloneDrawer(bundle, target), progress)
