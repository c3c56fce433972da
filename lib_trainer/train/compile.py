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
def compiled_denoiser(bundle, enabled: bool, backend: str, progress, times=None):
    """While the block runs, the denoiser's forward is compiled. Its first call per input shape
    (where torch compiles) is timed as `times.part("compile")` (first_step.FirstStepTimes)."""
    if not enabled:
        yield
        return
    module = bundle.denoiser()
    plain = module.forward
    compiled = torch.compile(plain, backend=backend, dynamic=False)
    seen: set[tuple] = set()
    failed = False

    def forward(*args, **kwargs):
        nonlocal failed
        if failed:
            return plain(*args, **kwargs)
        key = (tuple(tuple(a.shape) for a in args if isinstance(a, torch.Tensor)), torch.is_grad_enabled())
        timed = times.part("compile") if times is not None and key not in seen else contextlib.nullcontext()
        seen.add(key)
        try:
            with timed:
                return compiled(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - any compiler failure: train on without it
            failed = True
            progress.status(f"torch_compile failed ({_root_cause(error)}); training goes on without it")
            return plain(*args, **kwargs)

    before = module.__dict__.get("forward")  # a host's own instance forward, put back after
    module.forward = forward
    progress.status(f"torch_compile: the UNet compiles with {backend} on its first step of each bucket shape")
    try:
        yield
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
