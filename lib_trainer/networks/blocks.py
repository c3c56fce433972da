"""kohya's UNet blocks: block-wise learning rates and ranks of `networks.lora`.

sd-scripts numbers the UNet's blocks by the layer's kohya name (networks/lora.py
`get_block_index`):
- SD1/SD2 (diffusers names), 25 blocks: `down_blocks_i_{attentions,resnets}_j` is 1 + 3i + j,
  `down_blocks_i_downsamplers_0` 1 + 3i + 2, `mid_block` 12, and the up blocks the same from
  13. Block 0 holds no adapted layer, so down_lr_weight's first value changes nothing.
- SDXL (sgm names), 23 blocks: `input_blocks_n` is 1 + n, `middle_block_n` 10 + n,
  `output_blocks_n` 13 + n; 0 (time/label embedding) and 22 (`out`) hold no adapted layer.

The learning-rate weights are given per half: down (12; SDXL 9), mid (1; SDXL 3), up (12; SDXL
9), as numbers or as one of kohya's curves (`sine`, `cosine`, `linear`, `reverse_linear`,
`zeros`, each optionally `+0.5` to lift it). The ranks (`block_dims`, `block_alphas`,
`conv_block_dims`, `conv_block_alphas`) take one value per block: 25, SDXL 23. A wrong count is
an error here (sd-scripts pads short lr lists with 1 and cuts long ones).
"""
from __future__ import annotations

import math
import re

from ..config import ConfigError

LR_WEIGHT_ARGS = ("down_lr_weight", "mid_lr_weight", "up_lr_weight")
RANK_ARGS = ("block_dims", "block_alphas", "conv_block_dims", "conv_block_alphas")
BLOCK_ARGS = (*LR_WEIGHT_ARGS, "block_lr_zero_threshold", *RANK_ARGS)
CURVES = ("sine", "cosine", "linear", "reverse_linear", "zeros")
# (down or up, mid, all blocks) per layout
COUNTS = {False: (12, 1, 25), True: (9, 3, 23)}
_SD_BLOCK = re.compile(r"(up|down)_blocks_(\d+)_(resnets|upsamplers|downsamplers|attentions)_(\d+)_")
_SDXL_BLOCK = re.compile(r"^lora_unet_(input_blocks|middle_block|output_blocks)_(\d+)_")
_SDXL_START = {"input_blocks": 1, "middle_block": 10, "output_blocks": 13}


def is_sdxl_layout(names) -> bool:
    """kohya tells the layouts apart by the names: only SDXL's have input/output blocks."""
    return any("input_blocks" in name or "output_blocks" in name for name in names)


def block_index(name: str, sdxl: bool) -> int:
    """The block of a UNet layer's kohya name, as sd-scripts numbers them; -1 for none."""
    if sdxl:
        found = _SDXL_BLOCK.match(name)
        return _SDXL_START[found[1]] + int(found[2]) if found else -1
    found = _SD_BLOCK.search(name)
    if found:
        half, outer, kind, inner = found[1], int(found[2]), found[3], int(found[4])
        within = 3 * outer + (2 if kind in ("upsamplers", "downsamplers") else inner)
        return 1 + within if half == "down" else COUNTS[False][0] + 1 + within
    return COUNTS[False][0] if "mid_block_" in name else -1


def curve(name_and_base: str, count: int) -> list[float]:
    """kohya's named lr-weight curves over `count` blocks, shallow to deep; `name+0.25` lifts it."""
    name, _, base = name_and_base.partition("+")
    lift = float(base) if base else 0.0
    steps = [i / (count - 1) for i in range(count)]
    shapes = {"sine": [math.sin(math.pi * s / 2) for s in steps],
              "cosine": [math.sin(math.pi * s / 2) for s in reversed(steps)],
              "linear": steps, "reverse_linear": list(reversed(steps)), "zeros": [0.0] * count}
    return [value + lift for value in shapes[name]]


def check_block_args(args: dict[str, str]) -> list[str]:
    """What is wrong with the block arguments without knowing the model: numbers, curve names,
    and counts that fit neither SD1/SD2 nor SDXL."""
    problems = []
    for key in LR_WEIGHT_ARGS + RANK_ARGS:
        if key not in args:
            continue
        text = args[key]
        if key != "mid_lr_weight" and key in LR_WEIGHT_ARGS and "," not in text:
            name = text.partition("+")[0]
            if name not in CURVES:
                problems.append(f"network_args: {key}={text!r} is neither a comma list nor one of {', '.join(CURVES)}")
            else:
                try:
                    curve(text, 12)
                except ValueError:
                    problems.append(f"network_args: {key}={text!r}: write the lift as a number, e.g. {name}+0.5")
            continue
        try:
            values = _numbers(text, int if key.endswith("_dims") else float)
        except ValueError:
            kind = "whole numbers" if key.endswith("_dims") else "numbers"
            problems.append(f"network_args: {key}={text!r} must be {kind} separated by commas")
            continue
        allowed = sorted({_count(key, sdxl) for sdxl in (False, True)}, reverse=True)
        if len(values) not in allowed:
            problems.append(f"network_args: {key} has {len(values)} values; it takes {allowed[0]} for SD1/SD2 "
                            f"or {allowed[1]} for SDXL")
        elif key.endswith("_dims") and min(values) < 0:
            problems.append(f"network_args: {key} must not be negative")
    if "block_lr_zero_threshold" in args:
        try:
            float(args["block_lr_zero_threshold"])
        except ValueError:
            problems.append("network_args: block_lr_zero_threshold must be a number")
    return problems


def lr_weights(args: dict[str, str], sdxl: bool) -> list[float] | None:
    """The lr weight of every block (None: no block lr given); weights at or below
    block_lr_zero_threshold become 0, as in kohya. Raises ConfigError for a count that does
    not fit this layout."""
    if not any(key in args for key in LR_WEIGHT_ARGS):
        return None
    threshold = float(args.get("block_lr_zero_threshold", 0.0))
    halves = []
    for key in LR_WEIGHT_ARGS:
        count = _count(key, sdxl)
        if key not in args:
            halves.append([1.0] * count)
            continue
        text = args[key]
        values = curve(text, count) if key != "mid_lr_weight" and "," not in text else _numbers(text, float)
        _check_count(key, values, sdxl)
        halves.append([value if value > threshold else 0.0 for value in values])
    weights = halves[0] + halves[1] + halves[2]
    return [1.0, *weights, 1.0] if sdxl else weights  # SDXL: its blocks 0 and 22 around them


def block_ranks(args: dict[str, str], sdxl: bool, dim: int, alpha: float, conv_dim: int,
                conv_alpha: float) -> dict[str, list] | None:
    """Each block's (linear) rank and alpha, and its 3x3-conv rank and alpha (None: no conv
    LoRA), when block ranks or block lrs are given; blocks whose lr weight is 0 get rank 0 (no
    adapter), as in kohya. None when neither is given."""
    weights = lr_weights(args, sdxl)
    if "block_dims" not in args and weights is None:
        return None
    total = COUNTS[sdxl][2]

    def values(key, kind, default):
        if key not in args:
            return [default] * total
        found = _numbers(args[key], kind)
        _check_count(key, found, sdxl)
        return found

    ranks = {"dims": values("block_dims", int, dim), "alphas": values("block_alphas", float, alpha),
             "conv_dims": None, "conv_alphas": None}
    if "conv_block_dims" in args or conv_dim:
        ranks["conv_dims"] = values("conv_block_dims", int, conv_dim)
        ranks["conv_alphas"] = values("conv_block_alphas", float, conv_alpha)
    for index, weight in enumerate(weights or []):
        if weight == 0:
            ranks["dims"][index] = 0
            if ranks["conv_dims"] is not None:
                ranks["conv_dims"][index] = 0
    return ranks


def _count(key: str, sdxl: bool) -> int:
    half, mid, total = COUNTS[sdxl]
    return {"down_lr_weight": half, "up_lr_weight": half, "mid_lr_weight": mid}.get(key, total)


def _check_count(key: str, values: list, sdxl: bool) -> None:
    expected = _count(key, sdxl)
    if len(values) != expected:
        raise ConfigError(f"network_args: {key} has {len(values)} values, but this is an "
                          f"{'SDXL' if sdxl else 'SD1/SD2'} model: it takes {expected}")


def _numbers(text: str, kind) -> list:
    # kohya reads an empty entry of an lr list ("1,,1") as 0
    return [kind(part) if part.strip() else kind(0) for part in text.split(",")]
