"""The LyCORIS methods, method x layer kind: a fresh network changes nothing, the merged weight
equals the hooked forward, the file round-trips through our reader and loads in LyCORIS' own
loader (lycoris-lora) with every key consumed and the same change per layer, and the metadata
is what LyCORIS writes."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lib_trainer.config import ConfigError, TrainConfig
from lib_trainer.formats.kohya_names import TargetLayer
from lib_trainer.formats.lora_file import load_lora, read_metadata
from lib_trainer.hosts.tiny import build_tiny_bundle
from lib_trainer.networks import registry

# case -> (network_args, the layer kinds whose files lycoris-lora's loader reads, the kinds it adapts)
ALL_KINDS = ("linear", "conv1x1", "conv3x3")
NONE = ()
CASES = {
    "loha": (["algo=loha"], ALL_KINDS, ALL_KINDS),
    "loha-tucker": (["algo=loha", "use_tucker=True"], ALL_KINDS, ALL_KINDS),
    "loha-rs": (["algo=loha", "rs_lora=True"], ALL_KINDS, ALL_KINDS),
    "loha-dora-webui": (["algo=loha", "dora_wd=True"], NONE, ALL_KINDS),
    "loha-dora-out": (["algo=loha", "dora_wd=True", "wd_on_output=True"], ALL_KINDS, ALL_KINDS),
    "lokr": (["algo=lokr"], ALL_KINDS, ALL_KINDS),
    "lokr-factor4": (["algo=lokr", "factor=4"], ALL_KINDS, ALL_KINDS),
    "lokr-lowrank": (["algo=lokr", "factor=2"], ALL_KINDS, ALL_KINDS),
    "lokr-both": (["algo=lokr", "decompose_both=True"], ALL_KINDS, ALL_KINDS),
    # LyCORIS' loader takes the rank of a Tucker LoKr from lokr_w2_a's second axis, which
    # holds b there: it rebuilds another shape, so only the layers without a core load.
    "lokr-tucker": (["algo=lokr", "factor=2", "use_tucker=True"], ("linear", "conv1x1"), ALL_KINDS),
    "lokr-full": (["algo=lokr", "factor=8", "full_matrix=True"], ALL_KINDS, ALL_KINDS),
    "lokr-dora-out": (["algo=lokr", "dora_wd=True", "wd_on_output=True"], ALL_KINDS, ALL_KINDS),
    "locon": (["algo=locon"], ALL_KINDS, ALL_KINDS),
    "lora-rs-dropout": (["algo=lora", "rs_lora=True", "rank_dropout=0.1", "module_dropout=0.1"], ALL_KINDS,
                        ALL_KINDS),
    "locon-tucker": (["algo=locon", "use_tucker=True"], ALL_KINDS, ALL_KINDS),
    "dora-webui": (["algo=locon", "dora_wd=True"], NONE, ALL_KINDS),
    "dora-out": (["algo=locon", "dora_wd=True", "wd_on_output=True"], ALL_KINDS, ALL_KINDS),
    "dora-tucker": (["algo=locon", "dora_wd=True", "wd_on_output=True", "use_tucker=True"], ALL_KINDS, ALL_KINDS),
    "full": (["algo=full"], ALL_KINDS, ALL_KINDS),
    # IA3 on Linear layers only (the WebUI cannot apply it to a conv). lycoris-lora 4.1.3's
    # loader fails on every IA3 file, its own too (make_module_from_state_dict takes `weight`
    # but is handed `on_input` as well): test_ia3_in_lycoris_own_module checks it instead.
    "ia3": (["algo=ia3"], NONE, ("linear",)),
    "ia3-input": (["algo=ia3", "train_on_input=True"], NONE, ("linear",)),
    # OFT / BOFT: blocks of at most 4 channels (network_dim, conv_dim); 16 outputs = 4 x 4,
    # BOFT in 3 butterfly stages. constraint is stored as alpha.
    "oft": (["algo=diag-oft"], ALL_KINDS, ALL_KINDS),
    "oft-constraint-rescaled": (["algo=diag-oft", "constraint=0.01", "rescaled=True"], ALL_KINDS, ALL_KINDS),
    "boft": (["algo=boft"], ALL_KINDS, ALL_KINDS),
    "boft-constraint-rescaled": (["algo=boft", "constraint=0.05", "rescaled=True"], ALL_KINDS, ALL_KINDS),
}
# Dims other than 4 / 4, where a layout needs them (LoKr factors are decomposed below half
# their size).
CASE_DIMS = {"lokr-lowrank": dict(network_dim=2, conv_dim=2), "lokr-both": dict(network_dim=1, conv_dim=1)}
LAYERS = {
    "linear": lambda: nn.Linear(24, 16),
    "conv1x1": lambda: nn.Conv2d(24, 16, 1),
    "conv3x3": lambda: nn.Conv2d(24, 16, 3, padding=1),
}


def config_for(case: str, **changes) -> TrainConfig:
    settings = dict(network_module="lycoris.kohya", network_args=CASES[case][0], network_dim=4, network_alpha=2.0,
                    conv_dim=4, conv_alpha=1.0)
    settings.update(CASE_DIMS.get(case, {}))
    settings.update(changes)
    return TrainConfig().replace(**settings)


def one_layer(kind: str, seed: int = 0):
    """A model with one layer, named `layer` (so its key is lora_unet_layer), and its target."""
    torch.manual_seed(seed)
    root = nn.Module()
    root.layer = LAYERS[kind]()
    return root, TargetLayer("lora_unet_layer", root.layer, "unet", kind == "conv3x3")


def sample_input(kind: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed(5)
    return torch.randn((3, 24) if kind == "linear" else (2, 24, 6, 6), generator=generator)


def randomise(network, seed: int = 1, std: float = 0.3) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.copy_(parameter + torch.randn(parameter.shape, generator=generator) * std)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def applied_delta(layer: nn.Module, weight: torch.Tensor | None = None,
                  bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight and bias change whatever wraps `layer` applies, read back from its outputs
    minus the plain layer's: the bias from a zero input, the weight from unit inputs for a
    Linear, from one-pixel impulses for a 'same' padded conv (whose response is the kernel,
    flipped). `weight`/`bias`: the plain layer's, where the wrapper took them off the layer."""
    if weight is None:
        weight, bias = layer.weight, layer.bias
    if isinstance(layer, nn.Linear):
        plain = lambda x: F.linear(x, weight, bias)  # noqa: E731
        probe = torch.eye(weight.shape[1])
    else:
        plain = lambda x: F.conv2d(x, weight, bias, padding=layer.padding)  # noqa: E731
        kh, kw = weight.shape[2:]
        probe = torch.zeros(weight.shape[1], weight.shape[1], kh, kw)
        for channel in range(weight.shape[1]):
            probe[channel, channel, kh // 2, kw // 2] = 1.0
    zero = torch.zeros_like(probe[:1])
    bias_change = layer(zero) - plain(zero)
    response = layer(probe) - plain(probe) - bias_change
    if isinstance(layer, nn.Linear):
        return response.T, bias_change[0]
    return response.permute(1, 0, 2, 3).flip(2, 3), bias_change[0, :, 0, 0]


def applied_delta_weight(layer: nn.Module) -> torch.Tensor:
    return applied_delta(layer)[0]


def cases_on(kinds=ALL_KINDS):
    return [(case, kind) for case, (_, _, adapted) in CASES.items() for kind in kinds if kind in adapted]


@pytest.mark.parametrize("case,kind", cases_on())
def test_a_fresh_network_changes_nothing(case, kind):
    root, target = one_layer(kind)
    network = registry.create_network(config_for(case), [target]).eval()  # no dropout
    x = sample_input(kind)
    with torch.no_grad():
        before = root.layer(x)
        with network.attached():
            after = root.layer(x)
    assert len(network.adapters) == 1
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case,kind", cases_on())
def test_the_merged_weight_equals_the_hooked_forward(case, kind):
    root, target = one_layer(kind)
    network = registry.create_network(config_for(case), [target]).eval()  # no dropout
    randomise(network)
    adapter = network.adapters["lora_unet_layer"]
    x = sample_input(kind)
    with torch.no_grad():
        with network.attached():
            hooked = root.layer(x)
        delta = adapter.delta_weight()
        root.layer.weight += delta
        bias = getattr(adapter, "delta_bias", lambda: None)()
        if bias is not None:  # full trains the bias too
            root.layer.bias += bias
        merged = root.layer(x)
    assert delta.abs().max() > 1e-3  # the randomised network does change the layer
    assert relative_error(hooked, merged) < 1e-5


@pytest.mark.parametrize("case,kind", cases_on())
def test_lycoris_own_loader_consumes_every_key_and_applies_the_same_change(case, kind, tmp_path):
    """lycoris-lora's `create_network_from_weights` builds its modules from our file; its forward
    must change the layer exactly as ours does. (Its get_diff_weight is not used: for LoHa it
    applies alpha/dim twice, unlike its own forward and the WebUI.)"""
    if kind not in CASES[case][1]:
        pytest.skip("a layout LyCORIS' loader misreads (see CASES)")
    from lycoris.kohya import create_network_from_weights
    from lycoris.modules import get_module

    root, target = one_layer(kind)
    network = registry.create_network(config_for(case), [target]).eval()  # no dropout
    randomise(network)
    path = str(tmp_path / f"{case}.safetensors")
    network.write_file(path, network.file_metadata(), torch.float32)
    weights = load_lora(path)

    theirs, _ = create_network_from_weights(1.0, None, None, None, root, weights_sd=dict(weights))
    assert len(theirs.unet_loras) == 1
    kind_of_module, _ = get_module(weights, "lora_unet_layer")
    consumed = {f"lora_unet_layer.{name}" for name in kind_of_module.weight_list}
    assert set(weights) <= consumed, f"keys LyCORIS does not read: {set(weights) - consumed}"

    lycoris_module = theirs.unet_loras[0]
    ours = network.adapters["lora_unet_layer"]
    with torch.no_grad():
        expected = ours.delta_weight()
        lycoris_module.multiplier = 1.0
        plain = root.layer.weight.clone(), root.layer.bias.clone()
        lycoris_module.apply_to()  # algo=full takes the weight off the layer
        try:
            applied, applied_bias = applied_delta(root.layer, *plain)
        finally:
            lycoris_module.restore()
        bias = getattr(ours, "delta_bias", lambda: None)()
    assert relative_error(applied, expected) < 1e-5
    if bias is not None:
        assert relative_error(applied_bias, bias) < 1e-5
    else:
        assert applied_bias.abs().max() < 1e-5


@pytest.mark.parametrize("case", CASES)
def test_the_file_round_trips_and_says_what_it_is(case, tmp_path):
    root, target = one_layer("conv3x3")
    _, linear = one_layer("linear")
    linear.name = "lora_te_text_model_encoder_layers_0_mlp_fc1"
    linear.component = "text_encoder"
    config = config_for(case)
    network = registry.create_network(config, [target, linear])
    randomise(network)
    path = str(tmp_path / "net.safetensors")
    network.write_file(path, network.file_metadata(), None)
    again = registry.create_network(config, [target, linear])
    again.load_weights(path)
    for key, tensor in network.file_state_dict().items():
        torch.testing.assert_close(again.file_state_dict()[key], tensor, rtol=0, atol=0)
    method = registry.find_method(config)
    assert method.recognises(load_lora(path))
    metadata = read_metadata(path)
    assert metadata["ss_network_module"] == "lycoris.kohya"
    args = json.loads(metadata["ss_network_args"])
    typed = dict(arg.split("=", 1) for arg in CASES[case][0])
    assert {key: args[key] for key in typed} == typed  # as typed, as sd-scripts stores them
    dims = {"network_dim": 4, "conv_dim": 4, **CASE_DIMS.get(case, {})}
    assert args["preset"] == "full" and args["conv_dim"] == str(dims["conv_dim"]) and args["conv_alpha"] == "1.0"
    assert metadata["ss_network_dim"] == str(dims["network_dim"]) and metadata["ss_network_alpha"] == "2.0"


@pytest.fixture(scope="module")
def bundle():
    return build_tiny_bundle()


@pytest.mark.parametrize("case", CASES)
def test_the_record_counts_the_parameters_its_network_has(bundle, case):
    config = config_for(case)
    method, settings, targets = registry.network_targets(config, bundle)
    network = method.create(targets, settings)
    assert method.parameter_count(targets, settings) == sum(p.numel() for p in network.parameters()) > 0


def test_bad_lycoris_arguments_name_the_key_and_what_is_accepted():
    with pytest.raises(ConfigError, match=r"network_args: factor is not an option of lycoris.kohya algo=loha "
                                          r"\(it takes conv_dim, .*use_tucker"):
        registry.find_method(config_for("loha", network_args=["algo=loha", "factor=4"])).settings(
            config_for("loha", network_args=["algo=loha", "factor=4"]))
    problems = config_for("loha", network_args=["algo=loha", "use_tucker=maybe", "preset=most"]).problems()
    assert any("use_tucker='maybe' must be true or false" in p for p in problems)
    assert any("preset='most' is not one of LyCORIS' presets here: full, full-lin, attn-mlp, attn-only" in p
               for p in problems)
    assert config_for("loha", network_args=["algo=loha", "preset=attn-mlp"]).problems() == []
    problems = config_for("loha", network_args=["algo=loha", "preset=unet-convblock-only"], conv_dim=0).problems()
    assert any("preset=unet-convblock-only adapts the conv blocks only: it needs conv_dim > 0" in p for p in problems)
    problems = config_for("loha", network_args=["algo=loha", "weight_decompose=True"]).problems()
    assert any("weight_decompose is spelled dora_wd in LyCORIS' network_args (dora_wd=True)" in p for p in problems)


def test_kohya_module_names_are_accepted():
    config = TrainConfig().replace(network_module="networks.loha")
    method = registry.find_method(config)
    assert method.label == "LoHa"
    assert method.file_metadata(method.settings(config))["ss_network_module"] == "networks.loha"


@pytest.mark.parametrize("on_input", [False, True])
def test_ia3_in_lycoris_own_module(on_input, tmp_path):
    """LyCORIS recognises our IA3 keys and reads all of them; its IA3 module given our vector
    changes the layer as ours does (built by hand: its loader fails on any IA3 file)."""
    from lycoris.modules import get_module
    from lycoris.modules.ia3 import IA3Module

    case = "ia3-input" if on_input else "ia3"
    root, target = one_layer("linear")
    network = registry.create_network(config_for(case), [target]).eval()  # no dropout
    randomise(network)
    path = str(tmp_path / "ia3.safetensors")
    network.write_file(path, network.file_metadata(), torch.float16)
    weights = load_lora(path)
    assert weights["lora_unet_layer.on_input"].dtype == torch.int64  # a flag, not a weight
    kind_of_module, _ = get_module(weights, "lora_unet_layer")
    assert kind_of_module is IA3Module
    assert set(weights) == {f"lora_unet_layer.{name}" for name in IA3Module.weight_list}
    theirs = IA3Module("lora_unet_layer", root.layer, 1.0, train_on_input=on_input)
    with torch.no_grad():
        theirs.weight.copy_(weights["lora_unet_layer.weight"].float())
        expected = network.adapters["lora_unet_layer"].delta_weight()
        theirs.apply_to()
        applied = applied_delta_weight(root.layer)
    assert relative_error(applied, expected) < 1e-3  # the file is fp16


def webui_weight_decompose(updown: torch.Tensor, weight: torch.Tensor, dora_scale: torch.Tensor) -> torch.Tensor:
    """The WebUI 1.10's rule (extensions-builtin/Lora/network.py, apply_weight_decompose): the
    norm of W + updown per input channel, over outputs and kernel."""
    merged = updown + weight
    norm = merged.transpose(0, 1).reshape(merged.shape[1], -1).norm(dim=1, keepdim=True)
    norm = norm.reshape(merged.shape[1], *[1] * (weight.dim() - 1)).transpose(0, 1)
    return merged * (dora_scale / norm) - weight


@pytest.mark.parametrize("kind", ALL_KINDS)
@pytest.mark.parametrize("case", ["dora-webui", "loha-dora-webui", "dora-out"])
def test_dora_is_saved_along_the_axis_its_metadata_names(case, kind):
    from lycoris.functional.general import weight_decompose as lycoris_weight_decompose

    root, target = one_layer(kind)
    network = registry.create_network(config_for(case), [target]).eval()
    randomise(network)
    adapter = network.adapters["lora_unet_layer"]
    weight = root.layer.weight.detach()
    on_output = "wd_on_output=True" in CASES[case][0]
    rest = [1] * (weight.dim() - 2)
    expected_shape = [weight.shape[0], 1, *rest] if on_output else [1, weight.shape[1], *rest]
    tensors = adapter.file_tensors()
    assert list(tensors["dora_scale"].shape) == expected_shape
    with torch.no_grad():
        plain = adapter.weight_delta()
        ours = adapter.delta_weight()
        theirs = lycoris_weight_decompose(weight + plain, tensors["dora_scale"], 1, on_output) - weight
        if not on_output:
            assert relative_error(ours, webui_weight_decompose(plain, weight, tensors["dora_scale"])) < 1e-5
    assert relative_error(ours, theirs) < 1e-4  # LyCORIS adds float eps to the norm
    args = json.loads(network.file_metadata()["ss_network_args"])
    assert args["dora_wd"] == "True" and args["wd_on_output"] == str(on_output)


def webui_oft_updown(weight: torch.Tensor, oft_blocks: torch.Tensor, alpha: torch.Tensor | None,
                     rescale: torch.Tensor | None) -> torch.Tensor:
    """The WebUI 1.10's rule (extensions-builtin/Lora/network_oft.py, calc_updown) for a file's
    `oft_blocks` (3-D: OFT, the first axis the block count; 4-D: BOFT stages), `alpha` (the
    constraint, times the output channels) and `rescale`, written from its description."""
    from einops import rearrange

    out_dim = weight.shape[0]
    size = oft_blocks.shape[-1]
    eye = torch.eye(size)
    q = oft_blocks - oft_blocks.transpose(-1, -2)
    constraint = 0 if alpha is None else alpha * out_dim
    if constraint != 0:
        norm = torch.norm(q.flatten())
        q = q * ((torch.clamp(norm, max=constraint) + 1e-8) / (norm + 1e-8))
    r = torch.matmul(eye + q, (eye - q).float().inverse())
    if oft_blocks.dim() == 3:
        blocks = rearrange(weight, "(k n) ... -> k n ...", k=oft_blocks.shape[0], n=out_dim // oft_blocks.shape[0])
        merged = rearrange(torch.einsum("k n m, k n ... -> k m ...", r, blocks), "k m ... -> (k m) ...")
    else:
        merged = weight
        for i in range(oft_blocks.shape[0]):
            merged = rearrange(merged, "(c g k) ... -> (c k g) ...", g=2, k=2 ** i * size // 2)
            merged = rearrange(merged, "(d b) ... -> d b ...", b=size)
            merged = torch.einsum("b i j, b j ... -> b i ...", r[i], merged)
            merged = rearrange(merged, "d b ... -> (d b) ...")
            merged = rearrange(merged, "(c k g) ... -> (c g k) ...", g=2, k=2 ** i * size // 2)
    if rescale is not None:
        merged = rescale.reshape(-1, *[1] * (weight.dim() - 1)) * merged
    return merged - weight


@pytest.mark.parametrize("case,kind", [(case, kind) for case, kind in cases_on() if "oft" in case])
def test_oft_files_apply_in_the_webui_as_trained(case, kind, tmp_path):
    root, target = one_layer(kind)
    network = registry.create_network(config_for(case), [target]).eval()
    randomise(network, std=0.5)
    path = str(tmp_path / f"{case}.safetensors")
    network.write_file(path, network.file_metadata(), torch.float32)
    weights = {key.partition(".")[2]: tensor for key, tensor in load_lora(path).items()}
    assert weights["oft_blocks"].dim() == (4 if "boft" in case else 3)
    typed = dict(arg.split("=") for arg in CASES[case][0])
    assert float(weights["alpha"]) == pytest.approx(float(typed.get("constraint", 0)))  # alpha is the constraint
    with torch.no_grad():
        expected = network.adapters["lora_unet_layer"].delta_weight()
        webui = webui_oft_updown(root.layer.weight, weights["oft_blocks"], weights["alpha"], weights.get("rescale"))
        # a rotation of the output axis: without rescale, each input's column keeps its length
        if "rescale" not in weights:
            columns = lambda w: w.flatten(1).norm(dim=0)  # noqa: E731
            torch.testing.assert_close(columns(root.layer.weight + expected), columns(root.layer.weight))
    assert expected.abs().max() > 1e-3
    assert relative_error(expected, webui) < 1e-5


def test_kohyas_networks_oft_points_to_lycoris_oft():
    problems = TrainConfig().replace(network_module="networks.oft").problems()
    assert any("network_module 'networks.oft' is unknown; use lycoris.kohya with algo=diag-oft" in p
               for p in problems), problems


def test_oft_arguments_are_checked():
    problems = config_for("oft", network_args=["algo=diag-oft", "constraint=-1", "bypass_mode=True"]).problems()
    assert any("constraint=-1.0 must not be negative" in p for p in problems)
    assert any("bypass_mode is not supported with algo=diag-oft" in p for p in problems)
    assert any("dora_wd is not an option of lycoris.kohya algo=boft" in p for p in
               config_for("boft", network_args=["algo=boft", "dora_wd=True"]).problems())
    root, target = one_layer("linear")
    root.layer = nn.Linear(24, 20)  # 20 = 10 x 2: BOFT needs blocks of 10
    target = TargetLayer("lora_unet_layer", root.layer, "unet", False)
    from lib_trainer.errors import InvalidInput
    with pytest.raises(InvalidInput, match=r"lora_unet_layer: BOFT cannot split its 20 output channels .* "
                                           r"raise network_dim"):
        registry.create_network(config_for("boft"), [target])
    assert len(registry.create_network(config_for("boft", network_dim=10), [target]).adapters) == 1


# One short run per method on the demo concept: (network_args, learning rate; LyCORIS advises
# a high one for IA3).
RUNS = {
    "loha": (["algo=loha"], 3e-3),
    "lokr": (["algo=lokr", "factor=4"], 3e-3),
    "ia3": (["algo=ia3"], 5e-2),
    "dora": (["algo=locon", "dora_wd=True"], 3e-3),
    "locon-tucker": (["algo=locon", "use_tucker=True"], 3e-3),
    "full": (["algo=full"], 1e-3),
    "oft": (["algo=diag-oft"], 1e-2),
    "boft": (["algo=boft"], 1e-2),
    "locon-preset-norm": (["algo=locon", "preset=attn-mlp", "train_norm=True"], 3e-3),
}


@pytest.mark.parametrize("run", RUNS)
def test_a_short_run_lowers_the_loss_and_writes_a_file_that_loads(run, small_root, tmp_path, bundle):
    from conftest import encoded_examples, quick_config
    from denoising_score import fixed_denoising_loss
    from lib_trainer.train.loop import train

    args, lr = RUNS[run]
    config = quick_config(small_root, str(tmp_path), network_module="lycoris.kohya", network_args=args,
                          network_dim=4, network_alpha=4.0, conv_dim=2, conv_alpha=2.0, learning_rate=lr,
                          max_train_steps=6, network_train_unet_only=True)
    result = train(config, bundle=bundle)
    assert json.loads(read_metadata(result.final_path)["ss_network_args"])["algo"] == args[0].split("=")[1]
    network = registry.create_trainable(config, bundle)
    network.load_weights(result.final_path)  # every key fits
    latents, prompts = encoded_examples(bundle, result.plan.training_set.examples)
    base = fixed_denoising_loss(bundle, latents, prompts, 1234, [100, 400])
    with network.attached():
        trained = fixed_denoising_loss(bundle, latents, prompts, 1234, [100, 400])
    assert trained < base, (base, trained)


def test_the_memory_estimate_and_the_run_name_the_method_and_its_parameters(bundle):
    from lib_trainer.train.loop import trained_parts_line
    from lib_trainer.train.memory import estimate_memory

    config = config_for("lokr-lowrank")
    method, settings, targets = registry.network_targets(config, bundle)
    count = method.parameter_count(targets, settings)
    assert f"network (LoKr, {count:,} parameters) and optimizer" in estimate_memory(config, "sd1", 0, targets).summary()
    line = trained_parts_line(config, method.create(targets, settings))
    assert line.startswith(f"Trains (LoKr, {count:,} parameters): UNet ✔")


@pytest.mark.parametrize("case", ["loha", "lokr", "locon", "locon-tucker", "full", "ia3"])
def test_bypass_mode_is_what_the_hook_computes_anyway(case):
    """LyCORIS' bypass_mode runs the change beside the base layer, as every adapter here does:
    accepted, recorded, and the same network."""
    kind = "linear" if case == "ia3" else "conv3x3"
    root, target = one_layer(kind)
    plain = registry.create_network(config_for(case), [target]).eval()
    randomise(plain)
    bypass = registry.create_network(config_for(case, network_args=[*CASES[case][0], "bypass_mode=True"]),
                                     [target]).eval()
    bypass.load_state_dict(plain.state_dict())
    x = sample_input(kind)
    with torch.no_grad():
        with plain.attached():
            expected = root.layer(x)
        with bypass.attached():
            assert torch.equal(root.layer(x), expected)
    assert json.loads(bypass.file_metadata()["ss_network_args"])["bypass_mode"] == "True"


def test_bypass_mode_is_refused_where_lycoris_bypass_differs_from_the_webui():
    problems = config_for("dora-webui", network_args=["algo=locon", "dora_wd=True", "bypass_mode=True"]).problems()
    assert any("bypass_mode cannot go with dora_wd" in p for p in problems)
    problems = config_for("boft", network_args=["algo=boft", "bypass_mode=True"]).problems()
    assert any("bypass_mode is not supported with algo=boft" in p for p in problems)
