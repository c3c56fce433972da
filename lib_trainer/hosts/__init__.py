"""Where the model comes from. A host hands the trainer a `ModelBundle` (see bundle.py)."""
from __future__ import annotations


def load_bundle(model: str, v_parameterization: bool = False, clip_skip: int = 1):
    """The bundle for a `pretrained_model_name_or_path` value."""
    import os

    if model.startswith("tiny:"):
        from .tiny import build_tiny_bundle

        return build_tiny_bundle(model.split(":", 1)[1], v_parameterization=v_parameterization, clip_skip=clip_skip)
    if os.path.isdir(model):
        from .diffusers_sd import load_diffusers_folder

        return load_diffusers_folder(model, v_parameterization=v_parameterization, clip_skip=clip_skip)
    if os.path.isfile(model):
        raise ValueError(
            f"{model} is a single-file checkpoint; this version trains on a diffusers folder or the built-in "
            "tiny:sd1 model. Convert the checkpoint to a diffusers folder first.")
    raise ValueError(f"pretrained_model_name_or_path={model!r}: no such folder (or use tiny:sd1)")
