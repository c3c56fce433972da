"""An exponential moving average (EMA) of the trained weights (ema_decay, ema_update_every,
ema_start_step, ema_for_samples).

The average is an fp32 copy of every parameter of the trainable, beside it on its device:
taken from the weights after step `ema_start_step` (0: the starting weights), then every
`ema_update_every` steps after that

    ema = decay * ema + (1 - decay) * weights.

It is written as its own file beside every saved one (`name-000002-ema.safetensors`, the same
metadata plus `ss_ema_decay`), kept in run states so that a resumed run averages on exactly, and
can stand in for the weights while sample images are drawn. Averaging smooths out the last
steps' noise, which is why the averaged file often generalises better than the last weights.
"""
from __future__ import annotations

import contextlib
import os

import torch

from ..config import TrainConfig


def ema_path(path: str) -> str:
    """`out/name-000002.safetensors` -> `out/name-000002-ema.safetensors`."""
    stem, extension = os.path.splitext(path)
    return f"{stem}-ema{extension}"


class WeightAverage:
    def __init__(self, trainable: torch.nn.Module, decay: float, update_every: int, start_step: int) -> None:
        self.decay, self.update_every, self.start_step = decay, update_every, start_step
        self.names = [name for name, _ in trainable.named_parameters()]
        self.parameters = [parameter for _, parameter in trainable.named_parameters()]
        self.average: list[torch.Tensor] | None = None
        if start_step == 0:
            self._take()

    def _take(self) -> None:
        self.average = [parameter.detach().to(torch.float32, copy=True) for parameter in self.parameters]

    def after_step(self, step: int) -> None:
        """Called after every optimizer step with the number of steps done."""
        if self.average is None:
            if step >= self.start_step:
                self._take()
            return
        if (step - self.start_step) % self.update_every == 0:
            with torch.no_grad():
                weights = [parameter.detach().float() for parameter in self.parameters]
                torch._foreach_mul_(self.average, self.decay)
                torch._foreach_add_(self.average, weights, alpha=1.0 - self.decay)

    @property
    def started(self) -> bool:
        return self.average is not None

    @contextlib.contextmanager
    def applied(self):
        """The averaged weights in the trainable for the block, its own weights back afterwards."""
        if self.average is None:
            yield
            return
        kept = [parameter.detach().clone() for parameter in self.parameters]
        try:
            with torch.no_grad():
                for parameter, average in zip(self.parameters, self.average):
                    parameter.copy_(average)
            yield
        finally:
            with torch.no_grad():
                for parameter, own in zip(self.parameters, kept):
                    parameter.copy_(own)

    def write_beside(self, trainable, path: str, metadata: dict[str, str], dtype) -> str | None:
        """Write the averaged weights as `path`'s -ema file (nothing before the average starts)."""
        if self.average is None:
            return None
        target = ema_path(path)
        with self.applied():
            trainable.write_file(target, {**metadata, "ss_ema_decay": str(self.decay)}, dtype)
        return target

    # --- run states ---
    def state_dict(self) -> dict:
        return {"names": list(self.names), "average": None if self.average is None else list(self.average)}

    def load_state_dict(self, state: dict | None) -> None:
        if not state or state.get("average") is None:
            self.average = None
            return
        if list(state["names"]) != self.names:
            raise ValueError("the saved EMA does not fit this network")
        device = self.parameters[0].device if self.parameters else "cpu"
        self.average = [tensor.to(device, torch.float32) for tensor in state["average"]]


def make_average(config: TrainConfig, trainable) -> WeightAverage | None:
    if not config.ema_decay:
        return None
    return WeightAverage(trainable, config.ema_decay, config.ema_update_every, config.ema_start_step)
