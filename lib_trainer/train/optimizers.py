"""Optimizers by kohya's `optimizer_type` names, each from a well-kept package.

An entry gives the constructor (imported only when chosen), its default arguments, and
what to install when the package is missing.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import InvalidInput, UserError


class OptimizerUnavailable(UserError, RuntimeError):
    pass


@dataclass(frozen=True)
class OptimizerSpec:
    module: str
    attribute: str
    install: str = ""                       # pip requirement when the module is missing
    defaults: dict = field(default_factory=dict)
    needs_cuda: bool = False

    def load(self) -> Callable[..., Any]:
        try:
            return getattr(importlib.import_module(self.module), self.attribute)
        except ImportError as error:
            raise OptimizerUnavailable(
                f"this optimizer needs the {self.install or self.module} package: pip install {self.install}"
            ) from error


OPTIMIZERS: dict[str, OptimizerSpec] = {
    # foreach: one multi-tensor kernel for all LoRA tensors; torch only picks it by itself
    # on CUDA, and on the CPU it cuts the optimizer's share of a tiny-model step by a third.
    "AdamW": OptimizerSpec("torch.optim", "AdamW", defaults={"weight_decay": 0.01, "foreach": True}),
    "AdamW8bit": OptimizerSpec("bitsandbytes.optim", "AdamW8bit", "bitsandbytes", needs_cuda=True),
    "Lion": OptimizerSpec("lion_pytorch", "Lion", "lion-pytorch"),
    "Prodigy": OptimizerSpec("prodigyopt", "Prodigy", "prodigyopt"),
    # kohya's Adafactor is transformers' with its own schedule off, so the lr is ours.
    "Adafactor": OptimizerSpec("transformers.optimization", "Adafactor", "transformers",
                               defaults={"scale_parameter": False, "relative_step": False, "warmup_init": False}),
    "SGDNesterov": OptimizerSpec("torch.optim", "SGD", defaults={"momentum": 0.9, "nesterov": True}),
}


def make_optimizer(name: str, parameter_groups: list[dict], learning_rate: float, extra_args: dict,
                   device_type: str):
    if name not in OPTIMIZERS:
        raise InvalidInput(f"optimizer_type {name!r} is unknown; available: {', '.join(OPTIMIZERS)}")
    spec = OPTIMIZERS[name]
    if spec.needs_cuda and device_type != "cuda":
        raise OptimizerUnavailable(f"{name} runs only on a CUDA GPU; on {device_type} use AdamW")
    constructor = spec.load()
    arguments = {**spec.defaults, **extra_args}
    try:
        optimizer = constructor(parameter_groups, lr=learning_rate, **arguments)
    except TypeError as error:
        raise InvalidInput(f"optimizer_args {extra_args} do not fit {name}: {error}") from error
    description = f"{spec.module}.{spec.attribute}" + (f"({_arguments_text(arguments)})" if arguments else "")
    return optimizer, description


def _arguments_text(arguments: dict) -> str:
    return ",".join(f"{key}={value}" for key, value in arguments.items())
