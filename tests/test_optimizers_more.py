"""sd-scripts' other optimizers (issue 14): schedule-free ones save their averaged weights,
dotted class paths reach their constructor with optimizer_args, bad names are explained,
CUDA-only ones are refused elsewhere, D-Adaptation builds, and a schedule-free run resumes."""
from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import load_file

from lib_trainer.config import TrainConfig
from lib_trainer.progress import Progress
from lib_trainer.train.optimizers import (OptimizerUnavailable, eval_weights, make_optimizer, optimizer_notes,
                                          optimizer_spec)

from conftest import quick_config, stop_at



def _stepped(name: str, steps: int = 8, **args):
    """An optimizer over one tensor, after `steps` steps of a fixed gradient pattern (RAdam's first few
    steps move nothing)."""
    parameter = torch.nn.Parameter(torch.linspace(-1.0, 1.0, 6))
    optimizer, _ = make_optimizer(name, [{"params": [parameter], "lr": 0.1}], 0.1, args, "cpu")
    for step in range(steps):
        parameter.grad = torch.linspace(0.5, -0.2, 6) * (step + 1)
        optimizer.step()
    return parameter, optimizer


# --- schedule-free: eval (x) weights inside the block, training (y) weights after ---

@pytest.mark.parametrize("name", ["AdamWScheduleFree", "RAdamScheduleFree", "SGDScheduleFree"])
def test_eval_weights_holds_the_average_and_gives_the_training_point_back(name):
    pytest.importorskip("schedulefree")
    parameter, optimizer = _stepped(name)
    y = parameter.detach().clone()
    with eval_weights(optimizer):
        x = parameter.detach().clone()
        assert optimizer.param_groups[0]["train_mode"] is False
        with eval_weights(optimizer):  # nested (a save while sampling): still x, no second switch
            assert torch.equal(parameter, x)
        assert torch.equal(parameter, x)
    assert optimizer.param_groups[0]["train_mode"] is True
    assert not torch.allclose(x, y, atol=1e-4)  # x really is another point
    assert torch.equal(parameter.detach(), y)  # exactly: a save never moves the training
    reference, reference_optimizer = _stepped(name)
    reference_optimizer.eval()  # the package's own switch gives the same x
    assert torch.equal(reference.detach(), x)


def test_eval_weights_changes_nothing_for_other_optimizers():
    parameter, optimizer = _stepped("AdamW")
    before = parameter.detach().clone()
    with eval_weights(optimizer):
        assert torch.equal(parameter, before)
    assert torch.equal(parameter, before)


def _schedule_free_config(root, out, **changes):
    return quick_config(root, str(out), optimizer_type="AdamWScheduleFree", learning_rate=5e-3,
                        optimizer_args=["warmup_steps=1"], lr_scheduler="constant", **changes)


@pytest.fixture(scope="module")
def schedule_free_run(small_root, tmp_path_factory):
    pytest.importorskip("schedulefree")
    out = tmp_path_factory.mktemp("schedule_free")
    config = _schedule_free_config(small_root, out, save_state_on_train_end=True)
    from lib_trainer.train.loop import train

    return config, train(config)


def test_schedule_free_run_saves_the_eval_weights(schedule_free_run):
    """The file holds x, what the optimizer's own eval() makes of the state's training point y
    and its z; the state keeps y (the weights were given back after the save)."""
    from lib_trainer.hosts import load_bundle
    from lib_trainer.networks.registry import create_trainable
    from lib_trainer.train.resume import read_state, state_dir_for

    schedulefree = pytest.importorskip("schedulefree")
    config, result = schedule_free_run
    state = read_state(state_dir_for(result.final_path))
    assert state.optimizer["param_groups"][0]["train_mode"] is True
    trainable = create_trainable(config, load_bundle(config.pretrained_model_name_or_path))
    trainable.load_state_dict(state.trainable)
    training_point = {key: value.clone() for key, value in trainable.file_state_dict(torch.float32).items()}
    groups = trainable.parameter_groups(config.effective_unet_lr(), config.effective_text_encoder_lr())
    optimizer = schedulefree.AdamWScheduleFree(groups, lr=config.learning_rate)
    optimizer.load_state_dict(state.optimizer)
    optimizer.eval()
    expected = trainable.file_state_dict(torch.float32)
    saved = load_file(result.final_path)
    weights = [key for key in expected if not key.endswith(".alpha")]
    moved = [key for key in weights if not torch.equal(expected[key], training_point[key])]
    assert len(moved) > len(weights) // 2  # x and y differ: the test can tell them apart
    for key in weights:
        torch.testing.assert_close(saved[key], expected[key], rtol=0, atol=1e-7)


def test_schedule_free_metadata_names_the_class_and_its_args(schedule_free_run):
    from safetensors import safe_open

    _, result = schedule_free_run
    with safe_open(result.final_path, "pt") as handle:
        metadata = handle.metadata()
    assert metadata["ss_optimizer"] == "schedulefree.AdamWScheduleFree(warmup_steps=1)"


def test_schedule_free_run_resumes_to_the_same_weights(small_root, schedule_free_run, tmp_path):
    from lib_trainer.train.loop import train

    _, whole = schedule_free_run
    stopped = train(_schedule_free_config(small_root, tmp_path), progress=stop_at(2))
    assert stopped.stopped_early and stopped.steps == 2
    resumed = train(_schedule_free_config(small_root, tmp_path, resume=os.path.join(tmp_path, "test-step00000002-state")))
    expected, got = load_file(whole.final_path), load_file(resumed.final_path)
    assert [key for key in expected if not torch.equal(expected[key], got[key])] == []


# --- any installed optimizer by its dotted path ---

def test_a_dotted_path_reaches_its_constructor_with_optimizer_args():
    config = TrainConfig().replace(optimizer_type="torch.optim.Adagrad", optimizer_args=["lr_decay=0.25",
                                                                                         "initial_accumulator_value=0.5"])
    assert config.problems() == []
    parameter = torch.nn.Parameter(torch.zeros(3))
    optimizer, text = make_optimizer(config.optimizer_type, [{"params": [parameter]}], 0.1,
                                     config.parsed_optimizer_args(), "cpu")
    assert type(optimizer) is torch.optim.Adagrad
    assert optimizer.defaults["lr_decay"] == 0.25 and optimizer.defaults["lr"] == 0.1
    assert torch.equal(optimizer.state[parameter]["sum"], torch.full((3,), 0.5))
    assert text == "torch.optim.Adagrad(lr_decay=0.25,initial_accumulator_value=0.5)"


def test_a_bare_torch_optim_name_is_torch_optims_class():
    assert optimizer_spec("RAdam").path == "torch.optim.RAdam"


def test_sd_scripts_names_match_in_any_case_as_there():
    assert optimizer_spec("adamwschedulefree").path == "schedulefree.AdamWScheduleFree"
    assert optimizer_spec("dadaptadam").path == "dadaptation.DAdaptAdam"
    assert TrainConfig().replace(optimizer_type="adamw8bit").problems() == []


def test_a_pytorch_optimizer_class_by_its_path():
    pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
    parameter, optimizer = _stepped("pytorch_optimizer.Lamb", weight_decay=0.5)
    assert type(optimizer) is pytorch_optimizer.Lamb and optimizer.defaults["weight_decay"] == 0.5


@pytest.mark.parametrize("name, message", [
    ("torch.optim.Adamm", "torch.optim has no class Adamm"),
    ("no_such_package.Optimizer", "the module no_such_package cannot be imported"),
    ("torch.optim.Optimizer.zero_grad", "cannot be imported"),
    ("Adamm", "'Adamm' is unknown; use one of AdamW"),
])
def test_bad_optimizer_names_say_what_is_wrong(name, message):
    problems = TrainConfig().replace(optimizer_type=name).problems()
    assert len(problems) == 1 and message in problems[0], problems


def test_dotted_names_pass_the_cli_and_the_ui_dropdown():
    import argparse

    from lib_trainer.cli_args import add_config_arguments, config_from_args
    from lib_trainer.ui.form import make_component, from_widget_value
    from lib_trainer.config import field_specs

    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    config = config_from_args(parser.parse_args(["--optimizer_type", "torch.optim.Adagrad"]))
    assert config.optimizer_type == "torch.optim.Adagrad"
    spec = field_specs()["optimizer_type"]
    dropdown = make_component(spec, "torch.optim.Adagrad")
    assert dropdown.allow_custom_value and "AdamWScheduleFree" in [str(c[0] if isinstance(c, tuple) else c)
                                                                    for c in dropdown.choices]
    assert from_widget_value(spec, "torch.optim.Adagrad") == "torch.optim.Adagrad"


# --- bitsandbytes names: CUDA only ---

@pytest.mark.parametrize("name", ["Lion8bit", "PagedAdamW8bit", "AdamW8bit"])
def test_bitsandbytes_optimizers_are_refused_off_cuda(name):
    with pytest.raises(OptimizerUnavailable, match="only on a CUDA GPU"):
        make_optimizer(name, [{"params": [torch.nn.Parameter(torch.zeros(1))]}], 1e-4, {}, "cpu")


# --- D-Adaptation ---

@pytest.mark.parametrize("name, attribute", [("DAdaptAdam", "DAdaptAdam"), ("DAdaptLion", "DAdaptLion"),
                                             ("DAdaptation", "DAdaptAdamPreprint"), ("DAdaptSGD", "DAdaptSGD")])
def test_dadaptation_optimizers_step(name, attribute):
    pytest.importorskip("dadaptation")
    start = torch.linspace(-1.0, 1.0, 6)
    parameter, optimizer = _stepped(name)
    assert type(optimizer).__name__ == attribute
    assert not torch.equal(parameter.detach(), start)


def test_dadaptation_warns_of_a_small_learning_rate_and_several_rates():
    notes = optimizer_notes("DAdaptAdam", [1e-4, 5e-5])
    assert any("usually 1.0" in note for note in notes) and any("only the first" in note for note in notes)
    assert optimizer_notes("DAdaptAdam", [1.0]) == [] and optimizer_notes("AdamW", [1e-4]) == []


def test_the_run_says_what_schedule_free_and_relative_step_do_with_the_schedule():
    from lib_trainer.train.optimizers import run_notes

    notes = run_notes(TrainConfig().replace(optimizer_type="AdamWScheduleFree", lr_scheduler="cosine"), [1e-4])
    assert any("keeps the learning rate constant" in note and "warmup_steps=N" in note for note in notes)
    assert run_notes(TrainConfig().replace(optimizer_type="AdamWScheduleFree", lr_scheduler="constant"), [1e-4]) == []
    notes = run_notes(TrainConfig().replace(optimizer_type="Adafactor", optimizer_args=["relative_step=True"]), [None])
    assert any("lr_scheduler adafactor is used" in note for note in notes)


def test_samples_are_made_with_the_eval_weights_and_only_when_due(tmp_path, monkeypatch):
    """SampleMaker enters the loop's weights context (eval_weights) around a round, and only for
    a round that is due: a step without samples never switches a schedule-free optimizer."""
    import contextlib

    from lib_trainer.hosts import load_bundle
    from lib_trainer.train.sampling import SampleMaker

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a ball --w 64 --h 64 --s 1\n", encoding="utf-8")
    config = TrainConfig().replace(sample_every_n_steps=2, sample_prompts=str(prompts), output_dir=str(tmp_path))
    entered, inside = [], []

    @contextlib.contextmanager
    def weights():
        entered.append(True)
        yield

    monkeypatch.setattr(SampleMaker, "_make_one", lambda self, *args: inside.append(len(entered)) or "x.png")
    maker = SampleMaker(config, load_bundle("tiny:sd1"), torch.nn.Linear(1, 1), torch.device("cpu"), Progress(),
                        weights=weights)
    maker.after_step(1)
    assert entered == [] and inside == []
    maker.after_step(2)
    assert entered == [True] and inside == [1]  # the image was made inside the context


def test_adamw_is_fused_unless_the_user_asks_for_foreach():
    parameter = torch.nn.Parameter(torch.zeros(3))
    optimizer, text = make_optimizer("AdamW", [{"params": [parameter]}], 1e-3, {}, "cpu")
    assert optimizer.defaults["fused"] is True and "fused=True" in text
    optimizer, text = make_optimizer("AdamW", [{"params": [parameter]}], 1e-3, {"foreach": True}, "cpu")
    assert optimizer.defaults["foreach"] is True and not optimizer.defaults["fused"]
