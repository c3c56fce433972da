"""Which of a model's tensors base_weights_dtype stores in 16 bits, and casting to it.

The Linear and Conv2d layers (weight and bias) hold nearly all of a UNet's or text encoder's
weights and compute through upcast_layers.py; norms, embeddings and everything else stay in
the compute dtype. Casting goes tensor by tensor, so going from one dtype to another never
holds a second copy of the whole model.
"""
from __future__ import annotations

import torch
from torch import nn

STORED_KINDS = (nn.Linear, nn.Conv2d)


def stored_layers(module: nn.Module) -> list[nn.Module]:
    return [layer for layer in module.modules() if isinstance(layer, STORED_KINDS)]


def stored_parameter_names(module: nn.Module) -> set[str]:
    """The state-dict names of the stored layers' weights and biases."""
    names = set()
    for name, layer in module.named_modules():
        if isinstance(layer, STORED_KINDS):
            names.update(f"{name}.{key}" if name else key for key, _ in layer.named_parameters(recurse=False))
    return names


def held_dtypes(module: nn.Module, dtype: torch.dtype | None, layer_dtype: torch.dtype | None,
                buffers: bool = True):
    """(tensor, the dtype it is held in) for every parameter (and buffer): floating-point ones
    of the stored layers in layer_dtype (when given), the others in dtype (None: as they are)."""
    stored = stored_parameter_names(module) if layer_dtype is not None else set()
    tensors = [*module.named_parameters(), *(module.named_buffers() if buffers else ())]
    for name, tensor in tensors:
        if not tensor.is_floating_point():
            yield tensor, tensor.dtype
        else:
            yield tensor, layer_dtype if name in stored else (dtype or tensor.dtype)


def cast_held(module: nn.Module, dtype: torch.dtype | None, layer_dtype: torch.dtype | None) -> None:
    """Cast each tensor in place (its .data) to the dtype `held_dtypes` gives it."""
    for tensor, target in list(held_dtypes(module, dtype, layer_dtype)):
        if tensor.dtype != target:
            tensor.data = tensor.data.to(target)


def held_parameter_bytes(module: nn.Module, dtype: torch.dtype | None, layer_dtype: torch.dtype | None) -> int:
    """Bytes of the parameters once `cast_held` has run (works on the meta device too)."""
    return sum(tensor.numel() * torch.empty((), dtype=target).element_size()
               for tensor, target in held_dtypes(module, dtype, layer_dtype, buffers=False))
