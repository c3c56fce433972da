"""LoHa (LyCORIS `algo=loha`; kohya's `networks.loha`): the Hadamard product of two low-rank
pairs, delta_W = scale * (w1a @ w1b) ⊙ (w2a @ w2b) (functional.loha_delta_weight).

Its rank reaches dim^2 for the parameters of a rank-2*dim LoRA, so LyCORIS advises smaller
dims (dim <= 32, alpha 1 .. dim). Initialised as LyCORIS does: w1a ~ N(0, 0.1), w1b and w2b ~
N(0, 1), w2a = 0, so a fresh network changes nothing. With `use_tucker`, 3x3 convs keep their
kernel in two Tucker cores `hada_t1`/`hada_t2` (r, r, 3, 3) instead of flattening it into
w1b/w2b. Files store `hada_w1_a`, `hada_w1_b`, `hada_w2_a`, `hada_w2_b`, [`hada_t1`,
`hada_t2`], `alpha` and, with `dora_wd`, `dora_scale`: the keys the WebUI's network_hada reads.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..formats.kohya_names import TargetLayer
from .functional import loha_delta_weight
from .lycoris import LycorisMethod, WeightDeltaModule, rank_scale


class LoHaModule(WeightDeltaModule):
    FILE_KEYS = frozenset({"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"})

    def __init__(self, target: TargetLayer, rank: int, alpha: float, settings: dict[str, Any]) -> None:
        super().__init__(target, settings)
        out_dim, in_dim, *kernel = self.shape
        self.rank = rank
        self.rs_lora = settings.get("rs_lora", False)
        self.scale, self.alpha = rank_scale(alpha, rank, self.rs_lora)
        self.tucker = bool(settings.get("use_tucker")) and any(k != 1 for k in kernel)
        if self.tucker:
            shapes = {"hada_w1_a": (rank, out_dim), "hada_w1_b": (rank, in_dim),
                      "hada_t1": (rank, rank, *kernel)}
        else:
            flat_in = in_dim * (kernel[0] * kernel[1] if kernel else 1)
            shapes = {"hada_w1_a": (out_dim, rank), "hada_w1_b": (rank, flat_in)}
        for key in list(shapes):
            shapes[key.replace("1", "2")] = shapes[key]
        self.factors = nn.ParameterDict({key: nn.Parameter(torch.empty(shape)) for key, shape in shapes.items()})
        with torch.no_grad():
            for key, parameter in self.factors.items():
                if key == "hada_w2_a":
                    parameter.zero_()
                else:
                    parameter.normal_(0.0, 1.0 if key.endswith("_b") else 0.1)

    def weight_delta(self) -> torch.Tensor:
        f = self.factors
        tucker = (f["hada_t1"], f["hada_t2"]) if self.tucker else (None, None)
        return loha_delta_weight(f["hada_w1_a"], f["hada_w1_b"], f["hada_w2_a"], f["hada_w2_b"], self.scale,
                                 self.shape, *tucker)

    def _file_tensors(self) -> dict[str, torch.Tensor]:
        return {**self.factors, "alpha": torch.tensor(self.alpha)}

    def _load_alpha(self, alpha: float) -> None:
        self.alpha, self.scale = alpha, alpha / self.rank


class LoHaMethod(LycorisMethod):
    algo = "loha"
    label = "LoHa"
    ui_types = {"LoHa": {"network_module": "lycoris.kohya", "network_args": "algo=loha", "network_dim": 16,
                         "network_alpha": 8.0, "conv_dim": 8, "conv_alpha": 4.0}}
    OPTIONS = ("use_tucker", "rs_lora", "dora_wd", "wd_on_output")
    ADAPTER = LoHaModule


METHOD = LoHaMethod()
KOHYA = LoHaMethod(module="networks.loha", algo=None)
