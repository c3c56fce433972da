"""The trainer core: method records, the Trainable the loop trains, and the defects the core
issue listed (alpha 0, the VAE under autocast, the schedule on skipped fp16 steps)."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from lib_trainer.config import ConfigError, TrainConfig
from lib_trainer.formats.kohya_names import TargetLayer
from lib_trainer.formats.lora_file import load_lora, read_metadata
from lib_trainer.hosts.tiny import build_tiny_bundle
from lib_trainer.networks import registry
from lib_trainer.networks.base import AdapterModule
from lib_trainer.networks.lora import METHOD as LORA
from lib_trainer.networks.method import NetworkMethod
from lib_trainer.progress import STATUS, STEP, Progress
from lib_trainer.train import loop
from lib_trainer.train.loop import VAEProducedNaN, train

from conftest import quick_config


@pytest.fixture(scope="module")
def bundle():
    return build_tiny_bundle()


# --- method records --------------------------------------------------------------------------
@pytest.mark.parametrize("conv_dim", [0, 2])
def test_the_record_counts_exactly_the_parameters_its_network_has(bundle, conv_dim):
    config = TrainConfig().replace(network_dim=4, conv_dim=conv_dim, conv_alpha=1.0)
    method, settings, targets = registry.network_targets(config, bundle)
    network = method.create(targets, settings)
    assert method.parameter_count(targets, settings) == sum(p.numel() for p in network.parameters())
    assert method.adapts_conv(settings) == bool(conv_dim)


def test_the_registry_is_keyed_by_module_and_algo(monkeypatch):
    class FakeLoHa(NetworkMethod):
        module, algo, label = "lycoris.kohya", "loha", "LoHa"

    monkeypatch.setitem(registry.METHODS, ("lycoris.kohya", "loha"), FakeLoHa())
    config = TrainConfig().replace(network_module="lycoris.kohya", network_args=["algo=loha"])
    assert registry.find_method(config).label == "LoHa"
    with pytest.raises(ConfigError, match="algo=nope is unknown; available: networks.lora, .*lycoris.kohya algo=loha"):
        registry.find_method(config.replace(network_args=["algo=nope"]))


def test_bad_network_settings_are_config_problems_that_name_the_key():
    problems = TrainConfig().replace(network_args=["conv_dimm=4"]).problems()
    assert any("conv_dimm is not an option of networks.lora" in p and "conv_dim" in p for p in problems)
    assert any("network_module 'networks.lorra'" in p for p in TrainConfig().replace(
        network_module="networks.lorra").problems())
    assert TrainConfig().replace(network_args=["conv_dim=4", "conv_alpha=1"]).problems() == []


def test_the_ui_network_types_come_from_the_records():
    types = registry.ui_network_types()
    assert {"LoRA", "LoCon", "LoHa"} <= set(types)
    assert registry.ui_network_type_of({"network_module": "networks.lora", "conv_dim": 8}) == "LoCon"
    assert registry.ui_network_type_of({"network_module": "networks.lora", "conv_dim": 0}) == "LoRA"
    # the UI's text box holds network_args as one string, the config as a list
    assert registry.ui_network_type_of({"network_module": "lycoris.kohya", "network_args": "algo=loha conv_dim=4"}) \
        == "LoHa"
    assert registry.ui_network_type_of({"network_module": "lycoris.kohya", "network_args": ["algo=loha"]}) == "LoHa"
    assert registry.ui_network_type_of({"network_module": "lycoris.kohya", "network_args": "algo=glora"}) is None


def test_an_adapter_can_use_the_base_layers_output_and_weight():
    """IA3 scales the base output and DoRA re-normalises the merged weight: the hook hands an
    adapter both the input and the base layer's output."""
    class ScaleOutput(AdapterModule):
        def __init__(self, target):
            super().__init__(target)
            self.gain = nn.Parameter(torch.full((target.module.out_features,), 0.5))

        def adapt(self, x, base_output):
            assert base_output.shape[-1] == self.base_layer.weight.shape[0]
            return base_output * (1 + self.gain)

    torch.manual_seed(0)
    layer = nn.Linear(3, 2)
    x = torch.randn(4, 3)
    adapter = ScaleOutput(TargetLayer("lora_unet_x", layer, "unet", False))
    before = layer(x)
    adapter.attach()
    assert torch.allclose(layer(x), before * 1.5)
    adapter.detach()
    assert torch.equal(layer(x), before)


# --- defects ---------------------------------------------------------------------------------
def test_alpha_zero_is_stored_as_the_alpha_used(small_root, tmp_path):
    """kohya trains alpha 0 at scale 1 and stores alpha = dim; a stored 0 would make the WebUI
    and diffusers apply the file at scale 0."""
    result = train(quick_config(small_root, str(tmp_path), network_dim=4, network_alpha=0.0, conv_dim=2,
                                conv_alpha=0.0, max_train_steps=1))
    tensors = load_lora(result.final_path)
    linear = [t.item() for k, t in tensors.items() if k.endswith(".alpha") and ("attentions" in k or "_te_" in k)]
    conv = [t.item() for k, t in tensors.items() if k.endswith("conv1.alpha")]
    assert linear and set(linear) == {4.0}
    assert conv and set(conv) == {2.0}
    metadata = read_metadata(result.final_path)
    assert metadata["ss_network_alpha"] == "4.0"
    assert json.loads(metadata["ss_network_args"]) == {"conv_dim": "2", "conv_alpha": "2.0"}


def test_the_vae_encodes_outside_the_steps_autocast(small_root, tmp_path, bundle):
    seen = []
    encode = bundle.encode_pixels

    def spy(pixels):
        seen.append(torch.is_autocast_enabled("cpu"))
        return encode(pixels)

    bundle.encode_pixels = spy
    try:
        train(quick_config(small_root, str(tmp_path), mixed_precision="bf16", cache_latents=False,
                           max_train_steps=2), bundle=bundle)
    finally:
        del bundle.encode_pixels
    assert seen and not any(seen)


def test_nan_latents_blame_the_vae_not_the_learning_rate(small_root, tmp_path, bundle):
    bundle.encode_pixels = lambda pixels: torch.full((pixels.shape[0], 4, pixels.shape[2] // 8,
                                                      pixels.shape[3] // 8), float("nan"))
    try:
        with pytest.raises(VAEProducedNaN, match="the VAE produced NaN.*use an fp32 VAE.*--no-half-vae"):
            train(quick_config(small_root, str(tmp_path), cache_latents=False, max_train_steps=2), bundle=bundle)
    finally:
        del bundle.encode_pixels


def test_a_skipped_fp16_step_does_not_advance_the_schedule(small_root, tmp_path, monkeypatch):
    """GradScaler skips the step whose gradients overflowed; the learning rate must stay."""
    made = loop.create_trainable

    def with_overflow_at_first_backward(config, bundle):
        trainable = made(config, bundle)
        calls = []

        def hook(grad):
            calls.append(1)
            return grad * float("inf") if len(calls) == 1 else grad

        next(trainable.parameters()).register_hook(hook)
        return trainable

    monkeypatch.setattr(loop, "create_trainable", with_overflow_at_first_backward)
    lrs = []
    progress = Progress([lambda e: lrs.append(e.info["lr"]) if e.kind == STEP and e.label == "training" else None])
    train(quick_config(small_root, str(tmp_path), mixed_precision="fp16", lr_scheduler="linear",
                       max_train_steps=4, network_train_unet_only=True), progress=progress)
    base = 1e-3
    # step 1 was skipped: the rate stays; then it falls as 3 real steps of a 4-step linear schedule
    assert lrs == pytest.approx([base, base * 3 / 4, base * 2 / 4, base * 1 / 4])


def test_the_run_says_what_it_trains_and_stores_it(small_root, tmp_path):
    events = []
    result = train(quick_config(small_root, str(tmp_path), network_train_unet_only=True, max_train_steps=1),
                   progress=Progress([events.append]))
    statuses = [e.text for e in events if e.kind == STATUS]
    line = next(text for text in statuses if text.startswith("Trains"))
    parts = json.loads(read_metadata(result.final_path)["ss_trained_parts"])
    assert set(parts) == {"unet"} and parts["unet"] > 0
    assert f"UNet ✔ ({parts['unet']} layers)" in line
    assert "text encoder ✘ (network_train_unet_only)" in line
    said = next(i for i, e in enumerate(events) if e.text == line)
    first_step = next(i for i, e in enumerate(events) if e.kind == STEP and e.label == "training")
    assert said < first_step  # said before step 1


def test_the_divergence_advice_fits_the_run():
    config = TrainConfig().replace(mixed_precision="no", max_grad_norm=1.0)
    text = loop._diverged_message(torch.tensor(float("nan")), 3, 1, [], config)
    assert "lower the learning rate" in text and "bf16" not in text and "max_grad_norm" not in text
    text = loop._diverged_message(torch.tensor(float("nan")), 3, 1, [], config.replace(mixed_precision="fp16",
                                                                                       max_grad_norm=0.0))
    assert "bf16" in text and "max_grad_norm=1" in text


def test_network_weights_that_fit_nothing_are_refused(small_root, tmp_path):
    first = train(quick_config(small_root, str(tmp_path / "a"), max_train_steps=1))
    with pytest.raises(ValueError, match="rank 4, this network rank 8"):  # InvalidInput is a ValueError
        train(quick_config(small_root, str(tmp_path / "b"), network_dim=8, network_weights=first.final_path))
    assert LORA.recognises(load_lora(first.final_path))
