"""Expected errors read as one message; bugs keep their traceback: the CLI, the job service and
the UI guard. And bf16 on a GPU without it is refused before the model loads."""
from __future__ import annotations

import logging

import pytest
import torch

import lib_trainer.hosts
import lib_trainer.train.loop
from lib_trainer.__main__ import main
from lib_trainer.config import TrainConfig
from lib_trainer.dataset.folders import DatasetError
from lib_trainer.errors import InvalidInput, UserError, is_expected
from lib_trainer.jobs import LocalTrainService, TrainQueue
from lib_trainer.train.loop import train
from lib_trainer.train.precision import check_precision


@pytest.fixture
def gpu_without_bf16(monkeypatch):
    """A CUDA machine whose GPU (a T4) has no bf16, and a model loader that must not be reached."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla T4")
    loads = []
    monkeypatch.setattr(lib_trainer.hosts, "load_bundle", lambda *args, **kwargs: loads.append(args))
    return loads


def test_bf16_on_a_gpu_without_it_is_refused_before_the_model_loads(gpu_without_bf16, tmp_path):
    config = TrainConfig().replace(device="cuda", mixed_precision="bf16", train_data_dir=str(tmp_path),
                                   output_dir=str(tmp_path / "out"))
    with pytest.raises(InvalidInput, match=r"mixed_precision=bf16: this GPU \(Tesla T4\) does not support bf16; "
                                           "use mixed_precision=fp16"):
        train(config)
    assert gpu_without_bf16 == []
    check_precision(torch.device("cpu"), "bf16")  # CPU autocast has bf16: allowed
    check_precision(torch.device("cuda"), "fp16")


def cli_train(capsys, *extra: str, tmp_path) -> tuple[int, str]:
    code = main(["train", "--train_data_dir", str(tmp_path), "--output_dir", str(tmp_path / "out"), *extra])
    return code, capsys.readouterr().err


def test_cli_shows_an_expected_error_as_its_message_and_the_traceback_with_debug(gpu_without_bf16, capsys, tmp_path):
    code, err = cli_train(capsys, "--device", "cuda", "--mixed_precision", "bf16", tmp_path=tmp_path)
    assert code == 1
    assert err.strip() == ("error: mixed_precision=bf16: this GPU (Tesla T4) does not support bf16; "
                           "use mixed_precision=fp16 (with loss scaling) or no")
    for argv in (["--debug", "train"], ["train", "--debug"]):
        code = main([*argv, "--train_data_dir", str(tmp_path), "--device", "cuda", "--mixed_precision", "bf16"])
        err = capsys.readouterr().err
        assert code == 1 and "Traceback (most recent call last)" in err and "check_precision" in err, argv
        assert err.rstrip().endswith("or no")


def test_cli_prints_the_traceback_of_an_unexpected_error(monkeypatch, capsys, tmp_path):
    def buggy_train(config, bundle=None, progress=None):
        return {}["plan"]  # a bug deep in training: a KeyError is not the user's to fix

    monkeypatch.setattr(lib_trainer.train.loop, "train", buggy_train)
    code, err = cli_train(capsys, tmp_path=tmp_path)
    assert code == 1
    assert "Traceback (most recent call last)" in err and "buggy_train" in err
    assert "error: KeyError: 'plan' (an unexpected error, probably a bug in lib_trainer" in err


def test_the_cli_config_error_names_the_key_without_a_traceback(capsys, tmp_path):
    (tmp_path / "run.toml").write_text("netwrk_dim = 8\n")
    code = main(["train", "--config", str(tmp_path / "run.toml")])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert f"error: Cannot read the training config:\n  - unknown option 'netwrk_dim' in {tmp_path / 'run.toml'} " \
           "(did you mean network_dim?)" in err


def run_failing_item(tmp_path, error: Exception):
    def trainer(config, progress):
        raise error

    service = LocalTrainService(TrainQueue(str(tmp_path / "queue.json")), trainer=trainer)
    service.enqueue(TrainConfig().replace(train_data_dir="/nowhere", output_name="x"), start=True)
    assert service.wait(30)
    item = service.queue.snapshot()[0]
    return item, service.state.view()


def test_the_service_shows_expected_errors_and_logs_bugs_with_their_traceback(tmp_path, caplog):
    caplog.set_level(logging.ERROR, logger="lib_trainer")
    item, view = run_failing_item(tmp_path, DatasetError("my_dataset: no <repeats>_<concept> folders"))
    assert (item.status, item.error, view.error) == ("failed", "my_dataset: no <repeats>_<concept> folders",
                                                     "my_dataset: no <repeats>_<concept> folders")
    assert caplog.records == []

    # a plain ValueError from Python or a library is a bug, not a user's mistake
    item, view = run_failing_item(tmp_path / "b", ValueError("too many values to unpack"))
    assert item.status == "failed" and item.error.startswith("ValueError: too many values to unpack (an unexpected")
    assert "Traceback (most recent call last)" in view.error and "in trainer" in view.error
    [record] = caplog.records
    assert "training 'x' failed with an unexpected error" in record.getMessage()
    assert "raise error" in record.getMessage()


def test_the_ui_guard_logs_only_bugs(caplog):
    from lib_trainer.ui.guard import shows_errors

    caplog.set_level(logging.ERROR, logger="lib_trainer")

    @shows_errors(1)
    def expected():
        raise InvalidInput("Enter a folder of pictures with .txt captions.")

    @shows_errors(1)
    def buggy():  # torch raises RuntimeError for a programming error like this one
        return torch.ones(2).view(3)

    assert "Enter a folder of pictures" in expected() and caplog.records == []
    html = buggy()
    assert "RuntimeError: shape &#x27;[3]&#x27; is invalid" in html and "unexpected" in html
    [record] = caplog.records
    assert "buggy failed" in record.getMessage() and "torch.ones(2).view(3)" in record.getMessage()


def test_which_errors_are_expected():
    class OutOfMemoryError(RuntimeError):
        pass

    assert all(is_expected(e) for e in (UserError("x"), DatasetError("x"), FileNotFoundError("x"),
                                         OSError(28, "No space left on device"), OutOfMemoryError("CUDA")))
    assert not any(is_expected(e) for e in (ValueError("x"), RuntimeError("x"), KeyError("x"), TypeError("x")))
