"""Learning-rate schedules by kohya's names, as factors of the base learning rate.

Warm-up rises linearly from 0 to 1 over the warm-up steps; then each schedule decays over
the remaining steps. The formulas match those of diffusers/transformers' get_scheduler as
sd-scripts calls it (train_util.get_scheduler_fix), including polynomial's end at
lr_end = 1e-7 (transformers' default) rather than 0.

`constant` with a warm-up is a pair sd-scripts refuses ("constant does not require
num_warmup_steps"); here it trains as `constant_with_warmup`, and the plan says so.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from ..errors import InvalidInput


# transformers' get_polynomial_decay_schedule_with_warmup default, which sd-scripts keeps.
POLYNOMIAL_LR_END = 1e-7


def _constant(progress: float, cycles: int, power: float, end: float) -> float:
    return 1.0


def _linear(progress: float, cycles: int, power: float, end: float) -> float:
    return max(0.0, 1.0 - progress)


def _cosine(progress: float, cycles: int, power: float, end: float) -> float:
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def _cosine_with_restarts(progress: float, cycles: int, power: float, end: float) -> float:
    if progress >= 1.0:
        return 0.0
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((cycles * progress) % 1.0))))


def _polynomial(progress: float, cycles: int, power: float, end: float) -> float:
    """(1 - end) * (1 - progress)^power + end: transformers' (lr_init - lr_end) * remaining^power
    + lr_end, divided by lr_init; `end` is lr_end / lr_init."""
    return (1.0 - end) * max(0.0, 1.0 - progress) ** power + end


# name -> decay after warm-up, as a function of progress in [0, 1], the restart cycles, the
# polynomial power and its end factor
SCHEDULES: dict[str, Callable[[float, int, float, float], float]] = {
    "constant": _constant,
    "constant_with_warmup": _constant,
    "linear": _linear,
    "cosine": _cosine,
    "cosine_with_restarts": _cosine_with_restarts,
    "polynomial": _polynomial,
}


def warmup_steps(lr_warmup_steps: float, total_steps: int) -> int:
    """`lr_warmup_steps` below 1 is a fraction of the run, as kohya accepts it."""
    if 0 < lr_warmup_steps < 1:
        return int(lr_warmup_steps * total_steps)
    return int(lr_warmup_steps)


def effective_scheduler(name: str, warmup: int) -> str:
    """The schedule a run really uses: `constant` with a warm-up becomes `constant_with_warmup`."""
    return "constant_with_warmup" if name == "constant" and warmup > 0 else name


def lr_factor(name: str, step: int, total_steps: int, warmup: int, cycles: int = 1, power: float = 1.0,
              end: float = 0.0) -> float:
    """The factor on the base learning rate at `step`; `end` is polynomial's lr_end / lr_init."""
    if step < warmup:
        return step / max(1, warmup)
    progress = (step - warmup) / max(1, total_steps - warmup)
    return SCHEDULES[name](progress, cycles, power, end)


def make_scheduler(optimizer: torch.optim.Optimizer, name: str, total_steps: int, warmup: int,
                   cycles: int = 1, power: float = 1.0) -> torch.optim.lr_scheduler.LambdaLR:
    if name not in SCHEDULES:
        raise InvalidInput(f"lr_scheduler {name!r} is unknown; available: {', '.join(SCHEDULES)}")
    name = effective_scheduler(name, warmup)
    end = 0.0
    if name == "polynomial":
        # As transformers: lr_end is absolute, lr_init is the optimizer's default lr (the
        # `learning_rate`); every parameter group is scaled by the same factor.
        initial = optimizer.defaults["lr"]
        if not initial > POLYNOMIAL_LR_END:
            raise InvalidInput(f"lr_scheduler polynomial ends at {POLYNOMIAL_LR_END} as in kohya, so learning_rate "
                               f"must be above it (it is {initial})")
        end = POLYNOMIAL_LR_END / initial
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(name, step, total_steps, warmup, cycles, power, end))
