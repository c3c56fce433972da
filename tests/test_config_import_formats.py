"""Each documented config format maps exactly (issue 14), from hand-written files in each
tool's layout (tests/data/config_import/, modelled on the tools' own example and test
configs): the kohya_ss GUI's JSON (its names, units, 0-means-off fields, LoRA types,
additional_parameters), the TOML the GUI writes for each run, lora-scripts' TOML and an
sd-scripts FLUX config whose DiT options are named as out of scope."""
from __future__ import annotations

import json
import os

import pytest

from lib_trainer.config import ConfigError, TrainConfig
from lib_trainer.config_import import our_name, read_config_file

DATA = os.path.join(os.path.dirname(__file__), "data", "config_import")


def not_ours(*keys: str) -> str:
    """The keys of a file that no option takes (other slices of issue 14 add options of these names)."""
    left = [key for key in keys if our_name(key) is None]
    return f"not used here ({len(left)}): " + ", ".join(left)


def imported(name: str, **base) -> tuple[dict, list[str]]:
    """(the options the file changes from the defaults, the notes)."""
    config, notes = read_config_file(os.path.join(DATA, name), TrainConfig(**base))
    defaults = TrainConfig()
    return {key: value for key, value in config.to_dict().items() if value != getattr(defaults, key)}, notes


def test_kohya_ss_gui_json_maps_exactly():
    changed, notes = imported("kohya_ss_gui_lokr.json")
    assert changed == {
        "pretrained_model_name_or_path": "./models/sdxl.safetensors", "train_data_dir": "./img",
        "output_dir": "./out", "output_name": "lokr-test", "clip_skip": 2, "shuffle_caption": True, "keep_tokens": 1,
        "caption_dropout_rate": 0.05, "max_token_length": 225, "max_bucket_reso": 2048, "bucket_no_upscale": True,
        "resolution": "1024",                                               # max_resolution "1024,1024"
        "network_module": "lycoris.kohya", "conv_dim": 4,                   # LoRA_type LyCORIS/LoKr
        "network_args": ["algo=lokr", "preset=attn-mlp", "factor=6"],     # defaults (use_tucker false...) left out
        "unet_lr": 1e-4, "network_train_unet_only": True,                   # text_encoder_lr 0 with unet_lr set
        "optimizer_type": "AdamW8bit", "optimizer_args": ["weight_decay=0.05", "betas=0.9,0.98"],
        "lr_warmup_steps": 0.05,                                            # lr_warmup 5 (%), lr_warmup_steps 0
        "lr_scheduler_type": "CosineAnnealingLR", "lr_scheduler_args": ["T_max=1000"],  # additional_parameters
        "max_train_epochs": 10,                                             # epoch, neither length option set
        "train_batch_size": 2, "mixed_precision": "bf16", "gradient_checkpointing": True,
        "save_every_n_epochs": 2, "save_last_n_epochs": 3, "metadata_author": "me", "logging_dir": "./logs",
        "log_prefix": "xl-lokr",                                            # from additional_parameters
        "sample_sampler": "euler_a",
        **({"multires_noise_iterations": 6} if our_name("multires_noise_iterations") else {})}  # Multires
    # 0 = off: seed 0 (the GUI: random) and min_snr_gamma, max_timestep... 0 stay ours; noise_offset is
    # off with noise_offset_type Multires; xformers "sdpa" is what is always used here
    assert not any(note.startswith("additional_parameters") for note in notes)  # every flag is ours
    assert not_ours("async_upload", "caption_dropout_every_n_epochs", "color_aug", "dataset_config",
                    "debiased_estimation_loss", "lr_scheduler_args", "model_list", "multires_noise_discount",
                    "multires_noise_iterations", "sdxl") in notes
    assert any(note.startswith("out of scope here (2)") and "blocks_to_swap (swaps transformer blocks" in note
               for note in notes)
    # the file is imported as written, and the check says what sd-scripts would refuse of it
    assert TrainConfig().replace(**changed).problems() == [
        "lr_scheduler_type CosineAnnealingLR takes no warm-up (as in sd-scripts): set lr_warmup_steps=0, or give the "
        "class its own warm-up in lr_scheduler_args"]


def gui(tmp_path, **fields) -> tuple[TrainConfig, list[str]]:
    path = tmp_path / "gui.json"
    path.write_text(json.dumps({"LoRA_type": "Standard", **fields}))
    return read_config_file(str(path), TrainConfig())


@pytest.mark.parametrize("lora_type, module, args, conv_dim", [
    ("Standard", "networks.lora", [], 0),
    ("Kohya LoCon", "networks.lora", [], 8),
    ("LoCon", "lycoris.kohya", ["algo=locon", "use_tucker=True"], 8),
    ("LyCORIS/LoHa", "lycoris.kohya", ["algo=loha", "use_tucker=True"], 8),
    ("LyCORIS/iA3", "lycoris.kohya", ["algo=ia3", "train_on_input=True"], 8),
    ("LyCORIS/Native Fine-Tuning", "lycoris.kohya", ["algo=full"], 0),
    ("LyCORIS/Diag-OFT", "lycoris.kohya", ["algo=diag-oft", "use_tucker=True", "constraint=0.5"], 8),
    ("LyCORIS/BOFT", "lycoris.kohya", ["algo=boft", "use_tucker=True"], 8),
    ("Kohya LoKr", "networks.lokr", ["use_tucker=True", "factor=4"], 8),
])
def test_every_kohya_ss_gui_lora_type_maps_to_its_module_and_network_args(tmp_path, lora_type, module, args,
                                                                           conv_dim):
    config, _ = gui(tmp_path, LoRA_type=lora_type, conv_dim=8, conv_alpha=4, use_tucker=True, factor=4,
                    train_on_input=True, constrain=0.5)
    assert (config.network_module, config.network_args, config.conv_dim) == (module, args, conv_dim)


@pytest.mark.parametrize("lora_type, words", [("LyCORIS/DyLoRA", "DyLoRA"), ("Kohya DyLoRA", "DyLoRA"),
                                              ("LoRA-FA", "LoRA-FA"), ("Flux1", "out of scope")])
def test_kohya_ss_gui_lora_types_not_trained_here_are_refused_with_why(tmp_path, lora_type, words):
    with pytest.raises(ConfigError, match=rf"LoRA_type='{lora_type}'.*{words}"):
        gui(tmp_path, LoRA_type=lora_type)


def test_a_kohya_ss_gui_flux_config_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="flux1_checkbox is on: this kohya_ss GUI config trains FLUX.1"):
        gui(tmp_path, flux1_checkbox=True)


def test_kohya_ss_gui_length_warmup_and_learning_rates_follow_the_gui(tmp_path):
    # max_train_steps set: the GUI passes it and ignores epoch
    config, _ = gui(tmp_path, epoch=4, max_train_steps=300, max_train_epochs=0)
    assert (config.max_train_epochs, config.max_train_steps) == (0, 300)
    # lr_warmup_steps above 0 wins over the percentage
    assert gui(tmp_path, lr_warmup=10, lr_warmup_steps=25)[0].lr_warmup_steps == 25
    # unet_lr 0 with a text encoder rate: the text encoder only; both set: both train
    config, _ = gui(tmp_path, unet_lr=0, text_encoder_lr=5e-5)
    assert (config.unet_lr, config.network_train_text_encoder_only, config.network_train_unet_only) == \
        (None, True, False)
    config, _ = gui(tmp_path, unet_lr=1e-4, text_encoder_lr=5e-5)
    assert not (config.network_train_unet_only or config.network_train_text_encoder_only)
    # Original noise offset: kept; a 0 seed or clip_skip is "not set"
    config, _ = gui(tmp_path, noise_offset_type="Original", noise_offset=0.1, seed=0, clip_skip=0)
    assert (config.noise_offset, config.seed, config.clip_skip) == (0.1, 42, 1)
    assert gui(tmp_path, noise_offset_type="Multires", noise_offset=0.1)[0].noise_offset == 0.0


def test_additional_parameters_are_read_as_our_flags_and_win(tmp_path):
    config, notes = gui(tmp_path, network_dim=8, additional_parameters='--network_dim 32 --shuffle_caption '
                        '--network_args "conv_dim=4" --sdpa --debug_dataset')
    assert (config.network_dim, config.shuffle_caption, config.network_args) == (32, True, ["conv_dim=4"])
    assert "additional_parameters not used here: --sdpa --debug_dataset" in notes


def test_the_guis_dynamo_backend_turns_compiling_on(tmp_path):
    config, _ = gui(tmp_path, dynamo_backend="inductor")
    assert (config.torch_compile, config.dynamo_backend) == (True, "inductor")
    config, _ = gui(tmp_path, dynamo_backend="no")
    assert (config.torch_compile, config.dynamo_backend) == (False, "inductor")


def test_the_toml_the_kohya_ss_gui_writes_for_a_run_maps_exactly():
    changed, notes = imported("kohya_ss_gui_run.toml")
    assert changed == {
        "pretrained_model_name_or_path": "./models/sd15.safetensors", "train_data_dir": "./img",
        "output_dir": "./out", "output_name": "run-test", "clip_skip": 2, "resolution": "512,512",
        "max_bucket_reso": 2048, "bucket_no_upscale": True, "network_args": ["conv_dim=8", "conv_alpha=4"],
        "unet_lr": 1e-4, "text_encoder_lr": 5e-5, "lr_warmup_steps": 12.0, "train_batch_size": 2,
        "max_train_steps": 240, "mixed_precision": "fp16", "save_every_n_epochs": 1, "xformers": True,
        "seed": 1234, "noise_offset": 0.05, "sample_prompts": "./out/sample/prompt.txt", "sample_sampler": "euler_a"}
    # sd-scripts reads neither epoch nor noise_offset_type: the GUI wrote max_train_steps from them
    # dynamo_backend "no": accelerate compiles nothing, as torch_compile's default here
    assert not_ours("caption_dropout_every_n_epochs", "epoch", "huber_c", "huber_schedule",
                    "loss_type", "lr_scheduler_args", "max_timestep", "noise_offset_type", "wandb_run_name") in notes


def test_lora_scripts_toml_maps_exactly():
    changed, notes = imported("lora_scripts_default.toml")
    assert changed == {
        "pretrained_model_name_or_path": "./sd-models/model.ckpt", "train_data_dir": "./train/input",
        "shuffle_caption": True, "network_dim": 32, "network_alpha": 16.0, "unet_lr": 1e-4, "text_encoder_lr": 1e-5,
        "optimizer_type": "AdamW8bit", "lr_scheduler": "cosine_with_restarts",
        "lr_scheduler_num_cycles": 3,                                       # lr_restart_cycles
        "resolution": "512,512", "max_train_epochs": 10, "xformers": True, "clip_skip": 2, "mixed_precision": "fp16",
        "sample_sampler": "euler_a", "sample_every_n_epochs": 1, "output_name": "output_name",
        "save_every_n_epochs": 1, "save_last_n_epochs": 499, "output_dir": "./output", "logging_dir": "./logs",
        "log_prefix": "output_name", "max_token_length": 225, "seed": 1337}
    assert notes == []  # lowram = false: an option here too, at its default


def test_sd_scripts_dit_options_are_named_out_of_scope():
    _, notes = imported("sd_scripts_flux.toml")
    [note] = [note for note in notes if note.startswith("out of scope here (6)")]
    assert "DiT / flow-matching scripts" in note and "timestep_sampling (FLUX's timestep sampling" in note
    assert "blocks_to_swap" in note and "t5xxl" in note
