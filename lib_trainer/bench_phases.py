"""The bench's phase pass: training steps of the config, set up as `train()` sets them up (the
same trainable, model state, latents, prompts, optimizer: train/run_parts.py), each step timed
phase by phase, with the device synchronised at every boundary so that a phase's queued GPU
work is counted in it.

Backward is split in two without changing the gradients: the UNet is fed a detached copy of
the conditioning that asks for its gradient, so the first backward runs through the UNet
only (to the UNet's trained weights and that copy); the second carries the copy's gradient
on through the text encoder. A text encoder that does not train has no second part (0 s).

The adapters' overhead pairs each step with a bare UNet forward + backward (the adapters
detached) at the same shapes right after it, so both see the same machine noise.
"""
from __future__ import annotations

import contextlib
import random
import statistics
import time
from dataclasses import dataclass, field

import torch

from .dataset.captions import CaptionClock
from .dataset.plan import caption_options, make_plan
from .hosts.bundle import Conditioning
from .networks.embedding import embedding_run_config, is_embedding_run
from .networks.trainable import UNET
from .progress import Progress
from .train import loop
from .train.precision import autocast, grad_scaler, resolve_device
from .train.auto_precision import with_resolved_precision
from .train.base_weights import requested_layer_dtype
from .train.run_parts import model_in_training, optimizer_and_schedule, optimizer_step, training_mode
from .train.step_loss import batch_loss
from .train.weight_norms import apply_max_norm

DATA, TE_FORWARD, TE_BACKWARD = "data", "text encoder forward", "text encoder backward"
UNET_FORWARD, UNET_BACKWARD, OPTIMIZER = "UNet forward", "UNet backward", "optimizer"
# In the order a step runs them; together they make the whole step.
PHASES = (DATA, TE_FORWARD, UNET_FORWARD, UNET_BACKWARD, TE_BACKWARD, OPTIMIZER)
HELP = {DATA: "the batch's latents and captions (text-encoder outputs when cached)",
        TE_FORWARD: "tokenising and encoding the captions",
        UNET_FORWARD: "noise, timesteps, the UNet with adapters, the loss",
        UNET_BACKWARD: "to the UNet's adapters and the conditioning",
        TE_BACKWARD: "from the conditioning to the text encoder's adapters",
        OPTIMIZER: "unscale, clip, step, zero_grad, schedule, scale_weight_norms"}


@dataclass
class PhaseFigures:
    seconds: dict[str, float]                       # each phase's median s/step over the timed steps
    step_s: float                                   # the median whole step of this pass
    notes: list[str] = field(default_factory=list)  # what is 0 and why
    adapter_overhead_s: float = 0.0                 # median of (UNet forward + backward - the bare one)
    bare_s: float = 0.0                             # median of the bare UNet forward + backward after each step


class _Clock:
    """Adds up seconds per phase; synchronises a GPU at each reading."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds = dict.fromkeys(PHASES, 0.0)

    def now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    @contextlib.contextmanager
    def phase(self, name: str):
        start = self.now()
        try:
            yield
        finally:
            self.seconds[name] += self.now() - start


def bare_forward_backward(config, bundle, latents: torch.Tensor, timesteps: torch.Tensor, conditioning,
                          device: torch.device) -> float:
    """Seconds of one forward + backward (to the input only, as a LoRA needs) of the denoiser
    as it is now: the floor when nothing is attached to it."""
    clock = _Clock(device)
    start = clock.now()
    noisy = latents.clone().requires_grad_(True)
    with autocast(device, config.mixed_precision):
        output = bundle.predict(noisy, timesteps, conditioning)
    output.float().square().mean().backward()
    return clock.now() - start


@contextlib.contextmanager
def detached(trainable, bundle):
    trainable.detach()
    try:
        yield
    finally:
        trainable.attach(bundle)


def text_encoder_note(config, trains_text: bool) -> str:
    """Why the text encoder's backward is 0, or its forward too (empty when it trains)."""
    if config.cache_text_encoder_outputs:
        return "text encoder forward and backward 0: cache_text_encoder_outputs (its outputs are read as data)"
    if trains_text:
        return ""
    why = "network_train_unet_only" if config.network_train_unet_only else \
        "text_encoder_lr=0" if config.effective_text_encoder_lr() == 0 else "no text-encoder layer trains"
    return f"text encoder backward 0: the text encoder does not train ({why})"


def measure_phases(config, bundle, steps: int, warmup: int) -> PhaseFigures:
    """warmup + steps optimizer steps of the config (its train_data_dir), timed phase by phase."""
    if is_embedding_run(config):
        config = embedding_run_config(config)
    config = with_resolved_precision(config)
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)
    data_rng, noise_rng = random.Random(config.seed), torch.Generator().manual_seed(config.seed)
    plan, quiet = make_plan(config, bundle.count_tokens), Progress()
    trainable = loop.new_trainable(config, bundle, device)
    with model_in_training(config, bundle, trainable, device, layer_dtype=requested_layer_dtype(config)):
        trains_text = training_mode(config, bundle, trainable)
        latents = loop._latent_source(config, bundle, plan, device, quiet)
        prompts = loop._prompt_source(config, bundle, plan, caption_options(config, plan.total_steps), trains_text,
                                      device, quiet, CaptionClock())
        schedule = loop._noise_schedule(config, bundle, quiet)
        optimizer, _, _, scheduler = optimizer_and_schedule(config, trainable, plan, device)
        scaler = grad_scaler(device, config.mixed_precision, config.full_fp16)
        unet_weights = [p for group in optimizer.param_groups if group.get("name") == UNET for p in group["params"]]
        weights = [p for group in optimizer.param_groups for p in group["params"]]
        batches = _endless(plan.training_set, data_rng)

        def one_step() -> tuple[dict[str, float], float, float]:
            """The step's phases, its whole time, and a bare forward + backward at its shapes."""
            clock = _Clock(device)
            start = clock.now()
            for _ in range(config.gradient_accumulation_steps):
                x0, conditioning = _timed_batch(config, bundle, next(batches), latents, prompts, schedule, device,
                                                data_rng, noise_rng, scaler, unet_weights, clock)
            with clock.phase(OPTIMIZER):
                optimizer_step(config, scaler, optimizer, scheduler, weights)
                apply_max_norm(trainable, config.scale_weight_norms)
            whole = clock.now() - start
            timesteps = torch.full((x0.shape[0],), len(schedule) // 2, device=device)
            with detached(trainable, bundle):
                bare = bare_forward_backward(config, bundle, x0, timesteps, conditioning, device)
            return clock.seconds, whole, bare * config.gradient_accumulation_steps

        measured = [one_step() for _ in range(warmup + steps)][warmup:]
    seconds = {name: statistics.median(s[name] for s, _, _ in measured) for name in PHASES}
    overhead = statistics.median(s[UNET_FORWARD] + s[UNET_BACKWARD] - bare for s, _, bare in measured)
    note = text_encoder_note(config, trains_text)
    # noise can take the difference below 0 when the adapters cost next to nothing: 0 then
    return PhaseFigures(seconds, statistics.median(whole for _, whole, _ in measured), [note] if note else [],
                        max(0.0, overhead), statistics.median(bare for _, _, bare in measured))


def _timed_batch(config, bundle, batch, latents, prompts, schedule, device, data_rng, noise_rng, scaler,
                 unet_weights, clock: _Clock):
    """One batch's loss and backward, as the loop runs them, its phases added to `clock`;
    returns the batch's latents and conditioning (detached), for the bare pass at its shapes."""
    seen: dict[str, object] = {}  # the batch's latents; the text encoder's output and the UNet's copy of it

    def timed_latents(*args):
        with clock.phase(DATA):
            seen["latents"] = latents(*args)
        return seen["latents"]

    def timed_prompts(*args):
        with clock.phase(DATA if config.cache_text_encoder_outputs else TE_FORWARD):
            seen["encoded"] = seen["given"] = prompts(*args)
        if seen["encoded"].context.requires_grad:  # the text side trains: the UNet gets a copy
            seen["given"] = Conditioning(*(None if t is None else t.detach().requires_grad_(t.requires_grad)
                                           for t in (seen["encoded"].context, seen["encoded"].pooled)))
        return seen["given"]

    before = dict(clock.seconds)
    start = clock.now()
    with autocast(device, config.mixed_precision):
        loss = batch_loss(config, bundle, batch, timed_latents, timed_prompts, schedule, device, data_rng, noise_rng)
    inside = sum(clock.seconds[name] - before[name] for name in (DATA, TE_FORWARD))
    clock.seconds[UNET_FORWARD] += clock.now() - start - inside
    scaled = scaler.scale(loss / config.gradient_accumulation_steps)
    encoded, given = seen["encoded"], seen["given"]
    copies = [] if given is encoded else [t for t in (given.context, given.pooled) if t is not None and t.requires_grad]
    with clock.phase(UNET_BACKWARD):
        torch.autograd.backward(scaled, inputs=unet_weights + copies)
    if copies:
        with clock.phase(TE_BACKWARD):
            originals = [t for t in (encoded.context, encoded.pooled) if t is not None and t.requires_grad]
            torch.autograd.backward(originals, [copy.grad for copy in copies])
    return seen["latents"][0].to(device), given.detach()


def _endless(training_set, rng: random.Random):
    while True:
        yield from training_set.epoch_batches(rng)
