"""The weight algebra of low-rank adapters, as plain tensor functions."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def lora_scale(alpha: float, rank: int) -> float:
    """kohya's scale: the update up @ down is multiplied by alpha / rank (alpha 0 means rank)."""
    return (alpha if alpha else rank) / rank


def lora_delta_weight(up: torch.Tensor, down: torch.Tensor, scale: float) -> torch.Tensor:
    """delta_W = scale * up @ down, in the adapted layer's weight shape.

    Linear: up (out, r), down (r, in) -> (out, in).
    Conv:   up (out, r, 1, 1), down (r, in, kh, kw) -> (out, in, kh, kw).
    """
    if down.dim() == 2:
        return scale * (up @ down)
    rank = down.shape[0]
    return scale * (up.reshape(up.shape[0], rank) @ down.reshape(rank, -1)).reshape(
        up.shape[0], *down.shape[1:])


def lora_down_forward(x: torch.Tensor, down: torch.Tensor, conv: dict | None) -> torch.Tensor:
    """The down projection applied like the adapted layer: x -> (..., r)."""
    if conv is None:
        return F.linear(x, down)
    return F.conv2d(x, down, stride=conv["stride"], padding=conv["padding"], dilation=conv["dilation"])


def lora_up_forward(h: torch.Tensor, up: torch.Tensor, is_conv: bool) -> torch.Tensor:
    return F.conv2d(h, up) if is_conv else F.linear(h, up)
