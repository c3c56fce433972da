"""kohya's network options for networks.lora: LoRA+ ratios, block-wise learning rates and ranks,
dim_from_weights and scale_weight_norms. Each test shows the option's effect."""
from __future__ import annotations

import argparse
import json

import pytest
import torch
from safetensors.torch import load_file

from lib_trainer.cli_args import add_config_arguments, config_from_args
from lib_trainer.config import ConfigError, TrainConfig
from lib_trainer.hosts import load_bundle
from lib_trainer.networks.blocks import block_index, curve, lr_weights
from lib_trainer.networks.functional import lora_scale
from lib_trainer.networks.registry import create_trainable
from lib_trainer.progress import STEP, Progress
from lib_trainer.train.loop import train

from conftest import quick_config

# One of each kind of SD1 layer, and the block kohya's get_block_index gives it.
SD1_BLOCKS = {
    "lora_unet_down_blocks_0_attentions_0_proj_in": 1,
    "lora_unet_down_blocks_0_downsamplers_0_conv": 3,
    "lora_unet_down_blocks_1_resnets_1_conv1": 5,
    "lora_unet_mid_block_attentions_0_proj_in": 12,
    "lora_unet_up_blocks_0_upsamplers_0_conv": 15,
    "lora_unet_up_blocks_3_attentions_2_proj_out": 24,
}
SDXL_BLOCKS = {
    "lora_unet_input_blocks_4_1_proj_in": 5,
    "lora_unet_middle_block_1_proj_in": 11,
    "lora_unet_output_blocks_8_0_skip_connection": 21,
}


@pytest.fixture(scope="module")
def sd1():
    return load_bundle("tiny:sd1", False, 1, "")


@pytest.fixture(scope="module")
def base_file(small_root, tmp_path_factory) -> str:
    """A LoRA after 2 steps: every up weight is non-zero, so every weight has a gradient."""
    out = tmp_path_factory.mktemp("base_lora")
    return train(quick_config(small_root, str(out), max_train_steps=2, output_name="base")).final_path


def _ranks(path: str) -> dict[str, int]:
    return {key.split(".")[0]: tensor.shape[0] for key, tensor in load_file(path).items()
            if key.endswith("lora_down.weight")}


def _norms(path: str) -> dict[str, float]:
    state = load_file(path)
    norms = {}
    for key in state:
        if key.endswith("lora_down.weight"):
            name = key.split(".")[0]
            down, up = state[key], state[f"{name}.lora_up.weight"]
            scale = lora_scale(float(state[f"{name}.alpha"]), down.shape[0])
            norms[name] = float((up.flatten(1) @ down.flatten(1)).norm() * scale)
    return norms


# --- block numbering (pure) ---

def test_layers_get_kohyas_block_numbers():
    assert {name: block_index(name, False) for name in SD1_BLOCKS} == SD1_BLOCKS
    assert {name: block_index(name, True) for name in SDXL_BLOCKS} == SDXL_BLOCKS


def test_curves_and_the_zero_threshold_are_kohyas():
    assert curve("sine", 12)[0] == 0.0 and curve("sine", 12)[-1] == pytest.approx(1.0)
    assert curve("cosine", 12) == list(reversed(curve("sine", 12)))
    assert curve("linear+0.5", 3) == [0.5, 1.0, 1.5]
    weights = lr_weights({"down_lr_weight": "zeros", "mid_lr_weight": "0.05", "block_lr_zero_threshold": "0.1"},
                         sdxl=False)
    assert weights == [0.0] * 13 + [1.0] * 12  # the mid weight is at the threshold: 0
    assert len(lr_weights({"up_lr_weight": "linear"}, sdxl=True)) == 23


def test_wrong_counts_are_refused_by_name(sd1):
    problems = TrainConfig().replace(network_args=["block_dims=" + ",".join(["4"] * 24),
                                                   "up_lr_weight=1,2", "down_lr_weight=waves"]).problems()
    assert any("block_dims has 24 values; it takes 25 for SD1/SD2 or 23 for SDXL" in p for p in problems)
    assert any("up_lr_weight has 2 values" in p for p in problems)
    assert any("down_lr_weight='waves' is neither" in p for p in problems)
    sdxl_counts = TrainConfig().replace(network_args=["block_dims=" + ",".join(["4"] * 23)])
    with pytest.raises(ConfigError, match="block_dims has 23 values, but this is an SD1/SD2 model: it takes 25"):
        create_trainable(sdxl_counts, sd1)


def test_sdxl_blocks_take_sdxls_counts():
    sdxl = load_bundle("tiny:sdxl", False, 1, "")
    dims = [index % 5 + 1 for index in range(23)]
    network = create_trainable(TrainConfig().replace(network_train_unet_only=True, network_args=[
        "block_dims=" + ",".join(map(str, dims)), "up_lr_weight=" + ",".join(["0.5"] * 9)]), sdxl)
    for name, adapter in network.adapters.items():
        assert adapter.rank == dims[block_index(name, True)], name
    lrs = {group["label"]: group["lr"] for group in network.parameter_groups(1e-3, 0)}
    assert lrs["unet_block13"] == pytest.approx(5e-4) and lrs["unet_block5"] == 1e-3
    with pytest.raises(ConfigError, match="this is an SDXL model: it takes 9"):
        create_trainable(TrainConfig().replace(network_args=["down_lr_weight=" + ",".join(["1"] * 12)]), sdxl)


# --- LoRA+ ---

@pytest.mark.parametrize("settings", [dict(loraplus_lr_ratio=16.0), dict(network_args=["loraplus_lr_ratio=16"])],
                         ids=["field", "network_args"])
def test_loraplus_gives_up_weights_ratio_times_the_lr(sd1, settings):
    network = create_trainable(TrainConfig().replace(network_dim=2, loraplus_text_encoder_lr_ratio=4.0, **settings),
                               sd1)
    groups = {group["label"]: group for group in network.parameter_groups(1e-3, 5e-4)}
    assert set(groups) == {"unet", "unet plus", "text_encoder", "text_encoder plus"}
    assert groups["unet plus"]["lr"] == pytest.approx(16e-3) and groups["unet"]["lr"] == 1e-3
    assert groups["text_encoder plus"]["lr"] == pytest.approx(2e-3)  # its own ratio wins
    ups = {id(a.up) for a in network.adapters.values()}
    assert {id(p) for p in groups["unet plus"]["params"]} <= ups
    assert not {id(p) for p in groups["unet"]["params"]} & ups


def test_loraplus_moves_up_weights_ratio_times_as_far_in_one_step(small_root, base_file, tmp_path):
    """AdamW's first step moves each weight by lr (g / |g|): the up weights by ratio x lr."""
    result = train(quick_config(small_root, str(tmp_path), network_weights=base_file, max_train_steps=1,
                                loraplus_lr_ratio=4.0, optimizer_args=["weight_decay=0"], max_grad_norm=0.0))
    before, after = load_file(base_file), load_file(result.final_path)
    moved = {kind: torch.cat([(after[k] - before[k]).abs().flatten() for k in before if k.endswith(kind)])
             for kind in ("lora_up.weight", "lora_down.weight")}
    assert moved["lora_down.weight"].median() == pytest.approx(1e-3, rel=1e-2)
    assert moved["lora_up.weight"].median() == pytest.approx(4e-3, rel=1e-2)


def test_loraplus_is_refused_with_prodigy():
    problems = TrainConfig().replace(network_args=["loraplus_unet_lr_ratio=16"], optimizer_type="Prodigy").problems()
    assert any("LoRA+" in p and "Prodigy" in p for p in problems)


# --- block-wise lr and ranks ---

def test_zero_block_lr_leaves_out_those_blocks_adapters(small_root, tmp_path):
    """As kohya: blocks of lr weight 0 get no adapter (their rank becomes 0)."""
    result = train(quick_config(small_root, str(tmp_path), max_train_steps=1,
                                network_args=["up_lr_weight=zeros", "mid_lr_weight=0"]))
    names = _ranks(result.final_path)
    assert not [n for n in names if "up_blocks" in n or "mid_block" in n]
    assert [n for n in names if "down_blocks" in n] and [n for n in names if n.startswith("lora_te")]


def test_zero_block_lr_freezes_loaded_adapters_of_those_blocks(small_root, base_file, tmp_path):
    result = train(quick_config(small_root, str(tmp_path), network_weights=base_file, dim_from_weights=True,
                                max_train_steps=2, network_args=["up_lr_weight=zeros"]))
    before, after = load_file(base_file), load_file(result.final_path)
    assert before.keys() == after.keys()
    up = [k for k in before if "up_blocks" in k]
    assert up and all(torch.equal(before[k], after[k]) for k in up)
    assert not all(torch.equal(before[k], after[k]) for k in before if "down_blocks" in k and "lora_up" in k)


def test_block_dims_give_each_block_its_rank(small_root, tmp_path):
    dims = [(index % 3) + 1 for index in range(25)]
    conv_dims = [2] * 12 + [0] + [3] * 12  # no conv LoRA in the mid block
    result = train(quick_config(small_root, str(tmp_path), max_train_steps=1, network_args=[
        "block_dims=" + ",".join(map(str, dims)), "conv_block_dims=" + ",".join(map(str, conv_dims))]))
    state = load_file(result.final_path)
    seen = set()
    for name, rank in _ranks(result.final_path).items():
        if name.startswith("lora_unet"):
            conv = state[f"{name}.lora_down.weight"].dim() == 4 and state[f"{name}.lora_down.weight"].shape[2] == 3
            assert rank == (conv_dims if conv else dims)[block_index(name, False)], name
            seen.add((block_index(name, False), conv))
    assert len(seen) > 20 and (12, True) not in seen
    args = json.loads(_metadata(result.final_path)["ss_network_args"])  # as kohya records its network_args
    assert args["block_dims"] == ",".join(map(str, dims))


def test_dim_from_weights_takes_each_layers_rank_and_alpha_from_the_file(small_root, tmp_path):
    mixed = train(quick_config(small_root, str(tmp_path / "mixed"), max_train_steps=1, network_alpha=3.0,
                               network_args=["block_dims=" + ",".join(str(i % 4 + 1) for i in range(25))])).final_path
    again = train(quick_config(small_root, str(tmp_path / "again"), max_train_steps=1, network_dim=8,
                               network_weights=mixed, dim_from_weights=True)).final_path
    assert _ranks(again) == _ranks(mixed) and len(set(_ranks(mixed).values())) == 4
    alphas = {k: float(v) for k, v in load_file(again).items() if k.endswith(".alpha")}
    assert alphas == {k: float(v) for k, v in load_file(mixed).items() if k.endswith(".alpha")}
    problems = TrainConfig().replace(dim_from_weights=True).problems()
    assert any("dim_from_weights" in p and "network_weights" in p for p in problems)


# --- scale_weight_norms ---

def test_scale_weight_norms_caps_every_layers_norm_and_reports_it(small_root, tmp_path):
    free = train(quick_config(small_root, str(tmp_path / "free"), max_train_steps=3)).final_path
    assert max(_norms(free).values()) > 0.02
    infos = []
    progress = Progress()
    progress.sinks.append(lambda e: infos.append(e.info) if e.kind == STEP and e.label == "training" else None)
    capped = train(quick_config(small_root, str(tmp_path / "capped"), max_train_steps=3, scale_weight_norms=0.02),
                   progress=progress).final_path
    norms = _norms(capped)
    assert max(norms.values()) <= 0.02 * (1 + 1e-4)
    assert any(abs(n - 0.02) < 1e-5 for n in norms.values())  # those above it were scaled to it
    assert infos[-1]["keys_scaled"] > 0 and infos[-1]["max_key_norm"] == pytest.approx(0.02, rel=1e-4)
    assert 0 < infos[-1]["avg_key_norm"] <= 0.02
    assert _metadata(capped)["ss_scale_weight_norms"] == "0.02"


def test_scale_weight_norms_is_refused_for_other_methods():
    problems = TrainConfig().replace(network_module="lycoris.kohya", network_args=["algo=loha"],
                                     scale_weight_norms=1.0).problems()
    assert any("scale_weight_norms" in p and "networks.lora" in p for p in problems)


def _metadata(path: str) -> dict:
    from safetensors import safe_open

    with safe_open(path, "pt") as handle:
        return handle.metadata()


# --- the options from the command line and the UI ---

def test_options_come_from_the_command_line():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    args = parser.parse_args(["--loraplus_lr_ratio", "16", "--scale_weight_norms", "1", "--dim_from_weights",
                              "--network_args", "down_lr_weight=sine", "loraplus_unet_lr_ratio=8"])
    config = config_from_args(args)
    assert (config.loraplus_lr_ratio, config.scale_weight_norms, config.dim_from_weights) == (16.0, 1.0, True)
    assert config.parsed_network_args() == {"down_lr_weight": "sine", "loraplus_unet_lr_ratio": "8"}


def test_options_are_in_the_uis_network_accordion():
    import gradio as gr

    from lib_trainer.ui.form import ConfigForm

    with gr.Blocks():
        form = ConfigForm()
        form.build_expert(TrainConfig())
    config = TrainConfig().replace(loraplus_lr_ratio=16.0, loraplus_unet_lr_ratio=8.0, scale_weight_norms=1.0)
    read, problems = form.read([update["value"] for update in form.updates(config)])
    assert problems == [] and read == config
    assert {"loraplus_lr_ratio", "dim_from_weights", "scale_weight_norms"} <= set(form.components)
