"""Pivotal tuning (an embedding trained with a LoRA) and the embedding file axis.

The LoRA file bundles the embedding the way the WebUI 1.10's Lora loader reads it; its rules
are written here from the WebUI's source (extensions-builtin/Lora/networks.py, load_network:
a key is split at its first dot; `bundle_emb.<name>.string_to_param.<k>` or
`bundle_emb.<name>.<vectors>` build the data its textual-inversion loader takes, and that
loader reads `string_to_param` (one tensor) or `clip_l` + `clip_g`), not imported from it."""
from __future__ import annotations

import os
import types

import pytest
import torch
from safetensors.torch import load_file

from conftest import quick_config
from lib_trainer.compare.axes import AxisError, apply_embedding_file, embedding_file_choices
from lib_trainer.hosts.ldm_bundle import LiveSDBundle
from lib_trainer.networks.embedding import Embedding, Pivotal
from lib_trainer.networks.registry import create_network, network_from_file
from lib_trainer.hosts.tiny import build_tiny_bundle
from lib_trainer.train.loop import train
from webui_models import webui_model

WIDTHS = {"sd1": [64], "sd2": [64], "sdxl": [32, 64]}


def webui_bundled_embeddings(state: dict) -> tuple[dict, set[str]]:
    """(name -> (vectors, width) as the WebUI's loaders make them, the other keys' layer names)."""
    data, layers = {}, set()
    for key, weight in state.items():
        layer, _, part = key.partition(".")
        if layer != "bundle_emb":
            layers.add(layer)
            continue
        name, vector_name = part.split(".", 1)
        entry = data.setdefault(name, {})
        if vector_name.split(".")[0] == "string_to_param":
            entry["string_to_param"] = {vector_name.split(".", 1)[1]: weight}
        else:
            entry[vector_name] = weight
    made = {}
    for name, entry in data.items():
        if "string_to_param" in entry:
            assert len(entry["string_to_param"]) == 1
            vec = next(iter(entry["string_to_param"].values()))
            made[name] = (vec.shape[0], vec.shape[-1])
        else:
            assert set(entry) == {"clip_l", "clip_g"}
            made[name] = (entry["clip_g"].shape[0], entry["clip_g"].shape[-1] + entry["clip_l"].shape[-1])
    return made, layers


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("webui_models")
    return {family: webui_model(family, folder)[0] for family in ("sd1", "sd2", "sdxl")}


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_the_pivotal_lora_bundles_the_embedding_as_the_webui_reads_it(models, family, tmp_path):
    live = LiveSDBundle(models[family])
    targets = {t.name: t for t in live.target_layers(include_conv=False)}
    network = create_network(TrainConfig_lora(), list(targets.values()))
    vectors = [torch.randn(2, width) for width in WIDTHS[family]]
    pivotal = Pivotal(network, Embedding("ltemb", vectors, 5e-3), "mylora", str(tmp_path))
    assert live.embedding_widths() == WIDTHS[family]
    path = str(tmp_path / "mylora-000002.safetensors")
    pivotal.write_file(path, {"ss_steps": "7"}, torch.float16)
    state = load_file(path)
    made, layers = webui_bundled_embeddings(state)
    assert made == {"ltemb": (2, sum(WIDTHS[family]))}
    assert layers and layers <= set(targets), "every other key names a live layer"
    # the embedding's own file, beside it with the LoRA file's suffix, holds the same vectors
    own = load_file(str(tmp_path / "ltemb-000002.safetensors"))
    bundled = [state[k] for k in state if k.startswith("bundle_emb.")]
    assert sorted(v.shape[-1] for v in own.values()) == sorted(v.shape[-1] for v in bundled)
    # and the comparison reads the LoRA of such a file without the bundled keys getting in its way
    assert network_from_file(path, live) is not None


def TrainConfig_lora():
    from lib_trainer.config import TrainConfig

    return TrainConfig().replace(network_dim=2, network_alpha=1.0)


def test_a_pivotal_run_trains_both_with_their_own_learning_rates(small_root, tmp_path):
    config = quick_config(small_root, str(tmp_path), pivotal_tuning=True, embedding_lr=5e-3, learning_rate=1e-4,
                          num_vectors_per_token=2, max_train_steps=2)
    result = train(config, bundle=build_tiny_bundle())
    names = sorted(os.listdir(tmp_path))
    assert "test.safetensors" in names and "ltdemo.safetensors" in names, names
    state = load_file(result.final_path)
    assert list(state["bundle_emb.ltdemo.string_to_param.*"].shape) == [2, 64]
    assert any(key.endswith("lora_up.weight") and value.abs().sum() > 0 for key, value in state.items())
    own = load_file(str(tmp_path / "ltdemo.safetensors"))
    assert torch.equal(own["emb_params"], state["bundle_emb.ltdemo.string_to_param.*"])


def test_the_embedding_file_axis_puts_each_files_name_in_place_of_the_word(tmp_path):
    for name in ("ltemb-000001.safetensors", "ltemb.safetensors", "other.pt", "ltemb.preview.png"):
        (tmp_path / name).write_bytes(b"x")
    choices = embedding_file_choices(str(tmp_path))
    assert set(choices) == {"ltemb-000001", "ltemb", "other"}
    p = types.SimpleNamespace(prompt="a photo of ltemb, ltemb-ish, red ball", hr_prompt="")
    apply_embedding_file(p, "ltemb-000001")
    assert p.prompt == "a photo of ltemb-000001, ltemb-ish, red ball" and p.hr_prompt == ""
    with pytest.raises(AxisError, match="put ltemb in the prompt"):
        apply_embedding_file(types.SimpleNamespace(prompt="a red ball", hr_prompt=""), "ltemb")
