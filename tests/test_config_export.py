"""The sd-scripts export (`train --export-sd-scripts-toml`, the UI's Export button): every key
is one of sd-scripts' train_network.py / sdxl_train_network.py arguments, in the type its
parser gives it (sd-scripts' read_config_from_file sets the TOML's values on its argument
namespace as written, without parsing them again), our own options are left out and listed
at the top, and LoRA settings sd-scripts takes as network_args go there.

lib_trainer/sd_scripts_args.txt is extracted from sd-scripts' own parsers
(tests/tools/sd_scripts_arguments.py says how to regenerate it)."""
from __future__ import annotations

import argparse
try:
    import tomllib  # Python 3.11+
except ImportError:  # Python 3.10
    import tomli as tomllib

import pytest

from lib_trainer.__main__ import main
from lib_trainer.config import TrainConfig
from lib_trainer.config_export import sd_scripts_toml
from lib_trainer.sd_scripts_args import sd_scripts_arguments

RUN = dict(pretrained_model_name_or_path="/models/sd15.safetensors", train_data_dir="/data/sls", output_dir="/out",
           output_name="sls", trigger_word="sls", network_dim=32, network_alpha=16, conv_dim=8, conv_alpha=4,
           rank_dropout=0.1, network_args=["algo=locon"], network_module="lycoris.kohya",
           text_encoder_lr=5e-5, unet_lr=1e-4, optimizer_args=["weight_decay=0.1"], lr_warmup_steps=10,
           max_train_epochs=6, save_every_n_epochs=2, seed=0, resume="/out/sls-000002-state",
           max_token_length=225, shuffle_caption=True, device="cuda")


def read_like_sd_scripts(text: str) -> argparse.Namespace:
    """What sd-scripts' read_config_from_file does with the file: sections merged, every key set
    on the namespace as written."""
    flat = {}
    for key, value in tomllib.loads(text).items():
        flat.update(value) if isinstance(value, dict) else flat.__setitem__(key, value)
    return argparse.Namespace(**flat)


def holds_kind(value, kind: str) -> bool:
    if kind.endswith("*"):
        return isinstance(value, list) and all(holds_kind(item, kind[:-1]) for item in value)
    return {"flag": lambda v: v is True, "int": lambda v: type(v) is int, "float": lambda v: type(v) is float,
            "str": lambda v: isinstance(v, str), "int_or_float": lambda v: type(v) in (int, float)}[kind](value)


def test_every_exported_key_is_an_sd_scripts_argument_of_its_type():
    text, _ = sd_scripts_toml(TrainConfig(**RUN))
    arguments = sd_scripts_arguments()
    for key, value in vars(read_like_sd_scripts(text)).items():
        assert key in arguments and arguments[key].for_networks, key
        assert holds_kind(value, arguments[key].kind), (key, value, arguments[key].kind)


def test_the_export_writes_sd_scripts_meaning():
    text, notes = sd_scripts_toml(TrainConfig(**RUN))
    args = read_like_sd_scripts(text)
    assert args.network_args == ["algo=locon", "conv_dim=8", "conv_alpha=4", "rank_dropout=0.1"]
    assert args.text_encoder_lr == [5e-5] and args.optimizer_args == ["weight_decay=0.1"]
    assert args.lr_warmup_steps == 10 and type(args.lr_warmup_steps) is int  # a float would be a fraction there
    assert args.seed == 0 and args.max_train_epochs == 6 and args.shuffle_caption is True
    assert args.max_token_length == 225 and args.save_every_n_epochs == 2
    # "not set" is left out, where sd-scripts' None is no 0: its counts divide by them
    for absent in ("save_every_n_steps", "max_train_steps", "sample_every_n_epochs", "save_last_n_epochs",
                   "v2", "vae", "conv_dim", "trigger_word", "device", "resume", "output_config"):
        assert not hasattr(args, absent), absent
    assert '#   trigger_word = "sls"' in text and '#   device = "cuda"' in text
    assert '#   resume = "/out/sls-000002-state"' in text  # ours is not accelerate's state folder
    assert any(note.startswith("left out (3)") and "trigger_word" in note for note in notes)
    assert not hasattr(read_like_sd_scripts(sd_scripts_toml(TrainConfig())[0]), "max_token_length")  # 75 = unset


def test_the_export_refuses_runs_sd_scripts_train_network_does_not_make():
    with pytest.raises(ValueError, match="train_network.py config, for LoRA-family networks"):
        sd_scripts_toml(TrainConfig(network_module="embedding"))


def test_the_cli_exports_after_reading_flags(tmp_path, capsys):
    target = tmp_path / "kohya.toml"
    assert main(["train", "--network_dim", "12", "--export-sd-scripts-toml", str(target)]) == 0
    assert tomllib.loads(target.read_text())["network_dim"] == 12
    assert f"sd-scripts config written to {target}" in capsys.readouterr().out
