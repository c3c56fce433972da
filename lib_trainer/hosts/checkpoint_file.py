"""Reading the tensors of a checkpoint file one at a time, without running code from it.

`.safetensors` files are read through `safetensors.safe_open`. PyTorch `.ckpt`/`.pt` files are
pickles, which can run any code when loaded the ordinary way; they are read only with
torch's weights-only loader (`torch.serialization.load`, which the WebUI does not replace
as it does `torch.load`), which builds tensors and plain containers and refuses
everything else. Many SD1 `.ckpt` files also pickle a PyTorch Lightning callback and numpy
scalars beside the weights (training bookkeeping); those names are mapped to an inert stand-in
that keeps nothing and runs nothing, as the WebUI's own safe unpickler allows them.

Memory: both formats are memory-mapped, and the pages read so far stay counted in the
process's resident memory until the mapping is closed. The reader hands out copies and reopens
the file after every `REOPEN_AFTER_BYTES`, so loading holds the model once plus at most that
much of the file.
"""
from __future__ import annotations

import os
import pickle

import torch

from ..errors import UserError

REOPEN_AFTER_BYTES = 256 * 2**20


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be used, with what to do about it."""


class _Inert:
    """Stands in for the non-tensor objects some checkpoints pickle beside the weights."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __setstate__(self, state) -> None:
        pass


# Globals that real SD checkpoints pickle outside the weights (as the WebUI's modules/safe.py
# allows them); numpy 2 renamed numpy.core to numpy._core.
INERT_GLOBALS = [
    "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
    "pytorch_lightning.callbacks.model_checkpoint",
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar",
    "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
    "numpy.dtype", "numpy.ndarray",
]


class CheckpointReader:
    """The tensors of one checkpoint: `keys()`, `shape(key)`, `tensor(key, dtype)` and
    `metadata()`. Use as a context manager."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._bytes_since_open = 0
        self._open()

    def keys(self) -> list[str]:
        raise NotImplementedError

    def shape(self, key: str) -> tuple[int, ...]:
        raise NotImplementedError

    def metadata(self) -> dict[str, str]:
        return {}

    def tensor(self, key: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        """A copy of the tensor that the caller owns; floating-point ones converted to `dtype`."""
        if self._bytes_since_open > REOPEN_AFTER_BYTES:
            self.close()
            self._open()
            self._bytes_since_open = 0
        mapped = self._mapped_tensor(key)
        self._bytes_since_open += mapped.numel() * mapped.element_size()
        if dtype is None or not mapped.is_floating_point():
            dtype = mapped.dtype
        # one copy, converted on the way: it no longer refers to the mapping, so closing that
        # releases what was read
        return mapped.to(dtype=dtype, memory_format=torch.contiguous_format, copy=True)

    def close(self) -> None:
        raise NotImplementedError

    def _open(self) -> None:
        raise NotImplementedError

    def _mapped_tensor(self, key: str) -> torch.Tensor:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SafetensorsReader(CheckpointReader):
    def _open(self) -> None:
        from safetensors import safe_open

        try:
            self._handle = safe_open(self.path, framework="pt", device="cpu")
            self._keys = list(self._handle.keys())
        except Exception as error:  # the Rust SafetensorError is not importable by a stable name
            raise CheckpointError(
                f"{self.path} is not a readable .safetensors file ({error}). It may be incomplete: "
                "download it again and compare its size with the one on the download page.") from error

    def keys(self) -> list[str]:
        return self._keys

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._handle.get_slice(key).get_shape())

    def metadata(self) -> dict[str, str]:
        return self._handle.metadata() or {}

    def _mapped_tensor(self, key: str) -> torch.Tensor:
        return self._handle.get_tensor(key)

    def close(self) -> None:
        handle, self._handle = getattr(self, "_handle", None), None
        if handle is not None:
            handle.__exit__(None, None, None)


class TorchCheckpointReader(CheckpointReader):
    def _open(self) -> None:
        self._state = load_ckpt_state_dict(self.path)

    def keys(self) -> list[str]:
        return list(self._state)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._state[key].shape)

    def _mapped_tensor(self, key: str) -> torch.Tensor:
        return self._state[key]

    def close(self) -> None:
        self._state = {}


def open_checkpoint(path: str) -> CheckpointReader:
    """A reader for `path`: safetensors by extension, otherwise a PyTorch pickle."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path} is a folder, not a checkpoint file" if os.path.isdir(path) else f"{path}: no such file")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"{path} is empty (0 bytes): its download or copy did not finish; download it again")
    if path.lower().endswith(".safetensors"):
        return SafetensorsReader(path)
    return TorchCheckpointReader(path)


def load_ckpt_state_dict(path: str) -> dict[str, torch.Tensor]:
    """The weights of a `.ckpt`/`.pt` file (under `state_dict` if nested), memory-mapped where
    the file format allows, refusing anything but tensors and plain containers."""
    stand_ins = [(_Inert, name) for name in INERT_GLOBALS]
    try:
        with torch.serialization.safe_globals(stand_ins):
            try:
                loaded = torch.serialization.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as error:
                if "mmap" not in str(error):
                    raise
                # files from before PyTorch 1.6 are not zip archives and cannot be mapped
                loaded = torch.serialization.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise _unpickling_error(path, error) from error
    except Exception as error:  # noqa: BLE001 - see below
        # On bytes that are not a checkpoint, torch's weights-only unpickler fails in whatever way
        # the garbage leads it to (IndexError, KeyError, EOFError, zipfile errors, ...): all of
        # them mean "not a readable checkpoint", never a bug in the caller.
        detail = (str(error).strip().splitlines() or [""])[0]
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint ({type(error).__name__}: {detail}). It may be incomplete "
            "or not a model file: download it again, or use the .safetensors version of the model.") from error
    return _state_dict_of(path, loaded)


def _unpickling_error(path: str, error: Exception) -> CheckpointError:
    message = str(error)
    refused = ("Unsupported global", "unrecognized function", "Can only", "blocked")
    if any(text in message for text in refused):
        detail = next((line.strip() for line in message.splitlines() if any(t in line for t in refused)), "")
        return CheckpointError(
            f"{path} holds Python objects other than tensors ({detail}), so it was not loaded: unpickling "
            "it could run code from the file. Use the .safetensors version of the model; if you trust this "
            "file, convert it to .safetensors with a tool you trust first.")
    return CheckpointError(
        f"{path} is not a readable PyTorch checkpoint ({message.splitlines()[-1] if message else error!r}). "
        "It may be incomplete or not a model file: download it again, or use the .safetensors version.")


def _state_dict_of(path: str, loaded) -> dict[str, torch.Tensor]:
    while isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]  # Lightning nests the weights, some tools nest twice
    if not isinstance(loaded, dict):
        raise CheckpointError(f"{path} holds a {type(loaded).__name__}, not a dictionary of weights")
    others = [key for key, value in loaded.items() if not isinstance(value, torch.Tensor)]
    if others:
        raise CheckpointError(f"{path}: its weights include entries that are not tensors: {', '.join(map(str, others[:5]))}")
    return loaded
