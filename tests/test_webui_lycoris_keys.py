"""Every key of each LyCORIS method's file, trained on the WebUI's own modules (webui_models.py),
names a live ldm/sgm/OpenCLIP layer, and the WebUI 1.10's Lora extension would pick the right
network module for it. The module-type rules are written here from the WebUI's source
(extensions-builtin/Lora: networks.module_types, tried in this order, and each
ModuleType.create_module's key check), not imported from it."""
from __future__ import annotations

import pytest
from torch import nn

from lib_trainer.config import TrainConfig
from lib_trainer.hosts.ldm_bundle import LiveSDBundle
from lib_trainer.networks.registry import create_trainable
from webui_models import webui_model

# (module type, the keys its create_module requires: any one of the alternatives), in the
# order of networks.module_types.
WEBUI_MODULE_TYPES = [
    ("network_lora", [{"lora_up.weight", "lora_down.weight"}, {"lora_A.weight", "lora_B.weight"}]),
    ("network_hada", [{"hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"}]),
    ("network_ia3", [{"weight"}]),
    ("network_lokr", [{"lokr_w1", "lokr_w2"}, {"lokr_w1", "lokr_w2_a", "lokr_w2_b"},
                      {"lokr_w1_a", "lokr_w1_b", "lokr_w2"}, {"lokr_w1_a", "lokr_w1_b", "lokr_w2_a", "lokr_w2_b"}]),
    ("network_full", [{"diff"}]),
    ("network_norm", [{"w_norm", "b_norm"}]),
    ("network_glora", [{"a1.weight", "a2.weight", "alpha", "b1.weight", "b2.weight"}]),
    ("network_oft", [{"oft_blocks"}, {"oft_diag"}]),
]
# Keys each WebUI module reads besides those it is chosen by (network.NetworkModule reads
# alpha, scale, bias and dora_scale for all).
READ_BY_ALL = {"alpha", "scale", "bias", "dora_scale"}
ALSO_READ = {"network_lora": {"lora_mid.weight"}, "network_hada": {"hada_t1", "hada_t2"},
             "network_ia3": {"on_input"}, "network_lokr": {"lokr_t2"}, "network_full": {"diff_b"},
             "network_oft": {"rescale"}}

METHODS = {
    "loha": (["algo=loha", "use_tucker=True"], "network_hada"),
    "lokr": (["algo=lokr", "factor=4"], "network_lokr"),
    "lokr-lowrank": (["algo=lokr", "factor=2", "use_tucker=True"], "network_lokr"),
    "ia3": (["algo=ia3"], "network_ia3"),
    "dora": (["algo=locon", "dora_wd=True"], "network_lora"),
    "locon-tucker": (["algo=locon", "use_tucker=True"], "network_lora"),
    "full": (["algo=full"], "network_full"),
    "oft": (["algo=diag-oft", "constraint=0.01", "rescaled=True"], "network_oft"),
    "boft": (["algo=boft", "rescaled=True"], "network_oft"),
    # the layers outside any block (conv_in, conv_out, time embedding) and the norm layers
    "locon-full-norm": (["algo=locon", "preset=full", "train_norm=True"], "network_lora"),
    "loha-attn-only": (["algo=loha", "preset=attn-only"], "network_hada"),
}


def webui_module_type(keys: set[str]) -> str | None:
    for name, alternatives in WEBUI_MODULE_TYPES:
        if any(required <= keys for required in alternatives):
            return name
    return None


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("webui_models")
    return {family: webui_model(family, folder)[0] for family in ("sd1", "sd2", "sdxl")}


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
@pytest.mark.parametrize("method", METHODS)
def test_every_key_maps_to_a_live_layer_of_the_type_the_webui_picks(models, family, method):
    args, expected = METHODS[method]
    live = LiveSDBundle(models[family])
    config = TrainConfig().replace(network_module="lycoris.kohya", network_args=args, network_dim=2,
                                   network_alpha=1.0, conv_dim=2, conv_alpha=1.0)
    targets = {t.name: t for t in live.target_layers(include_conv=True, top_level=True, norms=True)}
    network = create_trainable(config, live)
    layers: dict[str, set[str]] = {}
    for key in network.file_state_dict():
        name, _, suffix = key.partition(".")  # the WebUI splits a key at its first dot
        layers.setdefault(name, set()).add(suffix)
    assert layers and set(layers) <= set(targets), "every key names a live layer"
    for name, keys in layers.items():
        module = targets[name].module
        picked = "network_norm" if isinstance(module, (nn.GroupNorm, nn.LayerNorm)) else expected
        assert webui_module_type(keys) == picked, (name, keys)
        assert keys <= {k for alt in dict(WEBUI_MODULE_TYPES)[picked] for k in alt} | READ_BY_ALL \
            | ALSO_READ.get(picked, set()), f"{name}: keys the WebUI would not read: {keys}"
        weight = module.weight
        if expected == "network_ia3":
            assert isinstance(module, nn.Linear)  # its (out, 1) gain fits 2-D weights only
        if "dora_scale" in keys:  # the WebUI normalises per input channel: (1, in, ...)
            shape = network.adapters[name].file_tensors()["dora_scale"].shape
            assert shape[0] == 1 and shape[1] == weight.shape[1] and shape.numel() == weight.shape[1]
        if "lora_mid.weight" in keys:  # network_lora builds lora_mid as a conv of the layer's kernel
            assert isinstance(module, nn.Conv2d) and module.kernel_size != (1, 1)
        if "oft_blocks" in keys:  # network_oft: blocks x size (BOFT: x stages) = the layer's outputs
            blocks = network.adapters[name].file_tensors()["oft_blocks"]
            assert blocks.shape[-3] * blocks.shape[-1] == weight.shape[0]
        if "diff_b" in keys:
            assert module.bias is not None and getattr(module, "separate_bias", True)
    if family != "sd1" and method == "full":
        # the fused OpenCLIP q/k/v: the WebUI drops their diff_b, so none is trained or saved
        fused = [n for n, t in targets.items() if n.endswith(("_q_proj", "_k_proj", "_v_proj"))
                 and not getattr(t.module, "separate_bias", True)]
        assert fused and all("diff_b" not in layers[n] for n in fused)
    if method == "locon-full-norm":  # the WebUI maps these names (networks.py, convert_diffusers_name_to_compvis)
        assert any("conv_in" in n or "input_blocks_0_0" in n for n in layers)
        assert any("time_emb" in n for n in layers) and any(n.endswith(("_norm1", "_norm")) for n in layers)
    if method == "loha-attn-only":
        assert all("_attn1_" in n or "_attn2_" in n or "_self_attn_" in n for n in layers)


def test_the_webui_rules_tell_lora_from_lycoris_files():
    assert webui_module_type({"lora_up.weight", "lora_down.weight", "alpha"}) == "network_lora"
    assert webui_module_type({"weight", "on_input"}) == "network_ia3"
    assert webui_module_type({"lokr_w1", "lokr_w2_a", "lokr_w2_b", "lokr_t2", "alpha"}) == "network_lokr"
    assert webui_module_type({"hada_w1_a"}) is None
