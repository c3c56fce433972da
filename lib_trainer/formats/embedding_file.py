"""Textual-inversion embedding files in the layouts the WebUI reads
(modules/textual_inversion: `create_embedding_from_data`).

- `.safetensors` (the default): the vectors as one tensor `emb_params` [n, width] (SD1/SD2;
  the WebUI takes a file's single tensor, and kohya names it so), or `clip_l` [n, 768] and
  `clip_g` [n, 1280] (SDXL). The WebUI names the embedding after the file; the header's
  metadata also says `name`, `step`, `sd_checkpoint`, `sd_checkpoint_name` and the run's ss_*.
- `.pt` (SD1/SD2): a dict of `string_to_token` {'*': 265}, `string_to_param` {'*': [n, width]},
  `name`, `step`, `sd_checkpoint`, `sd_checkpoint_name`, and our training metadata (the ss_*
  keys the comparison reads, compare/runs.py) as a dict of strings under `lib_trainer_metadata`,
  which the WebUI's loader never reads. SDXL `.pt` files hold only `clip_l` and `clip_g`: the
  WebUI reads every entry of such a file as a tensor, so they carry no metadata.
Only tensors and plain types are written, so `torch.load(weights_only=True)` reads them.
"""
from __future__ import annotations

import os

import torch

from ..errors import InvalidInput
from ..fileio import atomic_path
from .lora_file import read_metadata, save_lora

EXTENSIONS = (".safetensors", ".pt")
SDXL_KEYS = ("clip_l", "clip_g")
SINGLE_KEY = "emb_params"
PT_TOKEN = 265  # the id the WebUI's own files carry in string_to_token; no loader uses it
METADATA_KEY = "lib_trainer_metadata"


def save_embedding(path: str, name: str, vectors: list[torch.Tensor], step: int, sd_checkpoint: str | None,
                   sd_checkpoint_name: str | None, metadata: dict[str, str] | None = None) -> None:
    """Atomically write the vectors (one [n, width] tensor per text encoder) as `path` says."""
    vectors = [v.detach().to("cpu").contiguous() for v in vectors]
    if path.endswith(".pt"):
        if len(vectors) == 2:
            data = dict(zip(SDXL_KEYS, vectors))
        else:
            data = {"string_to_token": {"*": PT_TOKEN}, "string_to_param": {"*": vectors[0]}, "name": name,
                    "step": int(step), "sd_checkpoint": sd_checkpoint, "sd_checkpoint_name": sd_checkpoint_name}
            if metadata:
                data[METADATA_KEY] = {str(key): str(value) for key, value in metadata.items()}
        with atomic_path(path) as temporary:
            torch.save(data, temporary)
        return
    header = {**(metadata or {}), "name": name, "step": str(step), "sd_checkpoint": sd_checkpoint or "",
              "sd_checkpoint_name": sd_checkpoint_name or ""}
    save_lora(path, embedding_tensors(vectors), header)


def embedding_tensors(vectors: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors of a .safetensors embedding (and, prefixed, of a LoRA's bundled one)."""
    return dict(zip(SDXL_KEYS, vectors)) if len(vectors) == 2 else {SINGLE_KEY: vectors[0]}


def load_embedding(path: str) -> tuple[str, list[torch.Tensor], int | None]:
    """(name, vectors per text encoder, step) of any layout the WebUI reads, ours or another
    tool's; the name is the file's (as in the WebUI) unless a .pt says its own."""
    name = os.path.splitext(os.path.basename(path))[0]
    step = None
    try:
        if path.endswith(".pt"):
            data = torch.load(path, map_location="cpu", weights_only=True)
            name = data.get("name") or name if isinstance(data, dict) and "string_to_param" in data else name
            step = data.get("step") if isinstance(data, dict) else None
        else:
            from safetensors.torch import load_file

            data = load_file(path)
            raw_step = read_metadata(path).get("step", "")
            step = int(raw_step) if raw_step.isdigit() else None
    except Exception as error:  # a broken or foreign file: say which and why
        raise InvalidInput(f"{path}: not a readable embedding file ({error})") from None
    return name, vectors_of(data, path), step


def vectors_of(data, path: str) -> list[torch.Tensor]:
    if isinstance(data, dict) and "string_to_param" in data:
        params = data["string_to_param"]
        if len(params) != 1:
            raise InvalidInput(f"{path}: the embedding holds {len(params)} words; one is expected")
        return [next(iter(params.values())).float()]
    if isinstance(data, dict) and all(key in data for key in SDXL_KEYS):
        return [data[key].float() for key in SDXL_KEYS]
    tensors = [value for value in data.values() if isinstance(value, torch.Tensor)] if isinstance(data, dict) else []
    if len(tensors) == 1:
        tensor = tensors[0].float()
        return [tensor.unsqueeze(0) if tensor.dim() == 1 else tensor]
    raise InvalidInput(f"{path}: not an embedding (no string_to_param, clip_l/clip_g or single tensor)")


def is_embedding_keys(keys) -> bool:
    """Whether a .safetensors file's tensor names are an embedding's (ours or kohya's)."""
    return set(keys) in ({SINGLE_KEY}, set(SDXL_KEYS))


def read_embedding_metadata(path: str) -> dict[str, str] | None:
    """The metadata of an embedding file (the safetensors header, or a .pt's `name`, `step` and
    `lib_trainer_metadata`), {} when it has none; None when `path` is not an embedding (a LoRA,
    a hypernetwork). Reads a .safetensors header only; raises OSError/ValueError for a file
    that cannot be read."""
    if not path.lower().endswith(".pt"):
        from .lora_file import read_tensor_names

        return read_metadata(path) if is_embedding_keys(read_tensor_names(path)) else None
    try:
        data = torch.serialization.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickles with code, cut-short files: not ours to compare
        raise ValueError(f"{path}: not readable with the weights-only loader ({type(error).__name__})") from None
    if not isinstance(data, dict):
        return None
    if "string_to_param" in data:
        found = data.get(METADATA_KEY)
        metadata = {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}
        for key in ("name", "step"):
            if data.get(key) is not None:
                metadata.setdefault(key, str(data[key]))
        return metadata
    if all(key in data for key in SDXL_KEYS) and all(isinstance(v, torch.Tensor) for v in data.values()):
        return {}
    return None


def existing_embedding_file(folder: str, name: str) -> str | None:
    """The file in `folder` that already holds an embedding of this name, if any."""
    for extension in EXTENSIONS:
        path = os.path.join(folder, name + extension)
        if os.path.exists(path):
            return path
    return None
