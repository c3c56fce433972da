"""torch_compile: the compiled UNet trains the same weights as the plain one, and a compiler
that fails leaves the run going on the plain forward, said in one line."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from lib_trainer.config import TrainConfig
from lib_trainer.progress import STATUS, Progress
from lib_trainer.train.loop import train

from conftest import quick_config


@pytest.fixture(scope="module")
def plain_weights(small_root, tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("plain"))
    return load_file(train(quick_config(small_root, folder, max_train_steps=3)).final_path)


def _train(small_root, folder, bundle=None, **changes):
    statuses = []
    progress = Progress([lambda event: statuses.append(event.text) if event.kind == STATUS else None])
    result = train(quick_config(small_root, folder, max_train_steps=3, **changes), bundle=bundle, progress=progress)
    return load_file(result.final_path), statuses


def test_a_compiled_unet_trains_the_weights_of_the_plain_one(small_root, tmp_path, plain_weights):
    from lib_trainer.hosts import load_bundle

    # aot_eager traces forward and backward as inductor does, without generating code (faster).
    bundle = load_bundle("tiny:sd1")
    weights, statuses = _train(small_root, str(tmp_path), bundle=bundle, torch_compile=True,
                               dynamo_backend="aot_eager")
    assert any(line.startswith("torch_compile: the UNet compiles with aot_eager") for line in statuses)
    assert not any("torch_compile failed" in line for line in statuses)
    assert weights.keys() == plain_weights.keys()
    for key, tensor in plain_weights.items():
        # Traced ops run in another order: fp32 rounding only.
        torch.testing.assert_close(weights[key], tensor, rtol=1e-4, atol=1e-6)
    assert "forward" not in bundle.denoiser().__dict__  # the plain forward again after the run


def test_a_failing_compiler_leaves_the_run_on_the_plain_forward(small_root, tmp_path, plain_weights, monkeypatch):
    # What torch.compile's result does when the compiler fails on the first call (its own
    # wrapper around the compiler's error), without spending a minute tracing first.
    class BackendCompilerFailed(RuntimeError):
        pass

    def compiled_that_fails(function, **options):
        def call(*args, **kwargs):
            raise BackendCompilerFailed("backend='inductor' raised:") from OSError("no C compiler found")
        return call

    monkeypatch.setattr(torch, "compile", compiled_that_fails)
    weights, statuses = _train(small_root, str(tmp_path), torch_compile=True)
    failed = [line for line in statuses if "torch_compile failed" in line]
    assert failed == ["torch_compile failed (OSError: no C compiler found); training goes on without it"]
    for key, tensor in plain_weights.items():
        assert torch.equal(weights[key], tensor)


def test_an_unknown_backend_is_refused_with_the_choices():
    problems = TrainConfig(torch_compile=True, dynamo_backend="inductr").problems()
    assert any("dynamo_backend='inductr' is not a torch.compile backend here" in p and "inductor" in p
               for p in problems)
    assert TrainConfig(torch_compile=False, dynamo_backend="inductr").problems() == []
