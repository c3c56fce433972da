"""sd-scripts' precision and memory options (issue 14): full_bf16 / full_fp16 keep the trained
weights in half precision, fp8_base is refused where there is no fp8, no_half_vae runs a
half-precision VAE in fp32 and gives it back, vae_batch_size encodes in batches of one bucket
with the same latents, and lowram / highvram are options, not ignored keys."""
from __future__ import annotations

import os

import pytest
import torch
from PIL import Image
from safetensors import safe_open

from lib_trainer.config import KOHYA_OPTIONS_WITHOUT_EFFECT, TrainConfig, without_kohya_only_options
from lib_trainer.dataset.buckets import Placement
from lib_trainer.dataset.folders import Concept, ImageItem
from lib_trainer.dataset.latent_cache import LatentCache, batches_by_bucket
from lib_trainer.dataset.training_set import Example
from lib_trainer.errors import InvalidInput
from lib_trainer.progress import Progress
from lib_trainer.train.precision import check_fp8, grad_scaler, trainable_dtype

from conftest import quick_config


# --- full_bf16 / full_fp16 ---

@pytest.fixture(scope="module")
def full_bf16_run(small_root, tmp_path_factory):
    from lib_trainer.train.loop import train

    out = tmp_path_factory.mktemp("full_bf16")
    config = quick_config(small_root, str(out), mixed_precision="bf16", full_bf16=True, max_train_steps=2,
                          save_state_on_train_end=True, vae_batch_size=3)
    return train(config)


def test_full_bf16_trains_the_weights_in_bf16(full_bf16_run):
    from lib_trainer.train.resume import read_state, state_dir_for

    state = read_state(state_dir_for(full_bf16_run.final_path))
    dtypes = {value.dtype for value in state.trainable.values() if value.is_floating_point()}
    assert dtypes == {torch.bfloat16}
    moments = {value.dtype for entry in state.optimizer["state"].values() for value in entry.values()
               if torch.is_tensor(value) and value.dim() > 0}
    assert moments == {torch.bfloat16}  # the optimizer's state follows its weights: the memory saved
    assert all(torch.isfinite(torch.tensor(loss)) for loss in full_bf16_run.losses)


def test_precision_options_are_in_the_metadata(full_bf16_run):
    with safe_open(full_bf16_run.final_path, "pt") as handle:
        metadata = handle.metadata()
        assert handle.get_tensor(next(iter(handle.keys()))).dtype == torch.float32  # save_precision=float
    assert (metadata["ss_full_bf16"], metadata["ss_full_fp16"], metadata["ss_fp8_base"]) == ("True", "False", "False")
    assert metadata["ss_vae_batch_size"] == "3" and metadata["ss_lowram"] == "False"


def test_full_precision_needs_the_matching_mixed_precision():
    problems = TrainConfig().replace(full_fp16=True, mixed_precision="bf16").problems()
    assert any("full_fp16 needs mixed_precision=fp16" in p for p in problems)
    problems = TrainConfig().replace(full_bf16=True).problems()
    assert any("full_bf16 needs mixed_precision=bf16" in p for p in problems)
    problems = TrainConfig().replace(full_fp16=True, full_bf16=True, mixed_precision="fp16").problems()
    assert any("exclude each other" in p for p in problems)
    assert trainable_dtype(True, False) is torch.float16 and trainable_dtype(False, False) is None


def test_full_fp16_unscales_fp16_gradients_that_torch_refuses():
    def unscaled(full_fp16: bool):
        parameter = torch.nn.Parameter(torch.ones(4, dtype=torch.float16))
        optimizer = torch.optim.SGD([parameter], lr=0.1)
        scaler = grad_scaler(torch.device("cpu"), "fp16", full_fp16)
        scaler.scale((parameter.float() * 2e-3).sum()).backward()  # 2e-3 x 2^16 fits fp16
        scaler.unscale_(optimizer)
        return parameter.grad

    with pytest.raises(ValueError, match="FP16 gradients"):
        unscaled(False)
    torch.testing.assert_close(unscaled(True), torch.full((4,), 2e-3, dtype=torch.float16))


# --- fp8_base ---

def test_fp8_base_is_refused_on_the_cpu_by_name():
    with pytest.raises(InvalidInput, match="this run is on cpu"):
        check_fp8(torch.device("cpu"))
    assert any("fp8_base needs mixed_precision" in p for p in TrainConfig().replace(fp8_base=True, mixed_precision="no").problems())


def test_a_fp8_base_run_on_the_cpu_stops_before_loading(small_root, tmp_path):
    from lib_trainer.train.loop import train

    with pytest.raises(InvalidInput, match="fp8_base needs a CUDA GPU"):
        train(quick_config(small_root, str(tmp_path), fp8_base=True, mixed_precision="bf16", device="cpu"))
    assert not os.path.exists(tmp_path / "test.safetensors")


def test_fp8_base_stores_an_owned_denoiser_in_fp8():
    from lib_trainer.hosts import load_bundle
    from lib_trainer.train.precision import FP8_DTYPE

    bundle = load_bundle("tiny:sd1")
    with bundle.frozen_for_training(torch.device("cpu"), torch.bfloat16, denoiser_dtype=FP8_DTYPE):
        assert {p.dtype for p in bundle.denoiser().parameters()} == {FP8_DTYPE}
        assert {p.dtype for p in bundle.text_encoders()[0].parameters()} == {torch.bfloat16}
        assert {p.dtype for p in bundle.vae().parameters()} == {torch.float32}
    # the dtype comes back (an owned model, like one cast to bf16, keeps the rounding)
    assert {p.dtype for p in bundle.denoiser().parameters()} == {torch.float32}


# --- no_half_vae ---

def test_no_half_vae_runs_a_borrowed_half_vae_in_fp32_and_gives_it_back():
    from lib_trainer.hosts import load_bundle

    bundle = load_bundle("tiny:sd1")
    bundle.owns_weights = False  # the WebUI's loaded model: held as it is...
    bundle.vae().half()
    with bundle.frozen_for_training(torch.device("cpu"), torch.float16):
        assert {p.dtype for p in bundle.vae().parameters()} == {torch.float16}
    with bundle.frozen_for_training(torch.device("cpu"), torch.float16, no_half_vae=True):
        assert {p.dtype for p in bundle.vae().parameters()} == {torch.float32}  # ...but its VAE with no_half_vae
        latents = bundle.encode_pixels(torch.zeros(1, 3, 64, 64))
        assert latents.dtype == torch.float32
    assert {p.dtype for p in bundle.vae().parameters()} == {torch.float16}


# --- vae_batch_size ---

def _examples(folder, mixed: bool) -> list[Example]:
    """Five pictures: all square (64 x 64), or (mixed) two of them wide (128 x 64), interleaved."""
    examples = []
    for index in range(5):
        size = (128, 64) if mixed and index % 2 else (64, 64)
        path = os.path.join(folder, f"{index}.png")
        Image.new("RGB", size, (40 * index, 200 - 30 * index, 90)).save(path)
        concept = Concept(str(folder), 1, "c", False)
        examples.append(Example(ImageItem(path, "c", concept, size, False), Placement(size, size), "c"))
    return examples


def _filled(encode, examples, flip_aug: bool, batch_size: int) -> tuple[LatentCache, list[int], int]:
    """The cache filled in batches; the images of each VAE call, and how often memory was released."""
    calls, released = [], []

    def counting(pixels):
        calls.append(pixels.shape[0])
        return encode(pixels)

    cache = LatentCache(counting, "vae", flip_aug, batch_size=batch_size, after_batch=lambda: released.append(1))
    torch.manual_seed(3)  # the VAE samples its latents: in one bucket, the same draws in either layout
    cache.fill(examples, Progress())
    return cache, calls, len(released)


def _same_latents(first: LatentCache, second: LatentCache, examples, flip_aug: bool, atol: float) -> None:
    for example in examples:
        for flip in ([False, True] if flip_aug else [False]):
            torch.testing.assert_close(first.get(example, flip), second.get(example, flip), rtol=0, atol=atol)


@pytest.mark.parametrize("flip_aug", [False, True])
def test_vae_batch_size_encodes_in_batches_with_the_same_latents(tmp_path, flip_aug):
    from lib_trainer.hosts import load_bundle

    bundle, examples = load_bundle("tiny:sd1"), _examples(tmp_path, mixed=False)
    one, one_calls, _ = _filled(bundle.encode_pixels, examples, flip_aug, 1)
    two, two_calls, released = _filled(bundle.encode_pixels, examples, flip_aug, 2)
    per_image = 2 if flip_aug else 1
    assert one_calls == [per_image] * 5 and two_calls == [2 * per_image, 2 * per_image, per_image]
    assert released == 3  # highvram off: CUDA memory released after each batch (the loop's hook)
    _same_latents(one, two, examples, flip_aug, atol=1e-5)  # a batched convolution rounds a little differently


def test_vae_batches_hold_one_bucket_each(tmp_path):
    from test_latent_cache import mean_colour_encoder

    examples = _examples(tmp_path, mixed=True)
    one, _, _ = _filled(mean_colour_encoder([]), examples, False, 1)
    two, calls, _ = _filled(mean_colour_encoder([]), examples, False, 2)
    assert calls == [2, 2, 1]  # squares 0 + 2, wides 1 + 3, then square 4
    _same_latents(one, two, examples, False, atol=0)


def test_batches_keep_one_bucket_each():
    placements = [Placement((64, 64), (64, 64)), Placement((128, 64), (128, 64))]
    items = [Example(None, placements[index % 2], str(index)) for index in range(7)]
    batches = [[e.caption for e in batch] for batch in batches_by_bucket(items, 3)]
    assert batches == [["0", "2", "4"], ["1", "3", "5"], ["6"]]


# --- lowram / highvram / no_half_vae are options now ---

def test_kohya_memory_flags_are_options_not_ignored_keys():
    for name in ("lowram", "highvram", "no_half_vae"):
        assert name not in KOHYA_OPTIONS_WITHOUT_EFFECT
    kept, notes = without_kohya_only_options({"lowram": True, "highvram": True, "no_half_vae": True})
    assert notes == [] and TrainConfig.from_dict(kept).highvram is True


def test_the_memory_estimate_counts_half_precision_weights_and_the_new_optimizers():
    from lib_trainer.train.memory import estimate_memory

    def network_gb(**changes) -> float:
        return estimate_memory(TrainConfig().replace(**changes), "sd1", 0, [], parameters=10**8).network_gb

    assert network_gb(full_bf16=True, mixed_precision="bf16") == pytest.approx(network_gb() / 2)
    assert network_gb(optimizer_type="SGDScheduleFree") < network_gb() < network_gb(optimizer_type="DAdaptAdam")


def test_full_fp16_with_adams_tiny_eps_is_said_before_and_after_the_nan():
    from lib_trainer.train.loop import _diverged_message
    from lib_trainer.train.optimizers import run_notes

    config = TrainConfig().replace(mixed_precision="fp16", full_fp16=True)
    assert any("eps=1e-4" in note for note in run_notes(config, [1e-4]))
    assert not any("eps=1e-4" in note for note in run_notes(config.replace(optimizer_args=["eps=1e-4"]), [1e-4]))
    assert "eps=1e-4" in _diverged_message(torch.tensor(float("nan")), 1, 1, [], config)


def test_full_fp16_trains_with_a_large_enough_eps(small_root, tmp_path):
    from lib_trainer.train.loop import train

    result = train(quick_config(small_root, str(tmp_path), mixed_precision="fp16", full_fp16=True, max_train_steps=2,
                                optimizer_args=["eps=1e-4"], save_state_on_train_end=True))
    from lib_trainer.train.resume import read_state, state_dir_for

    state = read_state(state_dir_for(result.final_path))
    assert {value.dtype for value in state.trainable.values() if value.is_floating_point()} == {torch.float16}
    assert all(torch.isfinite(torch.tensor(loss)) for loss in result.losses)
