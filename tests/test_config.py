"""The training config: defaults, validation messages, config files and CLI precedence."""
from __future__ import annotations

import argparse
import json

import pytest

from lib_trainer.cli_args import add_config_arguments, config_from_args
from lib_trainer.config import ConfigError, TrainConfig
from lib_trainer.config_files import load_config_file, save_config


def parse(argv: list[str]) -> TrainConfig:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    return config_from_args(parser.parse_args(argv))


def test_defaults_are_valid():
    config = TrainConfig()
    assert config.problems() == []
    assert config.validate() is config
    assert config.resolution_wh() == (512, 512)


def test_unknown_key_suggests_the_right_name():
    with pytest.raises(ConfigError) as error:
        TrainConfig.from_dict({"network_dimm": 32, "netwrk_alpha": 16})
    message = str(error.value)
    assert "'network_dimm'" in message and "did you mean network_dim?" in message
    assert "'netwrk_alpha'" in message and "did you mean network_alpha?" in message


def test_unknown_key_without_close_match_is_still_reported():
    with pytest.raises(ConfigError, match="unknown option 'zzz_qqq'"):
        TrainConfig().replace(zzz_qqq=1)


def test_bad_values_are_all_listed():
    # "Adam" itself is torch.optim.Adam (sd-scripts takes a bare name from torch.optim)
    config = TrainConfig().replace(network_dim=0, optimizer_type="Adamm", resolution="abc", caption_dropout_rate=2)
    with pytest.raises(ConfigError) as error:
        config.validate()
    lines = str(error.value).splitlines()[1:]
    assert len(lines) == 4
    message = str(error.value)
    assert "network_dim=0 must be at least 1" in message
    assert "optimizer_type 'Adamm' is unknown; use one of AdamW" in message
    assert "resolution='abc'" in message and "512,768" in message
    assert "caption_dropout_rate=2.0 must be at most 1.0" in message


@pytest.mark.parametrize("changes, fragment", [
    ({"resolution": "500"}, "multiples of 8"),
    ({"resolution": "32"}, "at least 64"),
    ({"max_token_length": 100}, "max_token_length=100 is not one of: 75, 150, 225"),
    ({"min_bucket_reso": 1024, "max_bucket_reso": 512}, "min_bucket_reso must not be larger"),
    ({"random_crop": True}, "--no-cache_latents"),
    ({"output_name": "a/b"}, "cannot have on Windows or Linux"),
    ({"network_args": ["conv_dim"]}, "'conv_dim' must be written key=value"),
    ({"network_train_unet_only": True, "network_train_text_encoder_only": True}, "exclude each other"),
])
def test_specific_problems(changes, fragment):
    problems = TrainConfig().replace(**changes).problems()
    assert any(fragment in p for p in problems), problems


def test_values_of_the_wrong_kind_are_reported_when_read():
    with pytest.raises(ConfigError) as error:
        TrainConfig.from_dict({"network_dim": "many", "train_batch_size": 2.5, "shuffle_caption": "maybe"})
    message = str(error.value)
    assert "network_dim='many'" in message
    assert "train_batch_size=2.5: expected a whole number" in message
    assert "shuffle_caption='maybe': expected true or false" in message


def test_strings_from_files_are_converted():
    config = TrainConfig.from_dict({"network_dim": "32", "learning_rate": "5e-4", "shuffle_caption": "yes",
                                    "resolution": 768, "unet_lr": None})
    assert config.network_dim == 32
    assert config.learning_rate == 5e-4
    assert config.shuffle_caption is True
    assert config.resolution == "768" and config.resolution_wh() == (768, 768)
    assert config.unet_lr is None


def test_rectangular_resolution():
    assert TrainConfig().replace(resolution="512,768").resolution_wh() == (512, 768)


def changed_config() -> TrainConfig:
    return TrainConfig().replace(
        network_dim=32, network_alpha=16.0, unet_lr=2e-4, resolution="512,768", shuffle_caption=True,
        keep_tokens=1, network_args=["conv_dim=4", "conv_alpha=1"], optimizer_args=["weight_decay=0.1"],
        trigger_word='sks "quoted" \\ café', train_data_dir="C:\\data\\train", enable_bucket=False,
        lr_warmup_steps=0.1,
    )


@pytest.mark.parametrize("name", ["run.toml", "run.json"])
def test_round_trip(tmp_path, name):
    config = changed_config()
    path = str(tmp_path / name)
    save_config(config, path)
    loaded = TrainConfig.from_dict(load_config_file(path))
    assert loaded == config
    if name.endswith(".json"):
        assert json.loads(open(path, encoding="utf-8").read())["network_dim"] == 32


def test_toml_round_trip_leaves_unset_values_unset(tmp_path):
    path = str(tmp_path / "run.toml")
    save_config(TrainConfig(), path)
    text = open(path, encoding="utf-8").read()
    assert "unet_lr" not in text  # None: TOML has no null, the default applies again
    assert "network_dim = 16" in text
    assert TrainConfig.from_dict(load_config_file(path)) == TrainConfig()


def test_sd_scripts_style_toml_sections_are_flattened(tmp_path):
    path = tmp_path / "kohya.toml"
    path.write_text(
        '[model_arguments]\n'
        'pretrained_model_name_or_path = "/models/sd15"\n'
        'v_parameterization = false\n'
        '\n'
        '[network_arguments]\n'
        'network_dim = 64\n'
        'network_alpha = 32\n'
        'network_args = ["conv_dim=8", "conv_alpha=4"]\n'
        '\n'
        '[optimizer_arguments]\n'
        'optimizer_type = "Lion"\n'
        'learning_rate = 1e-4\n'
        'lr_scheduler = "cosine_with_restarts"\n'
        '\n'
        '[dataset_arguments]\n'
        'resolution = "768,768"\n'
        'train_batch_size = 4\n',
        encoding="utf-8",
    )
    values = load_config_file(str(path))
    assert values["network_dim"] == 64 and values["optimizer_type"] == "Lion"
    config = TrainConfig.from_dict(values).validate()
    assert config.pretrained_model_name_or_path == "/models/sd15"
    assert config.network_alpha == 32.0
    assert config.parsed_network_args() == {"conv_dim": "8", "conv_alpha": "4"}
    assert config.resolution_wh() == (768, 768)
    assert config.train_batch_size == 4


def test_missing_and_broken_config_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config_file(str(tmp_path / "nope.toml"))
    broken = tmp_path / "broken.toml"
    broken.write_text("network_dim = = 3\n", encoding="utf-8")
    with pytest.raises(ConfigError) as error:
        load_config_file(str(broken))
    assert str(broken) in str(error.value) and "not valid TOML" in str(error.value)


# --- command line ---

def test_cli_precedence_defaults_then_file_then_flags(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("network_dim = 8\nnetwork_alpha = 4.0\nlearning_rate = 3e-4\n", encoding="utf-8")
    config = parse(["--config", str(path), "--network_dim", "32"])
    assert config.network_dim == 32          # flag beats file
    assert config.network_alpha == 4.0       # file beats default
    assert config.learning_rate == 3e-4
    assert config.optimizer_type == "AdamW"  # untouched default
    assert parse([]) == TrainConfig()


def test_cli_flag_without_config_file():
    config = parse(["--network_dim", "4", "--unet_lr", "1e-3", "--resolution", "512,768",
                    "--max_token_length", "150"])
    assert (config.network_dim, config.unet_lr, config.resolution_wh(), config.max_token_length) == \
        (4, 1e-3, (512, 768), 150)


def test_cli_boolean_flags(tmp_path):
    assert parse(["--no-enable_bucket"]).enable_bucket is False
    assert parse(["--shuffle_caption"]).shuffle_caption is True
    path = tmp_path / "run.toml"
    path.write_text("enable_bucket = false\n", encoding="utf-8")
    assert parse(["--config", str(path), "--enable_bucket"]).enable_bucket is True


def test_cli_rejects_bad_choice(capsys):
    with pytest.raises(SystemExit):  # optimizer_type is open (module.Class paths): problems() checks it
        parse(["--lr_scheduler", "cosine_annealing"])
    assert "invalid choice" in capsys.readouterr().err


def test_network_args_parsed():
    config = parse(["--network_args", "conv_dim=4", "conv_alpha=2"])
    assert config.network_args == ["conv_dim=4", "conv_alpha=2"]
    assert config.parsed_network_args() == {"conv_dim": "4", "conv_alpha": "2"}


def test_optimizer_args_become_python_values():
    config = parse(["--optimizer_args", "weight_decay=0.1", "betas=(0.9,0.99)", "decouple=True", "mode=fast"])
    assert config.parsed_optimizer_args() == {"weight_decay": 0.1, "betas": (0.9, 0.99), "decouple": True,
                                              "mode": "fast"}
    assert isinstance(config.parsed_optimizer_args()["weight_decay"], float)


def test_key_value_list_from_a_string():
    config = TrainConfig.from_dict({"network_args": "conv_dim=4 conv_alpha=1"})
    assert config.parsed_network_args() == {"conv_dim": "4", "conv_alpha": "1"}


def test_toml_round_trip_of_awkward_text(tmp_path):
    path = str(tmp_path / "run.toml")
    for text in ["two\nlines\tand a tab", "ends with a backslash \\", "DEL \x7f inside", "emoji 🎨 and 日本語"]:
        config = TrainConfig().replace(training_comment=text)
        save_config(config, path)
        assert TrainConfig.from_dict(load_config_file(path)).training_comment == text


def test_sd_scripts_options_without_effect_load_with_a_note(tmp_path, capsys):
    import argparse

    from lib_trainer.cli_args import add_config_arguments, config_from_args

    path = tmp_path / "kohya.toml"
    path.write_text('[training]\nsdpa = true\nsave_model_as = "safetensors"\nnetwork_dim = 32\n')
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    config = config_from_args(parser.parse_args(["--config", str(path)]))
    assert config.network_dim == 32
    err = capsys.readouterr().err
    assert "sdpa ignored: PyTorch SDPA attention is always used" in err
    assert "save_model_as" not in err  # an option now (save_model_as = "safetensors")
