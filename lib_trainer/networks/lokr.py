"""LoKr (LyCORIS `algo=lokr`; kohya's `networks.lokr`): delta_W = scale * w1 ⊗ w2, a Kronecker
product (functional.lokr_delta_weight).

Each side of the weight is split by `functional.factorization` (out = a * b, in = c * d, the
smaller part at most `factor`; -1: as square as possible). w1 (a, c) is the small factor, kept
whole unless `decompose_both` makes it a rank-r product w1_a @ w1_b. w2 (b, d[, kh, kw]) is
the large one, a rank-r product w2_a @ w2_b, or a Tucker core `lokr_t2` with `use_tucker` on
3x3 convs, or whole when the rank is at least half its size or `full_matrix` is set (LyCORIS'
advice for strong LoKr: factor 4..8 with a full w2). With both factors whole the scale is 1
(no rank to divide by: the WebUI applies 1 there). Initialised as LyCORIS does, the part of w2
applied last at zero, so a fresh network changes nothing.

Files store `lokr_w1` or `lokr_w1_a`/`lokr_w1_b`, `lokr_w2` or `lokr_w2_a`/`lokr_w2_b`,
[`lokr_t2`], `alpha` and, with `dora_wd`, `dora_scale`: what the WebUI's network_lokr reads.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..formats.kohya_names import TargetLayer
from .functional import factorization, lokr_delta_weight, tucker_rebuild
from .lycoris import LycorisMethod, WeightDeltaModule, rank_scale


class LoKrModule(WeightDeltaModule):
    FILE_KEYS = frozenset({"lokr_w1", "lokr_w1_a", "lokr_w2", "lokr_w2_a"})

    def __init__(self, target: TargetLayer, rank: int, alpha: float, settings: dict[str, Any]) -> None:
        super().__init__(target, settings)
        out_dim, in_dim, *kernel = self.shape
        factor = settings.get("factor", -1)
        full = settings.get("full_matrix", False)
        (a, b), (c, d) = factorization(out_dim, factor), factorization(in_dim, factor)
        if settings.get("unbalanced_factorization"):
            a, b = b, a
        self.rank = rank
        shapes = {}
        if settings.get("decompose_both") and rank < max(a, c) / 2 and not full:
            shapes.update(lokr_w1_a=(a, rank), lokr_w1_b=(rank, c))
        else:
            shapes["lokr_w1"] = (a, c)
        self.tucker = bool(settings.get("use_tucker")) and any(k != 1 for k in kernel)
        if full or rank >= max(b, d) / 2:
            shapes["lokr_w2"] = (b, d, *kernel)
        elif self.tucker:
            shapes.update(lokr_w2_a=(rank, b), lokr_w2_b=(rank, d), lokr_t2=(rank, rank, *kernel))
        else:
            shapes.update(lokr_w2_a=(b, rank), lokr_w2_b=(rank, d * math.prod(kernel)))
        self.factors = nn.ParameterDict({key: nn.Parameter(torch.empty(shape)) for key, shape in shapes.items()})
        self.whole = "lokr_w1" in shapes and "lokr_w2" in shapes
        self.scale, self.alpha = (1.0, float(rank)) if self.whole else rank_scale(alpha, rank,
                                                                                    settings.get("rs_lora", False))
        with torch.no_grad():
            for key, parameter in self.factors.items():
                # The part of w2 applied last starts at zero; the rest Kaiming-uniform, as LyCORIS.
                if key in ("lokr_w2", "lokr_w2_b"):
                    parameter.zero_()
                else:
                    nn.init.kaiming_uniform_(parameter, a=math.sqrt(5))
        self.kernel = kernel

    def weight_delta(self) -> torch.Tensor:
        f = self.factors
        w1 = f["lokr_w1"] if "lokr_w1" in f else f["lokr_w1_a"] @ f["lokr_w1_b"]
        if "lokr_w2" in f:
            w2 = f["lokr_w2"]
        elif self.tucker:
            w2 = tucker_rebuild(f["lokr_t2"], f["lokr_w2_a"], f["lokr_w2_b"])
        else:
            w2 = f["lokr_w2_a"] @ f["lokr_w2_b"]
            if self.kernel:
                w2 = w2.reshape(w2.shape[0], -1, *self.kernel)
        return lokr_delta_weight(w1, w2, self.scale, self.shape)

    def _file_tensors(self) -> dict[str, torch.Tensor]:
        return {**self.factors, "alpha": torch.tensor(self.alpha)}

    def _load_alpha(self, alpha: float) -> None:
        if not self.whole:
            self.alpha, self.scale = alpha, alpha / self.rank


class LoKrMethod(LycorisMethod):
    algo = "lokr"
    label = "LoKr"
    # LyCORIS' guidance: factor 4..8 with full matrices learns like a LoRA at a fraction of its
    # size; dims then do not matter (scale 1).
    ui_types = {"LoKr": {"network_module": "lycoris.kohya", "network_args": "algo=lokr factor=8 full_matrix=True",
                         "network_dim": 8, "network_alpha": 1.0, "conv_dim": 8, "conv_alpha": 1.0}}
    OPTIONS = ("factor", "decompose_both", "full_matrix", "unbalanced_factorization", "use_tucker", "rs_lora",
               "dora_wd", "wd_on_output")
    ADAPTER = LoKrModule

    def check(self, settings: dict[str, Any]) -> list[str]:
        if settings["factor"] == 0 or settings["factor"] < -1:
            return [f"network_args: factor={settings['factor']} must be -1 (as square as possible) or positive"]
        return []


METHOD = LoKrMethod()
KOHYA = LoKrMethod(module="networks.lokr", algo=None)
