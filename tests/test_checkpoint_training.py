"""Each family end to end from a single-file checkpoint in the original layout: the file
loads, a LoRA trains on the demo concept (the loss falls on noise the run never drew), and
diffusers' independent loader turns every key of the LoRA into a layer."""
from __future__ import annotations

import pytest

from lib_trainer.demo_data import make_demo_dataset
from lib_trainer.formats.lora_file import load_lora, read_metadata
from lib_trainer.hosts import load_bundle
from lib_trainer.hosts.components import build_components
from lib_trainer.hosts.single_file import save_single_file
from lib_trainer.networks.registry import create_network
from denoising_score import fixed_denoising_loss
from lib_trainer.train.loop import train

from conftest import diffusers_pipeline, encoded_examples, peft_layer_count, quick_config

FAMILIES = {  # family: (prediction type, kohya's ss_base_model_version, key of one UNet layer)
    "sd1": ("epsilon", "sd_v1", "lora_unet_down_blocks_0_attentions_0_proj_in"),
    "sd2": ("v_prediction", "sd_v2_v", "lora_unet_down_blocks_0_attentions_0_proj_in"),
    "sdxl": ("epsilon", "sdxl_base_v1-0", "lora_unet_input_blocks_4_1_proj_in"),
}
# SDXL has no attention at full resolution; on the tiny model, whose deeper levels are 4x4 and
# 2x2 latents here, attention-only LoRA barely moves the loss (1.09 -> 1.08 measured), so the
# SDXL run is a LoCon, which also adapts the full-resolution ResNets (1.09 -> 0.60).
NETWORK = {"sdxl": dict(conv_dim=8, conv_alpha=8.0)}


@pytest.fixture(scope="module")
def concept_root(tmp_path_factory) -> str:
    return make_demo_dataset(str(tmp_path_factory.mktemp("concept")), count=8, size=64)


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_from_a_single_file_checkpoint(tmp_path, concept_root, family):
    prediction, version, unet_key = FAMILIES[family]
    checkpoint = str(tmp_path / f"tiny-{family}.safetensors")
    save_single_file(build_components(f"tiny-{family}", seed=3), checkpoint, prediction_type=prediction)
    if prediction == "v_prediction":  # the WebUI's convention: a .yaml beside the file says v
        (tmp_path / f"tiny-{family}.yaml").write_text('model:\n  params:\n    parameterization: "v"\n')

    config = quick_config(concept_root, str(tmp_path / "out"), pretrained_model_name_or_path=checkpoint,
                          max_train_steps=0, max_train_epochs=2, network_dim=8, network_alpha=8.0,
                          **NETWORK.get(family, {}))
    result = train(config)
    metadata = read_metadata(result.final_path)
    assert metadata["ss_base_model_version"] == version
    assert metadata["ss_v2"] == str(family == "sd2")
    assert metadata["ss_sd_model_name"] == f"tiny-{family}"

    bundle = load_bundle(checkpoint)
    assert (bundle.family, bundle.prediction_type) == (family, prediction)
    network = create_network(config, bundle.target_layers(include_conv=bool(config.conv_dim)))
    lora = load_lora(result.final_path)
    assert f"{unet_key}.lora_down.weight" in lora
    assert network.load_file_state_dict(lora) == []
    independent = build_components(f"tiny-{family}", seed=3)
    diffusers_pipeline(independent).load_lora_weights(result.final_path)  # raises on any key it cannot place
    assert peft_layer_count(independent) == len(network.adapters)

    latents, prompts = encoded_examples(bundle, result.plan.training_set.examples)
    base = fixed_denoising_loss(bundle, latents, prompts, seed=4321, timesteps=[100, 400, 700])
    with network.attached():
        trained = fixed_denoising_loss(bundle, latents, prompts, seed=4321, timesteps=[100, 400, 700])
    assert trained < 0.9 * base, (base, trained)
