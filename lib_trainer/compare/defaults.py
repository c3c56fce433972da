"""What a run's grid starts from, and where it is saved: shared by the Compare sub-tab (which
pre-fills its fields with it) and "Compare when done" (which draws it as it is).

The default grid is every saved file of the run, the base model as a baseline column, at
weights 0.6, 0.8 and 1, with the prompt the run trained for (trigger word, class, `smile`) at
the size most of its pictures trained at. An embedding run's grid has no weights (one row per
prompt), and its prompt says the embedding's name, which each cell replaces by its file's.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

from .grid import Grid, GridRequest, default_grid_path, save_grid
from .runs import SavedFile, training_config, training_model, training_prompt, training_size

DEFAULT_WEIGHTS = (0.6, 0.8, 1.0)
DEFAULT_WEIGHTS_TEXT = "0.6,0.8,1"
EMBEDDING_WEIGHTS_TEXT = "1"  # an embedding has no weight


@dataclass(frozen=True)
class RunDefaults:
    """The Compare fields' starting values for a run's files."""
    prompt: str
    width: int
    height: int
    model: str
    weights: str = DEFAULT_WEIGHTS_TEXT


def run_defaults(files: Sequence[SavedFile], fallback_model: str = "") -> RunDefaults:
    """From the run's last file (the most trained: its metadata is the newest)."""
    if not files:
        return RunDefaults("", 512, 512, fallback_model)
    last = files[-1]
    width, height = training_size(last)
    model = next((found for found in (training_model(saved) for saved in reversed(files)) if found), "")
    weights = EMBEDDING_WEIGHTS_TEXT if last.is_embedding else DEFAULT_WEIGHTS_TEXT
    return RunDefaults(training_prompt(last), width, height, model or fallback_model, weights)


def default_request(files: Sequence[SavedFile], **changes) -> GridRequest:
    """The run's epoch x weight grid with the defaults above; `changes` overrides the settings
    every cell shares (steps, seed, ...)."""
    settings = run_defaults(files)
    weights = (1.0,) if any(file.is_embedding for file in files) else DEFAULT_WEIGHTS
    values = dict(files=[None, *files], prompts=[settings.prompt], weights=weights,
                  width=settings.width, height=settings.height)
    values.update(changes)
    return GridRequest(**values)


def base_model_options(files: Sequence[SavedFile | None], model: str = "") -> tuple[str, dict]:
    """(model, load_bundle options) to draw a grid of `files` on: `model`, else the base model
    the run trained on; with the run's v_parameterization, clip_skip and VAE when it is that
    model (a v-prediction LoRA drawn as epsilon, or at another clip skip, would look broken)."""
    saved = [file for file in files if file is not None]
    settings = next((found for found in (training_config(file) for file in reversed(saved)) if found), {})
    trained_on = str(settings.get("pretrained_model_name_or_path") or "")
    model = (model or "").strip() or trained_on
    if not model or model != trained_on:
        return model, {}
    options = {"v_parameterization": bool(settings.get("v_parameterization", False)),
               "clip_skip": int(settings.get("clip_skip") or 1), "vae": str(settings.get("vae") or "")}
    return model, options


def grid_output_dir(request: GridRequest, fallback: str) -> str:
    """The folder of the grid's network files (its PNG goes in their compare/ subfolder), so it
    sits beside the run it shows; `fallback` for a grid of the base model alone."""
    saved = [file for file in request.files if file is not None]
    return os.path.dirname(os.path.abspath(saved[0].path)) if saved else fallback


def save_beside_run(grid: Grid, fallback_dir: str) -> str:
    """Save `grid` as <folder of its files>/compare/<run>-<time>.png, and its cells beside it."""
    saved = [file for file in grid.request.files if file is not None]
    run = saved[0].run if saved else "base-model"
    return save_grid(grid, default_grid_path(grid_output_dir(grid.request, fallback_dir), run))
