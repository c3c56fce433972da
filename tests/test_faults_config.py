"""Hostile config values and files (the fault suite, items 15-17): each is refused before any
model loads, with one message naming the file or option and what to do, and no traceback."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from conftest import quick_config
from lib_trainer.__main__ import main
from lib_trainer.config import ConfigError, TrainConfig
from lib_trainer.config_files import load_config_file
from lib_trainer.dataset.folders import DatasetError, scan_dataset
from lib_trainer.errors import InvalidInput
from lib_trainer.progress import silent
from lib_trainer.train.loop import train


@pytest.fixture
def lora_file(tmp_path):
    path = tmp_path / "good.safetensors"
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(2, 4), "lora_unet_x.lora_up.weight": torch.zeros(4, 2)},
              str(path))
    return path


def network_weights_problem(path) -> str:
    problems = [p for p in TrainConfig().replace(network_weights=str(path)).problems() if "network_weights" in p]
    assert len(problems) == 1, problems
    return problems[0]


def test_network_weights_are_checked_before_the_model_loads(tmp_path, lora_file):
    assert not [p for p in TrainConfig().replace(network_weights=str(lora_file)).problems() if "network_weights" in p]
    assert network_weights_problem(tmp_path / "missing.safetensors").endswith("no such file")
    assert "is a folder" in network_weights_problem(tmp_path)
    data = lora_file.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) - 20])
    assert "cut short" in network_weights_problem(tmp_path / "cut.safetensors")
    (tmp_path / "tiny.safetensors").write_bytes(b"\x01\x02")
    assert "too short" in network_weights_problem(tmp_path / "tiny.safetensors")
    for seed in range(20):  # random bytes of every kind: a message each time, never a crash
        generator = torch.Generator().manual_seed(seed)
        garbage = bytes(torch.randint(0, 256, (4096,), generator=generator, dtype=torch.uint8).tolist())
        (tmp_path / "random.safetensors").write_bytes(garbage)
        assert "not a .safetensors file" in network_weights_problem(tmp_path / "random.safetensors")
    save_file({}, str(tmp_path / "empty.safetensors"))
    assert "holds no tensors" in network_weights_problem(tmp_path / "empty.safetensors")
    save_file({"model.diffusion_model.x.weight": torch.zeros(2)}, str(tmp_path / "checkpoint.safetensors"))
    assert "not a LoRA file" in network_weights_problem(tmp_path / "checkpoint.safetensors")


def test_a_broken_network_weights_file_stops_the_command_with_a_message(small_root, tmp_path, capsys):
    (tmp_path / "zero.safetensors").write_bytes(bytes(1000))
    code = main(["train", "--train_data_dir", small_root, "--output_dir", str(tmp_path / "out"),
                 "--pretrained_model_name_or_path", "tiny:sd1", "--network_weights", str(tmp_path / "zero.safetensors")])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert "network_weights" in err and "zero.safetensors" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text, message", [
    ("learning_rate = nan\n", "learning_rate=nan: expected a finite number"),
    ("unet_lr = inf\n", "unet_lr=inf: expected a finite number"),
    ("seed = -1\n", "seed=-1 must be at least 0"),
    ("seed = 99999999999\n", "seed=99999999999 must be at most 4294967295"),
    ("netwrk_dim = 4\n", "unknown option 'netwrk_dim' in"),
])
def test_bad_config_values_name_the_key(tmp_path, text, message, capsys):
    path = tmp_path / "run.toml"
    path.write_text("config_version = 1\n" + text, encoding="utf-8")
    assert main(["train", "--config", str(path), "--save_config", str(tmp_path / "out.toml")]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "out.toml").exists()


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32", "utf-8-sig"])
def test_config_files_with_a_byte_order_mark_are_read(tmp_path, encoding):
    path = tmp_path / "run.toml"
    text = "network_dim = 12\noutput_name = \"猫\"\n"
    data = text.encode(encoding)
    if encoding == "utf-16-be":
        data = b"\xfe\xff" + data
    path.write_bytes(data)
    assert load_config_file(str(path)) == {"network_dim": 12, "output_name": "猫"}


def test_a_config_file_in_another_encoding_is_refused_clearly(tmp_path):
    path = tmp_path / "run.toml"
    path.write_bytes("output_name = \"鸣人\"\n".encode("gbk"))
    with pytest.raises(ConfigError, match=r"run.toml is not UTF-8 text .*save it as UTF-8"):
        load_config_file(str(path))


def test_sd_scripts_v2_must_agree_with_the_checkpoint(small_root, tmp_path):
    config = quick_config(small_root, str(tmp_path / "out"), v2=True)
    with pytest.raises(InvalidInput, match=r"v2 is set .* tiny:sd1 is SD1 .*remove v2"):
        train(config, progress=silent())
    assert TrainConfig().replace(v2=True).problems() == []  # accepted as sd-scripts spells it


def test_a_resolution_no_bucket_can_hold_is_refused():
    problems = TrainConfig().replace(resolution="1024", max_bucket_reso=512).problems()
    assert any("resolution=1024 is larger than max_bucket_reso=512: raise max_bucket_reso to at least 1024" in p
               for p in problems)
    assert not [p for p in TrainConfig().replace(resolution="1024", max_bucket_reso=512, bucket_no_upscale=True)
                .problems() if "max_bucket_reso" in p]


def test_a_folder_with_zero_repeats_gets_a_real_name_suggested(tmp_path):
    (tmp_path / "0_concept").mkdir()
    with pytest.raises(DatasetError, match=r"rename to e\.g\. 10_concept\)"):
        scan_dataset(str(tmp_path))


def test_a_run_stopped_before_its_first_step_prints_no_stray_none(small_root, tmp_path, capsys, monkeypatch):
    from lib_trainer.commands import train as train_command
    from lib_trainer.train.loop import TrainResult

    monkeypatch.setattr(train_command, "run_training", lambda config: (TrainResult(None, [], 0, True), 130))
    assert main(["train", "--train_data_dir", small_root, "--output_dir", str(tmp_path)]) == 130
    assert "None" not in capsys.readouterr().out
