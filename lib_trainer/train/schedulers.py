"""Learning-rate schedules by kohya's names, as factors of the base learning rate.

Warm-up rises linearly from 0 to 1 over the warm-up steps; then each schedule decays over
the remaining steps. The formulas match those of diffusers/transformers' get_scheduler.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from ..errors import InvalidInput


def _constant(progress: float, cycles: int, power: float) -> float:
    return 1.0


def _linear(progress: float, cycles: int, power: float) -> float:
    return max(0.0, 1.0 - progress)


def _cosine(progress: float, cycles: int, power: float) -> float:
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def _cosine_with_restarts(progress: float, cycles: int, power: float) -> float:
    if progress >= 1.0:
        return 0.0
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((cycles * progress) % 1.0))))


def _polynomial(progress: float, cycles: int, power: float) -> float:
    return max(0.0, 1.0 - progress) ** power


# name -> decay after warm-up, as a function of progress in [0, 1]
SCHEDULES: dict[str, Callable[[float, int, float], float]] = {
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


def lr_factor(name: str, step: int, total_steps: int, warmup: int, cycles: int = 1, power: float = 1.0) -> float:
    if step < warmup:
        return step / max(1, warmup) if name != "constant" else 1.0
    progress = (step - warmup) / max(1, total_steps - warmup)
    return SCHEDULES[name](progress, cycles, power)


def make_scheduler(optimizer: torch.optim.Optimizer, name: str, total_steps: int, warmup: int,
                   cycles: int = 1, power: float = 1.0) -> torch.optim.lr_scheduler.LambdaLR:
    if name not in SCHEDULES:
        raise InvalidInput(f"lr_scheduler {name!r} is unknown; available: {', '.join(SCHEDULES)}")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(name, step, total_steps, warmup, cycles, power))
