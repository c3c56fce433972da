"""In the WebUI tab (the fault suite, the WebUI items): training through the WebUI's "Original"
emphasis cannot go NaN, the NaN message fits the run, the base-model field and Check speak of
the loaded checkpoint, resolution is pre-filled from the dataset and upscaling is warned of."""
from __future__ import annotations

import sys
import types

import pytest
import torch

from lib_trainer.config import TrainConfig
from lib_trainer.train.loop import _diverged_message
from lib_trainer.webui.emphasis import emphasis_for_training, emphasis_keeping_mean


def webui_original(z: torch.Tensor, multipliers: torch.Tensor) -> torch.Tensor:
    """The WebUI's "Original" emphasis as modules/sd_emphasis.py describes it: weight each
    token's output, then scale the whole so its mean is the unweighted mean."""
    original_mean = z.mean()
    weighted = z * multipliers.reshape(multipliers.shape + (1,)).expand(z.shape)
    return weighted * (original_mean / weighted.mean())


def zero_mean_output(seed=0) -> torch.Tensor:
    """A text encoder output whose mean is zero, as a freshly initialised or badly scaled one gives."""
    half = torch.randn(2, 77, 16, generator=torch.Generator().manual_seed(seed))
    return torch.cat([half, -half], dim=-1).requires_grad_()  # each +x has its -x: the mean is exactly 0


def gradient(function, z, multipliers, seed=1):
    upstream = torch.randn(z.shape, generator=torch.Generator().manual_seed(seed))
    z.grad = None
    (function(z, multipliers) * upstream).sum().backward()
    return z.grad, upstream


def test_captions_without_emphasis_skip_the_rescale_and_its_gradient():
    for seed in range(5):
        z, ones = zero_mean_output(seed), torch.ones(2, 77)
        # The WebUI's own: an identity for these weights, whose gradient through mean/mean with a
        # mean of ~1e-10 is off by as much as the gradient itself (inf in half precision).
        grad, upstream = gradient(webui_original, z, ones)
        assert (grad - upstream).abs().max() > 0.4
        grad, upstream = gradient(emphasis_keeping_mean, z, ones)
        assert torch.equal(grad, upstream) and emphasis_keeping_mean(z, ones) is z


def test_weighted_captions_keep_the_webui_values_with_a_bounded_gradient():
    z = torch.randn(2, 77, 32, generator=torch.Generator().manual_seed(3)).add_(0.5).requires_grad_()
    weights = torch.ones(2, 77)
    weights[:, 3:6] = 1.1
    assert torch.allclose(emphasis_keeping_mean(z, weights), webui_original(z, weights))
    grad, upstream = gradient(emphasis_keeping_mean, z, weights)
    ratio = (z.mean() / (z * weights[..., None]).mean()).item()
    assert torch.allclose(grad, upstream * weights[..., None] * ratio)  # the means held constant
    near_zero = zero_mean_output(4)
    grad, _ = gradient(emphasis_keeping_mean, near_zero, weights)
    assert torch.isfinite(grad).all() and grad.abs().max() < 10


@pytest.fixture
def fake_sd_emphasis(monkeypatch):
    """A stand-in for the WebUI's modules.sd_emphasis: its option lookup and "Original" class."""
    class Emphasis:
        def after_transformers(self):
            pass

    class EmphasisOriginal(Emphasis):
        def after_transformers(self):
            self.z = webui_original(self.z, self.multipliers)

    class EmphasisNoNorm(EmphasisOriginal):
        def after_transformers(self):
            self.z = self.z * self.multipliers.reshape(self.multipliers.shape + (1,)).expand(self.z.shape)

    choices = {"Original": EmphasisOriginal, "No norm": EmphasisNoNorm, "None": Emphasis}
    module = types.SimpleNamespace(EmphasisOriginal=EmphasisOriginal,
                                   get_current_option=lambda name: choices.get(name, EmphasisOriginal))
    package = types.ModuleType("modules")
    package.sd_emphasis = module
    monkeypatch.setitem(sys.modules, "modules", package)
    monkeypatch.setitem(sys.modules, "modules.sd_emphasis", module)
    return module


def encode_through(module, name: str, z: torch.Tensor, multipliers: torch.Tensor) -> torch.Tensor:
    """What the WebUI's prompt handling does with a chunk's output (sd_hijack_clip.process_tokens)."""
    emphasis = module.get_current_option(name)()
    emphasis.multipliers, emphasis.z = multipliers, z
    emphasis.after_transformers()
    return emphasis.z


def test_while_training_the_webui_original_emphasis_holds_its_mean(fake_sd_emphasis):
    z, ones = zero_mean_output(2), torch.ones(2, 77)
    through = lambda z, multipliers: encode_through(fake_sd_emphasis, "Original", z, multipliers)  # noqa: E731
    before = fake_sd_emphasis.get_current_option
    with emphasis_for_training():
        grad, upstream = gradient(through, z, ones)
        assert torch.equal(grad, upstream)
        assert fake_sd_emphasis.get_current_option("No norm").__name__ == "EmphasisNoNorm"  # others as they are
    assert fake_sd_emphasis.get_current_option is before  # given back after the run
    grad, upstream = gradient(through, z, ones)
    assert (grad - upstream).abs().max() > 0.4  # outside training: the WebUI's own, untouched


def test_the_nan_message_fits_the_run():
    nan = torch.tensor(float("nan"))
    fp32 = _diverged_message(nan, 1, 1, [], TrainConfig().replace(mixed_precision="no", max_grad_norm=1.0))
    assert "bf16" not in fp32 and "max_grad_norm" not in fp32 and "lower the learning rate" in fp32
    fp16 = _diverged_message(nan, 1, 1, [], TrainConfig().replace(mixed_precision="fp16", max_grad_norm=0.0))
    assert "mixed_precision=bf16" in fp16 and "set max_grad_norm=1" in fp16
