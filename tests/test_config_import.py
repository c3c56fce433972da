"""Other tools' config files import the same way on the CLI (`--config`) as in the UI, and a
kohya_ss GUI "Standard" LoRA stays a LoRA."""
from __future__ import annotations

import argparse
import json

import pytest

from lib_trainer.cli_args import add_config_arguments, config_from_args
from lib_trainer.config import ConfigError, TrainConfig
from lib_trainer.config_files import load_config_data
from lib_trainer.config_import import KOHYA_SS_GUI, LORA_SCRIPTS, OURS, SD_SCRIPTS, config_format, read_config_file


def cli_config(path, *flags: str) -> TrainConfig:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    return config_from_args(parser.parse_args(["--config", str(path), *flags]))


def kohya_ss_gui_file(tmp_path, lora_type: str):
    """What the kohya_ss GUI saves for a LoRA: every field of its form, conv_dim included."""
    path = tmp_path / f"{lora_type.replace('/', '_')}.json"
    path.write_text(json.dumps({
        "LoRA_type": lora_type, "adaptive_noise_scale": 0, "additional_parameters": "", "bucket_reso_steps": 64,
        "caption_extension": ".txt", "clip_skip": 2, "color_aug": False, "conv_alpha": 4, "conv_dim": 8,
        "epoch": 4, "keep_tokens": "1", "learning_rate": 0.0001, "lr_scheduler": "cosine", "lr_warmup": 10,
        "max_resolution": "768,768", "max_train_steps": "", "mixed_precision": "fp16", "model_list": "custom",
        "network_alpha": 16, "network_dim": 32, "optimizer": "Lion", "output_name": "sls",
        "save_model_as": "safetensors", "seed": "1234", "text_encoder_lr": 5e-05, "unet_lr": 0.0001,
        "v2": False, "xformers": "xformers"}, sort_keys=True, indent=2))  # LoRA_type sorts before conv_dim
    return path


@pytest.mark.parametrize("lora_type, conv_dim", [("Standard", 0), ("LoCon", 8), ("Kohya LoCon", 8),
                                                 ("LyCORIS/LoCon", 8)])
def test_kohya_ss_gui_lora_type_decides_the_convolution_rank_on_the_cli_and_in_the_ui(
        tmp_path, capsys, lora_type, conv_dim):
    path = kohya_ss_gui_file(tmp_path, lora_type)
    config = cli_config(path)
    assert (config.conv_dim, config.network_dim, config.network_alpha) == (conv_dim, 32, 16.0)
    assert (config.max_train_epochs, config.resolution, config.lr_warmup_steps, config.optimizer_type,
            config.xformers, config.keep_tokens, config.seed) == (4, "768", 0.1, "Lion", True, 1, 1234)
    err = capsys.readouterr().err
    # adaptive_noise_scale 0 is the GUI's "off" and additional_parameters "" adds nothing: not listed
    assert f"note: {path}: not used here (1): model_list" in err
    assert read_config_file(str(path), TrainConfig())[0] == config


def test_the_cli_lists_what_an_sd_scripts_toml_sets_that_is_not_used_here(tmp_path, capsys):
    path = tmp_path / "sd-scripts.toml"
    path.write_text('[model_arguments]\npretrained_model_name_or_path = "/models/sd15.safetensors"\nv2 = false\n'
                    '[additional_network_arguments]\nnetwork_dim = 64\nnetwork_alpha = 32\n'
                    'network_module = "networks.lora"\n'
                    '[training_arguments]\ndebug_dataset = false\nwandb_api_key = "key"\n'
                    'save_model_as = "safetensors"\nmax_train_epochs = 3\n')
    config = cli_config(path, "--network_dim", "16")
    err = capsys.readouterr().err
    assert (config.network_dim, config.network_alpha, config.max_train_epochs) == (16, 32.0, 3)  # the flag wins
    assert f"note: {path}: not used here (2): debug_dataset, wandb_api_key" in err
    assert "save_model_as" not in err  # an option here
    ui_config, notes = read_config_file(str(path), TrainConfig())
    assert ui_config == config.replace(network_dim=64)
    assert "not used here (2): debug_dataset, wandb_api_key" in notes


def test_a_lora_scripts_toml_imports_on_the_cli_as_in_the_ui(tmp_path, capsys):
    path = tmp_path / "lora-scripts.toml"
    path.write_text('model_train_type = "sd-lora"\npretrained_model_name_or_path = "./sd-models/model.safetensors"\n'
                    'train_data_dir = "./train/aki"\nresolution = "512,768"\nenable_bucket = true\n'
                    'network_module = "networks.lora"\nnetwork_dim = 32\nnetwork_alpha = 32\n'
                    'optimizer_type = "AdamW8bit"\nlr_scheduler = "cosine_with_restarts"\n'
                    'lr_scheduler_num_cycles = 2\nmixed_precision = "fp16"\nsave_model_as = "safetensors"\n'
                    'enable_preview = false\nlog_with = "tensorboard"\n')
    config = cli_config(path)
    err = capsys.readouterr().err
    assert (config.train_data_dir, config.resolution_wh(), config.optimizer_type, config.lr_scheduler_num_cycles) \
        == ("./train/aki", (512, 768), "AdamW8bit", 2)
    assert "not used here (2): enable_preview, model_train_type" in err
    assert read_config_file(str(path), TrainConfig())[0] == config


def test_our_own_files_are_read_strictly_and_name_the_file(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("netwrk_dim = 8\n")
    with pytest.raises(ConfigError, match=rf"unknown option 'netwrk_dim' in {path} \(did you mean network_dim\?\)"):
        cli_config(path)
    with pytest.raises(ConfigError, match="unknown option 'netwrk_dim'"):
        read_config_file(str(path), TrainConfig())


def test_config_files_that_are_not_a_table_or_not_json_say_so(tmp_path):
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    with pytest.raises(ConfigError, match=r"list.json holds a list; a config file holds a table of options"):
        cli_config(listed)
    broken = tmp_path / "broken.json"
    broken.write_text('{\n  "network_dim": 8,\n  oops\n}')
    with pytest.raises(ConfigError, match=r"broken.json is not valid JSON: .* at line 3"):
        cli_config(broken)


def test_formats_are_told_apart_by_their_keys(tmp_path):
    cases = {"ours.toml": ("network_dim = 8\nconfig_version = 1\n", OURS),
             "hand.toml": ("network_dim = 8\n", OURS),
             "gui.json": ('{"LoRA_type": "Standard", "network_dim": 8}', KOHYA_SS_GUI),
             "ours.json": ('{"network_dim": 8}', OURS),
             "sections.toml": ("[training_arguments]\nnetwork_dim = 8\n", SD_SCRIPTS),
             "flat-ours.toml": ("v2 = false\nnetwork_dim = 8\n", OURS),  # our names only: read strictly
             "flat-sd.toml": ("v2 = false\ndebug_dataset = false\nnetwork_dim = 8\n", SD_SCRIPTS),
             "lora-scripts.toml": ('model_train_type = "sd-lora"\n', LORA_SCRIPTS)}
    for name, (text, kind) in cases.items():
        (tmp_path / name).write_text(text)
        assert config_format(name, load_config_data(str(tmp_path / name))) == kind, name
