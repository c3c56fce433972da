"""(Diag-)OFT (LyCORIS `algo=diag-oft`) and BOFT (`algo=boft`): train a rotation of each
layer's output channels instead of adding to its weight, W' = rescale * R(W)
(functional.oft_delta_weight). A rotation keeps the angles between the weight's rows, which is
why OFT is said to keep a model's style and knowledge better than an additive update.

- OFT: R is block-diagonal, out = blocks x block size, the block size at most network_dim
  (conv_dim for 3x3 convs), split as LyCORIS does (functional.factorization: 320, dim 16 ->
  20 blocks of 16). `oft_blocks` (blocks, size, size).
- BOFT: a product of log2(blocks) + 1 butterfly stages of such blocks (functional.butterfly_rotate),
  which mixes all channels; the block size must be even and leave a power-of-two number of
  blocks (320 channels: a size of 10, so network_dim >= 10). `oft_blocks` (stages, blocks, size, size).

Each block is the Cayley transform of Q = A - A^T with A = 0 at the start (R = I: a fresh
network changes nothing). `constraint=c` limits the norm of all Q of a layer to c * out (0: no
limit); it is stored as the layer's `alpha`, as LyCORIS and the WebUI read it (not a scale).
`rescaled=True` adds a learned per-channel gain `rescale` (out, 1, ...), starting at 1. The bias
is not rotated. The WebUI 1.10's network_oft reads exactly these keys (`oft_blocks`, `alpha`,
`rescale`; 4-D blocks for BOFT) and applies them to the weight, as this file trains them; LyCORIS
4.1.3 writes the same layout. LyCORIS' bypass_mode would rotate the layer's output (bias
included), which the WebUI does not do, so it is refused here.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import InvalidInput
from ..formats.kohya_names import TargetLayer
from .functional import butterfly_factorization, factorization, oft_delta_weight
from .lycoris import LycorisMethod, WeightDeltaModule


class OFTModule(WeightDeltaModule):
    FILE_KEYS = frozenset({"oft_blocks"})

    def __init__(self, target: TargetLayer, rank: int, alpha: float, settings: dict[str, Any]) -> None:
        super().__init__(target, {**settings, "dora_wd": False})
        out_dim = self.shape[0]
        self.constraint = float(settings.get("constraint") or 0.0)
        self.oft_blocks = nn.Parameter(torch.zeros(self.block_shape(target, out_dim, rank)))
        rest = (1,) * (len(self.shape) - 1)
        self.rescale = nn.Parameter(torch.ones(out_dim, *rest)) if settings.get("rescaled") else None

    @staticmethod
    def block_shape(target: TargetLayer, out_dim: int, rank: int) -> tuple[int, ...]:
        size, count = factorization(out_dim, rank)
        return count, size, size

    def weight_delta(self) -> torch.Tensor:
        weight = self.base_layer.weight.detach()
        return oft_delta_weight(weight, self.oft_blocks, self.constraint * self.shape[0], self.rescale)

    def _file_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {"oft_blocks": self.oft_blocks, "alpha": torch.tensor(self.constraint)}
        if self.rescale is not None:
            tensors["rescale"] = self.rescale
        return tensors

    def _load_alpha(self, alpha: float) -> None:
        self.constraint = alpha


class BOFTModule(OFTModule):
    @staticmethod
    def block_shape(target: TargetLayer, out_dim: int, rank: int) -> tuple[int, ...]:
        split = butterfly_factorization(out_dim, rank)
        if split is None:
            dim = "conv_dim" if target.is_conv3x3 else "network_dim"
            raise InvalidInput(f"{target.name}: BOFT cannot split its {out_dim} output channels into a power of two "
                               f"of blocks of an even size up to {dim}={rank}; raise {dim} (SD's 320/640/1280 "
                               "channels need 10 or more, 768 needs 12 or more)")
        size, count = split
        return count.bit_length(), count, size, size  # stages = log2(count) + 1


class OFTMethod(LycorisMethod):
    algo = "diag-oft"
    label = "OFT"
    ui_types = {"OFT": {"network_module": "lycoris.kohya", "network_args": "algo=diag-oft",
                        "network_dim": 16, "network_alpha": 1.0, "conv_dim": 0}}
    OPTIONS = ("constraint", "rescaled")
    ADAPTER = OFTModule

    def check(self, settings: dict[str, Any]) -> list[str]:
        problems = []
        if settings["constraint"] < 0:
            problems.append(f"network_args: constraint={settings['constraint']} must not be negative (0: no limit)")
        if settings["bypass_mode"]:
            problems.append(f"network_args: bypass_mode is not supported with algo={self.algo}: it would rotate the "
                            "layer's output (bias included), which the WebUI does not; leave it out")
        return problems


class BOFTMethod(OFTMethod):
    algo = "boft"
    label = "BOFT"
    ui_types = {"BOFT": {"network_module": "lycoris.kohya", "network_args": "algo=boft",
                         "network_dim": 16, "network_alpha": 1.0, "conv_dim": 0}}
    ADAPTER = BOFTModule


METHOD = OFTMethod()
BOFT = BOFTMethod()
