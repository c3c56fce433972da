"""The WebUI host's bundle (`hosts/ldm_bundle.py`) on models shaped like the WebUI's
`shared.sd_model` (real ldm UNet/VAE layers, transformers CLIP, an OpenCLIP tower on
nn.MultiheadAttention; see webui_models.py), compared with the standalone diffusers host on
the same weights: same kohya names, same outputs with the same LoRA, and the borrowed model
given back exactly as it was."""
from __future__ import annotations

import pytest
import torch

from lib_trainer.hosts.diffusers_sd import DiffusersSDBundle
from lib_trainer.hosts.ldm_bundle import LiveSDBundle, UnsupportedModel, ldm_unet_config
from lib_trainer.networks.registry import create_network
from lib_trainer.train.loop import train
from webui_models import webui_model

FAMILIES = ["sd1", "sd2", "sdxl"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("webui_models")
    return {family: webui_model(family, folder) for family in FAMILIES}


def bundles(models, family):
    model, components = models[family]
    prediction = "v_prediction" if family == "sd2" else "epsilon"
    return LiveSDBundle(model, model_name="tiny"), DiffusersSDBundle(components, prediction_type=prediction)


def test_family_schedule_and_prediction_come_from_the_model(models):
    for family in FAMILIES:
        live, _ = bundles(models, family)
        assert live.family == family
        assert live.prediction_type == ("v_prediction" if family == "sd2" else "epsilon")
        assert live.alphas_cumprod.shape == (1000,)


def test_the_unet_layout_is_read_from_the_ldm_modules(models):
    model, components = models["sd1"]
    config = ldm_unet_config(model.model.diffusion_model)
    assert config["down_block_types"] == components.unet.config.down_block_types
    assert config["up_block_types"] == components.unet.config.up_block_types


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("include_conv,extra", [(False, {}), (True, {}), (True, dict(top_level=True, norms=True))])
def test_kohya_names_are_those_of_the_standalone_host(models, family, include_conv, extra):
    """The standalone host's names are checked against diffusers' loader and the real WebUI;
    the WebUI host must give every layer the same key (and, for LyCORIS' presets, the same
    kind of block; `extra`: the layers outside any block and the norm layers too)."""
    from lib_trainer.networks.presets import UNET_BLOCKS

    live, reference = bundles(models, family)
    live_names = [t.name for t in live.target_layers(include_conv, **extra)]
    reference_names = {t.name for t in reference.target_layers(include_conv, **extra)}
    assert len(live_names) == len(set(live_names))
    assert set(live_names) == reference_names
    kinds = {t.name: (t.is_conv3x3, t.is_norm, UNET_BLOCKS.get(t.block, t.block) if t.component == "unet" else "")
             for t in reference.target_layers(include_conv, **extra)}
    assert {t.name: (t.is_conv3x3, t.is_norm, UNET_BLOCKS.get(t.block, t.block) if t.component == "unet" else "")
            for t in live.target_layers(include_conv, **extra)} == kinds
    if extra:
        assert any(t.is_norm for t in live.target_layers(include_conv, **extra))


def _random_network(config_kwargs, targets, seed):
    from lib_trainer.config import TrainConfig

    network = create_network(TrainConfig(**config_kwargs), targets)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return network


@pytest.mark.parametrize("family", FAMILIES)
def test_the_same_lora_gives_the_same_outputs_in_both_hosts(models, family):
    """A LoCon trained on the WebUI's modules, saved and loaded into the standalone host's
    network, changes text conditioning and UNet output identically: the q/k/v of the fused
    OpenCLIP attention, the ldm ResBlocks and the sgm names all line up."""
    live, reference = bundles(models, family)
    settings = {"network_dim": 4, "network_alpha": 2, "conv_dim": 2, "conv_alpha": 1}
    ours = _random_network(settings, live.target_layers(True), seed=3)
    theirs = _random_network(settings, reference.target_layers(True), seed=99)
    assert theirs.load_file_state_dict(ours.file_state_dict()) == []
    prompts = ["a photo of sks dog", "a red car"]
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, 8, 8, generator=generator)
    timesteps = torch.tensor([10, 700])
    sizes = torch.tensor([[64, 64, 0, 0, 64, 64], [96, 80, 8, 0, 64, 64]])
    with torch.no_grad(), live.frozen_for_training(torch.device("cpu"), torch.float32):
        outputs = {}
        for name, bundle, network in (("live", live, ours), ("reference", reference, theirs)):
            with network.attached():
                conditioning = bundle.encode_prompts(prompts)
                outputs[name] = (conditioning, bundle.predict(latents, timesteps, conditioning, sizes))
        base = live.predict(latents, timesteps, live.encode_prompts(prompts), sizes)
    (live_cond, live_out), (ref_cond, ref_out) = outputs["live"], outputs["reference"]
    torch.testing.assert_close(live_cond.context, ref_cond.context, rtol=1e-4, atol=1e-5)
    if family == "sdxl":
        torch.testing.assert_close(live_cond.pooled, ref_cond.pooled, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(live_out, ref_out, rtol=1e-3, atol=1e-4)
    assert (live_out - base).abs().max() > 1e-3  # the LoRA did change the output


def test_unsupported_models_are_refused_with_the_reason(models):
    model, _ = models["sd1"]
    unet = model.model.diffusion_model
    unet.in_channels = 9
    try:
        with pytest.raises(UnsupportedModel, match="inpainting"):
            LiveSDBundle(model)
    finally:
        unet.in_channels = 4


def model_state(model: torch.nn.Module) -> dict:
    """Everything training may touch: weights (bit for bit), requires_grad, train/eval,
    placement, hooks and instance-level overrides."""
    return {
        "tensors": {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()},
        "requires_grad": {k: p.requires_grad for k, p in model.named_parameters()},
        "training": {k: m.training for k, m in model.named_modules()},
        "placement": {k: (v.device, v.dtype) for k, v in model.state_dict(keep_vars=True).items()},
        "hooks": {k: (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
                  for k, m in model.named_modules()},
        "overrides": {k: sorted(set(vars(m)) - {"training"}) for k, m in model.named_modules()},
    }


def settled_state(model: torch.nn.Module) -> dict:
    """`model_state` after one prompt encoding: transformers 5 installs its output-capturing
    hooks on a text encoder's first forward with hidden states, and keeps them (not ours to undo)."""
    with torch.no_grad():
        LiveSDBundle(model).encode_prompts(["warm up"])
    return model_state(model)


def assert_same_state(before: dict, after: dict) -> None:
    assert before["tensors"].keys() == after["tensors"].keys()
    for key, tensor in before["tensors"].items():
        assert torch.equal(tensor, after["tensors"][key]), key
    for part in ("requires_grad", "training", "placement", "hooks", "overrides"):
        assert before[part] == after[part], part


class FailsAtStep(LiveSDBundle):
    """The loaded model, failing inside the forward pass of one step (as a CUDA error would);
    a failing progress sink no longer ends a run (progress.py), so the failure comes from here."""

    def __init__(self, model, step: int) -> None:
        super().__init__(model)
        self.step, self.calls = step, 0

    def predict(self, *args, **kwargs):
        self.calls += 1
        if self.calls == self.step:
            raise RuntimeError("simulated failure")
        return super().predict(*args, **kwargs)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_borrowed_model_is_given_back_exactly_after_train_fail_and_stop(models, family, small_root, tmp_path):
    from conftest import quick_config
    from lib_trainer.progress import Progress

    model, _ = models[family]
    model.first_stage_model.train()  # an unusual state must come back too
    model.requires_grad_(True)
    before = settled_state(model)
    settings = dict(network_module="networks.lora", conv_dim=2, conv_alpha=1, gradient_checkpointing=True,
                    max_train_steps=3)

    result = train(quick_config(small_root, str(tmp_path / "done"), **settings), bundle=LiveSDBundle(model))
    assert result.steps == 3 and not result.stopped_early
    assert_same_state(before, model_state(model))

    with pytest.raises(RuntimeError, match="simulated failure"):
        train(quick_config(small_root, str(tmp_path / "failed"), **settings), bundle=FailsAtStep(model, 3))
    assert_same_state(before, model_state(model))
    assert (tmp_path / "failed" / "test-step00000002.safetensors").is_file()  # what was trained is kept

    progress = Progress()
    progress.sinks.append(lambda event: event.kind == "step" and event.label == "training"
                          and progress.commands.request_stop())
    result = train(quick_config(small_root, str(tmp_path / "stopped"), **settings), bundle=LiveSDBundle(model),
                   progress=progress)
    assert result.stopped_early and result.steps == 1
    assert_same_state(before, model_state(model))
    model.first_stage_model.eval()
    model.requires_grad_(False)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_layers_inside_sgm_checkpointed_blocks_get_gradients(tmp_path, checkpointing):
    """SDXL's config turns on sgm's own checkpointing, which differentiates only the block's
    own parameters: the host must route the blocks around it, or the LoRA inside learns nothing."""
    model, _ = webui_model("sdxl", tmp_path, use_checkpoint=True)
    live = LiveSDBundle(model)
    network = create_network(_config(), live.target_layers(False))
    live.set_gradient_checkpointing(checkpointing)
    latents, timesteps = torch.randn(1, 4, 8, 8), torch.tensor([500])
    with live.frozen_for_training(torch.device("cpu"), torch.float32), network.attached():
        live.predict(latents, timesteps, live.encode_prompts(["a dog"])).square().mean().backward()
    unet_ups = [a.up for a in network.adapters.values() if a.component == "unet"]
    assert all(up.grad is not None and up.grad.abs().sum() > 0 for up in unet_ups)


def test_without_the_host_the_sgm_checkpoint_drops_lora_gradients(tmp_path):
    """The failure the test above guards against, shown on the same model."""
    model, _ = webui_model("sdxl", tmp_path, use_checkpoint=True)
    live = LiveSDBundle(model)
    network = create_network(_config(), live.target_layers(False))
    model.requires_grad_(False)
    with network.attached():
        loss = live.predict(torch.randn(1, 4, 8, 8), torch.tensor([500]), live.encode_prompts(["a dog"])).sum()
        try:
            loss.backward()
        except RuntimeError as error:  # with frozen block weights it fails outright
            assert "does not require grad" in str(error)
            return
    inside = [a.up for name, a in network.adapters.items() if "transformer_blocks" in name]
    assert inside and all(up.grad is None for up in inside)


def _config():
    from lib_trainer.config import TrainConfig

    return TrainConfig(network_dim=4, network_alpha=4)
