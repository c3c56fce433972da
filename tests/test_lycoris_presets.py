"""LyCORIS' presets and train_norm: the layers each preset adapts are those lycoris-lora's own
`lycoris.kohya.create_network` picks on the same tiny model (of each family), and the norm
layers train_norm adds change the model as LyCORIS' own NormModule applies the file."""
from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

from lib_trainer.config import TrainConfig
from lib_trainer.formats.kohya_names import TargetLayer, kohya_name
from lib_trainer.formats.lora_file import load_lora
from lib_trainer.hosts.tiny import build_tiny_bundle
from lib_trainer.networks import registry
from lib_trainer.networks.presets import PRESETS


@contextlib.contextmanager
def renamed(cls, name: str):
    original = cls.__name__
    cls.__name__ = name
    try:
        yield
    finally:
        cls.__name__ = original


def lycoris_layer_names(bundle, preset: str, train_norm: bool) -> set[str]:
    """The layers LyCORIS' own network adapts on the bundle's diffusers/transformers modules,
    under the names our files use. Two classes are renamed while it looks: sd-scripts' UNet
    (which LyCORIS' presets are written for) calls diffusers' `Attention` CrossAttention, and
    LyCORIS 4.1.3 lists `TimestepEmbedding` (for another model) as a block besides naming the
    time embedding's layers, which on a diffusers UNet creates them twice."""
    from diffusers.models.attention_processor import Attention
    from diffusers.models.embeddings import TimestepEmbedding
    from lycoris import kohya
    from lycoris.config import PRESET

    encoders = bundle.text_encoders()
    try:
        with renamed(Attention, "CrossAttention"), renamed(TimestepEmbedding, "TimeEmbedding"):
            network = kohya.create_network(1.0, 4, 1.0, None, encoders if len(encoders) > 1 else encoders[0],
                                           bundle.unet, preset=preset, conv_dim=4, conv_alpha=1, algo="locon",
                                           train_norm=train_norm)
    finally:
        kohya.LycorisNetworkKohya.apply_preset(PRESET["full"])  # its presets are class-wide
    to_file = bundle._unet_path_in_file() or (lambda path: path)

    def file_name(path: str) -> str:
        try:
            return kohya_name("lora_unet", to_file(path))
        except ValueError:  # a module the original layout does not name (none is adapted)
            return kohya_name("lora_unet", path)

    unet_names = {kohya_name("lora_unet", path): file_name(path) for path, _ in bundle.unet.named_modules() if path}
    names = set()
    for module in network.unet_loras + network.text_encoder_loras:
        name = module.lora_name
        if name.startswith("lora_unet"):
            names.add(unet_names[name])
        else:  # transformers 5 has no `text_model` level; our files keep transformers 4's names
            prefix, rest = name.split("_", 2)[:2], name.partition("encoder_layers_")[2]
            names.add(f"{prefix[0]}_{prefix[1]}_text_model_encoder_layers_{rest}")
    return names


@pytest.fixture(scope="module", params=["sd1", "sd2", "sdxl"])
def bundle(request):
    return build_tiny_bundle(request.param)


def our_layer_names(bundle, args: list[str], conv_dim: int = 4) -> set[str]:
    config = TrainConfig().replace(network_module="lycoris.kohya", network_args=["algo=locon", *args],
                                   network_dim=4, conv_dim=conv_dim)
    _, _, targets = registry.network_targets(config, bundle)
    return {target.name for target in targets}


@pytest.mark.parametrize("preset", PRESETS)
def test_each_preset_adapts_the_layers_lycoris_would(bundle, preset):
    for train_norm in (False, True):
        args = [f"preset={preset}"] + (["train_norm=True"] if train_norm else [])
        ours = our_layer_names(bundle, args)
        theirs = lycoris_layer_names(bundle, preset, train_norm)
        assert ours, preset
        assert ours == theirs, (preset, train_norm, sorted(ours - theirs)[:5], sorted(theirs - ours)[:5])


def test_presets_choose_different_layers_and_full_without_conv_dim_is_networks_lora(bundle):
    chosen = {preset: our_layer_names(bundle, [f"preset={preset}"]) for preset in PRESETS}
    assert len({frozenset(names) for names in chosen.values()}) == len(PRESETS)
    assert chosen["attn-only"] < chosen["attn-mlp"] < chosen["full-lin"] < chosen["full"]
    assert not any("_te" in name for name in chosen["unet-only"] | chosen["unet-convblock-only"])
    # without conv_dim the default preset keeps the layers of a networks.lora run
    plain = {target.name for target in bundle.target_layers(include_conv=False)}
    assert our_layer_names(bundle, [], conv_dim=0) == our_layer_names(bundle, ["preset=full"], conv_dim=0) == plain


NORMS = {"groupnorm": lambda: nn.GroupNorm(4, 16), "layernorm": lambda: nn.LayerNorm(16)}


def norm_layer(kind: str):
    torch.manual_seed(0)
    root = nn.Module()
    root.layer = NORMS[kind]()
    with torch.no_grad():  # a trained norm, not the identity
        root.layer.weight.normal_(1.0, 0.2)
        root.layer.bias.normal_(0.0, 0.2)
    x = torch.randn((2, 16, 3, 3) if kind == "groupnorm" else (2, 5, 16), generator=torch.Generator().manual_seed(3))
    return root, TargetLayer("lora_unet_layer", root.layer, "unet", False, "ResnetBlock2D"), x


@pytest.mark.parametrize("kind", NORMS)
@pytest.mark.parametrize("algo", ["loha", "lokr", "ia3", "locon", "diag-oft", "full"])
def test_train_norm_layers_change_nothing_fresh_and_load_in_lycoris(algo, kind, tmp_path):
    from lycoris.kohya import create_network_from_weights

    root, target, x = norm_layer(kind)
    config = TrainConfig().replace(network_module="lycoris.kohya", network_args=[f"algo={algo}", "train_norm=True"])
    network = registry.create_network(config, [target]).eval()
    assert type(network.adapters["lora_unet_layer"]).__name__ == "NormModule"
    with torch.no_grad():
        plain = root.layer(x)
        with network.attached():
            torch.testing.assert_close(root.layer(x), plain)
        generator = torch.Generator().manual_seed(1)
        for parameter in network.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.3)
        with network.attached():
            ours = root.layer(x)
        adapter = network.adapters["lora_unet_layer"]
        merged = type(root.layer)(*([4, 16] if kind == "groupnorm" else [16]))
        merged.weight.copy_(root.layer.weight + adapter.delta_weight())
        merged.bias.copy_(root.layer.bias + adapter.delta_bias())
        torch.testing.assert_close(merged(x), ours, rtol=1e-5, atol=1e-5)
    assert (ours - plain).abs().max() > 1e-2

    path = str(tmp_path / "norm.safetensors")
    network.write_file(path, network.file_metadata(), torch.float32)
    weights = load_lora(path)
    assert set(weights) == {"lora_unet_layer.w_norm", "lora_unet_layer.b_norm"}  # what network_norm reads
    theirs, _ = create_network_from_weights(1.0, None, None, None, root, weights_sd=dict(weights))
    (module,) = theirs.unet_loras
    assert type(module).__name__ == "NormModule"
    with torch.no_grad():
        module.multiplier = 1.0
        module.apply_to()
        try:
            applied = root.layer(x)
        finally:
            module.restore()
    torch.testing.assert_close(applied, ours, rtol=1e-5, atol=1e-5)


def test_train_norm_is_recorded_and_off_by_default(bundle):
    config = TrainConfig().replace(network_module="lycoris.kohya", network_args=["algo=loha", "train_norm=True"])
    network = registry.create_trainable(config, bundle)
    norms = [name for name, adapter in network.adapters.items() if type(adapter).__name__ == "NormModule"]
    assert norms and all(name.startswith("lora_unet") for name in norms)
    assert '"train_norm": "True"' in network.file_metadata()["ss_network_args"]
    plain = registry.create_trainable(config.replace(network_args=["algo=loha"]), bundle)
    assert not any(type(adapter).__name__ == "NormModule" for adapter in plain.adapters.values())
