"""The WebUI's hypernetwork `.pt` files (modules/hypernetworks/hypernetwork.py), written and read.

A file is one pickled dict:
- an integer key per attention width (768, 1024, 2048, 320 ...) -> a pair (k, v) of state
  dicts, one per module: the module on the keys' input and the one on the values' input, each
  `linear.<index>.weight` / `.bias` by its position in the module's layer sequence;
- `layer_structure` (e.g. [1.0, 2.0, 1.0]), `activation_func`, `is_layer_norm`,
  `weight_initialization`, `activate_output`, `dropout_structure`, `last_layer_dropout`,
  `use_dropout`, `optional_info` (free text, or None), `name`, `step`, `sd_checkpoint` (the
  base model's short hash) and `sd_checkpoint_name`.
The WebUI skips every other key, so ours keeps the training metadata a LoRA carries in its
safetensors header (the `ss_*` keys the comparison reads) under `lib_trainer_metadata`, as a
dict of strings.

Only tensors and plain values go in, and files are read with torch's weights-only loader: a
file, ours or a download, never runs code here. They are written in torch's original
(non-zip) serialisation, because the WebUI's own checking unpickler (modules/safe.py) refuses
the records newer torch versions add to the zip format (`.format_version`,
`.storage_alignment`): with the zip format the WebUI would refuse to load the file.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import InvalidInput
from ..fileio import write_bytes_atomic

FIELDS = ("layer_structure", "activation_func", "is_layer_norm", "weight_initialization", "activate_output",
          "dropout_structure", "last_layer_dropout", "use_dropout", "optional_info", "name", "step",
          "sd_checkpoint", "sd_checkpoint_name")
METADATA_KEY = "lib_trainer_metadata"
EXTENSION = ".pt"
# The WebUI's first hypernetworks had two plain linears under these names; it renames them.
OLD_KEYS = {"linear1.weight": "linear.0.weight", "linear1.bias": "linear.0.bias",
            "linear2.weight": "linear.1.weight", "linear2.bias": "linear.1.bias"}

StateDict = dict[str, torch.Tensor]


@dataclass
class HypernetworkFile:
    layers: dict[int, tuple[StateDict, StateDict]]   # width -> (k, v) module weights
    fields: dict[str, Any]                            # the documented plain fields the file has
    metadata: dict[str, str] = field(default_factory=dict)  # our training metadata ({} for others' files)


def is_hypernetwork_path(path: str) -> bool:
    return path.lower().endswith(EXTENSION)


def write_hypernetwork_file(path: str, layers: dict[int, tuple[StateDict, StateDict]], fields: dict[str, Any],
                            metadata: dict[str, str] | None = None) -> None:
    """Write the file atomically; `fields` are the documented plain fields."""
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise ValueError(f"not hypernetwork file fields: {sorted(unknown)}")
    content: dict[Any, Any] = {}
    for width, pair in layers.items():
        content[int(width)] = tuple({key: tensor.detach().cpu().contiguous() for key, tensor in part.items()}
                                    for part in pair)
    content.update(fields)
    if metadata:
        content[METADATA_KEY] = {str(key): str(value) for key, value in metadata.items()}
    buffer = io.BytesIO()
    torch.save(content, buffer, _use_new_zipfile_serialization=False)
    write_bytes_atomic(path, buffer.getvalue())


def read_hypernetwork_file(path: str) -> HypernetworkFile:
    """The file's layers and fields; raises InvalidInput saying what is wrong with a file that
    is not a readable hypernetwork."""
    content = _load(path)
    layers: dict[int, tuple[StateDict, StateDict]] = {}
    for key, value in content.items():
        if not isinstance(key, int):
            continue
        if not (isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(part, dict) for part in value)):
            raise InvalidInput(f"{path}: width {key} does not hold a (k, v) pair of module weights")
        pair = tuple({OLD_KEYS.get(name, name): tensor for name, tensor in part.items()} for part in value)
        for part in pair:
            if not part or not all(isinstance(tensor, torch.Tensor) for tensor in part.values()):
                raise InvalidInput(f"{path}: width {key} holds something other than weights")
        layers[key] = pair
    if not layers:
        hint = " (it looks like a textual-inversion embedding)" if "string_to_param" in content else ""
        raise InvalidInput(f"{path}: not a hypernetwork file: it has no attention-width keys such as 768{hint}")
    fields = {name: content[name] for name in FIELDS if name in content}
    metadata = content.get(METADATA_KEY)
    metadata = {str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) else {}
    return HypernetworkFile(layers, fields, metadata)


def read_hypernetwork_metadata(path: str) -> dict[str, str]:
    """Our training metadata of a hypernetwork file ({} for a file of another tool); raises
    ValueError for a file that is not a hypernetwork."""
    try:
        return read_hypernetwork_file(path).metadata
    except InvalidInput as error:
        raise ValueError(str(error)) from None


def hypernetwork_file_problems(path: str) -> list[str]:
    """What keeps `path` from being a hypernetwork to start from (--network_weights)."""
    try:
        read_hypernetwork_file(path)
    except InvalidInput as error:
        return [str(error).removeprefix(f"{path}: ")]
    return []


def _load(path: str) -> dict:
    if not os.path.isfile(path):
        raise InvalidInput(f"{path}: no such file")
    try:
        # torch.serialization.load, not torch.load: the WebUI replaces torch.load with its own
        # checking unpickler; the weights-only loader is as safe and reads every torch format.
        content = torch.serialization.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # every unreadable file reads the same to the user
        text = str(error)
        if "weights_only" in text or "Unsupported global" in text:
            raise InvalidInput(f"{path}: holds objects other than weights and plain values, which could run code "
                               "when loaded; hypernetworks are read with torch's weights-only loader only") from None
        raise InvalidInput(f"{path}: cannot be read as a PyTorch file ({type(error).__name__}); it may be cut "
                           "short or not a hypernetwork: download or copy it again") from None
    if not isinstance(content, dict):
        raise InvalidInput(f"{path}: not a hypernetwork file (it holds a {type(content).__name__}, not a table)")
    return content
