"""Optimizers by kohya's `optimizer_type` names, each from a well-kept package.

An entry gives the constructor (imported only when chosen), its default arguments, and
what to install when the package is missing. A name with a dot (`torch.optim.Adagrad`,
`pytorch_optimizer.CAME`) is imported as module + class, as sd-scripts does, and gets
`optimizer_args` as its keyword arguments; so is a bare class name of torch.optim (`RAdam`).

Schedule-free optimizers (package schedulefree) train at a point y between the averaged
weights x and their fast iterate z; the weights to use, sample from and save are x. They
switch with optimizer.eval() / .train(): `eval_weights` does that around samples, saves and
validation.
"""
from __future__ import annotations

import contextlib
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
    schedule_free: bool = False             # keeps its own schedule: lr_scheduler is not used
    adapts_lr: bool = False                 # D-Adaptation / Prodigy: the lr is a multiplier near 1

    @property
    def path(self) -> str:
        return f"{self.module}.{self.attribute}"

    def load(self) -> Callable[..., Any]:
        try:
            module = importlib.import_module(self.module)
        except ImportError as error:
            install = self.install or self.module.split(".")[0]
            raise OptimizerUnavailable(
                f"this optimizer needs the {install} package: pip install {install}") from error
        try:
            return getattr(module, self.attribute)
        except AttributeError as error:
            raise OptimizerUnavailable(f"{self.module} has no {self.attribute}: check the name, or upgrade "
                                       f"{self.install or self.module.split('.')[0]}") from error


def _bnb(attribute: str, **defaults) -> OptimizerSpec:
    """bitsandbytes' optimizers: CUDA kernels only."""
    return OptimizerSpec("bitsandbytes.optim", attribute, "bitsandbytes", defaults=defaults, needs_cuda=True)


def _dadapt(module: str, attribute: str) -> OptimizerSpec:
    return OptimizerSpec(module, attribute, "dadaptation", adapts_lr=True)


def _schedule_free(attribute: str) -> OptimizerSpec:
    return OptimizerSpec("schedulefree", attribute, "schedulefree", schedule_free=True)


OPTIMIZERS: dict[str, OptimizerSpec] = {
    # fused: one kernel for the whole update of every tensor (CPU and CUDA); torch picks the
    # slower foreach itself. A full-size SD1.5 LoRA's AdamW step: 6 ms fused, 24 ms foreach and
    # 30 ms per-tensor on 2 CPU cores; the weights agree within fp32 rounding (1e-7).
    "AdamW": OptimizerSpec("torch.optim", "AdamW", defaults={"weight_decay": 0.01, "fused": True}),
    "AdamW8bit": _bnb("AdamW8bit"),
    "Lion": OptimizerSpec("lion_pytorch", "Lion", "lion-pytorch"),
    "Prodigy": OptimizerSpec("prodigyopt", "Prodigy", "prodigyopt", adapts_lr=True),
    # kohya's Adafactor is transformers' with its own schedule off, so the lr is ours.
    "Adafactor": OptimizerSpec("transformers.optimization", "Adafactor", "transformers",
                               defaults={"scale_parameter": False, "relative_step": False, "warmup_init": False}),
    "SGDNesterov": OptimizerSpec("torch.optim", "SGD", defaults={"momentum": 0.9, "nesterov": True}),
    # bitsandbytes' others, by sd-scripts' names
    "Lion8bit": _bnb("Lion8bit"),
    "PagedAdamW8bit": _bnb("PagedAdamW8bit"),
    "PagedAdamW": _bnb("PagedAdamW"),
    "PagedAdamW32bit": _bnb("PagedAdamW32bit"),
    "PagedLion8bit": _bnb("PagedLion8bit"),
    "SGDNesterov8bit": _bnb("SGD8bit", momentum=0.9, nesterov=True),
    # D-Adaptation: sd-scripts' "DAdaptation" is the preprint's Adam
    "DAdaptation": _dadapt("dadaptation.experimental", "DAdaptAdamPreprint"),
    "DAdaptAdamPreprint": _dadapt("dadaptation.experimental", "DAdaptAdamPreprint"),
    "DAdaptAdaGrad": _dadapt("dadaptation", "DAdaptAdaGrad"),
    "DAdaptAdam": _dadapt("dadaptation", "DAdaptAdam"),
    "DAdaptAdan": _dadapt("dadaptation", "DAdaptAdan"),
    "DAdaptAdanIP": _dadapt("dadaptation.experimental", "DAdaptAdanIP"),
    "DAdaptLion": _dadapt("dadaptation", "DAdaptLion"),
    "DAdaptSGD": _dadapt("dadaptation", "DAdaptSGD"),
    "RAdamScheduleFree": _schedule_free("RAdamScheduleFree"),
    "AdamWScheduleFree": _schedule_free("AdamWScheduleFree"),
    "SGDScheduleFree": _schedule_free("SGDScheduleFree"),
}


def optimizer_spec(name: str) -> OptimizerSpec:
    """The registry's entry, or a dotted `module.Class` path taken as it is."""
    if name in OPTIMIZERS:
        return OPTIMIZERS[name]
    by_lower = {known.lower(): spec for known, spec in OPTIMIZERS.items()}
    if name.lower() in by_lower:  # sd-scripts matches its own names in any case (adamw8bit)
        return by_lower[name.lower()]
    module, dot, attribute = name.rpartition(".")
    if not dot and name and isinstance(getattr(importlib.import_module("torch.optim"), name, None), type):
        return OptimizerSpec("torch.optim", name)  # sd-scripts' rule: a bare class name is torch.optim's
    if not dot or not module or not attribute:
        raise InvalidInput(f"optimizer_type {name!r} is unknown; use one of {', '.join(OPTIMIZERS)}, or a class "
                           "path with its module, e.g. torch.optim.Adagrad")
    return OptimizerSpec(module, attribute, schedule_free=attribute.endswith("ScheduleFree"))


def optimizer_type_problems(name: str) -> list[str]:
    """A dotted optimizer_type must name an importable module and a class in it."""
    if name in OPTIMIZERS:
        return []
    try:
        spec = optimizer_spec(name)
    except InvalidInput as error:
        return [str(error)]
    if any(spec is known for known in OPTIMIZERS.values()):
        return []  # a known name: a missing package is said with its pip install when the run starts
    try:
        module = importlib.import_module(spec.module)
    except ImportError as error:
        return [f"optimizer_type={name!r}: the module {spec.module} cannot be imported ({error}); install its "
                "package or correct the path"]
    candidate = getattr(module, spec.attribute, None)
    if not isinstance(candidate, type):
        return [f"optimizer_type={name!r}: {spec.module} has no class {spec.attribute}"]
    return []


def make_optimizer(name: str, parameter_groups: list[dict], learning_rate: float, extra_args: dict,
                   device_type: str):
    """(optimizer, the ss_optimizer text: `module.Class(key=value,...)`, as kohya writes it)."""
    spec = optimizer_spec(name)
    if spec.needs_cuda and device_type != "cuda":
        raise OptimizerUnavailable(f"{name} runs only on a CUDA GPU (bitsandbytes); on {device_type} use AdamW")
    constructor = spec.load()
    arguments = {**spec.defaults, **extra_args}
    if "foreach" in extra_args and "fused" not in extra_args:
        arguments.pop("fused", None)  # torch refuses both; the user's foreach=True wins
    lr: float | None = learning_rate
    if uses_relative_step(name, extra_args):
        # Adafactor's own time-dependent lr: transformers refuses an lr beside it.
        arguments["relative_step"] = True
        parameter_groups = [{k: v for k, v in group.items() if k != "lr"} for group in parameter_groups]
        lr = None
    try:
        optimizer = constructor(parameter_groups, lr=lr, **arguments)
    except TypeError as error:
        raise InvalidInput(f"optimizer_args {extra_args} do not fit {name}: {error}") from error
    if spec.schedule_free:
        optimizer.train()  # they start in eval mode and refuse to step there
    description = spec.path + (f"({_arguments_text(arguments)})" if arguments else "")
    return optimizer, description


def uses_relative_step(name: str, extra_args: dict) -> bool:
    """Adafactor with relative_step=True (or warmup_init, which needs it, as kohya turns it on)."""
    return name.lower() == "adafactor" and bool(extra_args.get("relative_step") or extra_args.get("warmup_init"))


def is_schedule_free(name: str) -> bool:
    try:
        return optimizer_spec(name).schedule_free
    except InvalidInput:
        return False


def optimizer_notes(name: str, learning_rates: list[float]) -> list[str]:
    """What kohya warns about, said before the run starts."""
    notes = []
    spec = optimizer_spec(name)
    if spec.adapts_lr:
        if learning_rates and max(learning_rates) <= 0.1:
            notes.append(f"{name} adapts the step size itself: its learning rate is a multiplier, usually 1.0 "
                         f"(it is {max(learning_rates):g})")
        if len(set(learning_rates)) > 1:
            notes.append(f"{name} with several learning rates (unet_lr, text_encoder_lr): only the first group's "
                         "takes effect in the step size it adapts")
    return notes


def run_notes(config, learning_rates: list[float | None]) -> list[str]:
    """What sd-scripts says about a run's optimizer, the schedule it keeps, and full precision."""
    name = config.optimizer_type
    notes = optimizer_notes(name, [rate for rate in learning_rates if rate is not None])
    if is_schedule_free(name) and not config.lr_scheduler_type and (
            config.lr_scheduler not in ("constant", "constant_with_warmup") or config.lr_warmup_steps):
        notes.append(f"{name} keeps the learning rate constant (it has no use for lr_scheduler "
                     f"{config.lr_scheduler} or lr_warmup_steps); for a warm-up give optimizer_args warmup_steps=N")
    if uses_relative_step(name, config.parsed_optimizer_args()) and not config.lr_scheduler_type \
            and config.lr_scheduler != "adafactor":
        notes.append("Adafactor with relative_step sets its own learning rate: lr_scheduler adafactor is used (as in "
                     "sd-scripts), learning_rate is its initial rate")
    if config.full_fp16 or config.full_bf16:
        notes.append(f"{'full_fp16' if config.full_fp16 else 'full_bf16'}: the trained weights are held in half "
                     "precision (experimental, as in sd-scripts: small updates can be lost)")
    if config.full_fp16 and fp16_eps_too_small(config):
        notes.append(FP16_EPS_ADVICE)
    return notes


# Adam's default eps (1e-8) is below fp16's smallest number: with full_fp16 a zero second moment
# (a LoRA's down weights see zero gradients in step 1, its up weights being 0) divides 0 by 0.
FP16_EPS_ADVICE = ("full_fp16 with Adam's eps of 1e-8, which fp16 rounds to 0: the first steps give NaN; set "
                   "optimizer_args eps=1e-4, or use full_bf16")


def fp16_eps_too_small(config) -> bool:
    spec = optimizer_spec(config.optimizer_type)
    if spec.module != "torch.optim" or spec.attribute not in ("AdamW", "Adam", "RAdam", "NAdam", "Adamax"):
        return False
    return float(config.parsed_optimizer_args().get("eps", 1e-8)) < 6e-5  # fp16's smallest normal number


@contextlib.contextmanager
def eval_weights(optimizer):
    """The weights to use (a schedule-free optimizer's average x) in the parameters for the
    block, the training point y back afterwards. y is restored from a copy, not by the
    optimizer's inverse interpolation, which rounds: so a save or a sample never moves the
    training (a resumed run, or one without samples, trains the same weights). Nothing
    changes for other optimizers."""
    groups = getattr(optimizer, "param_groups", [])
    if not (groups and groups[0].get("train_mode") is True and hasattr(optimizer, "eval")):
        yield
        return
    import torch

    parameters = [p for group in groups for p in group["params"]]
    kept = [p.detach().clone() for p in parameters]
    optimizer.eval()
    try:
        yield
    finally:
        optimizer.train()
        with torch.no_grad():
            for parameter, value in zip(parameters, kept):
                parameter.copy_(value)


def _arguments_text(arguments: dict) -> str:
    return ",".join(f"{key}={value}" for key, value in arguments.items())
