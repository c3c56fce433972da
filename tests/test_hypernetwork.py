"""Hypernetworks in the WebUI's `.pt` layout, on every family.

The file is checked by a reader written here from the WebUI's format description (torch's
weights-only loader, every documented field, the key names and shapes its module has), and
its MLPs are applied by a forward written here from the same description, hooked into the
UNet by hand: that must give the UNet output the run trained with. Training changes no
model weight, leaves the model as it was after a run, a failure and a stop, learns the demo
concept, and a stopped run resumed equals the uninterrupted one."""
from __future__ import annotations

import io
import os
import pickle
import collections

import pytest
import torch
import torch.nn.functional as F

from conftest import encoded_examples, quick_config
from denoising_score import fixed_denoising_loss
from lib_trainer.config import ConfigError
from lib_trainer.errors import InvalidInput
from lib_trainer.hosts.tiny import build_tiny_bundle
from lib_trainer.networks import registry
from lib_trainer.progress import STEP, Progress
from lib_trainer.train import loop
from lib_trainer.train.loop import train

FAMILIES = ["sd1", "sd2", "sdxl"]
CONTEXT = {"sd1": 64, "sd2": 64, "sdxl": 96}       # the tiny models' cross-attention widths
# relu after the hidden layer, layer norm after each, dropout 0.1 after the hidden layer:
# the WebUI's sequence is Linear, ReLU, LayerNorm, Dropout, Linear, LayerNorm.
SHAPED = dict(network_module="hypernetwork", hypernetwork_layer_structure="1, 2, 1",
              hypernetwork_activation_func="relu", hypernetwork_layer_norm=True, hypernetwork_use_dropout=True,
              hypernetwork_dropout_structure="0, 0.1, 0", learning_rate=1e-3)
DOCUMENTED = {"layer_structure": list, "activation_func": str, "is_layer_norm": bool,
              "weight_initialization": str, "activate_output": bool, "dropout_structure": list,
              "last_layer_dropout": bool, "use_dropout": bool, "optional_info": str, "name": str,
              "step": int, "sd_checkpoint": (str, type(None)), "sd_checkpoint_name": str}


def read_independently(path: str) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def expected_keys(width: int) -> dict[str, tuple]:
    """Key -> shape for structure 1, 2, 1 with relu, layer norm and hidden dropout."""
    return {"linear.0.weight": (2 * width, width), "linear.0.bias": (2 * width,),
            "linear.2.weight": (2 * width,), "linear.2.bias": (2 * width,),
            "linear.4.weight": (width, 2 * width), "linear.4.bias": (width,),
            "linear.5.weight": (width,), "linear.5.bias": (width,)}


def webui_forward(x: torch.Tensor, weights: dict, strength: float) -> torch.Tensor:
    """The WebUI module's forward for that structure, in eval mode: x + strength * mlp(x)."""
    h = F.linear(x, weights["linear.0.weight"], weights["linear.0.bias"])
    h = F.relu(h)
    h = F.layer_norm(h, h.shape[-1:], weights["linear.2.weight"], weights["linear.2.bias"])
    h = F.linear(h, weights["linear.4.weight"], weights["linear.4.bias"])
    h = F.layer_norm(h, h.shape[-1:], weights["linear.5.weight"], weights["linear.5.bias"])
    return x + h * strength


def hook_by_hand(unet: torch.nn.Module, layers: dict, strength: float) -> list:
    """Every attention's to_k / to_v input through the file's k / v module of its width."""
    handles = []
    for name, module in unet.named_modules():
        kind = name.rsplit(".", 1)[-1]
        if kind in ("to_k", "to_v") and module.in_features in layers:
            weights = layers[module.in_features][0 if kind == "to_k" else 1]
            handles.append(module.register_forward_pre_hook(
                lambda mod, args, w=weights: (webui_forward(args[0], w, strength),)))
    return handles


def captured_trainables(monkeypatch) -> list:
    made = []

    def create(config, bundle):
        made.append(registry.create_trainable(config, bundle))
        return made[-1]

    monkeypatch.setattr(loop, "create_trainable", create)
    return made


def weights_of(module: torch.nn.Module) -> dict:
    return {key: value.detach().clone() for key, value in module.state_dict().items()}


@pytest.mark.parametrize("family", FAMILIES)
def test_the_file_is_the_webuis_and_reproduces_the_trained_unet_output(family, small_root, tmp_path, monkeypatch):
    bundle = build_tiny_bundle(family)
    before = [weights_of(module) for module in bundle.modules()]
    made = captured_trainables(monkeypatch)
    config = quick_config(small_root, str(tmp_path), pretrained_model_name_or_path=f"tiny:{family}",
                          max_train_steps=2, train_batch_size=1, **SHAPED)
    result = train(config, bundle=bundle)
    assert os.path.basename(result.final_path) == "test.pt"

    content = read_independently(result.final_path)
    width = CONTEXT[family]
    assert [key for key in content if isinstance(key, int)] == [width]
    for field, kind in DOCUMENTED.items():
        assert isinstance(content[field], kind), field
    assert content["layer_structure"] == [1.0, 2.0, 1.0] and content["dropout_structure"] == [0.0, 0.1, 0.0]
    assert (content["activation_func"], content["is_layer_norm"], content["use_dropout"]) == ("relu", True, True)
    assert content["last_layer_dropout"] is True  # the WebUI's rule: the entry before the last is set
    assert (content["name"], content["step"], content["sd_checkpoint_name"]) == ("test", 2, f"tiny-{family}")
    pair = content[width]
    assert isinstance(pair, tuple) and len(pair) == 2
    for part in pair:
        assert {key: tuple(t.shape) for key, t in part.items()} == expected_keys(width)
        assert all(t.dtype == torch.float32 for t in part.values())

    # No model weight changed; nothing of ours stays on the model.
    for module, saved in zip(bundle.modules(), before):
        assert all(torch.equal(saved[key], value) for key, value in module.state_dict().items())
        assert not any(m._forward_pre_hooks for m in module.modules())

    # The file applied the WebUI's way gives the UNet output of the trained hypernetwork.
    trained = made[0].eval()
    generator = torch.Generator().manual_seed(3)
    size = 8
    latents = torch.randn(2, 4, size, size, generator=generator)
    timesteps = torch.tensor([100, 700])
    with torch.no_grad():
        conditioning = bundle.encode_prompts(["ltdemo, red ball", "a cat"])
        base = bundle.predict(latents, timesteps, conditioning)
        with trained.attached(bundle):
            ours = bundle.predict(latents, timesteps, conditioning)
        handles = hook_by_hand(bundle.denoiser(), {width: pair}, 1.0)
        try:
            theirs = bundle.predict(latents, timesteps, conditioning)
        finally:
            for handle in handles:
                handle.remove()
    assert (ours - theirs).norm() / theirs.norm() < 1e-5
    assert (ours - base).norm() / base.norm() > 1e-4  # the hypernetwork does something


def test_the_file_passes_the_webuis_own_checking_unpickler(small_root, tmp_path):
    """The WebUI reads .pt files only after its unpickler (modules/safe.py) found nothing but
    these globals in them, and refuses zip records it does not know."""
    allowed = {("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"),
               ("torch._utils", "_rebuild_parameter"), ("torch", "FloatStorage"), ("torch", "HalfStorage"),
               ("torch", "BFloat16Storage"), ("torch", "float32")}

    class Checking(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) not in allowed:
                raise pickle.UnpicklingError(f"{module}.{name} is not allowed")
            return collections.OrderedDict if name == "OrderedDict" else (lambda *args, **kwargs: None)

        def persistent_load(self, saved_id):
            assert saved_id[0] == "storage"
            return None

    result = train(quick_config(small_root, str(tmp_path), network_module="hypernetwork", max_train_steps=1))
    with open(result.final_path, "rb") as handle:
        data = handle.read()
    assert not data.startswith(b"PK")  # not the zip layout, whose new records the WebUI refuses
    stream = io.BytesIO(data)
    for _ in range(5):  # the original layout: magic, protocol, system info, the object, storage keys
        Checking(stream).load()


def test_the_loss_falls_on_the_demo_concept(small_root, tmp_path):
    """A hypernetwork only bends the keys and values, so on the random tiny model it learns
    less than a LoRA in the same steps; it must still learn the images, not the noise."""
    config = quick_config(small_root, str(tmp_path), network_module="hypernetwork", max_train_steps=16,
                          learning_rate=3e-2, hypernetwork_sizes="context, self")
    result = train(config)
    bundle = build_tiny_bundle()
    latents, prompts = encoded_examples(bundle, result.plan.training_set.examples)
    network = registry.network_from_file(result.final_path, bundle).eval()
    for seed, timesteps in ((1234, [100, 400, 700]), (98765, [30, 250, 520, 900])):  # noise the run never drew
        base = fixed_denoising_loss(bundle, latents, prompts, seed, timesteps)
        with network.attached(bundle):
            trained = fixed_denoising_loss(bundle, latents, prompts, seed, timesteps)
        assert trained < 0.985 * base, (seed, base, trained)


def _stop_at(step: int) -> Progress:
    progress = Progress()
    progress.sinks.append(lambda event: event.kind == STEP and event.label == "training" and event.done == step
                          and progress.commands.request_stop())
    return progress


def test_a_stopped_run_resumed_equals_the_uninterrupted_run(small_root, tmp_path):
    """Dropout draws random numbers in every step: they must continue as they would have."""
    settings = dict(max_train_steps=6, lr_scheduler="cosine", flip_aug=True, shuffle_caption=True, **SHAPED)
    whole = train(quick_config(small_root, str(tmp_path / "whole"), **settings))
    stopped = train(quick_config(small_root, str(tmp_path / "parts"), **settings), progress=_stop_at(3))
    assert stopped.stopped_early and stopped.final_path.endswith("test-step00000003.pt")
    state = str(tmp_path / "parts" / "test-step00000003-state")
    resumed = train(quick_config(small_root, str(tmp_path / "parts"), resume=state, **settings))
    expected, got = read_independently(whole.final_path), read_independently(resumed.final_path)
    for width in [key for key in expected if isinstance(key, int)]:
        for theirs, ours in zip(expected[width], got[width]):
            assert all(torch.equal(theirs[key], ours[key]) for key in theirs)
    assert resumed.losses == pytest.approx(whole.losses, abs=0, rel=0)
    other = train(quick_config(small_root, str(tmp_path / "other"), **{**settings, "seed": 8}))
    assert not torch.equal(read_independently(other.final_path)[64][0]["linear.0.weight"],
                           expected[64][0]["linear.0.weight"])


def test_webui_shaped_models_are_given_back_exactly_after_train_fail_and_stop(small_root, tmp_path):
    from test_webui_host import FailsAtStep, assert_same_state, model_state, settled_state
    from lib_trainer.hosts.ldm_bundle import LiveSDBundle
    from webui_models import webui_model

    for family in FAMILIES:
        model, _ = webui_model(family, tmp_path / family)
        before = settled_state(model)
        settings = dict(network_module="hypernetwork", hypernetwork_sizes="context, self",
                        gradient_checkpointing=True, max_train_steps=2)
        out = tmp_path / family
        result = train(quick_config(small_root, str(out / "done"), **settings), bundle=LiveSDBundle(model))
        assert result.steps == 2 and result.final_path.endswith(".pt")
        assert_same_state(before, model_state(model))
        with pytest.raises(RuntimeError, match="simulated failure"):
            train(quick_config(small_root, str(out / "failed"), **settings), bundle=FailsAtStep(model, 2))
        assert_same_state(before, model_state(model))
        assert (out / "failed" / "test-step00000001.pt").is_file()
        result = train(quick_config(small_root, str(out / "stopped"), **settings), bundle=LiveSDBundle(model),
                       progress=_stop_at(1))
        assert result.stopped_early
        assert_same_state(before, model_state(model))


def test_the_widths_follow_the_webuis_modules_choice():
    bundle = build_tiny_bundle("sdxl")
    config = quick_config("", "", network_module="hypernetwork")
    assert registry.create_trainable(config, bundle).widths == [96]
    both = registry.create_trainable(config.replace(hypernetwork_sizes="context, self"), bundle)
    assert both.widths == [96, 64]
    with pytest.raises(ConfigError, match="no attention of width 768"):
        registry.create_trainable(config.replace(hypernetwork_sizes="768"), bundle)


@pytest.mark.parametrize("changes, words", [
    ({"hypernetwork_layer_structure": "2, 2, 1"}, "hypernetwork_layer_structure='2, 2, 1'"),
    ({"hypernetwork_layer_structure": "1, x, 1"}, "write numbers"),
    ({"hypernetwork_use_dropout": True, "hypernetwork_dropout_structure": "0, 0.5"}, "one number per layer"),
    ({"hypernetwork_activation_func": "threshold"}, "hypernetwork_activation_func='threshold'"),
    ({"hypernetwork_sizes": "wide"}, "hypernetwork_sizes: 'wide'"),
    ({"network_weights": "x.safetensors"}, "a hypernetwork .pt"),
])
def test_bad_hypernetwork_options_name_the_option(changes, words, tmp_path):
    if "network_weights" in changes:
        (tmp_path / "x.safetensors").write_bytes(b"")
        changes = {"network_weights": str(tmp_path / "x.safetensors")}
    config = quick_config("", "", network_module="hypernetwork").replace(**changes)
    assert any(words in problem for problem in config.problems()), config.problems()


def test_network_weights_start_from_a_hypernetwork_file_of_the_same_shape(small_root, tmp_path):
    first = train(quick_config(small_root, str(tmp_path / "a"), max_train_steps=1, **SHAPED))
    again = quick_config(small_root, str(tmp_path / "b"), max_train_steps=1, network_weights=first.final_path,
                         learning_rate=0.0, **{k: v for k, v in SHAPED.items() if k != "learning_rate"})
    second = train(again)
    assert torch.equal(read_independently(first.final_path)[64][1]["linear.4.weight"],
                       read_independently(second.final_path)[64][1]["linear.4.weight"])
    with pytest.raises(InvalidInput, match="hypernetwork_layer_structure: the file has"):
        train(again.replace(hypernetwork_layer_structure="1, 3, 1"))


@pytest.mark.parametrize("content, words", [
    ({"string_to_param": {"*": torch.zeros(1, 4)}}, "textual-inversion embedding"),
    ({"layer_structure": [1, 2, 1]}, "no attention-width keys"),
    ({64: ("not weights", {})}, "width 64 does not hold"),
])
def test_files_that_are_not_hypernetworks_are_refused_clearly(content, words, tmp_path):
    path = tmp_path / "x.pt"
    torch.save(content, path)
    config = quick_config("", "", network_module="hypernetwork", network_weights=str(path))
    assert any(words in problem for problem in config.problems()), config.problems()


class Executes:
    def __reduce__(self):
        return (print, ("this ran",))


def test_a_file_with_code_in_it_is_not_run(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({64: ({"linear.0.weight": torch.zeros(1)}, {}), "x": Executes()}, path)
    config = quick_config("", "", network_module="hypernetwork", network_weights=str(path))
    assert any("weights-only loader" in problem for problem in config.problems())
    assert "this ran" not in capsys.readouterr().out


def test_the_ui_type_and_the_memory_estimate_cover_hypernetworks():
    from lib_trainer.train.memory import network_parameters

    assert registry.ui_network_types()["Hypernetwork"]["network_module"] == "hypernetwork"
    assert registry.ui_network_type_of({"network_module": "hypernetwork"}) == "Hypernetwork"
    bundle = build_tiny_bundle("sd1")
    for sizes in ("context", "context, self"):
        config = quick_config("", "", network_module="hypernetwork", hypernetwork_layer_norm=True,
                              hypernetwork_layer_structure="1, 1.5, 1", hypernetwork_sizes=sizes)
        trainable = registry.create_trainable(config, bundle)
        counted = network_parameters(bundle.target_layers(False), config)
        assert counted == sum(p.numel() for p in trainable.parameters())


def test_the_cli_takes_the_hypernetwork_options():
    import argparse

    from lib_trainer.cli_args import add_config_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    config = config_from_args(parser.parse_args(
        ["--network_module", "hypernetwork", "--hypernetwork_layer_structure", "1,2,1",
         "--hypernetwork_activation_func", "swish", "--hypernetwork_sizes", "768, 320"]))
    assert (config.network_module, config.hypernetwork_activation_func) == ("hypernetwork", "swish")
    assert config.hypernetwork_sizes == "768, 320"
