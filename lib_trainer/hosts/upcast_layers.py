"""Linear and conv2d layers whose frozen weight is stored in 16 bits and computed in the
input's dtype (base_weights_dtype): y = op(x, up(W)) + up(b), up() the cast to x's dtype.

Why a custom autograd Function: `F.linear(x, W.float())` would hand autograd the up-cast copy,
which it keeps until backward (to compute dL/dx = dL/dy @ W), so every layer's fp32 weight
would be alive at the peak and nothing would be saved. Here each layer keeps only the 16-bit
weight it already holds and up-casts it again in backward. The weights are frozen: no weight
or bias gradient is computed, and the input is not saved (an ordinary layer with a frozen
weight does not save it either). An fp16 weight up-cast to fp32 is exact, so an fp16
checkpoint trains to the same numbers as its fp32 copy.
"""
from __future__ import annotations

import contextlib
from typing import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn


class _UpcastLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(weight)
        return F.linear(x, weight.to(x.dtype), None if bias is None else bias.to(x.dtype))

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        grad_x = grad.matmul(weight.to(grad.dtype)) if ctx.needs_input_grad[0] else None
        return grad_x, None, None


class _UpcastConv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups):
        ctx.save_for_backward(weight)
        ctx.input_shape, ctx.conv = x.shape, (stride, padding, dilation, groups)
        return F.conv2d(x, weight.to(x.dtype), None if bias is None else bias.to(x.dtype), stride, padding,
                        dilation, groups)

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        grad_x = None
        if ctx.needs_input_grad[0]:
            # dL/dx only (convolution_backward with output mask (True, False, False))
            grad_x = torch.nn.grad.conv2d_input(ctx.input_shape, weight.to(grad.dtype), grad, *ctx.conv)
        return grad_x, None, None, None, None, None, None


def upcast_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear for a frozen weight held in another dtype than x (plain F.linear when it is not)."""
    if weight.dtype == x.dtype or weight.requires_grad:
        return F.linear(x, weight, bias)
    return _UpcastLinear.apply(x, weight, bias)


def upcast_conv2d(layer: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """`layer(x)` without hooks, its frozen weight up-cast to x's dtype per call."""
    weight, bias = layer.weight, layer.bias
    if weight.dtype == x.dtype or weight.requires_grad:
        return layer._conv_forward(x, weight, bias)
    if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
        # Not in SD's models; correct, but keeps the up-cast copy for backward.
        return layer._conv_forward(x, weight.to(x.dtype), None if bias is None else bias.to(x.dtype))
    return _UpcastConv2d.apply(x, weight, bias, layer.stride, layer.padding, layer.dilation, layer.groups)


def _forward_of(layer: nn.Module):
    if isinstance(layer, nn.Conv2d):
        return lambda x: upcast_conv2d(layer, x)
    return lambda x: upcast_linear(x, layer.weight, layer.bias)


@contextlib.contextmanager
def upcast_forwards(layers: Iterable[nn.Module]) -> Iterator[None]:
    """Each nn.Linear / nn.Conv2d computes through the up-casting ops while inside. The override
    is an instance attribute (the layer's hooks, e.g. the adapters', still run), removed after;
    a forward another patch had set on the instance comes back."""
    replaced: list[tuple[nn.Module, object]] = []
    try:
        for layer in layers:
            replaced.append((layer, layer.__dict__.get("forward")))
            layer.forward = _forward_of(layer)
        yield
    finally:
        for layer, previous in reversed(replaced):
            if previous is None:
                del layer.forward
            else:
                layer.forward = previous
