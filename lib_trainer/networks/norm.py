"""Norm layers (LyCORIS' `train_norm=True`, with any LyCORIS algo): the GroupNorm/LayerNorm
layers inside the chosen blocks learn a change of their scale and shift,
y = norm(x) * (w + w_norm) + (b + b_norm), both changes starting at zero.

Files store `w_norm` and `b_norm` per norm layer (no alpha: applied at scale 1), as LyCORIS
writes them and the WebUI's network_norm reads them (it needs both keys).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidInput
from ..formats.kohya_names import TargetLayer
from .base import AdapterModule


def normalised(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's normalisation without its own scale and shift."""
    if isinstance(layer, nn.GroupNorm):
        return F.group_norm(x, layer.num_groups, None, None, layer.eps)
    return F.layer_norm(x, layer.normalized_shape, None, None, layer.eps)


class NormModule(AdapterModule):
    FILE_KEYS = frozenset({"w_norm"})

    def __init__(self, target: TargetLayer, settings: dict[str, Any]) -> None:
        super().__init__(target)
        layer = target.module
        self.module_dropout = settings.get("module_dropout", 0.0)
        self.w_norm = nn.Parameter(torch.zeros(layer.weight.shape))
        self.b_norm = nn.Parameter(torch.zeros(layer.weight.shape))

    def delta_output(self, x: torch.Tensor) -> torch.Tensor | None:
        if self.training and self.module_dropout and torch.rand(()) < self.module_dropout:
            return None
        layer = self.base_layer
        # GroupNorm scales the channel axis (1), LayerNorm the trailing axes.
        shape = (-1, *(1,) * (x.dim() - 2)) if isinstance(layer, nn.GroupNorm) else self.w_norm.shape
        w, b = self.w_norm.to(x.dtype).reshape(shape), self.b_norm.to(x.dtype).reshape(shape)
        return normalised(layer, x) * w + b

    def delta_weight(self) -> torch.Tensor:
        return self.w_norm

    def delta_bias(self) -> torch.Tensor:
        return self.b_norm

    def file_tensors(self) -> dict[str, torch.Tensor]:
        return {"w_norm": self.w_norm, "b_norm": self.b_norm}

    def load_file_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        if set(tensors) != {"w_norm", "b_norm"} or tensors["w_norm"].shape != self.w_norm.shape:
            raise InvalidInput(f"{self.kohya_name}: the file has {', '.join(sorted(tensors))}, a norm layer of this "
                               f"network w_norm and b_norm of {list(self.w_norm.shape)}")
        with torch.no_grad():
            self.w_norm.copy_(tensors["w_norm"])
            self.b_norm.copy_(tensors["b_norm"])
