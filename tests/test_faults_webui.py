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
from test_webui_jobs import webui  # noqa: F401  (the stand-in WebUI modules)


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


# --- the base-model field, Check, resolution ---------------------------------------------------

def test_resolution_is_suggested_from_the_pictures_capped_by_the_family():
    from lib_trainer.dataset.plan import suggested_resolution

    small = [(64, 64)] * 3 + [(100, 80)]
    assert suggested_resolution(small, "sd1") == 64
    large = [(2000, 3000)] * 2
    assert [suggested_resolution(large, family) for family in ("sd1", "sd2", "sdxl", None)] == [512, 768, 1024, 512]
    assert suggested_resolution([(700, 700), (700, 700), (512, 512)], "sdxl") == 704  # rounded to the step


def test_the_plan_warns_when_pictures_are_upscaled(small_root, tmp_path):
    from conftest import quick_config
    from lib_trainer.dataset.plan import make_plan

    blown_up = make_plan(quick_config(small_root, str(tmp_path), resolution="512", max_bucket_reso=1024)).summary()
    assert "4 of 4 pictures are smaller than their bucket and are upscaled" in blown_up and "64x64 -> 512x512" in blown_up
    assert "upscaled" not in make_plan(quick_config(small_root, str(tmp_path), resolution="64")).summary()


def build_tab(service, defaults):
    import gradio as gr

    from lib_trainer.ui.train_tab import TrainTab

    with gr.Blocks():
        tab = TrainTab(service, defaults, memory=lambda config: "memory estimate")
        tab.build()
        tab.wire()
    return tab


def test_the_beginner_view_has_resolution_filled_in_from_the_dataset(small_root):
    from lib_trainer.jobs.queue import TrainQueue
    from lib_trainer.jobs.service import LocalTrainService

    tab = build_tab(LocalTrainService(TrainQueue(None)), TrainConfig())
    names = list(tab.form.components)
    assert names.index("resolution") == names.index("max_train_epochs") + 1  # in the beginner row, not under Expert
    summary, update, seen = tab._dataset_changed(small_root, "tiny:sdxl", "")
    assert "4 images" in summary and update["value"] == "64" and seen == small_root
    _, update, _ = tab._dataset_changed(small_root, "tiny:sdxl", seen)  # the same folder again: left as typed
    assert "value" not in update


def test_in_the_webui_the_base_model_field_and_check_speak_of_the_loaded_checkpoint(webui, small_root, tmp_path):
    from conftest import quick_config
    from lib_trainer.jobs.queue import TrainQueue

    service = webui.service.WebUITrainService(TrainQueue(str(tmp_path / "queue.json")))
    tab = build_tab(service, webui.service.webui_defaults())
    help_text = tab.form.components["pretrained_model_name_or_path"].info
    assert "checkpoint list at the top" in help_text and "tiny:sd1" not in help_text
    config = quick_config(small_root, str(tmp_path / "out"))  # tiny:sd1
    values = [update["value"] for update in tab.form.updates(config)]
    message, plan = tab._check(*values)
    assert "lt-error" in message and "tiny:sd1 are for the standalone trainer" in message
    assert plan.get("value") is None and "memory estimate" not in str(plan)  # no estimate of the loaded model
    message, _ = tab._enqueue(True, *values)
    assert "lt-error" in message and service.queue.snapshot() == []
    loaded = config.replace(pretrained_model_name_or_path=webui.service.LOADED_MODEL)
    assert service.host_problems(loaded) == []


def test_the_tabs_missing_wd14_message_points_to_its_checkbox(tmp_path, monkeypatch):
    from PIL import Image

    from lib_trainer.ui.dataset_tab import DatasetTab

    monkeypatch.setenv("LIB_TRAINER_WD14_DIR", str(tmp_path / "models"))
    Image.new("RGB", (64, 64)).save(tmp_path / "a.png")
    message, _ = DatasetTab._tag(str(tmp_path), "wd14", None, "", False, 0.35, 0.85, "overwrite", "", "", 0)
    assert "is not downloaded" in message and "Download the model if it is missing" in message
    assert "--download" not in message and not (tmp_path / "a.txt").exists()
