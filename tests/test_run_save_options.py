"""kohya's run and save options (issue 14): save_last_n_epochs / save_last_n_steps delete older
files (never the final one) and say so, save_n_epoch_ratio sets the epoch interval,
save_model_as ckpt/pt writes a torch state dict that an independent loader takes, no_metadata
keeps kohya's minimum keys, metadata_* become modelspec keys, output_config writes and
exits, and the length kohya picks when neither length option is set is said and warned."""
from __future__ import annotations

import os
import zipfile

import pytest
import torch
from PIL import Image

from lib_trainer.__main__ import main
from lib_trainer.config import TrainConfig
from lib_trainer.config_files import load_config_file
from lib_trainer.dataset.plan import make_plan
from lib_trainer.formats.lora_file import read_metadata
from lib_trainer.formats.metadata import minimum_metadata
from lib_trainer.progress import Progress
from lib_trainer.train.checkpoints import epoch_save_interval
from lib_trainer.train.loop import train

from conftest import diffusers_pipeline, quick_config


@pytest.fixture(scope="module")
def one_step_root(tmp_path_factory) -> str:
    """Two pictures, one repeat: with batch 2, one step per epoch."""
    root = tmp_path_factory.mktemp("one_step")
    folder = root / "1_ball"
    folder.mkdir()
    for n, colour in enumerate(((200, 40, 40), (40, 40, 200))):
        Image.new("RGB", (64, 64), colour).save(folder / f"b{n}.png")
        (folder / f"b{n}.txt").write_text("ball", encoding="utf-8")
    return str(root)


def statuses(events: list) -> list[str]:
    return [event.text for event in events if event.kind == "status"]


@pytest.fixture(scope="module")
def pruned_ckpt_run(one_step_root, tmp_path_factory):
    """4 epochs of 1 step, a file every epoch and every step, kohya's pruning on, as .ckpt."""
    out = str(tmp_path_factory.mktemp("pruned"))
    events: list = []
    config = quick_config(one_step_root, out, max_train_steps=0, max_train_epochs=4, save_every_n_epochs=1,
                          save_last_n_epochs=2, save_every_n_steps=1, save_last_n_steps=1, save_model_as="ckpt")
    result = train(config, progress=Progress([events.append]))
    return config, result, out, events


def test_save_last_n_keeps_the_newest_files_and_never_the_final_one(pruned_ckpt_run):
    _, result, out, events = pruned_ckpt_run
    # epoch files at epochs 1-3 (4 is the final file): the last 2 stay. Step files at steps
    # 1-3: save_last_n_steps=1 keeps those of the last step before each save, as kohya counts.
    assert sorted(name for name in os.listdir(out) if name.endswith(".ckpt")) == [
        "test-000002.ckpt", "test-000003.ckpt", "test-step00000002.ckpt", "test-step00000003.ckpt", "test.ckpt"]
    removed = [text for text in statuses(events) if text.startswith("removed the older file")]
    assert len(removed) == 2
    assert any("test-000001.ckpt (save_last_n_epochs)" in text for text in removed)
    assert any("test-step00000001.ckpt (save_last_n_steps)" in text for text in removed)
    assert result.final_path == os.path.join(out, "test.ckpt")


def test_save_model_as_ckpt_is_a_state_dict_an_independent_loader_takes(pruned_ckpt_run):
    _, result, _, _ = pruned_ckpt_run
    # torch's non-zip layout: the WebUI 1.10's safe unpickler refuses the zip entries new torch adds
    assert not zipfile.is_zipfile(result.final_path)
    state = torch.load(result.final_path, map_location="cpu", weights_only=True)  # as the WebUI reads .ckpt
    assert any(key.endswith(".lora_down.weight") for key in state) and any(key.endswith(".alpha") for key in state)
    from lib_trainer.hosts.components import build_components

    pipeline = diffusers_pipeline(build_components("tiny-sd1", seed=3))
    pipeline.load_lora_weights(dict(state))  # diffusers places every kohya key or raises


def test_save_n_epoch_ratio_replaces_the_epoch_interval():
    config = TrainConfig(save_every_n_epochs=3, save_n_epoch_ratio=4)
    assert epoch_save_interval(config, 10) == 2  # floor(10 / 4)
    assert epoch_save_interval(config, 3) == 1  # never 0
    assert epoch_save_interval(TrainConfig(save_every_n_epochs=3), 10) == 3


def test_no_metadata_keeps_kohyas_minimum_and_modelspec(one_step_root, tmp_path):
    config = quick_config(one_step_root, str(tmp_path), max_train_steps=1, no_metadata=True,
                          metadata_title="Ball", metadata_author="me", metadata_license="CC0", metadata_tags="ball,red")
    metadata = read_metadata(train(config).final_path)
    assert not [key for key in metadata if key.startswith("ss_") and key not in (
        "ss_v2", "ss_base_model_version", "ss_network_module", "ss_network_dim", "ss_network_alpha",
        "ss_network_args")]
    assert metadata["ss_network_dim"] == "4" and metadata["ss_base_model_version"] == "sd_v1"
    assert (metadata["modelspec.title"], metadata["modelspec.author"], metadata["modelspec.license"],
            metadata["modelspec.tags"]) == ("Ball", "me", "CC0", "ball,red")
    assert "modelspec.description" not in metadata  # not given: left out, as sd-scripts leaves None out
    assert "sshs_model_hash" in metadata  # kohya adds its hashes whatever the metadata


def test_minimum_metadata_is_a_pure_filter():
    full = {"ss_v2": "False", "ss_network_dim": "4", "ss_seed": "1", "modelspec.title": "t", "lib_trainer_x": "1"}
    assert minimum_metadata(full) == {"ss_v2": "False", "ss_network_dim": "4", "modelspec.title": "t"}


def test_the_title_is_the_output_name_unless_metadata_title_is_given(one_step_root, tmp_path):
    metadata = read_metadata(train(quick_config(one_step_root, str(tmp_path), max_train_steps=1)).final_path)
    assert metadata["modelspec.title"] == "test" and "modelspec.author" not in metadata
    assert "ss_seed" in metadata  # the full metadata without no_metadata


@pytest.mark.parametrize("changes, problem", [
    (dict(save_model_as="pt", network_module="embedding"), "save_model_as=pt is for LoRA-family files"),
    (dict(save_last_n_epochs=2), "save_last_n_epochs keeps epoch files, but none are saved"),
    (dict(save_last_n_steps=10), "save_last_n_steps keeps step files, but none are saved"),
])
def test_save_options_that_cannot_work_are_refused(changes, problem):
    assert any(problem in text for text in TrainConfig(**changes).problems())


def test_neither_length_option_set_says_kohyas_default_and_warns_when_it_cuts_the_first_epoch(tmp_path):
    folder = tmp_path / "2000_big"  # 1 picture x 2000 repeats = 2000 steps per epoch at batch 1
    folder.mkdir()
    Image.new("RGB", (64, 64), (10, 200, 10)).save(folder / "a.png")
    base = dict(train_data_dir=str(tmp_path), resolution="64", min_bucket_reso=64, max_bucket_reso=128)
    summary = make_plan(TrainConfig(**base)).summary()
    assert "1600 steps: neither max_train_epochs nor max_train_steps is set, so kohya's default" in summary
    assert "ends the run after 1600 of the 2000 steps of the first epoch" in summary
    assert "set max_train_epochs (e.g. 1 = 2000 steps)" in summary
    assert "ends the run after" not in make_plan(TrainConfig(**base, max_train_epochs=1)).summary()
    assert "ends the run after" not in make_plan(TrainConfig(**base, max_train_steps=100)).summary()


def test_output_config_writes_the_config_file_and_trains_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--output_config", "--config_file", "run", "--network_dim", "12", "--output_dir", "out"]) == 0
    written = TrainConfig.from_dict(load_config_file(str(tmp_path / "run.toml")))  # sd-scripts adds .toml too
    assert written.network_dim == 12 and not written.output_config
    assert not (tmp_path / "out").exists()  # nothing trained
    assert main(["train", "--output_config", "--config_file", "run.toml"]) == 1
    assert "run.toml exists already" in capsys.readouterr().err
