"""Learning-rate schedules by kohya's names, as factors of the base learning rate.

Each schedule is a pure function (step, Shape) -> factor. Warm-up rises linearly from 0 to 1
over the warm-up steps; then each schedule decays over the remaining steps. The formulas are
those of transformers' / diffusers' schedules as sd-scripts calls them
(train_util.get_scheduler_fix), with its arguments:

- polynomial ends at lr_end = 1e-7 (transformers' default) rather than 0;
- cosine_with_min_lr: a cosine from 1 down to lr_scheduler_min_lr_ratio, over
  lr_scheduler_num_cycles half-waves (sd-scripts passes num_cycles / 2);
- warmup_stable_decay: warm-up, a constant stretch, then lr_decay_steps of decay down to
  lr_scheduler_min_lr_ratio (lr_scheduler_args warmup_type / decay_type: linear, cosine,
  1-sqrt; as transformers, warm-up starts at the ratio, decay is cosine by default);
- piecewise_constant: lr_scheduler_args step_rules="1:10,0.1:20,0.01" (factor 1 before
  step 10, 0.1 before step 20, 0.01 after), diffusers' rule; no warm-up;
- inverse_sqrt: after the warm-up, 1 / sqrt((step + timescale - warm-up) / timescale).

`constant` with a warm-up is a pair sd-scripts refuses ("constant does not require
num_warmup_steps"); here it trains as `constant_with_warmup`, and the plan says so.

Three schedules are not factor functions, as in sd-scripts: `adafactor` (transformers'
AdafactorSchedule, which reports Adafactor's own relative-step lr), a schedule-free
optimizer's (the lr stays constant; the optimizer keeps its own warm-up), and a class named
by lr_scheduler_type, built with lr_scheduler_args.
"""
from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, replace
from typing import Callable

import torch

from ..errors import InvalidInput


# transformers' get_polynomial_decay_schedule_with_warmup default, which sd-scripts keeps.
POLYNOMIAL_LR_END = 1e-7
WSD_TYPES = ("linear", "cosine", "1-sqrt")


@dataclass(frozen=True)
class Shape:
    """Everything a schedule's factor depends on besides the step."""
    total_steps: int
    warmup: int = 0
    cycles: int = 1                    # lr_scheduler_num_cycles
    power: float = 1.0                 # polynomial's
    end: float = 0.0                   # polynomial's lr_end / lr_init
    min_lr_ratio: float = 0.0          # cosine_with_min_lr, warmup_stable_decay
    decay_steps: int = 0               # warmup_stable_decay
    warmup_type: str = "linear"        # warmup_stable_decay
    decay_type: str = "cosine"         # warmup_stable_decay
    timescale: int | None = None       # inverse_sqrt (None: the warm-up, or 10000 without one)
    step_rules: str = ""               # piecewise_constant


def _progress(step: int, shape: Shape) -> float:
    return (step - shape.warmup) / max(1, shape.total_steps - shape.warmup)


def _constant(step: int, shape: Shape) -> float:
    return 1.0


def _linear(step: int, shape: Shape) -> float:
    return max(0.0, 1.0 - _progress(step, shape))


def _cosine(step: int, shape: Shape) -> float:
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * _progress(step, shape))))


def _cosine_with_restarts(step: int, shape: Shape) -> float:
    progress = _progress(step, shape)
    if progress >= 1.0:
        return 0.0
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((shape.cycles * progress) % 1.0))))


def _polynomial(step: int, shape: Shape) -> float:
    """(1 - end) * (1 - progress)^power + end: transformers' (lr_init - lr_end) * remaining^power
    + lr_end, divided by lr_init; `end` is lr_end / lr_init."""
    return (1.0 - shape.end) * max(0.0, 1.0 - _progress(step, shape)) ** shape.power + shape.end


def _cosine_with_min_lr(step: int, shape: Shape) -> float:
    """A cosine of cycles / 2 waves, lifted so that its floor is min_lr_ratio."""
    wave = 0.5 * (1.0 + math.cos(math.pi * shape.cycles * _progress(step, shape)))
    return max(0.0, wave * (1.0 - shape.min_lr_ratio) + shape.min_lr_ratio)


def _wsd_warmup(kind: str, progress: float) -> float:
    """warmup_stable_decay's rise from 0 to 1, for progress in [0, 1]."""
    if kind == "cosine":
        return 0.5 * (1.0 - math.cos(math.pi * progress))
    if kind == "1-sqrt":
        return 1.0 - math.sqrt(1.0 - progress)
    return progress


def _wsd_decay(kind: str, progress: float, cycles: int) -> float:
    """... and its fall from 1 to 0 (cosine: cycles / 2 waves, as sd-scripts passes them)."""
    if kind == "linear":
        return 1.0 - progress
    if kind == "1-sqrt":
        return 1.0 - math.sqrt(progress)
    return 0.5 * (1.0 + math.cos(math.pi * cycles * progress))


def _warmup_stable_decay(step: int, shape: Shape) -> float:
    ratio = shape.min_lr_ratio
    stable_end = shape.total_steps - shape.decay_steps
    if step < shape.warmup:
        factor = _wsd_warmup(shape.warmup_type, step / max(1, shape.warmup))
    elif step < stable_end:
        return 1.0
    elif step < shape.total_steps:
        factor = _wsd_decay(shape.decay_type, (step - stable_end) / max(1, shape.decay_steps), shape.cycles)
    else:
        return ratio
    return max(0.0, factor * (1.0 - ratio) + ratio)


def _piecewise_constant(step: int, shape: Shape) -> float:
    thresholds, last = parse_step_rules(shape.step_rules)
    for until, factor in thresholds:
        if step < until:
            return factor
    return last


def _inverse_sqrt(step: int, shape: Shape) -> float:
    timescale = shape.timescale or shape.warmup or 10_000
    return 1.0 / math.sqrt((step + timescale - shape.warmup) / timescale)


# name -> factor after the warm-up (or, for the three at the end, over the whole run)
SCHEDULES: dict[str, Callable[[int, Shape], float]] = {
    "constant": _constant,
    "constant_with_warmup": _constant,
    "linear": _linear,
    "cosine": _cosine,
    "cosine_with_restarts": _cosine_with_restarts,
    "polynomial": _polynomial,
    "cosine_with_min_lr": _cosine_with_min_lr,
    "inverse_sqrt": _inverse_sqrt,
    # these two run their own warm-up (piecewise_constant: none)
    "warmup_stable_decay": _warmup_stable_decay,
    "piecewise_constant": _piecewise_constant,
}
OWN_WARMUP = ("warmup_stable_decay", "piecewise_constant")
# Not factors of the step: built in make_run_scheduler.
ADAFACTOR = "adafactor"


def parse_step_rules(text: str) -> tuple[list[tuple[int, float]], float]:
    """'1:10,0.1:20,0.01' -> ([(10, 1.0), (20, 0.1)], 0.01), the thresholds sorted."""
    parts = [part.strip() for part in str(text).split(",") if part.strip()]
    if not parts:
        raise InvalidInput("lr_scheduler piecewise_constant needs lr_scheduler_args step_rules=\"1:10,0.1:20,0.01\" "
                           "(factor:until_step pairs, then the last factor)")
    try:
        thresholds = []
        for part in parts[:-1]:
            factor, until = part.split(":")
            thresholds.append((int(until), float(factor)))
        return sorted(thresholds), float(parts[-1])
    except ValueError as error:
        raise InvalidInput(f"lr_scheduler_args step_rules={text!r}: write factor:until_step pairs and a last "
                           "factor, e.g. 1:10,0.1:20,0.01") from error


def warmup_steps(lr_warmup_steps: float, total_steps: int) -> int:
    """`lr_warmup_steps` below 1 is a fraction of the run, as kohya accepts it (so is
    lr_decay_steps)."""
    if 0 < lr_warmup_steps < 1:
        return int(lr_warmup_steps * total_steps)
    return int(lr_warmup_steps)


def effective_scheduler(name: str, warmup: int) -> str:
    """The schedule a run really uses: `constant` with a warm-up becomes `constant_with_warmup`."""
    return "constant_with_warmup" if name == "constant" and warmup > 0 else name


def shape_factor(name: str, step: int, shape: Shape) -> float:
    """The factor on the base learning rate at `step`."""
    if step < shape.warmup and name not in OWN_WARMUP:
        return step / max(1, shape.warmup)
    return SCHEDULES[name](step, shape)


def lr_factor(name: str, step: int, total_steps: int, warmup: int, cycles: int = 1, power: float = 1.0,
              end: float = 0.0, **shape_options) -> float:
    """The factor on the base learning rate at `step`; `end` is polynomial's lr_end / lr_init."""
    return shape_factor(name, step, Shape(total_steps, warmup, cycles, power, end, **shape_options))


def make_scheduler(optimizer: torch.optim.Optimizer, name: str, total_steps: int, warmup: int,
                   cycles: int = 1, power: float = 1.0, **shape_options) -> torch.optim.lr_scheduler.LambdaLR:
    if name not in SCHEDULES:
        raise InvalidInput(f"lr_scheduler {name!r} is unknown; available: {', '.join(SCHEDULES)}")
    name = effective_scheduler(name, warmup)
    shape = Shape(total_steps, warmup, cycles, power, **shape_options)
    if name == "polynomial":
        # As transformers: lr_end is absolute, lr_init is the optimizer's default lr (the
        # `learning_rate`); every parameter group is scaled by the same factor.
        initial = optimizer.defaults["lr"]
        if not initial > POLYNOMIAL_LR_END:
            raise InvalidInput(f"lr_scheduler polynomial ends at {POLYNOMIAL_LR_END} as in kohya, so learning_rate "
                               f"must be above it (it is {initial})")
        shape = replace(shape, end=POLYNOMIAL_LR_END / initial)
    if name == "piecewise_constant":
        parse_step_rules(shape.step_rules)  # a bad rule fails now, not at the first step
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: shape_factor(name, step, shape))


def scheduler_class(path: str) -> type:
    """lr_scheduler_type: `module.Class`, or a class name of torch.optim.lr_scheduler, as sd-scripts reads it."""
    module_name, _, attribute = path.rpartition(".")
    try:
        module = importlib.import_module(module_name or "torch.optim.lr_scheduler")
    except ImportError as error:
        raise InvalidInput(f"lr_scheduler_type={path!r}: the module {module_name} cannot be imported ({error})") \
            from error
    found = getattr(module, attribute, None)
    if not isinstance(found, type):
        raise InvalidInput(f"lr_scheduler_type={path!r}: {module.__name__} has no class {attribute}")
    return found


def make_run_scheduler(config, optimizer: torch.optim.Optimizer, total_steps: int, warmup: int,
                       schedule_free: bool, relative_step: bool):
    """The run's scheduler from its config, as sd-scripts picks it: a class named by
    lr_scheduler_type first, then a schedule-free optimizer's constant rate, then Adafactor's
    own, then one of the factor schedules."""
    args = config.parsed_lr_scheduler_args()
    if config.lr_scheduler_type:
        try:
            return scheduler_class(config.lr_scheduler_type)(optimizer, **args)
        except TypeError as error:
            raise InvalidInput(f"lr_scheduler_args {args} do not fit {config.lr_scheduler_type}: {error}") from error
    if schedule_free:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    if relative_step:
        from transformers.optimization import AdafactorSchedule

        return AdafactorSchedule(optimizer, config.learning_rate)
    options = {key: args[key] for key in ("warmup_type", "decay_type", "timescale", "step_rules") if key in args}
    if config.lr_scheduler_timescale is not None:
        options.setdefault("timescale", config.lr_scheduler_timescale)
    return make_scheduler(optimizer, config.lr_scheduler, total_steps, warmup, config.lr_scheduler_num_cycles,
                          config.lr_scheduler_power, min_lr_ratio=config.lr_scheduler_min_lr_ratio or 0.0,
                          decay_steps=warmup_steps(config.lr_decay_steps, total_steps), **options)


def apply_learning_rates(scheduler, optimizer: torch.optim.Optimizer, rates: dict[str, float]) -> bool:
    """After a resumption: each named group's base rate set to `rates` (unet / text_encoder),
    and its current lr put on the same schedule. Only for our factor schedules; another
    scheduler keeps the rates it saved (returns False)."""
    if type(scheduler) is not torch.optim.lr_scheduler.LambdaLR:
        return False
    for group in optimizer.param_groups:  # a block's or LoRA+ group keeps its factor on its part's rate
        if group.get("name") in rates:
            group["initial_lr"] = rates[group["name"]] * group.get("lr_factor", 1.0)
    scheduler.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
    for group, base, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * factor(scheduler.last_epoch)
    return True


def scheduler_problems(config) -> list[str]:
    """What sd-scripts refuses or cannot build, said before the run."""
    found = []
    try:
        args = config.parsed_lr_scheduler_args()
    except ValueError:
        return []  # reported with the other key=value lists
    if config.lr_scheduler_type:
        try:
            scheduler_class(config.lr_scheduler_type)
        except InvalidInput as error:
            found.append(str(error))
        if config.lr_warmup_steps:
            found.append(f"lr_scheduler_type {config.lr_scheduler_type} takes no warm-up (as in sd-scripts): set "
                         "lr_warmup_steps=0, or give the class its own warm-up in lr_scheduler_args")
        return found
    name = config.lr_scheduler
    if name == "cosine_with_min_lr" and config.lr_scheduler_min_lr_ratio is None:
        found.append("lr_scheduler cosine_with_min_lr needs lr_scheduler_min_lr_ratio (e.g. 0.1: end at a tenth "
                     "of the learning rate)")
    if name == "warmup_stable_decay":
        for key in ("warmup_type", "decay_type"):
            if key in args and args[key] not in WSD_TYPES:
                found.append(f"lr_scheduler_args {key}={args[key]!r} is not one of: {', '.join(WSD_TYPES)}")
        if not config.lr_decay_steps:
            found.append("lr_scheduler warmup_stable_decay needs lr_decay_steps (steps, or a fraction of the run "
                         "below 1): the decay at the end")
    if name == "piecewise_constant":
        try:
            parse_step_rules(args.get("step_rules", ""))
        except InvalidInput as error:
            found.append(str(error))
    if name == ADAFACTOR and config.lr_warmup_steps:
        found.append("lr_scheduler adafactor takes no warm-up (as in sd-scripts): set lr_warmup_steps=0")
    return found
