"""What the memory estimate counts and what training really holds: a bundle that owns its
weights casts them where they are before moving them (the device never holds an fp32 copy of
weights that train in 16 bits), and the estimate counts the weights in the dtype they are
held in, from a meta-device build of the architecture the base model would load."""
from __future__ import annotations

import pytest
import torch

from conftest import quick_config
from lib_trainer.hosts import meta_bundle
from lib_trainer.hosts.components import build_components
from lib_trainer.hosts.single_file import save_single_file
from lib_trainer.hosts.tiny import build_tiny_bundle
from lib_trainer.train.memory import GB, bundle_memory, memory_summary


def held_bytes(modules) -> int:
    return sum(p.numel() * p.element_size() for module in modules for p in module.parameters())


def test_owned_weights_are_cast_before_they_move(monkeypatch):
    bundle = build_tiny_bundle("sdxl")
    names = {id(bundle.unet): "unet", id(bundle.encoders[0]): "te1", id(bundle.encoders[1]): "te2",
             id(bundle.vae_model): "vae"}
    moves = []
    to = torch.nn.Module.to

    def spy(module, *args, **kwargs):
        device = torch._C._nn._parse_to(*args, **kwargs)[0]
        if device is not None and id(module) in names:
            moves.append((names[id(module)], {p.dtype for p in module.parameters()}))
        return to(module, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "to", spy)
    with bundle.frozen_for_training(torch.device("cpu"), torch.bfloat16):
        pass
    assert moves == [("unet", {torch.bfloat16}), ("te1", {torch.bfloat16}), ("te2", {torch.bfloat16}),
                     ("vae", {torch.float32})]


@pytest.mark.parametrize("variant", ["sd1", "sdxl"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("owns_weights", [True, False])
def test_the_estimate_counts_the_weights_as_training_holds_them(variant, dtype, owns_weights):
    bundle = build_tiny_bundle(variant)
    bundle.owns_weights = owns_weights  # a borrowed model (the WebUI's) stays in its own dtype
    estimated = bundle.held_weight_bytes(dtype)
    with bundle.frozen_for_training(torch.device("cpu"), dtype):
        assert held_bytes(bundle.modules()) == estimated
    if owns_weights:  # what the standalone estimate counts before loading anything
        assert meta_bundle(f"tiny:{variant}").held_weight_bytes(dtype) == estimated


def test_a_checkpoint_file_is_estimated_on_its_own_architecture_in_the_compute_dtype(tmp_path, small_root):
    path = str(tmp_path / "tiny.safetensors")
    components = build_components("tiny-sd1", seed=1)
    save_single_file(components, path)
    config = quick_config(small_root, str(tmp_path), pretrained_model_name_or_path=path, mixed_precision="fp16",
                          device="cpu")
    estimate = bundle_memory(config, meta_bundle(path), "cpu")
    expected = held_bytes([components.unet, *components.text_encoders]) // 2 + held_bytes([components.vae])
    assert round(estimate.weights_gb * GB) == expected
    assert memory_summary(config).startswith("Memory estimate (cpu): about ")
    assert memory_summary(config.replace(pretrained_model_name_or_path=str(tmp_path / "missing"))) == (
        "Memory estimate: unavailable until the base model exists.")
