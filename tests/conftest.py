"""Shared fixtures: the demo dataset drawn once, tiny-model configs, a helper to train."""
from __future__ import annotations

import os

import pytest
import torch

from lib_trainer.config import TrainConfig
from lib_trainer.demo_data import TRIGGER, make_demo_dataset
from lib_trainer.progress import STEP, Progress

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
# mixed_precision=auto means fp32 in tests, on every machine (and in the CLI runs they start):
# the same numbers everywhere; test_auto_precision unpins it.
os.environ.setdefault("LIB_TRAINER_AUTO_PRECISION", "no")


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> str:
    """12 pictures of the demo concept, 128 px, in `10_ltdemo ball`."""
    return make_demo_dataset(str(tmp_path_factory.mktemp("demo")))


@pytest.fixture(scope="session")
def small_root(tmp_path_factory) -> str:
    """4 small pictures of the demo concept (64 px): for quick runs."""
    return make_demo_dataset(str(tmp_path_factory.mktemp("small")), count=4, size=64)


def stop_at(step: int) -> Progress:
    """A Progress that asks the run to stop once training step `step` is done (a user's Stop)."""
    progress = Progress()

    def sink(event):
        if event.kind == STEP and event.label == "training" and event.done == step:
            progress.commands.request_stop()

    progress.sinks.append(sink)
    return progress


def quick_config(data_root: str, output_dir: str, **changes) -> TrainConfig:
    """A short run on the tiny model: max_train_steps steps (epochs unset, since set epochs
    would decide the length, as in kohya)."""
    settings = dict(
        pretrained_model_name_or_path="tiny:sd1", train_data_dir=data_root, output_dir=output_dir,
        output_name="test", trigger_word=TRIGGER, resolution="64", min_bucket_reso=64, max_bucket_reso=128,
        train_batch_size=2, max_train_epochs=0, max_train_steps=4, network_dim=4, network_alpha=2.0,
        learning_rate=1e-3, lr_scheduler="constant", save_precision="float", seed=7,
    )
    settings.update(changes)
    return TrainConfig().replace(**settings)


def diffusers_pipeline(parts):
    """diffusers' own pipeline over model components (ModelComponents): the independent
    reference for prompt encoding and LoRA loading."""
    from diffusers import DDPMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    common = dict(vae=parts.vae, unet=parts.unet, scheduler=DDPMScheduler(clip_sample=False),
                  text_encoder=parts.text_encoders[0], tokenizer=parts.tokenizers[0])
    if parts.family == "sdxl":
        return StableDiffusionXLPipeline(text_encoder_2=parts.text_encoders[1], tokenizer_2=parts.tokenizers[1],
                                         **common)
    return StableDiffusionPipeline(safety_checker=None, feature_extractor=None, requires_safety_checker=False,
                                   **common)


def peft_layer_count(parts) -> int:
    from peft.tuners.lora import LoraLayer

    return sum(isinstance(m, LoraLayer) for c in (parts.unet, *parts.text_encoders) for m in c.modules())


def encoded_examples(bundle, examples):
    """Latents (centre crop, no flip) and captions of training examples, for scoring a model."""
    from lib_trainer.dataset.pixels import crop_box, load_pixels

    pixels = torch.stack([load_pixels(e.path, e.placement, crop_box(e.placement, False, None), False)
                          for e in examples])
    with torch.no_grad():
        latents = bundle.encode_pixels(pixels)
    return latents, [e.caption for e in examples]


@pytest.fixture(scope="session")
def compare_run(tmp_path_factory, small_root) -> dict:
    """A run that saved after each of its 2 epochs (`cmp-000001`, then the final `cmp`), with
    its config beside the files: what the Compare sub-tab and the grids look at. Trained once."""
    from lib_trainer.train.loop import train

    folder = str(tmp_path_factory.mktemp("compare_run"))
    result = train(quick_config(small_root, folder, output_name="cmp", max_train_steps=0, max_train_epochs=2,
                                save_every_n_epochs=1, train_batch_size=8))
    return {"folder": folder, "run": "cmp", "final": result.final_path}
