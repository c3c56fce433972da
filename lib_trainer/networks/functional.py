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


def max_norm_ratio(norm: float, max_norm: float) -> float:
    """The factor that brings a weight delta of this norm down to max_norm (1 when it is not
    above it); kohya scales up and down by its square root each."""
    return max_norm / norm if norm > max_norm else 1.0


def lora_down_forward(x: torch.Tensor, down: torch.Tensor, conv: dict | None) -> torch.Tensor:
    """The down projection applied like the adapted layer: x -> (..., r)."""
    if conv is None:
        return F.linear(x, down)
    return F.conv2d(x, down, stride=conv["stride"], padding=conv["padding"], dilation=conv["dilation"])


def lora_up_forward(h: torch.Tensor, up: torch.Tensor, is_conv: bool) -> torch.Tensor:
    return F.conv2d(h, up) if is_conv else F.linear(h, up)


# --- LyCORIS: the weight deltas of LoHa, LoKr, Tucker LoCon, DoRA and IA3 --------------------------
# Each returns the change of the adapted layer's weight (out, in) or (out, in, kh, kw); the
# modules apply it with the layer's own op. The layouts are those LyCORIS writes and the WebUI's
# network_hada/network_lokr/network_lora/network_ia3 read.


def tucker_rebuild(core: torch.Tensor, out_factor: torch.Tensor, in_factor: torch.Tensor) -> torch.Tensor:
    """W[o, i, k, l] = sum_{a,b} out_factor[a, o] * core[a, b, k, l] * in_factor[b, i].

    core (r, r, kh, kw), out_factor (r, out), in_factor (r, in): the Tucker form LoHa's
    `hada_t*` and LoKr's `lokr_t2` use (both factors stored rank-first)."""
    return torch.einsum("abkl,ao,bi->oikl", core, out_factor, in_factor)


def tucker_lora_rebuild(up: torch.Tensor, down: torch.Tensor, mid: torch.Tensor) -> torch.Tensor:
    """Tucker LoCon: W[o, i, k, l] = sum_{a,b} up[o, a] * mid[a, b, k, l] * down[b, i].

    up (out, r, 1, 1), mid (r, r, kh, kw), down (r, in, 1, 1): the three convolutions
    down (1x1) -> mid (kh x kw) -> up (1x1) in a row, as one kernel."""
    return torch.einsum("abkl,oa,bi->oikl", mid, up.flatten(1), down.flatten(1))


def loha_delta_weight(w1a: torch.Tensor, w1b: torch.Tensor, w2a: torch.Tensor, w2b: torch.Tensor,
                      scale: float, shape: tuple[int, ...], t1: torch.Tensor | None = None,
                      t2: torch.Tensor | None = None) -> torch.Tensor:
    """LoHa: delta_W = scale * (w1a @ w1b) ⊙ (w2a @ w2b), the Hadamard product of two rank-r
    products, whose rank can reach r^2 for the parameters of a rank-2r LoRA.

    Plain: w*a (out, r), w*b (r, in * kh * kw), reshaped to `shape`.
    Tucker (3x3 convs): each half is tucker_rebuild(t*, w*a, w*b) with w*a (r, out), w*b (r, in)."""
    if t1 is not None:
        return scale * tucker_rebuild(t1, w1a, w1b) * tucker_rebuild(t2, w2a, w2b)
    return (scale * (w1a @ w1b) * (w2a @ w2b)).reshape(shape)


def factorization(dimension: int, factor: int = -1) -> tuple[int, int]:
    """Split `dimension` into m * n with m <= n, as LoKr does (the file's shapes depend on it):
    with a factor that divides it, (factor, dimension / factor) (sorted); otherwise the divisor
    pair closest to a square whose smaller part does not exceed the factor (-1: no limit).
    e.g. 320 -> (16, 20); 320, factor 8 -> (8, 40); 127 -> (1, 127)."""
    if factor > 0 and dimension % factor == 0:
        return tuple(sorted((factor, dimension // factor)))
    limit = dimension if factor < 0 else factor
    best = (1, dimension)
    for m in range(2, dimension + 1):
        n = dimension // m
        if m > n:
            break
        if dimension % m == 0:
            if m > limit or m + n > sum(best):
                break
            best = (m, n)
    return best


def lokr_delta_weight(w1: torch.Tensor, w2: torch.Tensor, scale: float, shape: tuple[int, ...]) -> torch.Tensor:
    """LoKr: delta_W = scale * w1 ⊗ w2 (Kronecker product), reshaped to the layer's weight.

    w1 (a, c) is the small factor, w2 (b, d) or, for convs, (b, d, kh, kw) the large one, each
    possibly a low-rank product itself; out = a * b, in = c * d. Row a_i * b + b_i of the result
    is w1[a_i] ⊗ w2[b_i]."""
    if w2.dim() == 4:
        w1 = w1[:, :, None, None]
    return (scale * torch.kron(w1, w2.contiguous())).reshape(shape)


def weight_decompose(weight: torch.Tensor, delta: torch.Tensor, magnitude: torch.Tensor,
                     on_output: bool) -> torch.Tensor:
    """DoRA: the change that gives W' = m * (W + delta) / ||W + delta||.

    The norm is taken per input channel (over outputs and kernel; `magnitude` shaped (1, in, 1, 1)
    or (1, in)), as the WebUI 1.10 reads `dora_scale`, or, with on_output, per output channel
    (magnitude (out, 1, ...)), LyCORIS' newer default. Returns W' - W."""
    merged = weight + delta
    if on_output:
        norm = merged.reshape(merged.shape[0], -1).norm(dim=1).reshape(magnitude.shape)
    else:
        norm = merged.transpose(0, 1).reshape(merged.shape[1], -1).norm(dim=1).reshape(magnitude.shape)
    return merged * (magnitude / norm) - weight


def dora_magnitude(weight: torch.Tensor, on_output: bool) -> torch.Tensor:
    """The initial `dora_scale`: ||W|| along the axis `weight_decompose` normalises, so that a
    fresh DoRA leaves the weight as it is."""
    rest = (1,) * (weight.dim() - 2)
    if on_output:
        return weight.reshape(weight.shape[0], -1).norm(dim=1).reshape(weight.shape[0], 1, *rest)
    return weight.transpose(0, 1).reshape(weight.shape[1], -1).norm(dim=1).reshape(1, weight.shape[1], *rest)


def ia3_delta_output(base_output_without_bias: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """IA3 on the output: y = W x * (1 + gain) + b, so the change is gain ⊙ W x (the bias is not
    scaled, as the WebUI's W * gain update leaves it). gain (out,) on the last axis."""
    return base_output_without_bias * gain


# --- OFT and BOFT: rotations of the output channels ---------------------------------------------
# The layouts are those LyCORIS writes and the WebUI's network_oft reads: `oft_blocks` holds
# unconstrained blocks A, each turned into a rotation by the Cayley transform of Q = A - A^T.


def cayley_rotations(blocks: torch.Tensor, max_norm: float = 0.0) -> torch.Tensor:
    """R = (I + Q)(I - Q)^-1 for every block, Q = A - A^T (skew-symmetric, so R is orthogonal;
    A = 0 gives R = I). With max_norm > 0 ("constraint" x out_dim), Q is scaled down so that the
    norm of all blocks together is at most max_norm, as the WebUI does (clamp, 1e-8 guards)."""
    q = blocks - blocks.transpose(-1, -2)
    if max_norm > 0:
        norm = q.norm()
        q = q * ((norm.clamp(max=max_norm) + 1e-8) / (norm + 1e-8))
    eye = torch.eye(q.shape[-1], device=q.device, dtype=q.dtype)
    return (eye + q) @ torch.linalg.inv((eye - q).float()).to(q.dtype)


def oft_rotate(weight: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """(Diag-)OFT: the output channels of `weight` (out, ...) in k blocks of n, each block
    turned by its rotation: W'[k*n + m] = sum_j R[k, j, m] W[k*n + j] (R_k^T W_k)."""
    k, n, _ = rotations.shape
    blocks = weight.reshape(k, n, *weight.shape[1:])
    return torch.einsum("knm,kn...->km...", rotations, blocks).reshape(weight.shape)


def butterfly_rotate(weight: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """BOFT: `rotations` (stages, blocks, b, b) applied one stage after another. Stage i pairs
    rows 2^i * b/2 apart (the butterfly permutation), turns each run of b rows by its block
    (W' = R_j W_j), and puts the rows back; together the stages mix all channels with only
    log2(blocks) + 1 small rotations."""
    stages, _, b, _ = rotations.shape
    out = weight
    for stage in range(stages):
        stride = 2 ** stage * (b // 2)
        # rows (c, g, s) -> (c, s, g): rows `stride` apart become neighbours
        out = out.unflatten(0, (-1, 2, stride)).transpose(1, 2).flatten(0, 2)
        out = torch.einsum("dij,dj...->di...", rotations[stage], out.unflatten(0, (-1, b))).flatten(0, 1)
        out = out.unflatten(0, (-1, stride, 2)).transpose(1, 2).flatten(0, 2)
    return out


def oft_delta_weight(weight: torch.Tensor, blocks: torch.Tensor, max_norm: float = 0.0,
                     rescale: torch.Tensor | None = None) -> torch.Tensor:
    """The change OFT (blocks (k, n, n)) or BOFT (blocks (stages, k, b, b)) makes to `weight`:
    rescale * rotate(W) - W, rescale (out, 1, ...) a learned per-channel gain (`rescaled`)."""
    rotations = cayley_rotations(blocks, max_norm)
    w = weight.to(blocks.dtype)
    rotated = butterfly_rotate(w, rotations) if blocks.dim() == 4 else oft_rotate(w, rotations)
    if rescale is not None:
        rotated = rescale * rotated
    return rotated - w


def butterfly_factorization(dimension: int, factor: int) -> tuple[int, int] | None:
    """BOFT's split of `dimension` into blocks: (block size b, block count n) with n a power of
    two and b the largest even number <= factor that allows it, as LyCORIS chooses; None when no
    even b <= factor does (e.g. 320 needs b = 10: 320 = 10 * 32)."""
    limit = dimension if factor <= 0 else min(factor, dimension)
    best = None
    for size in range(2, limit + 1, 2):
        if dimension % size == 0:
            count = dimension // size
            if count & (count - 1) == 0:
                best = (size, count)
    return best
