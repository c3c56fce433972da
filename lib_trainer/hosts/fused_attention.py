"""q, k and v of a `torch.nn.MultiheadAttention` as three Linear layers a LoRA can adapt.

OpenCLIP text towers (SD2's text encoder, SDXL's second one, as the WebUI loads them) fuse
the three input projections into one `in_proj_weight`, while kohya files name them apart
(`..._self_attn_q_proj`, `_k_proj`, `_v_proj`), like the WebUI's Lora loader expects.
`ProjectionView` is a Linear whose weight is a live slice of that fused matrix, and
`split_projections` makes each attention compute through its views for as long as training
runs, so adapters hooked on the views change the attention. Nothing of the module is
modified: the views own no tensors and the override is an instance attribute, removed after.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

PROJECTIONS = ("q", "k", "v")


class ProjectionView(nn.Linear):
    """One of q, k, v of a fused in_proj, as an nn.Linear (no tensors of its own)."""
    # The WebUI applies a file's bias change (algo=full's diff_b) of a fused attention only to
    # its out_proj; q/k/v take weight changes only.
    separate_bias = False

    def __init__(self, attention: nn.MultiheadAttention, index: int) -> None:
        nn.Module.__init__(self)  # not nn.Linear's: it would allocate a weight
        if not attention._qkv_same_embed_dim:
            raise ValueError("attention with separate key/value sizes has no fused in_proj to split")
        self._attention = [attention]  # a list, so the attention does not become a submodule
        self.index = index
        self.in_features = self.out_features = attention.embed_dim

    @property
    def weight(self) -> torch.Tensor:
        size = self.out_features
        return self._attention[0].in_proj_weight[self.index * size:(self.index + 1) * size]

    @property
    def bias(self) -> torch.Tensor | None:
        bias = self._attention[0].in_proj_bias
        size = self.out_features
        return None if bias is None else bias[self.index * size:(self.index + 1) * size]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


def projection_views(attention: nn.MultiheadAttention) -> dict[str, ProjectionView]:
    return {name: ProjectionView(attention, index) for index, name in enumerate(PROJECTIONS)}


def attention_through_views(attention: nn.MultiheadAttention, views: dict[str, ProjectionView]):
    """A forward for `attention` with MultiheadAttention's signature that projects through the
    views (and their hooks). Returns no attention weights: OpenCLIP asks for none."""

    def forward(query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        if key_padding_mask is not None:
            raise ValueError("split attention: key_padding_mask is not supported (OpenCLIP text towers pass none)")
        if not attention.batch_first:  # (L, N, E) -> (N, L, E)
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        batch, length, width = query.shape
        heads = attention.num_heads

        def split_heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(batch, -1, heads, width // heads).transpose(1, 2)

        q, k, v = (split_heads(views[name](t)) for name, t in zip(PROJECTIONS, (query, key, value)))
        mask = attn_mask
        if mask is not None and mask.dtype == torch.bool:
            mask = ~mask  # MultiheadAttention: True = masked out; SDPA: True = attend
        elif mask is not None:
            mask = mask.to(q.dtype)
        dropout = attention.dropout if attention.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout,
                                             is_causal=is_causal and mask is None)
        out = attention.out_proj(out.transpose(1, 2).reshape(batch, length, width))
        if not attention.batch_first:
            out = out.transpose(0, 1)
        return out, None

    return forward


@contextlib.contextmanager
def split_projections(split: dict[nn.MultiheadAttention, dict[str, ProjectionView]]) -> Iterator[None]:
    """Each attention computes through its views inside the block; its own forward after."""
    overridden = []
    try:
        for attention, views in split.items():
            attention.forward = attention_through_views(attention, views)
            overridden.append(attention)
        yield
    finally:
        for attention in overridden:
            del attention.forward
