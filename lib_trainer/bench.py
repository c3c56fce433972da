"""The benchmark: seconds per training step and peak memory, against a floor measured in
the same process: a bare forward + backward of the denoiser at the same shapes (input
gradients only, as a LoRA needs), with no data, text encoder, network or optimizer. The
ratio says how much the trainer adds on top of the unavoidable work."""
from __future__ import annotations

import os
import statistics
import tempfile
import time
from dataclasses import dataclass

import torch

from .config import TrainConfig
from .progress import STEP, Progress
from .train.precision import autocast, resolve_device


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


def measure_training(config: TrainConfig, bundle, steps: int, warmup: int) -> Measurement:
    """Train warmup + steps steps on drawn pictures; time the steps after the warm-up."""
    from .demo_data import make_demo_dataset
    from .train.loop import train

    device = resolve_device(config.device)
    width, _ = config.resolution_wh()
    stamps: list[float] = []
    sink = lambda event: stamps.append(time.perf_counter()) if event.kind == STEP and event.label == "training" else None  # noqa: E731
    with tempfile.TemporaryDirectory() as folder:
        root = make_demo_dataset(os.path.join(folder, "data"), count=max(4, config.train_batch_size), size=width)
        run = config.replace(train_data_dir=root, output_dir=os.path.join(folder, "out"),
                             max_train_steps=warmup + steps, max_train_epochs=0, save_every_n_epochs=0,
                             save_every_n_steps=0)
        reset_peak_memory(device)
        train(run, bundle=bundle, progress=Progress([sink]))
    intervals = [b - a for a, b in zip(stamps[warmup:], stamps[warmup + 1:])]
    return Measurement("training step", statistics.median(intervals), peak_memory_mb(device))


def measure_floor(config: TrainConfig, bundle, steps: int, warmup: int) -> Measurement:
    """Forward + backward (to the input) of the bare denoiser at the training shapes."""
    device = resolve_device(config.device)
    width, height = config.resolution_wh()
    from .train.base_weights import requested_layer_dtype
    from .train.precision import compute_dtype

    # at the run's storage (base_weights_dtype), so that the floor holds the weights as training does
    with bundle.frozen_for_training(device, compute_dtype(config.mixed_precision),
                                    layer_dtype=requested_layer_dtype(config)):
        conditioning = bundle.encode_prompts(["a"] * config.train_batch_size).detach()
        latents = torch.randn(config.train_batch_size, 4, height // 8, width // 8, device=device)
        timesteps = torch.randint(0, 1000, (config.train_batch_size,), device=device)
        reset_peak_memory(device)
        times = []
        for _ in range(warmup + steps):
            start = time.perf_counter()
            noisy = latents.clone().requires_grad_(True)
            with autocast(device, config.mixed_precision):
                output = bundle.predict(noisy, timesteps, conditioning)
            output.float().square().mean().backward()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
    return Measurement("bare forward+backward", statistics.median(times[warmup:]), peak_memory_mb(device))


def run_benchmark(config: TrainConfig, steps: int = 20, warmup: int = 3) -> tuple[list[Measurement], float]:
    bundle, loading = measure_loading(config)
    floor = measure_floor(config, bundle, steps, warmup)
    training = measure_training(config, bundle, steps, warmup)
    return [floor, training, loading], model_size_mb(bundle)


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


def report(config: TrainConfig, measurements: list[Measurement], model_mb: float = 0.0) -> str:
    floor, *steps, loading = measurements
    width, height = config.resolution_wh()
    preload = os.environ.get("LD_PRELOAD", "")
    lines = [
        f"model {config.pretrained_model_name_or_path}, {width}x{height}, batch {config.train_batch_size}, "
        f"precision {config.mixed_precision}, gradient checkpointing {config.gradient_checkpointing}, "
        f"network_dim {config.network_dim}, conv_dim {config.conv_dim}, cache_latents {config.cache_latents}, "
        f"torch threads {torch.get_num_threads()}, allocator {'tcmalloc' if 'tcmalloc' in preload else 'default'}",
        f"{'phase':<24}{'s/step':>10}{'x floor':>9}{'peak MB':>10}{'x floor':>9}",
    ]
    for m in (floor, *steps):
        lines.append(f"{m.name:<24}{m.seconds_per_step:>10.4f}{m.seconds_per_step / floor.seconds_per_step:>9.2f}"
                     f"{m.peak_memory_mb:>10.0f}{m.peak_memory_mb / floor.peak_memory_mb:>9.2f}")
    if model_mb:
        lines.append(f"{loading.name}: {loading.seconds_per_step:.1f} s, peak RAM {loading.peak_memory_mb:.0f} MB "
                     f"= {loading.peak_memory_mb / model_mb:.2f} x the {model_mb:.0f} MB of weights it holds")
    return "\n".join(lines)
