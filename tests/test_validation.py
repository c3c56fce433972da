"""Validation loss: held-out images (validation_split) never trained on, scored with the same
noise and timesteps at every pass, no gradients, network in eval mode; its values go to
TensorBoard, the progress events, the Train tab's chart, the saved files' metadata and the
Compare sub-tab's file list."""
from __future__ import annotations

import os
import random

import pytest
import torch

from lib_trainer.config import TrainConfig
from lib_trainer.dataset.folders import Concept, ImageItem
from lib_trainer.dataset.captions import CaptionClock
from lib_trainer.dataset.plan import caption_options, make_plan
from lib_trainer.dataset.validation_split import concept_split, held_out
from lib_trainer.progress import VALIDATION, Progress

from conftest import quick_config


def _items(count: int, is_reg: bool = False) -> list[ImageItem]:
    concept = Concept("/d/10_x", 10, "x", is_reg)
    return [ImageItem(f"/d/10_x/{i:02d}.png", "x", concept, (64, 64), False) for i in range(count)]


def test_held_out_images_are_seeded_and_counted_as_sd_scripts():
    items = _items(8)
    chosen = held_out(items, 0.25, seed=3)
    assert len(chosen) == 2 and chosen == held_out(items, 0.25, seed=3)
    assert any(held_out(items, 0.25, seed=s) != chosen for s in range(4, 10))
    assert sorted(i.path for i in held_out(items, 1.0, seed=3)) == [i.path for i in items]
    assert held_out(items, 0.0, seed=3) == []
    config = TrainConfig(validation_split=0.5, seed=11)
    assert concept_split(items[0].concept, config) == (0.5, 11)
    assert concept_split(_items(1, is_reg=True)[0].concept, config) == (0.0, 11)  # reg images are never held out
    assert concept_split(items[0].concept, config.replace(validation_seed=5)) == (0.5, 5)


def test_held_out_images_are_in_no_training_batch(small_root, tmp_path):
    plan = make_plan(quick_config(small_root, str(tmp_path), validation_split=0.5, train_batch_size=1))
    held = {e.path for e in plan.validation_examples}
    assert len(held) == 2 and len(plan.training_set.examples) == 2
    for seed in range(10):
        trained = {e.path for batch in plan.training_set.epoch_batches(random.Random(seed)) for e in batch}
        assert trained and not trained & held
    assert "Validation: 2 images held out" in plan.summary()
    # The same seed holds out the same images; the validation batches are fixed.
    again = make_plan(quick_config(small_root, str(tmp_path), validation_split=0.5, train_batch_size=1))
    assert [[e.path for e in b] for b in again.validation_batches] == \
        [[e.path for e in b] for b in plan.validation_batches]


def test_a_whole_subset_held_out_by_the_dataset_config(small_root, tmp_path):
    folder = os.path.join(small_root, os.listdir(small_root)[0])
    other = tmp_path / "other"
    other.mkdir()
    from PIL import Image

    for index in range(2):
        Image.new("RGB", (64, 64), (index * 90, 20, 20)).save(other / f"o{index}.png")
    toml = tmp_path / "d.toml"
    toml.write_text(f'[[datasets]]\n  [[datasets.subsets]]\n  image_dir = "{folder}"\n'
                    f'  [[datasets.subsets]]\n  image_dir = "{other}"\n  validation_split = 1.0\n')
    plan = make_plan(quick_config("", str(tmp_path), dataset_config=str(toml)))
    assert {os.path.dirname(e.path) for e in plan.validation_examples} == {str(other)}
    assert {os.path.dirname(e.path) for e in plan.training_set.examples} == {folder}


def test_validation_loss_is_fixed_for_fixed_weights_and_in_eval_mode(small_root, tmp_path):
    from lib_trainer.hosts import load_bundle
    from lib_trainer.networks.registry import create_trainable
    from lib_trainer.train import loop
    from lib_trainer.train.validation import Validator

    # network_dropout: in train mode two forward passes would differ
    config = quick_config(small_root, str(tmp_path), validation_split=0.5, network_dropout=0.5)
    bundle = load_bundle(config.pretrained_model_name_or_path, False, 1, "")
    plan = make_plan(config, bundle.count_tokens)
    trainable = create_trainable(config, bundle)
    device = torch.device("cpu")
    with bundle.frozen_for_training(device, torch.float32), trainable.attached(bundle):
        trainable.train()
        latents = loop._latent_source(config, bundle, plan, device, Progress())
        prompts = loop._prompt_source(config, bundle, plan, caption_options(config), False, device, Progress(),
                                      CaptionClock())
        validator = Validator(config, bundle, plan, trainable, latents, prompts, bundle.alphas_cumprod, device,
                              Progress())
        first = validator.loss()
        torch.rand(100)  # the global generator moves, as training moves it
        assert validator.loss() == first and trainable.training  # train mode is given back
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for parameter in trainable.parameters():
                parameter.add_(0.2 * torch.randn(parameter.shape, generator=generator))
        changed = validator.loss()
        assert changed != first
        assert validator.loss() == changed  # dropout is off while validating

        # every batch is scored at sd-scripts' four fixed timesteps, whatever the generators hold
        from lib_trainer.train import noise, validation
        drawn, real = [], noise.sample_timesteps

        def recorded(*args, **kwargs):
            drawn.append(real(*args, **kwargs).tolist())
            return torch.tensor(drawn[-1])

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(noise, "sample_timesteps", recorded)
            validator.loss()
        assert sorted({t for batch in drawn for t in batch}) == [200, 400, 600, 800]
        assert len(drawn) == 4 * len(validator.batches)
        assert validation.validation_timesteps(config.replace(min_timestep=100, max_timestep=900)) == \
            [260, 420, 580, 740]  # numpy.linspace(100, 900, 6, dtype=int)[1:-1], sd-scripts' choice


class _FakeValidatorPlan:
    validation_batches = [["a"], ["b"], ["c"]]


def test_validation_runs_at_the_asked_steps_and_epochs():
    from lib_trainer.train.validation import Validator

    def passes(**changes):
        events = []
        config = TrainConfig().replace(**changes)
        validator = Validator(config, None, _FakeValidatorPlan, None, None, None, None, None,
                              Progress([lambda e: events.append(e) if e.kind == VALIDATION else None]))
        validator.loss = lambda: float(len(events))
        for step in range(1, 13):  # three epochs of four steps
            validator.after_step(step)
            if step % 4 == 0:
                validator.after_epoch(step // 4, step)
        validator.at_end(12)
        return [e.done for e in events], validator

    assert passes()[0] == [4, 8, 12]  # sd-scripts' default: after every epoch
    assert passes(validate_every_n_steps=5, validate_every_n_epochs=2)[0] == [5, 8, 10, 12]
    steps, validator = passes(validate_every_n_steps=3, validate_every_n_epochs=100)
    assert steps == [3, 6, 9, 12] and validator.latest == 3.0  # the end's pass is the step-12 one
    assert len(Validator(TrainConfig(max_validation_steps=2), None, _FakeValidatorPlan, *[None] * 6).batches) == 2


@pytest.fixture(scope="module")
def validated_run(tmp_path_factory, small_root):
    """Two of the four pictures held out; validation every 2 steps of 4, files every 2 steps,
    TensorBoard logs."""
    from lib_trainer.train.loop import train
    from lib_trainer.train.tensorboard import TensorBoardSink

    folder = str(tmp_path_factory.mktemp("validated"))
    config = quick_config(small_root, folder, output_name="val", validation_split=0.5, validate_every_n_steps=2,
                          validate_every_n_epochs=100, save_every_n_steps=2, logging_dir=os.path.join(folder, "logs"))
    events, board = [], TensorBoardSink(config.logging_dir)
    progress = Progress([board, lambda e: events.append(e)])
    result = train(config, progress=progress)
    board.close()
    values = {e.done: e.info["validation_loss"] for e in events if e.kind == VALIDATION}
    return {"folder": folder, "result": result, "values": values, "events": events, "logs": board.log_dir}


def test_a_run_validates_at_the_asked_steps_and_the_loss_moves(validated_run):
    values = validated_run["values"]
    assert sorted(values) == [2, 4]
    assert values[2] != values[4]


def test_saved_files_carry_the_latest_validation_loss(validated_run):
    from lib_trainer.formats.lora_file import read_metadata

    saved = validated_run["result"].saved
    assert [os.path.basename(p) for p in saved] == ["val-step00000002.safetensors", "val.safetensors"]
    step_two, final = (read_metadata(p) for p in saved)
    assert float(step_two["ss_validation_loss"]) == pytest.approx(validated_run["values"][2], rel=1e-5)
    assert float(final["ss_validation_loss"]) == pytest.approx(validated_run["values"][4], rel=1e-5)
    assert (final["ss_num_validation_images"], final["ss_validation_split"], final["ss_validate_every_n_steps"]) == \
        ("2", "0.5", "2")


def test_tensorboard_gets_loss_validation(validated_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = EventAccumulator(validated_run["logs"])
    board.Reload()
    scalars = board.Scalars("loss/validation")
    assert [s.step for s in scalars] == [2, 4]
    assert scalars[0].value == pytest.approx(validated_run["values"][2], rel=1e-5)


def test_compare_file_list_shows_the_validation_loss(validated_run):
    from lib_trainer.compare.runs import saved_files
    from lib_trainer.ui.compare_tab import file_choices

    files = saved_files(validated_run["folder"])
    labels = list(file_choices(files))
    value = validated_run["values"][2]
    assert any(label.startswith("val step 2") and f"val loss {value:.4f}" in label for label in labels), labels
    assert all(saved.validation_loss is not None for saved in files)


def test_live_view_plots_the_validation_loss(validated_run):
    from lib_trainer.jobs.state import RunState
    from lib_trainer.ui.render import loss_frame

    state = RunState()
    state.begin(1, "val")
    for event in validated_run["events"]:
        state(event)
    view = state.view()
    frame = loss_frame(view)
    validation = frame[frame.series == "validation"]
    assert list(validation.step) == [2, 4]
    assert list(validation.loss) == pytest.approx([validated_run["values"][2], validated_run["values"][4]])
    assert set(frame.series) == {"loss", "average", "validation"}
    assert f"validation loss {validated_run['values'][4]:.4f}" in view.progress_text()


def test_validation_options_in_the_form():
    import gradio as gr

    from lib_trainer.ui.form import GROUP_TITLES, ConfigForm

    form = ConfigForm()
    with gr.Blocks():
        form.build_expert(TrainConfig())
    names = ("dataset_config", "validation_split", "validation_seed", "validate_every_n_steps",
             "validate_every_n_epochs", "max_validation_steps")
    assert set(names) <= set(form.components) and GROUP_TITLES["validation"] == "Validation loss"
    assert [form.specs[n].metadata["group"] for n in names] == ["dataset"] + ["validation"] * 5
    values = [update["value"] for update in form.updates(TrainConfig())]
    index = {name: position for position, name in enumerate(form.components)}
    assert values[index["validation_seed"]] == ""  # not set: the run's seed
    values[index["validation_seed"]], values[index["validation_split"]] = "7", 0.2
    config, problems = form.read(values)
    assert problems == [] and (config.validation_seed, config.validation_split) == (7, 0.2)
