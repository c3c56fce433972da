"""Single-file checkpoints in the original (ldm/sgm/OpenCLIP) layout: the name mapping at full
size, save -> load round trips on the tiny models, independent loaders (diffusers'
from_single_file, the CompVis ldm modules, torch's MultiheadAttention for OpenCLIP) reading the
files we write, and the errors a user gets for files that are not what we can train on."""
from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from lib_trainer.formats.original_layout import (
    checkpoint_key_pairs,
    module_state,
    original_state,
    unet_module_from_original,
    unet_module_to_original,
    vae_key_pairs,
    with_prefix,
)
from lib_trainer.hosts.components import architecture, build_components
from webui_models import OpenCLIPText, ldm_classes, ldm_unet, strip
from lib_trainer.hosts.single_file import (
    CheckpointError,
    detect_checkpoint,
    load_single_file,
    load_vae_file,
    save_single_file,
)

TINY = ["tiny-sd1", "tiny-sd2", "tiny-sdxl"]


def modules_of(components) -> list[torch.nn.Module]:
    return [components.unet, components.vae, *components.text_encoders]


def assert_same_weights(expected: torch.nn.Module, actual: torch.nn.Module) -> None:
    expected_state, actual_state = expected.state_dict(), actual.state_dict()
    assert expected_state.keys() == actual_state.keys()
    for key, tensor in expected_state.items():
        assert actual_state[key].dtype == tensor.dtype and torch.equal(actual_state[key], tensor), key


def unet_output(unet: torch.nn.Module, family: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed(3)
    latents = torch.randn(1, 4, 8, 8, generator=generator)
    context = torch.randn(1, 77, unet.config.cross_attention_dim, generator=generator)
    extra = {}
    if family == "sdxl":
        pooled = unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim
        extra = {"added_cond_kwargs": {"text_embeds": torch.randn(1, pooled, generator=generator),
                                       "time_ids": torch.tensor([[128.0, 128.0, 0.0, 0.0, 128.0, 128.0]])}}
    with torch.no_grad():
        return unet(latents, torch.tensor([500]), encoder_hidden_states=context, **extra).sample


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Each tiny architecture built with seed 1 and saved once: name -> (components, path)."""
    folder = tmp_path_factory.mktemp("checkpoints")
    result = {}
    for name in TINY:
        components = build_components(name, seed=1)
        path = str(folder / f"{name}.safetensors")
        save_single_file(components, path)
        result[name] = (components, path)
    return result


def copy_with(path: str, destination, change) -> str:
    """The checkpoint at `path` with `change(tensors)` applied, saved to `destination`."""
    tensors = load_file(path)
    change(tensors)
    save_file(tensors, str(destination))
    return str(destination)


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
    assert vae_key_pairs([path], config)[0].file_key == original


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
    paths = list(components.unet.state_dict()) + [path for path, module in components.unet.named_modules()
                                                  if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d))]
    originals = [unet_module_to_original(path, config["unet"]) for path in paths]
    assert len(set(originals)) == len(set(paths))
    assert [unet_module_from_original(original, config["unet"]) for original in originals] == paths
    vae_keys = list(components.vae.state_dict())
    assert len({pair.file_key for pair in vae_key_pairs(vae_keys, config["vae"])}) == len(vae_keys)

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


# ---------------------------------------------------------------------------------------------
# Round trips.

@pytest.mark.parametrize("name", TINY)
def test_round_trip_gives_the_same_model(saved, name):
    components, path = saved[name]
    loaded, info = load_single_file(path)
    assert (info.family, info.architecture, info.model_name) == (components.family, name, name)
    assert loaded.family == components.family and loaded.architecture == name
    for expected, actual in zip(modules_of(components), modules_of(loaded)):
        assert_same_weights(expected, actual)
    assert torch.equal(unet_output(loaded.unet, info.family), unet_output(components.unet, info.family))
    ids = torch.tensor([[49406, 320, 1125, 49407]])
    for expected, actual in zip(components.text_encoders, loaded.text_encoders):
        with torch.no_grad():
            assert torch.equal(actual(ids).last_hidden_state, expected(ids).last_hidden_state)
    assert [type(t) for t in loaded.tokenizers] == [type(t) for t in components.tokenizers]
    # SD2 files rarely say how they predict: the WebUI's UNet test decides, as when it loads them
    assert info.prediction_source == ("UNet test (as the WebUI does for SD2)" if name == "tiny-sd2" else "default")


def test_half_precision_file_loads_in_the_dtype_asked_for(saved, tmp_path):
    components, _ = saved["tiny-sdxl"]
    path = str(tmp_path / "half.safetensors")
    save_single_file(components, path, dtype=torch.float16)
    assert {tensor.dtype for tensor in load_file(path).values()} == {torch.float16}
    loaded, _ = load_single_file(path, dtype=torch.bfloat16)
    for expected, actual in zip(modules_of(components), modules_of(loaded)):
        for key, tensor in expected.state_dict().items():
            if tensor.is_floating_point():
                assert torch.equal(actual.state_dict()[key], tensor.half().to(torch.bfloat16)), key


def test_sd2_file_carries_the_unused_last_openclip_layer(saved):
    _, path = saved["tiny-sd2"]
    keys = load_file(path).keys()
    layers = architecture("tiny-sd2")["text_encoders"][0]
    assert f"cond_stage_model.model.transformer.resblocks.{layers['layers_in_file'] - 1}.attn.in_proj_weight" in keys
    assert f"cond_stage_model.model.transformer.resblocks.{layers['layers_in_file']}.ln_1.weight" not in keys
    assert "cond_stage_model.model.text_projection" in keys


def test_old_sd1_files_without_the_text_model_level_load(saved, tmp_path):
    components, path = saved["tiny-sd1"]

    def drop_level(tensors):
        for key in [k for k in tensors if k.startswith("cond_stage_model.transformer.text_model.")]:
            tensors[key.replace(".text_model.", ".", 1)] = tensors.pop(key)

    loaded, _ = load_single_file(copy_with(path, tmp_path / "old.safetensors", drop_level))
    assert_same_weights(components.text_encoders[0], loaded.text_encoders[0])


def test_ignored_keys_are_accepted_and_unknown_keys_named(saved, tmp_path):
    components, path = saved["tiny-sd1"]

    def add_ignored(tensors):
        tensors["model_ema.decay"] = torch.tensor(0.9999)
        tensors["alphas_cumprod"] = torch.ones(1000)
        tensors["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77)[None]

    loaded, _ = load_single_file(copy_with(path, tmp_path / "ema.safetensors", add_ignored))
    assert_same_weights(components.unet, loaded.unet)

    def add_unknown(tensors):
        tensors["model.diffusion_model.extra_adapter.weight"] = torch.ones(2)

    with pytest.raises(CheckpointError, match="model.diffusion_model.extra_adapter.weight"):
        load_single_file(copy_with(path, tmp_path / "extra.safetensors", add_unknown))

    def drop_key(tensors):
        del tensors["model.diffusion_model.output_blocks.3.0.skip_connection.weight"]

    with pytest.raises(CheckpointError, match="output_blocks.3.0.skip_connection.weight"):
        load_single_file(copy_with(path, tmp_path / "missing.safetensors", drop_key))


# ---------------------------------------------------------------------------------------------
# Independent readers of the files we write.

def diffusers_folder(components, folder) -> str:
    from diffusers import (
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
    )

    parts = {"vae": components.vae, "unet": components.unet, "scheduler": EulerDiscreteScheduler(),
             "text_encoder": components.text_encoders[0], "tokenizer": components.tokenizers[0]}
    if components.family == "sdxl":
        pipeline = StableDiffusionXLPipeline(text_encoder_2=components.text_encoders[1],
                                             tokenizer_2=components.tokenizers[1], **parts)
    else:
        pipeline = StableDiffusionPipeline(safety_checker=None, feature_extractor=None,
                                           requires_safety_checker=False, **parts)
    pipeline.save_pretrained(str(folder))
    return str(folder)


@pytest.mark.parametrize("name", TINY)
def test_diffusers_single_file_loader_reads_our_file(saved, name, tmp_path):
    """diffusers' own converter (offline: the configs come from a folder we write) finds the
    same weights in our file for every component."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    components, path = saved[name]
    pipeline_class = StableDiffusionXLPipeline if components.family == "sdxl" else StableDiffusionPipeline
    pipeline = pipeline_class.from_single_file(path, config=diffusers_folder(components, tmp_path / "config"),
                                               local_files_only=True)
    theirs = [pipeline.unet, pipeline.vae, pipeline.text_encoder]
    if components.family == "sdxl":
        theirs.append(pipeline.text_encoder_2)
    for expected, actual in zip(modules_of(components), theirs):
        assert_same_weights(expected, actual)


@pytest.mark.parametrize("name", ["tiny-sd1", "tiny-sd2"])
def test_compvis_ldm_modules_load_our_file_strictly_and_compute_the_same(saved, name):
    _, encoder_class, decoder_class = ldm_classes()
    components, path = saved[name]
    tensors = load_file(path)
    config = architecture(name)["unet"]
    unet = ldm_unet(name.removeprefix("tiny-"), tensors)
    generator = torch.Generator().manual_seed(4)
    latents = torch.randn(1, 4, 8, 8, generator=generator)
    context = torch.randn(1, 7, config["cross_attention_dim"], generator=generator)
    with torch.no_grad():
        ours = components.unet(latents, torch.tensor([500]), encoder_hidden_states=context).sample
        # attention is computed differently (einsum vs scaled_dot_product_attention): float noise only
        torch.testing.assert_close(unet(latents, torch.tensor([500]), context=context), ours, rtol=1e-3, atol=1e-4)

    vae = architecture(name)["vae"]
    channels = vae["block_out_channels"][0]
    settings = {"double_z": True, "z_channels": 4, "resolution": 32, "in_channels": 3, "out_ch": 3, "ch": channels,
                "num_res_blocks": 2, "ch_mult": [c // channels for c in vae["block_out_channels"]],
                "attn_resolutions": [], "dropout": 0.0}
    encoder, decoder = encoder_class(**settings).eval(), decoder_class(**settings).eval()
    encoder.load_state_dict(strip(tensors, "first_stage_model.encoder."), strict=True)
    decoder.load_state_dict(strip(tensors, "first_stage_model.decoder."), strict=True)
    pixels, latents = torch.randn(1, 3, 32, 32, generator=generator), torch.randn(1, 4, 4, 4, generator=generator)
    with torch.no_grad():
        torch.testing.assert_close(encoder(pixels), components.vae.encoder(pixels), rtol=1e-3, atol=1e-4)
        torch.testing.assert_close(decoder(latents), components.vae.decoder(latents), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("name, prefix", [("tiny-sd2", "cond_stage_model.model."),
                                          ("tiny-sdxl", "conditioner.embedders.1.model.")])
def test_openclip_layout_computes_what_the_text_encoder_computes(saved, name, prefix):
    components, path = saved[name]
    encoder = components.text_encoders[-1]
    tower = OpenCLIPText(strip(load_file(path), prefix), encoder.config.num_hidden_layers,
                         encoder.config.num_attention_heads)
    ids = torch.tensor([[49406, 320, 1125, 539, 49407, 0, 0]])
    with torch.no_grad():
        hidden, projected, _ = tower(ids)
        output = encoder(ids)
        torch.testing.assert_close(hidden, output.last_hidden_state, rtol=1e-4, atol=1e-5)
        if name == "tiny-sdxl":  # SDXL's pooled text embedding goes through the projection
            torch.testing.assert_close(projected, output.text_embeds, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# .ckpt files: loaded without running code from them.

@pytest.mark.parametrize("zip_format", [True, False])
def test_lightning_ckpt_with_callbacks_and_numpy_scalars_loads(saved, tmp_path, monkeypatch, zip_format):
    """Most SD1 .ckpt files pickle Lightning's ModelCheckpoint and numpy scalars beside the
    nested state_dict; the pre-1.6 format (not a zip) cannot be memory-mapped."""
    components, path = saved["tiny-sd1"]
    ckpt = str(tmp_path / "lightning.ckpt")
    with monkeypatch.context() as patch:
        names = ["pytorch_lightning", "pytorch_lightning.callbacks", "pytorch_lightning.callbacks.model_checkpoint"]
        for module_name in names:
            patch.setitem(sys.modules, module_name, types.ModuleType(module_name))
        model_checkpoint = type("ModelCheckpoint", (), {"__module__": names[-1]})
        sys.modules[names[-1]].ModelCheckpoint = model_checkpoint
        callback = model_checkpoint()
        callback.best_model_path, callback.best_model_score = "epoch=5.ckpt", torch.tensor(0.1)
        torch.save({"state_dict": load_file(path), "epoch": 5, "global_step": np.int64(470000),
                    "callbacks": {model_checkpoint: {"best_model_score": np.float64(0.5)}}, "checkpoint_callback": callback},
                   ckpt, _use_new_zipfile_serialization=zip_format)
    loaded, info = load_single_file(ckpt)
    assert info.architecture == "tiny-sd1"
    for expected, actual in zip(modules_of(components), modules_of(loaded)):
        assert_same_weights(expected, actual)


def test_ckpt_written_by_save_single_file_round_trips(saved, tmp_path):
    components, _ = saved["tiny-sd2"]
    path = str(tmp_path / "model.ckpt")
    save_single_file(components, path, prediction_type="v_prediction")
    loaded, info = load_single_file(path)
    assert info.prediction_type == "v_prediction"
    assert_same_weights(components.text_encoders[0], loaded.text_encoders[0])


class WritesAFile:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


def test_ckpt_with_code_in_it_is_refused_and_the_code_never_runs(saved, tmp_path):
    marker = tmp_path / "marker"
    ckpt = str(tmp_path / "evil.ckpt")
    torch.save({"state_dict": load_file(saved["tiny-sd1"][1]), "payload": WritesAFile(str(marker))}, ckpt)
    live = torch.load(ckpt, weights_only=False)  # the payload is live: ordinary unpickling runs it
    live["payload"].close()
    assert marker.exists()
    marker.unlink()
    with pytest.raises(CheckpointError, match="objects other than tensors.*safetensors"):
        load_single_file(ckpt)
    assert not marker.exists()


def test_whole_pickled_module_is_refused(tmp_path):
    path = str(tmp_path / "module.pt")
    torch.save({"state_dict": torch.nn.Linear(2, 2)}, path)
    with pytest.raises(CheckpointError, match="objects other than tensors"):
        load_single_file(path)


# ---------------------------------------------------------------------------------------------
# Files we cannot train on get a message saying what they are and what to do.

def test_truncated_and_random_files_are_reported(saved, tmp_path):
    with open(saved["tiny-sd1"][1], "rb") as handle:
        data = handle.read()
    truncated = tmp_path / "half.safetensors"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable .safetensors file.*download it again"):
        load_single_file(str(truncated))
    with pytest.raises(CheckpointError, match="no such file"):
        load_single_file(str(tmp_path / "absent.safetensors"))


def test_unknown_family_lists_the_families_and_keys_looked_for(tmp_path):
    path = str(tmp_path / "other.safetensors")
    save_file({"transformer.blocks.0.weight": torch.ones(2)}, path)
    with pytest.raises(CheckpointError) as error:
        load_single_file(path)
    for text in ("sd1", "sd2", "sdxl", "conditioner.embedders.1.model.ln_final.weight", "transformer.blocks.0.weight"):
        assert text in str(error.value)


@pytest.mark.parametrize("change, what", [
    (lambda t: t.update({"conditioner.embedders.0.model.ln_final.weight": torch.ones(2)}), "an SDXL refiner"),
    (lambda t: t.update({"model.diffusion_model.input_blocks.0.0.weight": torch.ones(32, 9, 3, 3)}), "inpainting"),
    (lambda t: t.update({"lora_unet_down_blocks_0_attentions_0_proj_in.alpha": torch.ones(())}), "a LoRA"),
])
def test_unsupported_variants_are_named(saved, tmp_path, change, what):
    with pytest.raises(CheckpointError, match=what):
        load_single_file(copy_with(saved["tiny-sd1"][1], tmp_path / "variant.safetensors", change))


# ---------------------------------------------------------------------------------------------
# Prediction type hints.

def test_prediction_type_from_argument_yaml_and_v_pred_key(saved, tmp_path):
    components, path = saved["tiny-sd1"]
    assert detect_checkpoint(path).prediction_type == "epsilon"
    assert detect_checkpoint(path, v_parameterization=True).prediction_type == "v_prediction"

    beside = copy_with(path, tmp_path / "model.safetensors", lambda tensors: None)
    (tmp_path / "model.yaml").write_text('model:\n  target: ldm.models.diffusion.ddpm.LatentDiffusion\n'
                                         '  params:\n    parameterization: "v"\n')
    info = detect_checkpoint(beside)
    assert (info.prediction_type, info.prediction_source) == ("v_prediction", str(tmp_path / "model.yaml"))
    (tmp_path / "model.yaml").write_text("parameterization: v\n")
    assert detect_checkpoint(beside).prediction_type == "v_prediction"
    (tmp_path / "model.yaml").write_text("model:\n  params:\n    linear_start: 0.00085\n")
    assert detect_checkpoint(beside).prediction_type == "epsilon"  # a yaml decides; ldm's default is eps
    (tmp_path / "model.yaml").write_text("model: [unclosed\n")
    with pytest.raises(CheckpointError, match="model.yaml"):
        detect_checkpoint(beside)

    marked = str(tmp_path / "vpred.safetensors")
    save_single_file(components, marked, prediction_type="v_prediction", zero_terminal_snr=True)
    info = detect_checkpoint(marked)
    assert (info.prediction_type, info.prediction_source, info.zero_terminal_snr) == ("v_prediction", "v_pred key", True)


# ---------------------------------------------------------------------------------------------
# A separate VAE file replaces the bundled one.

def vae_files(tmp_path, vae) -> dict[str, str]:
    """The same VAE as users download it: ldm layout with and without the checkpoint prefix,
    diffusers layout, and diffusers layout with the attention names of diffusers < 0.14."""
    state = vae.state_dict()
    full = original_state(with_prefix(vae_key_pairs(state, dict(vae.config)), "first_stage_model."), state)
    paths = {"ldm": str(tmp_path / "vae-ft-mse.safetensors"), "prefixed": str(tmp_path / "vae-prefixed.ckpt")}
    save_file(strip(full, "first_stage_model."), paths["ldm"])
    torch.save({"state_dict": {**full, "model_ema.decay": torch.tensor(0.999)}}, paths["prefixed"])
    vae.save_pretrained(str(tmp_path / "diffusers_vae"))
    paths["diffusers"] = str(tmp_path / "diffusers_vae" / "diffusion_pytorch_model.safetensors")
    legacy = {}
    for key, value in load_file(paths["diffusers"]).items():
        for new, old in (("to_q", "query"), ("to_k", "key"), ("to_v", "value"), ("to_out.0", "proj_attn")):
            key = key.replace(f".attentions.0.{new}.", f".attentions.0.{old}.")
        legacy[key] = value
    paths["legacy"] = str(tmp_path / "legacy_vae.safetensors")
    save_file(legacy, paths["legacy"])
    return paths


def test_separate_vae_file_replaces_the_bundled_one(saved, tmp_path):
    components, path = saved["tiny-sd1"]
    other_vae = build_components("tiny-sd1", seed=2).vae
    files = vae_files(tmp_path, other_vae)
    loaded, _ = load_single_file(path, vae_path=files["ldm"])
    assert_same_weights(other_vae, loaded.vae)
    assert_same_weights(components.unet, loaded.unet)
    for layout in ("prefixed", "diffusers", "legacy"):
        vae = build_components("tiny-sd1", device="meta", seed=None).vae
        load_vae_file(files[layout], vae)
        assert_same_weights(other_vae, vae)
    without_vae = copy_with(path, tmp_path / "no_vae.safetensors",
                            lambda t: [t.pop(k) for k in list(t) if k.startswith("first_stage_model.")])
    with pytest.raises(CheckpointError, match="no VAE weights"):
        load_vae_file(without_vae, other_vae)
    with pytest.raises(CheckpointError, match="has no VAE.*choose a VAE file"):
        load_single_file(without_vae)
    loaded, _ = load_single_file(without_vae, vae_path=files["diffusers"])
    assert_same_weights(other_vae, loaded.vae)
