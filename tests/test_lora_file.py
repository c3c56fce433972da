"""The saved LoRA is what the ecosystem expects: an independent loader (diffusers'
load_lora_weights, via its kohya converter and peft) consumes every key, and the loaded
model computes exactly what our network computed."""
from __future__ import annotations

import hashlib
import struct

import pytest
import torch

from lib_trainer.config import TrainConfig
from lib_trainer.formats.lora_file import load_lora, read_metadata, save_lora
from lib_trainer.hosts.diffusers_sd import DiffusersSDBundle
from lib_trainer.hosts.tiny import build_tiny_bundle, build_tiny_components
from lib_trainer.networks.registry import create_network
from lib_trainer.networks.lora import LoRAModule

from conftest import diffusers_pipeline, peft_layer_count

NETWORK_CASES = {
    "lora": dict(network_dim=4, network_alpha=2.0),
    "locon": dict(network_dim=4, network_alpha=2.0, conv_dim=3, conv_alpha=1.5),
}


def randomised_network(bundle, **settings):
    config = TrainConfig().replace(**settings)
    targets = bundle.target_layers(include_conv=bool(config.conv_dim))
    network = create_network(config, targets)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return network


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
@pytest.mark.parametrize("case", NETWORK_CASES)
def test_independent_loader_consumes_every_key_and_reproduces_outputs(tmp_path, case, family):
    bundle = build_tiny_bundle(family)
    network = randomised_network(bundle, **NETWORK_CASES[case])
    path = str(tmp_path / f"{case}.safetensors")
    save_lora(path, network.file_state_dict(torch.float32), {"ss_network_module": "networks.lora"})

    parts = build_tiny_components(family)  # a second copy: same seed, same weights
    diffusers_pipeline(parts).load_lora_weights(path)  # raises if any key of the file is not converted
    assert peft_layer_count(parts) == len(network.adapters), "every layer of the file became a LoRA layer"

    theirs_bundle = DiffusersSDBundle(parts, prediction_type=bundle.prediction_type)
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, 8, 8, generator=generator)
    timesteps = torch.tensor([10, 700])
    prompts = ["ltdemo, red ball", "a photo of a cat"]
    with torch.no_grad():
        base_text = bundle.encode_prompts(prompts).context
        with network.attached():
            ours_text = bundle.encode_prompts(prompts)
            ours = bundle.predict(latents, timesteps, ours_text)
        theirs_text = theirs_bundle.encode_prompts(prompts)
        theirs = theirs_bundle.predict(latents, timesteps, theirs_text)
    assert relative_error(base_text, ours_text.context) > 1e-3, "the LoRA changes the text encoder's output"
    assert relative_error(theirs_text.context, ours_text.context) < 1e-4
    if family == "sdxl":
        assert relative_error(theirs_text.pooled, ours_text.pooled) < 1e-4
    assert relative_error(theirs, ours) < 1e-4


def test_file_layout_is_kohya(tmp_path):
    bundle = build_tiny_bundle()
    network = randomised_network(bundle, **NETWORK_CASES["locon"])
    path = str(tmp_path / "k.safetensors")
    save_lora(path, network.file_state_dict(torch.float16), {"ss_network_dim": "4"})
    tensors = load_lora(path)
    names = {key.split(".")[0] for key in tensors}
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q" in names
    assert "lora_unet_mid_block_attentions_0_proj_in" in names
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj" in names
    assert "lora_te_text_model_encoder_layers_3_mlp_fc2" in names
    assert "lora_unet_down_blocks_0_resnets_0_conv1" in names  # LoCon: 3x3 conv
    assert "lora_unet_up_blocks_0_upsamplers_0_conv" in names
    for name in names:
        assert {f"{name}.lora_down.weight", f"{name}.lora_up.weight", f"{name}.alpha"} <= set(tensors)
    assert tensors["lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight"].shape[-2:] == (3, 3)
    assert tensors["lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight"].shape[-2:] == (1, 1)
    assert float(tensors["lora_unet_down_blocks_0_resnets_0_conv1.alpha"]) == 1.5
    assert float(tensors["lora_unet_mid_block_attentions_0_proj_in.alpha"]) == 2.0
    assert all(t.dtype == torch.float16 for t in tensors.values())


def test_sdxl_file_layout_is_kohyas():
    """SDXL: UNet layers by their path in the original sgm UNet, two text-encoder prefixes."""
    names = {t.name for t in build_tiny_bundle("sdxl").target_layers(include_conv=True)}
    expected = {
        "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q",   # level 1, first attention
        "lora_unet_middle_block_1_proj_in",
        "lora_unet_output_blocks_0_1_transformer_blocks_1_ff_net_2",      # depth 2 at the last level
        "lora_unet_input_blocks_1_0_in_layers_2",                         # LoCon: ResNet conv1
        "lora_unet_input_blocks_3_0_op",                                  # LoCon: downsampler
        "lora_unet_output_blocks_2_2_conv",                               # LoCon: upsampler
        "lora_unet_output_blocks_0_0_skip_connection",
        "lora_te1_text_model_encoder_layers_0_self_attn_q_proj",
        "lora_te2_text_model_encoder_layers_3_mlp_fc2",
    }
    assert expected <= names
    assert not any(n.startswith(("lora_unet_down_blocks", "lora_te_text")) for n in names)


def test_hashes_are_kohyas(tmp_path):
    path = str(tmp_path / "h.safetensors")
    # over 1 MiB + 64 KiB, so the legacy hash covers real bytes, not an empty read
    tensors = {"a.lora_down.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3),
               "a.lora_up.weight": torch.arange(300_000, dtype=torch.float32).reshape(1000, 300)}
    save_lora(path, tensors, {"ss_output_name": "h", "user_note": "x"})
    metadata = read_metadata(path)
    from safetensors.torch import save

    # kohya's precalculate_safetensors_hashes: the file as written with only the ss_* metadata
    reference = save(tensors, {"ss_output_name": "h"})
    assert len(reference) > 0x110000
    header = struct.unpack("<Q", reference[:8])[0]
    assert metadata["sshs_model_hash"] == hashlib.sha256(reference[8 + header:]).hexdigest()
    assert metadata["sshs_legacy_hash"] == hashlib.sha256(reference[0x100000:0x110000]).hexdigest()[:8]
    assert metadata["user_note"] == "x"


def test_fresh_network_leaves_outputs_unchanged_and_merge_equals_forward():
    bundle = build_tiny_bundle()
    network = create_network(TrainConfig().replace(network_dim=4, conv_dim=2), bundle.target_layers(True))
    x = torch.randn(1, 4, 8, 8)
    t = torch.tensor([500])
    cond = torch.randn(1, 77, 64)
    with torch.no_grad():
        base = bundle.unet(x, t, encoder_hidden_states=cond).sample
        with network.attached():
            fresh = bundle.unet(x, t, encoder_hidden_states=cond).sample
    assert torch.equal(base, fresh)

    generator = torch.Generator().manual_seed(3)
    for adapter in network.adapters.values():
        assert isinstance(adapter, LoRAModule)
        with torch.no_grad():
            adapter.up.copy_(torch.randn(adapter.up.shape, generator=generator) * 0.1)
    for adapter in list(network.adapters.values())[:: max(1, len(network.adapters) // 12)]:
        layer = adapter.base_layer
        sample = torch.randn(2, layer.in_features) if isinstance(layer, torch.nn.Linear) else \
            torch.randn(1, layer.in_channels, 8, 8)
        with torch.no_grad():
            adapter.attach()
            hooked = layer(sample)
            adapter.detach()
            original = layer.weight.data.clone()
            layer.weight.data += adapter.delta_weight()
            merged = layer(sample)
            layer.weight.data = original
        assert relative_error(merged, hooked) < 1e-5, adapter.kohya_name


def test_network_weights_round_trip(tmp_path):
    bundle = build_tiny_bundle()
    network = randomised_network(bundle, **NETWORK_CASES["lora"])
    path = str(tmp_path / "r.safetensors")
    save_lora(path, network.file_state_dict(torch.float32), {})
    fresh = create_network(TrainConfig().replace(**NETWORK_CASES["lora"]), bundle.target_layers(False))
    assert fresh.load_file_state_dict(load_lora(path)) == []
    for key, value in network.file_state_dict().items():
        assert torch.equal(value, fresh.file_state_dict()[key])
