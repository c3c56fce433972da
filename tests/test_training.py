"""End-to-end runs on the tiny model: the loss falls on the demo concept, runs repeat
exactly, stopping or failing keeps what was trained, a diverging run never overwrites a
good file, and the base model is left as it was."""
from __future__ import annotations

import json
import os

import pytest
import torch

from conftest import encoded_examples, quick_config
from lib_trainer.demo_data import make_demo_dataset
from lib_trainer.formats.lora_file import load_lora, read_metadata
from lib_trainer.hosts.tiny import build_tiny_bundle
from lib_trainer.networks.registry import create_network
from lib_trainer.progress import STEP, Progress
from denoising_score import fixed_denoising_loss
from lib_trainer.train.loop import TrainingDiverged, train


def test_loss_falls_on_the_demo_concept_also_for_unseen_noise(tmp_path):
    root = make_demo_dataset(str(tmp_path / "data"), count=8, size=64)
    config = quick_config(root, str(tmp_path / "out"), max_train_steps=0, max_train_epochs=3, network_dim=8,
                          network_alpha=8.0, lr_scheduler="cosine")
    result = train(config)
    assert result.steps == 8 * 10 * 3 // 2 and not result.stopped_early
    assert os.path.basename(result.final_path) == "test.safetensors"

    bundle = build_tiny_bundle()
    latents, prompts = encoded_examples(bundle, result.plan.training_set.examples)
    network = create_network(config, bundle.target_layers(False))
    assert network.load_file_state_dict(load_lora(result.final_path)) == []
    # Seeds and timesteps the run never drew: it learned the images, not the noise.
    for seed, timesteps in ((1234, [100, 400, 700]), (98765, [30, 250, 520, 900])):
        base = fixed_denoising_loss(bundle, latents, prompts, seed, timesteps)
        with network.attached():
            trained = fixed_denoising_loss(bundle, latents, prompts, seed, timesteps)
        assert trained < 0.85 * base, (seed, base, trained)


def test_same_seed_same_weights_other_seed_other_weights(small_root, tmp_path):
    files = []
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        config = quick_config(small_root, str(tmp_path / name), seed=seed, shuffle_caption=True, flip_aug=True)
        files.append(load_lora(train(config).final_path))
    assert files[0].keys() == files[1].keys()
    assert all(torch.equal(files[0][k], files[1][k]) for k in files[0])
    assert any(not torch.equal(files[0][k], files[2][k]) for k in files[0] if k.endswith("lora_up.weight"))


def stop_at(step: int, progress: Progress):
    def sink(event):
        if event.kind == STEP and event.label == "training" and event.done == step:
            progress.commands.request_stop()
    return sink


def test_stop_keeps_what_was_trained_and_does_not_take_the_final_name(small_root, tmp_path):
    config = quick_config(small_root, str(tmp_path), max_train_steps=10)
    progress = Progress()
    progress.sinks.append(stop_at(3, progress))
    result = train(config, progress=progress)
    assert result.stopped_early and result.steps == 3
    assert os.path.basename(result.final_path) == "test-step00000003.safetensors"
    assert not os.path.exists(tmp_path / "test.safetensors")
    metadata = read_metadata(result.final_path)
    assert metadata["ss_steps"] == "3" and "stopped early" in metadata["ss_training_comment"]
    tensors = load_lora(result.final_path)
    assert any(t.abs().sum() > 0 for k, t in tensors.items() if k.endswith("lora_up.weight"))


class ExplodingBundle:
    """Wraps a bundle; from `step` on, the model's prediction is NaN or an error is raised."""

    def __init__(self, bundle, step: int, failure: str):
        self.bundle, self.step, self.failure, self.calls = bundle, step, failure, 0

    def __getattr__(self, name):
        return getattr(self.bundle, name)

    def predict(self, *args):
        self.calls += 1
        output = self.bundle.predict(*args)
        if self.calls >= self.step:
            if self.failure == "nan":
                return output * float("nan")
            raise RuntimeError("simulated out of memory")
        return output


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_file(small_root, tmp_path):
    config = quick_config(small_root, str(tmp_path), max_train_steps=10, save_every_n_steps=2)
    good = tmp_path / "test.safetensors"
    good.write_bytes(b"previous good model")
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 5.*test-step00000004"):
        train(config, bundle=ExplodingBundle(build_tiny_bundle(), 5, "nan"))
    assert good.read_bytes() == b"previous good model"
    assert sorted(os.listdir(tmp_path)) == ["test-step00000002.safetensors", "test-step00000004.safetensors",
                                            "test.safetensors", "test.toml"]


def test_a_crash_saves_what_was_trained_then_reports_the_error(small_root, tmp_path):
    config = quick_config(small_root, str(tmp_path), max_train_steps=10)
    with pytest.raises(RuntimeError, match="simulated out of memory"):
        train(config, bundle=ExplodingBundle(build_tiny_bundle(), 4, "error"))
    assert read_metadata(str(tmp_path / "test-step00000003.safetensors"))["ss_steps"] == "3"


@pytest.mark.parametrize("mixed_precision, owns_weights", [("no", True), ("bf16", False)])
def test_base_model_is_left_as_it_was(small_root, tmp_path, mixed_precision, owns_weights):
    """A bundle that borrows its model (as the WebUI's does) is never cast down; one that owns
    it may be cast for speed, but comes back in its dtype either way."""
    bundle = build_tiny_bundle()
    bundle.owns_weights = owns_weights
    modules = (bundle.unet, *bundle.encoders, bundle.vae_model)
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in modules]
    flags = [{n: p.requires_grad for n, p in m.named_parameters()} for m in modules]
    modes = [m.training for m in modules]
    hooks = [[len(m._forward_hooks) for m in module.modules()] for module in modules]
    train(quick_config(small_root, str(tmp_path), mixed_precision=mixed_precision, gradient_checkpointing=True,
                       conv_dim=2), bundle=bundle)
    for module, state, flag, mode, hook_counts in zip(modules, before, flags, modes, hooks):
        assert all(torch.equal(state[k], v) for k, v in module.state_dict().items())
        assert {n: p.requires_grad for n, p in module.named_parameters()} == flag
        assert module.training == mode
        assert [len(m._forward_hooks) for m in module.modules()] == hook_counts, "every hook is removed"
    assert not bundle.unet.is_gradient_checkpointing


def test_metadata_describes_the_run(small_root, tmp_path):
    config = quick_config(small_root, str(tmp_path), max_train_steps=2, training_comment="hello")
    metadata = read_metadata(train(config).final_path)
    assert metadata["ss_network_module"] == "networks.lora"
    assert metadata["ss_network_dim"] == "4" and metadata["ss_network_alpha"] == "2.0"
    assert metadata["ss_base_model_version"] == "sd_v1"
    assert metadata["ss_num_train_images"] == "40"  # 4 images x 10 repeats
    assert metadata["ss_steps"] == "2" and metadata["ss_training_comment"] == "hello"
    assert json.loads(metadata["ss_dataset_dirs"]) == {"10_ltdemo ball": {"n_repeats": 10, "img_count": 4}}
    frequency = json.loads(metadata["ss_tag_frequency"])["10_ltdemo ball"]
    assert frequency["ltdemo"] == 4 and frequency["red ball"] == 4
    assert json.loads(metadata["ss_bucket_info"])["buckets"]["0"] == {"resolution": [64, 64], "count": 40}
    assert (tmp_path / "test.toml").read_text().count("network_dim = 4") == 1


def test_v_prediction_and_mixed_precision_train_with_fp32_network(small_root, tmp_path):
    config = quick_config(small_root, str(tmp_path), v_parameterization=True, mixed_precision="bf16",
                          min_snr_gamma=5.0, noise_offset=0.05, max_train_steps=3)
    result = train(config)
    metadata = read_metadata(result.final_path)
    assert metadata["ss_v_parameterization"] == "True" and metadata["ss_base_model_version"] == "sd_v1_v"
    assert all(torch.isfinite(t).all() for t in load_lora(result.final_path).values())


def test_latents_are_cached_on_disk_and_refreshed_when_an_image_changes(tmp_path):
    root = make_demo_dataset(str(tmp_path / "data"), count=3, size=64)
    statuses = []
    progress_sink = lambda event: statuses.append(event.text)  # noqa: E731

    def run():
        statuses.clear()
        train(quick_config(root, str(tmp_path / "out"), cache_latents_to_disk=True, max_train_steps=1),
              progress=Progress([progress_sink]))
        return [s for s in statuses if "reused" in s]

    assert run() == []
    folder = os.path.join(root, "10_ltdemo ball")
    assert len([n for n in os.listdir(folder) if n.endswith(".lib_trainer.npz")]) == 3
    assert run() == ["reused 3 cached latents from disk"]
    from PIL import Image

    Image.new("RGB", (64, 64), (0, 0, 0)).save(os.path.join(folder, "ball_00.png"))
    assert run() == ["reused 2 cached latents from disk"]


# Learning rates that move the tiny model in 3 steps; Prodigy estimates its own step size,
# starting from d0 (its default, 1e-6, needs far more steps to show).
OPTIMIZER_RUNS = {"AdamW": (1e-2, []), "Lion": (2e-3, []), "Prodigy": (1.0, ["d0=1e-3"]),
                  "Adafactor": (1e-2, []), "SGDNesterov": (1.0, [])}


@pytest.mark.parametrize("optimizer", OPTIMIZER_RUNS)
def test_each_optimizer_trains(small_root, tmp_path, optimizer):
    learning_rate, arguments = OPTIMIZER_RUNS[optimizer]
    config = quick_config(small_root, str(tmp_path), optimizer_type=optimizer, learning_rate=learning_rate,
                          optimizer_args=arguments, max_train_steps=3)
    result = train(config)
    metadata = read_metadata(result.final_path)
    assert optimizer.replace("Nesterov", "").lower() in metadata["ss_optimizer"].lower()
    weights = load_lora(result.final_path)
    # lora_up starts at zero: a step that changed nothing leaves it there
    assert all(weights[key].abs().max() > 0 for key in weights if key.endswith("lora_up.weight"))
    bundle = build_tiny_bundle()
    latents, prompts = encoded_examples(bundle, result.plan.training_set.examples)
    network = create_network(config, bundle.target_layers(False))
    assert network.load_file_state_dict(weights) == []
    base = fixed_denoising_loss(bundle, latents, prompts, 1234, [100, 400, 700])  # noise the run never drew
    with network.attached():
        trained = fixed_denoising_loss(bundle, latents, prompts, 1234, [100, 400, 700])
    assert trained < 0.998 * base, (base, trained)  # 0.974 (Adafactor) to 0.996 (Lion) measured


def test_adamw8bit_on_cpu_says_what_to_use(small_root, tmp_path):
    from lib_trainer.train.optimizers import OptimizerUnavailable

    with pytest.raises(OptimizerUnavailable, match="CUDA GPU.*AdamW"):
        train(quick_config(small_root, str(tmp_path), optimizer_type="AdamW8bit"))
