"""Writing and reading LoRA `.safetensors` files the way kohya does.

Besides the training metadata, kohya stores two hashes of the tensors that tools such as
the WebUI and civitai show: `sshs_model_hash` (sha256 of the file's tensor data, i.e.
everything after the header) and `sshs_legacy_hash` (the first 8 hex digits of the
sha256 of 64 KiB at offset 1 MiB, AddNet's old hash). Both are computed on the file
with only the `ss_*` metadata, so user metadata added later does not change them.
"""
from __future__ import annotations

import hashlib
import io
import json
import struct

import torch
from safetensors.torch import load_file, save

from ..fileio import write_bytes_atomic


def tensor_data_hash(serialized: bytes) -> str:
    header_length = struct.unpack("<Q", serialized[:8])[0]
    return hashlib.sha256(serialized[8 + header_length:]).hexdigest()


def legacy_hash(serialized: bytes) -> str:
    return hashlib.sha256(serialized[0x100000:0x110000]).hexdigest()[:8]


def save_lora(path: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Atomically write tensors + string metadata, with kohya's sshs_* hashes added. A .ckpt or
    .pt path (save_model_as) gets a plain torch state dict without metadata, as kohya's
    save_weights writes those; the WebUI's Lora loader reads them with torch.load."""
    if path.lower().endswith((".ckpt", ".pt")):
        buffer = io.BytesIO()
        # torch's older (non-zip) layout: the WebUI 1.10's safe unpickler refuses the zip entries
        # that newer torch writes (.format_version, .storage_alignment), so it would not load the
        # default layout; it loads this one, and torch.load(weights_only=True) too.
        torch.save({key: tensor.contiguous() for key, tensor in tensors.items()}, buffer,
                   _use_new_zipfile_serialization=False)
        write_bytes_atomic(path, buffer.getvalue())
        return
    metadata = {key: str(value) for key, value in metadata.items()}
    training_only = save(tensors, {k: v for k, v in metadata.items() if k.startswith("ss_")})
    metadata["sshs_model_hash"] = tensor_data_hash(training_only)
    metadata["sshs_legacy_hash"] = legacy_hash(training_only)
    write_bytes_atomic(path, save(tensors, metadata))


def read_metadata(path: str) -> dict[str, str]:
    with open(path, "rb") as handle:
        header_length = struct.unpack("<Q", handle.read(8))[0]
        header = json.loads(handle.read(header_length))
    return header.get("__metadata__", {})


def read_tensor_names(path: str) -> list[str]:
    """The tensor names in a safetensors file's header, without reading the tensors; raises
    ValueError saying what is wrong with a file that is not one."""
    import os

    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        start = handle.read(8)
        if len(start) < 8:
            raise ValueError(f"the file is {size} bytes long, too short to be a .safetensors file")
        header_length = struct.unpack("<Q", start)[0]
        if header_length > size - 8 or header_length > 100_000_000:
            raise ValueError("it is not a .safetensors file, or it was cut short (its header runs past its end)")
        try:
            header = json.loads(handle.read(header_length))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ValueError("it is not a .safetensors file (its header is not readable)") from None
    if not isinstance(header, dict):
        raise ValueError("it is not a .safetensors file (its header is not a table)")
    names = [name for name in header if name != "__metadata__"]
    ends = [entry.get("data_offsets", [0, 0])[1] for name, entry in header.items()
            if name != "__metadata__" and isinstance(entry, dict)]
    if ends and max(ends) > size - 8 - header_length:
        raise ValueError("the file was cut short: its tensors run past its end (download or copy it again)")
    return names


def network_file_problems(path: str) -> list[str]:
    """What keeps `path` from being a network file to start from (--network_weights)."""
    import os

    if not os.path.exists(path):
        return ["no such file"]
    if os.path.isdir(path):
        return ["is a folder; give the .safetensors file"]
    if path.lower().endswith(".pt"):  # the WebUI's hypernetworks (a LoRA is a .safetensors file)
        from .hypernetwork_file import hypernetwork_file_problems

        return hypernetwork_file_problems(path)
    try:
        names = read_tensor_names(path)
    except (OSError, ValueError) as error:
        return [str(error)]
    if not names:
        return ["the file holds no tensors"]
    from ..networks.registry import METHODS  # networks import this module

    if not any(method.recognises(names) for method in METHODS.values()):
        return [f"not a LoRA file this trainer knows (its keys look like {names[0]}; a checkpoint or an "
                "embedding cannot be trained on as a network)"]
    return []


def load_lora(path: str) -> dict[str, torch.Tensor]:
    return load_file(path)
