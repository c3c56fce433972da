"""The benchmark: seconds per training step and peak memory, against a floor measured in
the same process: a bare forward + backward of the denoiser at the same shapes (input
gradients only, as a LoRA needs), with no data, text encoder, network or optimizer. The
ratio says how much the trainer adds on top of the unavoidable work.

A phase pass (bench_phases.py) then splits a step of the same config into data, text-encoder
forward/backward, UNet forward/backward and optimizer, each against the floor too; the time to
the first step is split into imports, loading, caching, compile and the first step itself."""
from __future__ import annotations

import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field

import torch

from .allocator import allocator_in_use
from .train.auto_precision import with_resolved_precision
from .bench_compare import BUSY_LOAD, busy_line
from .bench_phases import HELP, PHASES, PhaseFigures, bare_forward_backward, measure_phases
from .config import TrainConfig
from .progress import STATUS, STEP, Progress
from .train.first_step import PARTS, first_step_line
from .train.precision import resolve_device


@dataclass
class Measurement:
    name: str
    seconds_per_step: float
    peak_memory_mb: float


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    elif os.path.exists("/proc/self/clear_refs"):
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # Linux: reset the peak resident set size (VmHWM)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class BenchResult:
    measurements: list[Measurement]  # the floor, the training step, loading the model
    model_mb: float = 0.0
    phases: PhaseFigures | None = None
    first_step_s: dict[str, float] = field(default_factory=dict)  # train/first_step.py's parts
    load_average: float = 0.0  # the machine's 1-minute load before the bench began



def bench_run_config(config: TrainConfig, folder: str, steps: int) -> TrainConfig:
    """The config on drawn pictures in `folder`, `steps` long, saving nothing on the way."""
    from .demo_data import make_demo_dataset

    width, _ = config.resolution_wh()
    root = make_demo_dataset(os.path.join(folder, "data"), count=max(4, config.train_batch_size), size=width)
    return config.replace(train_data_dir=root, output_dir=os.path.join(folder, "out"), max_train_steps=steps,
                          max_train_epochs=0, save_every_n_epochs=0, save_every_n_steps=0)


def measure_training(run: TrainConfig, bundle, steps: int, warmup: int) -> tuple[Measurement, dict[str, float]]:
    """Train the run (warmup + steps steps); time the steps after the warm-up. Also returns
    train()'s own time-to-first-step parts."""
    from .train.loop import train

    device = resolve_device(run.device)
    stamps: list[float] = []
    first_step: dict[str, float] = {}

    def sink(event):
        if event.kind == STEP and event.label == "training":
            stamps.append(time.perf_counter())
        elif event.kind == STATUS and "first_step_s" in event.info:
            first_step.update(event.info["first_step_s"])

    reset_peak_memory(device)
    train(run, bundle=bundle, progress=Progress([sink]))
    intervals = [b - a for a, b in zip(stamps[warmup:], stamps[warmup + 1:])]
    return Measurement("training step", statistics.median(intervals), peak_memory_mb(device)), first_step


def measure_floor(config: TrainConfig, bundle, steps: int, warmup: int) -> Measurement:
    """Forward + backward (to the input) of the bare denoiser at the training shapes, with the
    run's gradient checkpointing."""
    device = resolve_device(config.device)
    width, height = config.resolution_wh()
    from .train.base_weights import requested_layer_dtype
    from .train.precision import compute_dtype
    from .train.run_parts import gradient_checkpointing

    # at the run's storage (base_weights_dtype), so that the floor holds the weights as training does
    with bundle.frozen_for_training(device, compute_dtype(config.mixed_precision),
                                    layer_dtype=requested_layer_dtype(config)), \
            gradient_checkpointing(bundle, config.gradient_checkpointing):
        conditioning = bundle.encode_prompts(["a"] * config.train_batch_size).detach()
        latents = torch.randn(config.train_batch_size, 4, height // 8, width // 8, device=device)
        timesteps = torch.randint(0, 1000, (config.train_batch_size,), device=device)
        reset_peak_memory(device)
        times = [bare_forward_backward(config, bundle, latents, timesteps, conditioning, device)
                 for _ in range(warmup + steps)]
    return Measurement("bare forward+backward", statistics.median(times[warmup:]), peak_memory_mb(device))


def run_benchmark(config: TrainConfig, steps: int = 20, warmup: int = 3,
                  imports_s: float | None = None) -> BenchResult:
    """imports_s: how long the process ran before the bench began (None: not counted)."""
    config = with_resolved_precision(config)
    load_average = os.getloadavg()[0]
    bundle, loading = measure_loading(config)
    floor = measure_floor(config, bundle, steps, warmup)
    with tempfile.TemporaryDirectory() as folder:
        run = bench_run_config(config, folder, warmup + steps)
        training, trained = measure_training(run, bundle, steps, warmup)
        phases = measure_phases(run, bundle, steps, warmup)
    # train() was handed the loaded model, so imports and loading are the bench's own
    first_step = {**({} if imports_s is None else {"imports": imports_s}), "load": loading.seconds_per_step,
                  **{part: s for part, s in trained.items() if part not in ("imports", "load")}}
    return BenchResult([floor, training, loading], model_size_mb(bundle), phases, first_step, load_average)


def measure_loading(config: TrainConfig):
    """Load the model, recording the time and the peak resident memory while loading; in the
    dtypes the config asks for (base_weights_dtype's layers read straight into it)."""
    from .hosts import load_bundle
    from .train.base_weights import requested_layer_dtype

    device = torch.device("cpu")
    reset_peak_memory(device)
    start = time.perf_counter()
    bundle = load_bundle(config.pretrained_model_name_or_path, config.v_parameterization, config.clip_skip,
                         config.vae, layer_dtype=requested_layer_dtype(config))
    return bundle, Measurement("loading the model", time.perf_counter() - start, peak_memory_mb(device))


def model_size_mb(bundle) -> float:
    """Bytes of every weight the loaded model holds: what loading cannot do with less."""
    return sum(t.numel() * t.element_size() for m in bundle.modules() for t in m.state_dict().values()) / 2**20


def write_random_checkpoint(architecture: str, path: str, dtype: torch.dtype = torch.float16) -> str:
    """A single-file checkpoint of the architecture, random weights, in the original layout."""
    from .hosts.components import build_components
    from .hosts.single_file import save_single_file

    save_single_file(build_components(architecture, dtype=dtype, seed=0), path)
    return path


def report(config: TrainConfig, result: BenchResult) -> str:
    floor, *steps, loading = result.measurements
    model_mb = result.model_mb
    width, height = config.resolution_wh()
    lines = [
        f"model {config.pretrained_model_name_or_path}, {width}x{height}, batch {config.train_batch_size}, "
        f"precision {config.mixed_precision}, gradient checkpointing {config.gradient_checkpointing}, "
        f"network_dim {config.network_dim}, conv_dim {config.conv_dim}, cache_latents {config.cache_latents}, "
        f"torch threads {torch.get_num_threads()}, allocator {allocator_in_use()}",
    ]
    busy = busy_line(result.load_average, "before the bench began")
    lines.append(busy or f"machine: 1-minute load {result.load_average:.2f} before the bench began (idle)")
    lines.append(f"{'measured':<24}{'s/step':>10}{'x floor':>9}{'peak MB':>10}{'x floor':>9}")
    for m in (floor, *steps):
        lines.append(f"{m.name:<24}{m.seconds_per_step:>10.4f}{m.seconds_per_step / floor.seconds_per_step:>9.2f}"
                     f"{m.peak_memory_mb:>10.0f}{m.peak_memory_mb / floor.peak_memory_mb:>9.2f}")
    if result.phases is not None:
        lines += phase_lines(result, floor.seconds_per_step)
    if result.first_step_s:
        lines.append(first_step_line(result.first_step_s))
    if model_mb:
        lines.append(f"{loading.name}: {loading.seconds_per_step:.1f} s, peak RAM {loading.peak_memory_mb:.0f} MB "
                     f"= {loading.peak_memory_mb / model_mb:.2f} x the {model_mb:.0f} MB of weights it holds")
    return "\n".join(lines)


def phase_lines(result: BenchResult, floor_s: float) -> list[str]:
    """One step of the phase pass, phase by phase, each against the floor."""
    phases = result.phases
    lines = ["one step by phase (phase pass, synchronised; median of the timed steps):",
             f"{'phase':<24}{'s/step':>10}{'x floor':>9}  what it holds"]
    rows = [(name, phases.seconds[name], HELP[name]) for name in PHASES]
    rows += [("whole step", phases.step_s, "the phases together"),
             ("adapter overhead", phases.adapter_overhead_s,
              f"UNet forward + backward less a bare one after each step ({phases.bare_s:.4f} s; in them)")]
    for name, seconds, what in rows:
        lines.append(f"{name:<24}{seconds:>10.4f}{seconds / floor_s:>9.2f}  {what}")
    return lines + phases.notes


def figures(result: BenchResult) -> dict:
    """Every figure of a bench run, for --json (bench_compare reads it back)."""
    floor, training, loading = result.measurements
    return {"floor_s": floor.seconds_per_step, "floor_peak_mb": floor.peak_memory_mb,
            "training_step_s": training.seconds_per_step, "training_peak_mb": training.peak_memory_mb,
            "loading_s": loading.seconds_per_step, "loading_peak_mb": loading.peak_memory_mb,
            "phases_s": dict(result.phases.seconds), "phase_step_s": result.phases.step_s,
            "adapter_overhead_s": result.phases.adapter_overhead_s, "phase_bare_s": result.phases.bare_s,
            "first_step_s": {part: result.first_step_s[part] for part in PARTS if part in result.first_step_s},
            "load_average": result.load_average, "busy": result.load_average >= BUSY_LOAD}
