"""sd-scripts' other schedules (issue 14), step by step against transformers' and diffusers' own
schedulers called as sd-scripts calls them; lr_scheduler_type classes; adafactor; resumption."""
from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import load_file

from lib_trainer.config import TrainConfig
from lib_trainer.train.schedulers import make_run_scheduler, warmup_steps

from conftest import quick_config, stop_at

transformers_optimization = pytest.importorskip("transformers.optimization")

TOTAL, LR = 40, 0.5


def _rates(scheduler_of, steps: int = TOTAL + 3) -> list[float]:
    """The lr of each step from `scheduler_of(optimizer)` on a plain SGD."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    scheduler = scheduler_of(optimizer)
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def _ours(**options):
    config = TrainConfig().replace(learning_rate=LR, **options)
    assert config.problems() == []
    warmup = warmup_steps(config.lr_warmup_steps, TOTAL)
    return _rates(lambda optimizer: make_run_scheduler(config, optimizer, TOTAL, warmup, False, False))


def _theirs(name: str, warmup: int, **kwargs):
    return _rates(lambda optimizer: transformers_optimization.get_scheduler(
        name, optimizer, num_warmup_steps=warmup, num_training_steps=TOTAL, scheduler_specific_kwargs=kwargs))


@pytest.mark.parametrize("warmup", [0, 6])
@pytest.mark.parametrize("cycles", [1, 3])
@pytest.mark.parametrize("ratio", [0.0, 0.2])
def test_cosine_with_min_lr_is_transformers(warmup, cycles, ratio):
    # sd-scripts: num_cycles / 2 waves, min_lr_rate = lr_scheduler_min_lr_ratio
    ours = _ours(lr_scheduler="cosine_with_min_lr", lr_warmup_steps=warmup, lr_scheduler_num_cycles=cycles,
                 lr_scheduler_min_lr_ratio=ratio)
    assert ours == pytest.approx(_theirs("cosine_with_min_lr", warmup, num_cycles=cycles / 2, min_lr_rate=ratio),
                                 rel=1e-12, abs=1e-15)
    assert min(ours[warmup:TOTAL + 1]) == pytest.approx(LR * ratio, abs=LR * 0.01) if cycles == 1 else True


@pytest.mark.parametrize("warmup_type, decay_type", [("linear", "cosine"), ("cosine", "linear"), ("1-sqrt", "1-sqrt")])
@pytest.mark.parametrize("warmup, decay, ratio", [(5, 10, 0.0), (0, 0.25, 0.1), (8, 20, 0.3)])
def test_warmup_stable_decay_is_transformers(warmup_type, decay_type, warmup, decay, ratio):
    args = [f"warmup_type={warmup_type}", f"decay_type={decay_type}"]
    ours = _ours(lr_scheduler="warmup_stable_decay", lr_warmup_steps=warmup, lr_decay_steps=decay,
                 lr_scheduler_min_lr_ratio=ratio, lr_scheduler_args=args)
    decay_steps = warmup_steps(decay, TOTAL)  # a fraction below 1, as lr_warmup_steps
    # stable steps: what the run leaves between warm-up and decay, as sd-scripts computes them
    theirs = _theirs("warmup_stable_decay", warmup, num_decay_steps=decay_steps, min_lr_ratio=ratio, num_cycles=0.5,
                     warmup_type=warmup_type, decay_type=decay_type)
    assert ours == pytest.approx(theirs, rel=1e-12, abs=1e-15)
    assert ours[warmup + 1] == LR  # the stable stretch


def test_piecewise_constant_is_diffusers():
    from diffusers.optimization import get_piecewise_constant_schedule

    rules = "1:10,0.1:20,0.01:30,0.005"
    ours = _ours(lr_scheduler="piecewise_constant", lr_scheduler_args=[f"step_rules={rules}"])
    assert ours == _rates(lambda optimizer: get_piecewise_constant_schedule(optimizer, rules))
    assert (ours[9], ours[10], ours[19], ours[20], ours[35]) == pytest.approx((LR, LR * 0.1, LR * 0.1, LR * 0.01,
                                                                               LR * 0.005))


@pytest.mark.parametrize("warmup, timescale", [(5, None), (0, 7), (4, 12)])
def test_inverse_sqrt_is_transformers(warmup, timescale):
    options = {} if timescale is None else {"lr_scheduler_timescale": timescale}
    ours = _ours(lr_scheduler="inverse_sqrt", lr_warmup_steps=warmup, **options)
    theirs = _rates(lambda optimizer: transformers_optimization.get_inverse_sqrt_schedule(optimizer, warmup, timescale))
    assert ours == pytest.approx(theirs, rel=1e-12)


@pytest.mark.parametrize("name, options", [("linear", {}), ("cosine", {}), ("constant_with_warmup", {}),
                                           ("cosine_with_restarts", {"lr_scheduler_num_cycles": 3}),
                                           ("polynomial", {"lr_scheduler_power": 2.0})])
def test_the_older_schedules_are_still_transformers(name, options):
    ours = _ours(lr_scheduler=name, lr_warmup_steps=4, **options)
    kwargs = {"num_cycles": options["lr_scheduler_num_cycles"]} if "lr_scheduler_num_cycles" in options else {}
    if name == "polynomial":
        kwargs = {"power": 2.0}
    assert ours == pytest.approx(_theirs(name, 4, **kwargs), rel=1e-9, abs=1e-15)


# --- a scheduler class of one's own (lr_scheduler_type) ---

class HalvingEveryThree(torch.optim.lr_scheduler.LambdaLR):
    """A class only this test knows: halves the rate every `every` steps."""

    def __init__(self, optimizer, every: int = 3, floor: float = 0.0):
        super().__init__(optimizer, lambda step: max(floor, 0.5 ** (step // every)))


@pytest.mark.parametrize("path", ["test_schedulers_more.HalvingEveryThree", "torch.optim.lr_scheduler.StepLR",
                                  "StepLR"])
def test_lr_scheduler_type_builds_the_class_with_its_args(path):
    args = ["every=3"] if "Halving" in path else ["step_size=3", "gamma=0.5"]
    ours = _ours(lr_scheduler="cosine", lr_scheduler_type=path, lr_scheduler_args=args)
    assert ours[:9] == pytest.approx([LR] * 3 + [LR / 2] * 3 + [LR / 4] * 3)


def test_a_custom_scheduler_round_trips_its_state():
    config = TrainConfig().replace(lr_scheduler_type="StepLR", lr_scheduler_args=["step_size=2", "gamma=0.1"])
    first = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = make_run_scheduler(config, first, TOTAL, 0, False, False)
    for _ in range(3):
        first.step()
        scheduler.step()
    second = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    again = make_run_scheduler(config, second, TOTAL, 0, False, False)
    second.load_state_dict(first.state_dict())
    again.load_state_dict(scheduler.state_dict())
    for _ in range(3):
        first.step(), second.step()
        scheduler.step(), again.step()
        assert second.param_groups[0]["lr"] == first.param_groups[0]["lr"]


@pytest.mark.parametrize("changes, message", [
    ({"lr_scheduler": "cosine_with_min_lr"}, "needs lr_scheduler_min_lr_ratio"),
    ({"lr_scheduler": "warmup_stable_decay"}, "needs lr_decay_steps"),
    ({"lr_scheduler": "warmup_stable_decay", "lr_decay_steps": 5, "lr_scheduler_args": ["decay_type=cubic"]},
     "decay_type='cubic' is not one of"),
    ({"lr_scheduler": "piecewise_constant"}, "needs lr_scheduler_args step_rules"),
    ({"lr_scheduler": "piecewise_constant", "lr_scheduler_args": ["step_rules=1:ten,0.1"]}, "factor:until_step"),
    ({"lr_scheduler_type": "StepLR", "lr_warmup_steps": 10}, "takes no warm-up"),
    ({"lr_scheduler_type": "torch.optim.lr_scheduler.NoSuch"}, "has no class NoSuch"),
    ({"lr_scheduler_type": "no_such_module.Scheduler"}, "cannot be imported"),
    ({"lr_scheduler": "adafactor"}, "relative_step=True"),
])
def test_bad_schedule_settings_say_what_to_change(changes, message):
    problems = TrainConfig().replace(**changes).problems()
    assert any(message in problem for problem in problems), problems


def test_adafactor_schedule_reports_adafactors_own_rate():
    from lib_trainer.train.optimizers import make_optimizer, uses_relative_step

    config = TrainConfig().replace(optimizer_type="Adafactor", optimizer_args=["relative_step=True"],
                                   lr_scheduler="adafactor", learning_rate=1e-3)
    assert config.problems() == []
    parameter = torch.nn.Parameter(torch.ones(4, 4))
    optimizer, _ = make_optimizer("Adafactor", [{"params": [parameter], "lr": 1e-3}], 1e-3,
                                  config.parsed_optimizer_args(), "cpu")
    relative = uses_relative_step(config.optimizer_type, config.parsed_optimizer_args())
    scheduler = make_run_scheduler(config, optimizer, TOTAL, 0, False, relative)
    assert type(scheduler) is transformers_optimization.AdafactorSchedule
    assert scheduler.get_last_lr() == [1e-3]  # the initial lr before any step, as sd-scripts passes it
    parameter.grad = torch.full((4, 4), 0.1)
    optimizer.step()
    scheduler.step()
    # relative step 1: min(1e-2, 1/sqrt(1)) times the weights' RMS (1)
    assert scheduler.get_last_lr()[0] == pytest.approx(1e-2)


def test_relative_step_metadata_is_kohyas():
    from lib_trainer.formats.metadata import optimizer_metadata

    config = TrainConfig().replace(optimizer_type="Adafactor", optimizer_args=["relative_step=True"],
                                   learning_rate=2e-4)
    assert optimizer_metadata(config)["ss_lr_scheduler"] == "adafactor:0.0002"
    assert optimizer_metadata(TrainConfig())["ss_lr_scheduler"] == "cosine"


# --- resuming a run on a new schedule ---

def test_a_resumed_run_on_a_class_schedule_equals_the_whole_run(small_root, tmp_path):
    """lr_scheduler_type's class: its own state_dict, not our factor's (the factor schedules'
    resumption is tests/test_resume.py's)."""
    from lib_trainer.train.loop import train

    schedule = {"lr_scheduler_type": "StepLR", "lr_scheduler_args": ["step_size=1", "gamma=0.5"]}
    whole = train(quick_config(small_root, str(tmp_path / "whole"), **schedule))
    stopped = train(quick_config(small_root, str(tmp_path / "part"), **schedule), progress=stop_at(2))
    assert stopped.stopped_early and stopped.steps == 2
    state = os.path.join(tmp_path, "part", "test-step00000002-state")
    resumed = train(quick_config(small_root, str(tmp_path / "part"), resume=state, **schedule))
    expected, got = load_file(whole.final_path), load_file(resumed.final_path)
    assert [key for key in expected if not torch.equal(expected[key], got[key])] == []
    assert resumed.losses == whole.losses
