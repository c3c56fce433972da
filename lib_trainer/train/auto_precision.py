"""mixed_precision=auto: the compute precision this device is fast at.

CUDA: bf16 where the GPU has it (Ampere and later), else fp16 with loss scaling. CPU: bf16
only where the CPU has bf16 units (AVX512-BF16 or AMX) and a short probe confirms that bf16
really is faster here; elsewhere fp32, since emulated bf16/fp16 on a CPU runs many times
slower than fp32 (measured 100x on an AVX2 EPYC). The answer is worked out once per process.

An explicit choice is kept; `precision_notes` says when it is slower than auto's on this
device. LIB_TRAINER_AUTO_PRECISION=no|fp16|bf16 pins what auto means (the test suite pins it
so that runs are the same on every machine).
"""
from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass

import torch

PIN_VARIABLE = "LIB_TRAINER_AUTO_PRECISION"
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
FASTER_ENOUGH = 0.8  # bf16 must take at most this share of fp32's time to be chosen


@dataclass(frozen=True)
class PrecisionChoice:
    precision: str       # no, fp16 or bf16
    reason: str          # said in the plan


def resolve_precision(mixed_precision: str, device: torch.device) -> str:
    """The concrete precision of a run: the user's, or auto's choice for the device."""
    if mixed_precision != "auto":
        return mixed_precision
    return best_precision(device.type).precision


def with_resolved_precision(config):
    """The config with auto replaced by its choice on the config's device (named, not
    necessarily present: an exported config may be meant for a GPU machine)."""
    name = config.device if config.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu"
    return config.replace(mixed_precision=resolve_precision(config.mixed_precision, torch.device(name)))


@functools.lru_cache(maxsize=None)
def best_precision(device_type: str) -> PrecisionChoice:
    pinned = os.environ.get(PIN_VARIABLE, "")
    if pinned in ("no", "fp16", "bf16"):
        return PrecisionChoice(pinned, f"pinned by {PIN_VARIABLE}")
    if device_type == "cuda":
        if not torch.cuda.is_available():
            return PrecisionChoice("bf16", "no GPU here to ask; GPUs since 2020 (Ampere) compute in bf16")
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return PrecisionChoice("bf16", "this GPU computes in bf16")
        return PrecisionChoice("fp16", "this GPU has no bf16: fp16 with loss scaling")
    if device_type != "cpu":
        return PrecisionChoice("no", f"no half-precision speed-up known on {device_type}")
    if not cpu_has_bf16_units():
        return PrecisionChoice("no", "this CPU has no bf16 units (AVX512-BF16 or AMX): bf16 would be emulated, "
                                     "many times slower than fp32")
    ratio = cpu_bf16_time_ratio()
    if ratio <= FASTER_ENOUGH:
        return PrecisionChoice("bf16", f"this CPU has bf16 units; bf16 took {ratio:.2f}x fp32's time in a probe")
    return PrecisionChoice("no", f"this CPU lists bf16 units, but bf16 took {ratio:.2f}x fp32's time in a probe")


def cpu_has_bf16_units() -> bool:
    """From /proc/cpuinfo's flags; where there is none (not Linux), the probe decides."""
    try:
        with open("/proc/cpuinfo") as handle:
            flags = next((line for line in handle if line.startswith("flags")), "").split()
    except OSError:
        return True
    return any(flag in flags for flag in BF16_CPU_FLAGS)


def cpu_bf16_time_ratio() -> float:
    """bf16 time / fp32 time of a matmul and a 3x3 convolution of UNet-like sizes (~0.1 s).
    A bf16 run that takes 4x fp32's already says enough: it is not repeated."""
    fp32 = _best_time(torch.float32, repeats=3)
    first = _best_time(torch.bfloat16, repeats=1)
    if first > 4 * fp32:
        return first / fp32
    return min(first, _best_time(torch.bfloat16, repeats=2)) / fp32


def _best_time(dtype: torch.dtype, repeats: int) -> float:
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(shape, generator=generator).to(dtype) for shape in ((256, 1024), (1024, 1024)))
    x, w = (torch.randn(shape, generator=generator).to(dtype) for shape in ((1, 320, 16, 16), (320, 320, 3, 3)))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        torch.nn.functional.conv2d(x, w, padding=1)
        best = min(best, time.perf_counter() - start)
    return best


def precision_notes(mixed_precision: str, device: torch.device) -> list[str]:
    """What the plan says about the run's precision: auto's choice and why, or that an
    explicit choice is slower on this device than auto's (the choice is kept)."""
    choice = best_precision(device.type)
    if mixed_precision == "auto":
        return [f"mixed_precision=auto: {choice.precision} ({choice.reason})"]
    if mixed_precision == choice.precision or choice.reason.startswith("pinned"):
        return []
    if device.type == "cuda" and mixed_precision != "no":
        return []  # fp16 and bf16 run at about the same speed on a GPU that has both
    return [f"mixed_precision={mixed_precision} is kept, but it is slower here than {choice.precision} "
            f"({choice.reason}); mixed_precision=auto would choose {choice.precision}"]
