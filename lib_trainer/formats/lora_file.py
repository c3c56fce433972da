"""Writing and reading LoRA `.safetensors` files the way kohya does.

Besides the training metadata, kohya stores two hashes of the tensors that tools such as
the WebUI and civitai show: `sshs_model_hash` (sha256 of the file's tensor data, i.e.
everything after the header) and `sshs_legacy_hash` (the first 8 hex digits of the
sha256 of 64 KiB at offset 1 MiB, AddNet's old hash). Both are computed on the file
with only the `ss_*` metadata, so user metadata added later does not change them.
"""
from __future__ import annotations

import hashlib
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
    """Atomically write tensors + string metadata, with kohya's sshs_* hashes added."""
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


def load_lora(path: str) -> dict[str, torch.Tensor]:
    return load_file(path)
