"""Grids without the WebUI: each file applied to our own model, drawn by our own sampler.

A file is read into the network it describes (networks.registry.network_from_file) and
attached with the cell's weight as its multiplier, the same forward hooks training used, so a
weight of 0 and the base model's column give the base model's image bit for bit. An embedding
file's vectors go into prompts that name the file (the cell's prompt has the file's name in
place of the run's word), through the same prompt substitution training used; a pivotal LoRA's
bundled embedding is applied with it, as the WebUI's Lora loader does. The image is
train/txt2img.py's, from a CPU generator seeded with the grid's seed (the same noise on every
device). The infotext says `<lora:name:w>` (`<hypernet:name:w>`, an embedding's file name in
the prompt) as the WebUI would, so a cell pasted into the WebUI's prompt gives the same file
at the same weight.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

from ..formats.embedding_file import load_embedding
from ..formats.lora_file import load_lora
from ..hosts.bundle import ModelBundle
from ..networks.embedding import bundled_embeddings
from ..networks.registry import network_from_file
from ..progress import Progress
from ..train.precision import autocast, resolve_device
from ..train.sample_prompts import SamplePrompt
from ..train.sampling import eval_mode, infotext
from ..train.txt2img import txt2img
from .grid import Cell, Grid, GridRequest, make_grid, network_tag
from .runs import SavedFile


@dataclass
class _Loaded:
    path: str
    network: torch.nn.Module | None                      # None for an embedding file
    embeddings: dict[str, list[torch.Tensor]] = field(default_factory=dict)  # name -> vectors


class StandaloneDrawer:
    """Draws cells on `bundle`, keeping the last file loaded (cells come file by file)."""

    def __init__(self, bundle: ModelBundle, device: torch.device) -> None:
        self.bundle, self.device = bundle, device
        self._loaded: _Loaded | None = None

    def __call__(self, cell: Cell, request: GridRequest):
        prompt = SamplePrompt(cell.prompt, request.negative_prompt, request.width, request.height, request.steps,
                              request.cfg_scale)
        generator = torch.Generator().manual_seed(request.seed)
        if cell.file is None:
            image = txt2img(self.bundle, prompt, request.sampler, generator)
            return image, infotext(prompt, request.sampler, request.seed)
        loaded = self._load(cell.file)
        with contextlib.ExitStack() as stack:
            stack.enter_context(self.bundle.prompt_embeddings(loaded.embeddings))
            if loaded.network is not None:
                loaded.network.set_multipliers(cell.weight, cell.weight)
                stack.enter_context(loaded.network.attached(self.bundle))
            image = txt2img(self.bundle, prompt, request.sampler, generator)
        tag = network_tag(cell.file, cell.weight, cell.weight)
        tagged = SamplePrompt(f"{cell.prompt}, {tag}" if tag else cell.prompt, request.negative_prompt,
                              request.width, request.height, request.steps, request.cfg_scale)
        return image, infotext(tagged, request.sampler, request.seed)

    def _load(self, file: SavedFile) -> _Loaded:
        path = file.path
        if self._loaded is None or self._loaded.path != path:
            self._loaded = None  # the previous file's tensors go before the next is read
            if file.is_embedding:  # named after its file, as in the WebUI
                self._loaded = _Loaded(path, None, {file.name: load_embedding(path)[1]})
            else:
                network = network_from_file(path, self.bundle).to(self.device).eval()
                bundled = bundled_embeddings(load_lora(path)) if path.endswith(".safetensors") else {}
                self._loaded = _Loaded(path, network, bundled)
        return self._loaded


def standalone_grid(request: GridRequest, bundle: ModelBundle, progress: Progress, device: str = "auto",
                    mixed_precision: str | None = None) -> Grid:
    """The grid on `bundle`, on `device`; fp16 on a GPU and fp32 on the CPU unless told."""
    target = resolve_device(device)
    precision = mixed_precision or ("fp16" if target.type == "cuda" else "no")
    with torch.no_grad(), bundle.frozen_for_training(target, torch.float32), eval_mode(bundle.modules()), \
            autocast(target, precision):
        return make_grid(request, StandaloneDrawer(bundle, target), progress)
