"""IA3 (LyCORIS `algo=ia3`): a learned per-channel scaling of a layer's output,
y = W x * (1 + w) + b, or of its input with `train_on_input`, y = W (x * (1 + w)) + b
(functional.ia3_delta_output). w starts at zero, so a fresh network changes nothing.

A few thousand parameters for a whole model: quick to train and tiny, but, as the tutorials say,
it does not transfer well to other base models; LyCORIS advises a high learning rate (5e-3 to
1e-2). Only Linear layers are adapted: the WebUI's network_ia3 reshapes the vector to (out, 1),
which fits a 2-D weight only. Files store `weight` and `on_input` (an integer flag) per layer,
as the WebUI reads them; with no `alpha`, it applies them at scale 1, as trained.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import InvalidInput
from ..formats.kohya_names import TargetLayer
from ..hosts.upcast_layers import upcast_linear
from .base import AdapterModule
from .functional import ia3_delta_output
from .lycoris import LycorisMethod


class IA3Module(AdapterModule):
    FILE_KEYS = frozenset({"on_input"})

    def __init__(self, target: TargetLayer, rank: int, alpha: float, settings: dict[str, Any]) -> None:
        super().__init__(target)
        layer = target.module
        self.on_input = bool(settings.get("train_on_input"))
        self.module_dropout = settings.get("module_dropout", 0.0)
        self.weight = nn.Parameter(torch.zeros(layer.in_features if self.on_input else layer.out_features))

    def delta_output(self, x: torch.Tensor) -> torch.Tensor | None:
        raise AssertionError("IA3 needs the base output: adapt() is used")

    def adapt(self, x: torch.Tensor, base_output: torch.Tensor) -> torch.Tensor:
        if self.training and self.module_dropout and torch.rand(()) < self.module_dropout:
            return base_output
        gain = self.weight.to(base_output.dtype) * self.multiplier
        layer = self.base_layer
        if self.on_input:
            return base_output + upcast_linear(x * gain, layer.weight)  # a 16-bit base weight too
        # The bias is not scaled: take it off the output the base layer already computed.
        without_bias = base_output - layer.bias if layer.bias is not None else base_output
        return base_output + ia3_delta_output(without_bias, gain)

    def delta_weight(self) -> torch.Tensor:
        weight = self.base_layer.weight.detach()
        return weight * (self.weight[None, :] if self.on_input else self.weight[:, None])

    def file_tensors(self) -> dict[str, torch.Tensor]:
        return {"weight": self.weight, "on_input": torch.tensor(int(self.on_input))}

    def load_file_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        weight = tensors.get("weight")
        if weight is None or weight.shape != self.weight.shape or bool(tensors.get("on_input", 0)) != self.on_input:
            raise InvalidInput(f"{self.kohya_name}: the file's IA3 vector does not fit this layer; use the same "
                               "train_on_input as the file")
        with torch.no_grad():
            self.weight.copy_(weight)


class IA3Method(LycorisMethod):
    algo = "ia3"
    label = "IA3"
    ui_types = {"IA3": {"network_module": "lycoris.kohya", "network_args": "algo=ia3", "conv_dim": 0}}
    OPTIONS = ("train_on_input",)
    ADAPTER = IA3Module

    def check(self, settings: dict[str, Any]) -> list[str]:
        # A per-channel gain has no hidden features or ranks to drop (LyCORIS ignores them).
        return [f"{key}={settings[key]}: {key} does not apply to algo=ia3 (it has no hidden features or ranks); "
                "use module_dropout" for key in ("dropout", "rank_dropout") if settings[key]]

    def adapts_conv(self, settings: dict[str, Any]) -> bool:
        return False

    def adapts(self, target: TargetLayer) -> bool:
        return isinstance(target.module, nn.Linear)


METHOD = IA3Method()
