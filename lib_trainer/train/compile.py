"""torch_compile: the UNet's forward through torch.compile for the run, plain PyTorch again
afterwards.

torch compiles on the first call of each input shape (each bucket, and the samples' no-grad
calls) and reuses the result after. The adapters' forward hooks are traced with it, so they
must be attached before the first compiled call; the loop compiles inside `attached`. Where
compiling fails (no C compiler, an unsupported Python, a model the compiler cannot trace, as
can happen inside the WebUI), the error is said in one line and the run goes on with the plain
forward: a failed compile never ends a run.
"""
from __future__ import annotations

import contextlib
import time

import torch

# Backends that need more than this trainer can give them (a second machine, a TVM install...).
_NOT_OFFERED = ("openxla", "openxla_eval", "tvm", "ts", "aot_ts", "cudagraphs")


def backend_problems(backend: str) -> list[str]:
    import torch._dynamo

    available = [name for name in torch._dynamo.list_backends(exclude_tags=())
                 if name not in _NOT_OFFERED and "TESTING" not in name]
    if backend in available:
        return []
    return [f"dynamo_backend={backend!r} is not a torch.compile backend here; use one of: {', '.join(available)}"]


@contextlib.contextmanager
def compiled_denoiser(bundle, enabled: bool, backend: str, progress):
    """While the block runs, the denoiser's forward is compiled; `seconds` of the yielded
    record says how long compiling took in the first compiled calls."""
    record = CompileRecord()
    if not enabled:
        yield record
        return
    module = bundle.denoiser()
    plain = module.forward
    compiled = torch.compile(plain, backend=backend, dynamic=False)
    seen_shapes: set[tuple] = set()

    def forward(*args, **kwargs):
        if record.failed:
            return plain(*args, **kwargs)
        shape = tuple(tuple(a.shape) for a in args if isinstance(a, torch.Tensor))
        first = (shape, torch.is_grad_enabled()) not in seen_shapes
        start = time.perf_counter()
        try:
            output = compiled(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - any compiler failure: train on without it
            record.failed = True
            progress.status(f"torch_compile failed ({_root_cause(error)}); training goes on without it")
            return plain(*args, **kwargs)
        if first:
            seen_shapes.add((shape, torch.is_grad_enabled()))
            record.seconds += time.perf_counter() - start
        return output

    before = module.__dict__.get("forward")  # a host's own instance forward, put back after
    module.forward = forward
    progress.status(f"torch_compile: the UNet compiles with {backend} on its first step of each bucket shape")
    try:
        yield record
    finally:
        if before is None:
            del module.forward
        else:
            module.forward = before


def _root_cause(error: BaseException) -> str:
    """The compiler's own error (torch wraps it in BackendCompilerFailed), on one line."""
    while error.__cause__ is not None:
        error = error.__cause__
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200] if text else ''}"


class CompileRecord:
    def __init__(self) -> None:
        self.seconds = 0.0   # time spent in first calls (compiling, and that call's own work)
        self.failed = False
