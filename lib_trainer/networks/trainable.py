"""What a training run trains: the one interface the loop talks to.

A `Trainable` owns its parameters and their optimizer groups, attaches itself to the model
bundle for the run and detaches in a `finally`, says which parts of the model it conditions,
writes its file (and reads weights back from one), and gives its metadata. A LoRA-family
network is one (networks/base.py); an embedding or a hypernetwork is another. The loop never
asks which kind it has.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

import torch
from torch import nn

# What a trainable can condition; the keys of `Trainable.conditioned()`.
UNET, TEXT_ENCODER, TOKEN_EMBEDDINGS = "unet", "text_encoder", "token_embeddings"


class Trainable(nn.Module):
    kind: str = ""  # "lora", "embedding", "hypernetwork": shown to the user
    file_extension: str = ".safetensors"  # of the files it writes (the WebUI's hypernetworks are .pt)

    # --- training ----------------------------------------------------------------------
    def parameter_groups(self, unet_lr: float, text_encoder_lr: float) -> list[dict]:
        """Optimizer groups, each with a "name" (its component) and its learning rate."""
        raise NotImplementedError

    def conditioned(self) -> dict[str, int]:
        """Part of the model -> how many of its layers (or vectors) this trains."""
        raise NotImplementedError

    def attach(self, bundle) -> None:
        raise NotImplementedError

    def detach(self) -> None:
        raise NotImplementedError

    @contextlib.contextmanager
    def attached(self, bundle=None) -> Iterator["Trainable"]:
        """Attached for the block, detached afterwards whatever happens."""
        self.attach(bundle)
        try:
            yield self
        finally:
            self.detach()

    def all_finite(self) -> bool:
        return all(torch.isfinite(p).all() for p in self.parameters())

    # --- files ---------------------------------------------------------------------------
    def file_metadata(self) -> dict[str, str]:
        """The `ss_*` keys that describe what was trained (ss_network_module, dims, args)."""
        raise NotImplementedError

    def file_path(self, path: str) -> str:
        """The path of the file saved for `path` (a .safetensors name), with this kind's extension."""
        return os.path.splitext(path)[0] + self.file_extension

    def write_file(self, path: str, metadata: dict[str, str], dtype: torch.dtype | None) -> None:
        """Write the file users load (atomically), in `dtype` where given."""
        raise NotImplementedError

    def load_weights(self, path: str) -> None:
        """Start from the weights of an existing file (`network_weights`); raises ValueError
        with what to change when the file does not fit."""
        raise NotImplementedError

    def shape_signature(self) -> dict[str, list[int]]:
        """Parameter name -> shape: what must match for a saved run state to be resumed."""
        return {name: list(parameter.shape) for name, parameter in self.named_parameters()}
