"""LyCORIS' LoRA/LoCon (`algo=locon`, or `algo=lora`, its default), with what kohya's
networks.lora does not have: DoRA (`dora_wd`) and Tucker convolutions (`use_tucker`).

delta_W = scale * up @ down, as networks.lora (lora.py). With `use_tucker` a 3x3 conv becomes
three convolutions, down (1x1) -> mid (3x3) -> up (1x1), whose kernel is
functional.tucker_lora_rebuild; a smaller file than a full 3x3 down projection.

DoRA (weight-decomposed LoRA) learns the magnitude apart from the direction:
W' = m * (W + delta_W) / ||W + delta_W|| (functional.weight_decompose), m (`dora_scale`)
starting at ||W||. The WebUI 1.10 takes that norm per input channel and reads `dora_scale`
shaped (1, in[, 1, 1]); that is the default here. `wd_on_output=True` takes it per output
channel ((out, 1[, 1, 1]), LyCORIS' newer default, which LyCORIS' own loader expects); the file's
ss_network_args says which ("wd_on_output"). The WebUI reads an output-axis file without an error
but applies it wrongly, so keep the default for the WebUI.

Files store `lora_down.weight`, `lora_up.weight`, [`lora_mid.weight`], `alpha`, [`dora_scale`].
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..formats.kohya_names import TargetLayer
from .functional import lora_delta_weight, lora_down_forward, lora_up_forward, tucker_lora_rebuild
from .lycoris import LycorisMethod, WeightDeltaModule, rank_scale


class LoConModule(WeightDeltaModule):
    FILE_KEYS = frozenset({"lora_up.weight"})

    def __init__(self, target: TargetLayer, rank: int, alpha: float, settings: dict[str, Any]) -> None:
        super().__init__(target, settings)
        out_dim, in_dim, *kernel = self.shape
        self.rank = rank
        self.scale, self.alpha = rank_scale(alpha, rank, settings.get("rs_lora", False))
        self.tucker = bool(settings.get("use_tucker")) and any(k != 1 for k in kernel)
        if not kernel:
            down, up = (rank, in_dim), (out_dim, rank)
        else:
            down, up = (rank, in_dim, *([1, 1] if self.tucker else kernel)), (out_dim, rank, 1, 1)
        self.down = nn.Parameter(torch.empty(down))
        self.up = nn.Parameter(torch.zeros(up))
        self.mid = nn.Parameter(torch.empty(rank, rank, *kernel)) if self.tucker else None
        nn.init.kaiming_uniform_(self.down, a=math.sqrt(5))
        if self.mid is not None:
            nn.init.kaiming_uniform_(self.mid, a=math.sqrt(5))

    def weight_delta(self) -> torch.Tensor:
        if self.tucker:
            return self.scale * tucker_lora_rebuild(self.up, self.down, self.mid)
        return lora_delta_weight(self.up, self.down, self.scale)

    def delta_output(self, x: torch.Tensor) -> torch.Tensor | None:
        if self.dora_scale is not None:  # DoRA needs the merged weight's norm: the weight path
            return super().delta_output(x)
        if self.training and self.module_dropout and torch.rand(()) < self.module_dropout:
            return None
        # Without DoRA, through the rank: up(mid(down(x))), cheaper than building delta_W.
        if self.tucker:
            hidden = F.conv2d(F.conv2d(x, self.down.to(x.dtype)), self.mid.to(x.dtype), **self.conv)
        else:
            hidden = lora_down_forward(x, self.down.to(x.dtype), self.conv)
        if self.training and self.dropout:
            hidden = F.dropout(hidden, p=self.dropout)
        scale = self.scale
        if self.training and self.rank_dropout:
            shape = (hidden.shape[0], self.rank, 1, 1) if self.conv else \
                (hidden.shape[0],) + (1,) * (hidden.dim() - 2) + (self.rank,)
            keep = (torch.rand(shape, device=hidden.device) > self.rank_dropout).to(hidden.dtype)
            hidden = hidden * keep
            if self.rank_dropout_scale:
                scale = scale / (1.0 - self.rank_dropout)
        return lora_up_forward(hidden, self.up.to(hidden.dtype), self.conv is not None) * scale

    def _file_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {"lora_down.weight": self.down, "lora_up.weight": self.up, "alpha": torch.tensor(self.alpha)}
        if self.mid is not None:
            tensors["lora_mid.weight"] = self.mid
        return tensors

    def _load_alpha(self, alpha: float) -> None:
        self.alpha, self.scale = alpha, alpha / self.rank


class LoConMethod(LycorisMethod):
    algo = "locon"
    label = "LoCon (LyCORIS)"
    ui_types = {
        "LoCon (LyCORIS)": {"network_module": "lycoris.kohya", "network_args": "algo=locon", "network_dim": 16,
                            "network_alpha": 8.0, "conv_dim": 8, "conv_alpha": 4.0},
        "LoCon Tucker": {"network_module": "lycoris.kohya", "network_args": "algo=locon use_tucker=True",
                         "network_dim": 16, "network_alpha": 8.0, "conv_dim": 8, "conv_alpha": 4.0},
        "DoRA": {"network_module": "lycoris.kohya", "network_args": "algo=locon dora_wd=True", "network_dim": 16,
                 "network_alpha": 8.0, "conv_dim": 0},
    }
    OPTIONS = ("use_tucker", "rs_lora", "dora_wd", "wd_on_output")
    ADAPTER = LoConModule


METHOD = LoConMethod()
# algo=lora (and no algo at all) is the same module in LyCORIS; one UI entry is enough.
LORA = LoConMethod(algo="lora")
LORA.ui_types = {}
