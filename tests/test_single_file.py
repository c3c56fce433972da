"""Single-file checkpoints in the original (ldm/sgm/OpenCLIP) layout: the name mapping at full
size, save -> load round trips on the tiny models, independent loaders (diffusers'
from_single_file, the CompVis ldm modules, torch's MultiheadAttention for OpenCLIP) reading the
files we write, and the errors a user gets for files that are not what we can train on."""
from __future__ import annotations

import pytest
import torch

from lib_trainer.formats.original_layout import (
    checkpoint_key_pairs,
    module_state,
    original_state,
    unet_module_from_original,
    unet_module_to_original,
    vae_module_from_original,
    vae_module_to_original,
)
from lib_trainer.hosts.components import architecture, build_components

TINY = ["tiny-sd1", "tiny-sd2", "tiny-sdxl"]


def modules_of(components) -> list[torch.nn.Module]:
    return [components.unet, components.vae, *components.text_encoders]


def assert_same_weights(expected: torch.nn.Module, actual: torch.nn.Module) -> None:
    expected_state, actual_state = expected.state_dict(), actual.state_dict()
    assert expected_state.keys() == actual_state.keys()
    for key, tensor in expected_state.items():
        assert actual_state[key].dtype == tensor.dtype and torch.equal(actual_state[key], tensor), key


# ---------------------------------------------------------------------------------------------
# The name mapping, at full size.

@pytest.mark.parametrize("name, path, original", [
    ("sdxl", "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
     "input_blocks.4.1.transformer_blocks.0.attn1.to_q"),
    ("sdxl", "up_blocks.0.upsamplers.0.conv", "output_blocks.2.2.conv"),
    ("sdxl", "add_embedding.linear_2", "label_emb.0.2"),
    ("sdxl", "down_blocks.2.attentions.1.transformer_blocks.9.ff.net.2", "input_blocks.8.1.transformer_blocks.9.ff.net.2"),
    ("sd1", "up_blocks.1.upsamplers.0.conv", "output_blocks.5.2.conv"),
    ("sd1", "up_blocks.0.upsamplers.0.conv", "output_blocks.2.1.conv"),
    ("sd1", "down_blocks.0.resnets.0.conv1", "input_blocks.1.0.in_layers.2"),
    ("sd1", "down_blocks.0.resnets.1.conv1", "input_blocks.2.0.in_layers.2"),
    ("sd1", "down_blocks.1.resnets.0.conv_shortcut.weight", "input_blocks.4.0.skip_connection.weight"),
    ("sd1", "down_blocks.2.downsamplers.0.conv", "input_blocks.9.0.op"),
    ("sd1", "mid_block.attentions.0.proj_in", "middle_block.1.proj_in"),
    ("sd1", "mid_block.resnets.1.time_emb_proj", "middle_block.2.emb_layers.1"),
    ("sd1", "up_blocks.3.attentions.2.proj_out", "output_blocks.11.1.proj_out"),
    ("sd1", "time_embedding.linear_2.bias", "time_embed.2.bias"),
    ("sd1", "conv_norm_out", "out.0"),
])
def test_known_unet_names(name, path, original):
    config = architecture(name)["unet"]
    assert unet_module_to_original(path, config) == original
    assert unet_module_from_original(original, config) == path


@pytest.mark.parametrize("path, original", [
    ("decoder.up_blocks.0.resnets.0.conv1", "decoder.up.3.block.0.conv1"),
    ("decoder.up_blocks.2.upsamplers.0.conv", "decoder.up.1.upsample.conv"),
    ("encoder.down_blocks.1.resnets.0.conv_shortcut", "encoder.down.1.block.0.nin_shortcut"),
    ("encoder.down_blocks.0.downsamplers.0.conv", "encoder.down.0.downsample.conv"),
    ("encoder.mid_block.attentions.0.to_out.0.weight", "encoder.mid.attn_1.proj_out.weight"),
    ("decoder.mid_block.resnets.1.norm2", "decoder.mid.block_2.norm2"),
    ("encoder.conv_norm_out", "encoder.norm_out"),
])
def test_known_vae_names(path, original):
    config = architecture("sd1")["vae"]
    assert vae_module_to_original(path, config) == original
    assert vae_module_from_original(original, config) == path


def test_a_path_without_counterpart_is_an_error():
    with pytest.raises(ValueError, match="no counterpart"):
        unet_module_to_original("down_blocks.0.resnets.0.nonlinearity", architecture("sd1")["unet"])


@pytest.fixture(scope="module")
def full_size():
    """The full-size architectures on the meta device (no memory)."""
    return {name: build_components(name, device="meta", seed=None) for name in ("sd1", "sd2", "sdxl")}


@pytest.mark.parametrize("name", ["sd1", "sd2", "sdxl"])
def test_full_size_mapping_is_one_to_one(full_size, name):
    config = architecture(name)
    components = full_size[name]
    for root, to_original, from_original, section in (
            (components.unet, unet_module_to_original, unet_module_from_original, "unet"),
            (components.vae, vae_module_to_original, vae_module_from_original, "vae")):
        paths = list(root.state_dict()) + [path for path, module in root.named_modules()
                                           if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d))]
        originals = [to_original(path, config[section]) for path in paths]
        assert len(set(originals)) == len(set(paths))
        assert [from_original(original, config[section]) for original in originals] == paths

    states = [module.state_dict() for module in modules_of(components)]
    pairs = checkpoint_key_pairs(config["family"], config["unet"], config["vae"], [list(s) for s in states])
    stored_keys = [pair.file_key for component in pairs for pair in component]
    fused = sum(pair.kind in ("q", "k", "v") for component in pairs for pair in component)
    assert len(set(stored_keys)) == len(stored_keys) - fused * 2 // 3  # q, k, v share one key
    for state, component_pairs in zip(states, pairs):
        stored = original_state(component_pairs, state)
        back = module_state(component_pairs, stored)
        expected = {key: value for key, value in state.items() if not key.endswith("position_ids")}
        assert {key: value.shape for key, value in back.items()} == {key: v.shape for key, v in expected.items()}


def test_full_size_files_have_the_real_key_names(full_size):
    sd2_keys = _stored_shapes("sd2", full_size["sd2"])
    assert sd2_keys["cond_stage_model.model.transformer.resblocks.22.attn.in_proj_weight"] == (3072, 1024)
    assert sd2_keys["cond_stage_model.model.positional_embedding"] == (77, 1024)
    assert sd2_keys["first_stage_model.encoder.mid.attn_1.q.weight"] == (512, 512, 1, 1)
    sdxl_keys = _stored_shapes("sdxl", full_size["sdxl"])
    assert sdxl_keys["conditioner.embedders.1.model.text_projection"] == (1280, 1280)
    assert sdxl_keys["conditioner.embedders.0.transformer.text_model.final_layer_norm.weight"] == (768,)
    assert sdxl_keys["model.diffusion_model.label_emb.0.0.weight"] == (1280, 2816)
    assert sdxl_keys["model.diffusion_model.output_blocks.6.0.skip_connection.weight"] == (320, 960, 1, 1)


def _stored_shapes(name, components) -> dict[str, tuple]:
    config = architecture(name)
    states = [module.state_dict() for module in modules_of(components)]
    pairs = checkpoint_key_pairs(config["family"], config["unet"], config["vae"], [list(s) for s in states])
    shapes = {}
    for state, component_pairs in zip(states, pairs):
        shapes.update({key: tuple(value.shape) for key, value in original_state(component_pairs, state).items()})
    return shapes
