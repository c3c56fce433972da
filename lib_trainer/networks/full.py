"""full (LyCORIS `algo=full`): train the chosen layers themselves, saved as differences.

The adapter holds diff (the layer's weight shape) and diff_b (its bias), both zero at the start,
and adds op(x, diff) + diff_b to the layer's output: the same gradients as training the weight
itself, with the base model left untouched. A small full fine-tune of chosen blocks (use
`preset`), as large on disk as those layers are. Files store `diff` and `diff_b` per layer, as
the WebUI's network_full reads them (no alpha: applied at scale 1).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..formats.kohya_names import TargetLayer
from .lycoris import LycorisMethod, WeightDeltaModule


class FullModule(WeightDeltaModule):
    FILE_KEYS = frozenset({"diff"})

    def __init__(self, target: TargetLayer, rank: int, alpha: float, settings: dict[str, Any]) -> None:
        super().__init__(target, {**settings, "dora_wd": False})
        layer = target.module
        self.diff = nn.Parameter(torch.zeros(self.shape))
        # No bias change where the WebUI would drop it (q/k/v of a fused attention, see
        # hosts/fused_attention.py): what is trained is what the file gives.
        trains_bias = layer.bias is not None and getattr(layer, "separate_bias", True)
        self.diff_b = nn.Parameter(torch.zeros(layer.bias.shape)) if trains_bias else None

    def weight_delta(self) -> torch.Tensor:
        return self.diff

    def delta_bias(self) -> torch.Tensor | None:
        return self.diff_b

    def delta_output(self, x: torch.Tensor) -> torch.Tensor | None:
        out = super().delta_output(x)
        if out is None or self.diff_b is None:
            return out
        bias = self.diff_b.to(out.dtype)
        return out + (bias.view(-1, 1, 1) if self.conv is not None else bias)

    def _file_tensors(self) -> dict[str, torch.Tensor]:
        return {"diff": self.diff, **({"diff_b": self.diff_b} if self.diff_b is not None else {})}


class FullMethod(LycorisMethod):
    algo = "full"
    label = "full"
    ui_types = {"full (fine-tune layers)": {"network_module": "lycoris.kohya", "network_args": "algo=full",
                                             "conv_dim": 0}}
    ADAPTER = FullModule


METHOD = FullMethod()
