"""LoRA (kohya `networks.lora`), and LoCon when convolutions are adapted too.

output = base(x) + multiplier * scale * up(down(x)), scale = alpha / rank.
`down` is initialised like a Linear layer (Kaiming-uniform), `up` with zeros, so a fresh
network leaves the model's output unchanged. Files store `lora_down.weight`,
`lora_up.weight` and `alpha` per layer, as kohya does.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..formats.kohya_names import TargetLayer
from .base import AdapterModule, Network
from .functional import lora_delta_weight, lora_down_forward, lora_scale, lora_up_forward
from ..errors import InvalidInput

METHOD = "networks.lora"


class LoRAModule(AdapterModule):
    def __init__(self, target: TargetLayer, rank: int, alpha: float, dropout: float = 0.0,
                 rank_dropout: float = 0.0, module_dropout: float = 0.0) -> None:
        super().__init__(target)
        layer = target.module
        self.is_conv = isinstance(layer, nn.Conv2d)
        if self.is_conv:
            in_features, out_features = layer.in_channels, layer.out_channels
            self.conv = {"stride": layer.stride, "padding": layer.padding, "dilation": layer.dilation}
            if layer.groups != 1:
                raise ValueError(f"{target.name}: grouped convolutions cannot take a LoRA")
            down_shape = (rank, in_features, *layer.kernel_size)
            up_shape = (out_features, rank, 1, 1)
        else:
            in_features, out_features = layer.in_features, layer.out_features
            self.conv = None
            down_shape, up_shape = (rank, in_features), (out_features, rank)
        self.rank = rank
        self.alpha = float(alpha)
        self.scale = lora_scale(alpha, rank)
        self.down = nn.Parameter(torch.empty(down_shape))
        self.up = nn.Parameter(torch.zeros(up_shape))
        nn.init.kaiming_uniform_(self.down, a=math.sqrt(5))
        self.dropout, self.rank_dropout, self.module_dropout = dropout, rank_dropout, module_dropout

    def delta_output(self, x: torch.Tensor) -> torch.Tensor | None:
        if self.training and self.module_dropout and torch.rand(()) < self.module_dropout:
            return None
        hidden = lora_down_forward(x, self.down.to(x.dtype), self.conv)
        scale = self.scale
        if self.training and self.dropout:
            hidden = nn.functional.dropout(hidden, p=self.dropout)
        if self.training and self.rank_dropout:
            # Drop whole ranks per sample; scale the rest so the expected update is unchanged.
            if self.is_conv:  # (B, r, H, W)
                shape = (hidden.shape[0], self.rank, 1, 1)
            else:  # (B, r) or (B, tokens, r)
                shape = (hidden.shape[0],) + (1,) * (hidden.dim() - 2) + (self.rank,)
            keep = (torch.rand(shape, device=hidden.device) > self.rank_dropout).to(hidden.dtype)
            hidden = hidden * keep
            scale = scale / (1.0 - self.rank_dropout)
        return lora_up_forward(hidden, self.up.to(hidden.dtype), self.is_conv) * scale

    def delta_weight(self) -> torch.Tensor:
        return lora_delta_weight(self.up, self.down, self.scale)

    def file_tensors(self) -> dict[str, torch.Tensor]:
        return {"lora_down.weight": self.down, "lora_up.weight": self.up, "alpha": torch.tensor(self.alpha)}

    def load_file_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        down, up = tensors["lora_down.weight"], tensors["lora_up.weight"]
        if down.shape != self.down.shape or up.shape != self.up.shape:
            raise InvalidInput(f"{self.kohya_name}: file has rank {down.shape[0]}, this network rank {self.rank}; "
                               "use the same network_dim/conv_dim as the file")
        with torch.no_grad():
            self.down.copy_(down)
            self.up.copy_(up)
        if "alpha" in tensors:
            self.alpha = float(tensors["alpha"])
            self.scale = lora_scale(self.alpha, self.rank)


def create(targets: list[TargetLayer], settings: dict) -> Network:
    """settings: network_dim, network_alpha, conv_dim, conv_alpha and the dropouts."""
    adapters = []
    for target in targets:
        if target.is_conv3x3:
            if not settings.get("conv_dim"):
                continue
            rank, alpha = settings["conv_dim"], settings["conv_alpha"]
        else:
            rank, alpha = settings["network_dim"], settings["network_alpha"]
        adapters.append(LoRAModule(target, rank, alpha, settings.get("network_dropout", 0.0),
                                   settings.get("rank_dropout", 0.0), settings.get("module_dropout", 0.0)))
    return Network(adapters, METHOD, settings)
