"""The UI's logic without a browser: the generated form, config import, presets, rendering."""
from __future__ import annotations

import json
import os
from dataclasses import fields

import gradio as gr
import pytest

from lib_trainer.config import TrainConfig
from lib_trainer.jobs import LocalTrainService, TrainQueue
from lib_trainer.config_import import read_config_file
from lib_trainer.ui.form import GROUP_TITLES, HIDDEN_GROUPS, ConfigForm
from lib_trainer.ui.live_view import LiveView
from lib_trainer.ui.presets import PRESETS, beginner_start
from lib_trainer.ui.render import message_html, queue_id, queue_label, queue_rows
from lib_trainer.ui.train_tab import TrainTab, dataset_summary


@pytest.fixture(scope="module")
def train_tab():
    service = LocalTrainService(TrainQueue(None))
    with gr.Blocks():
        tab = TrainTab(service, TrainConfig())
        tab.build()
        tab.wire()
    return tab


def test_every_config_option_has_exactly_one_field(train_tab):
    # ui=False: a command-line action (output_config), not a setting of a run
    options = {spec.name for spec in fields(TrainConfig)
               if spec.metadata["group"] != "meta" and spec.metadata.get("ui", True)}
    assert set(train_tab.form.components) == options
    assert "output_config" not in train_tab.form.components and "save_model_as" in train_tab.form.components


def test_export_for_sd_scripts_writes_the_form_as_an_sd_scripts_toml(train_tab, tmp_path):
    config = TrainConfig(output_dir=str(tmp_path), output_name="sls", conv_dim=4, trigger_word="sls")
    values = [update["value"] for update in train_tab.form.updates(config)]
    message = train_tab._export_config("", *values)
    text = (tmp_path / "sls-sd-scripts.toml").read_text()
    assert "sd-scripts config written to" in message and "trigger_word" in message  # the left-out note
    assert 'network_args = ["conv_dim=4"]' in text and '#   trigger_word = "sls"' in text


def test_form_values_round_trip_to_the_same_config(train_tab):
    form: ConfigForm = train_tab.form
    config = TrainConfig().replace(unet_lr=2e-4, optimizer_args=["weight_decay=0.1", "eps=1e-8"], max_token_length=150,
                                   shuffle_caption=True, resolution="512,768", network_dim=32)
    shown = [update["value"] for update in form.updates(config)]
    read, problems = form.read(shown)
    assert problems == [] and read == config
    shown[list(form.components).index("text_encoder_lr")] = ""  # empty optional number: not set
    assert form.read(shown)[0].text_encoder_lr is None


def test_form_reports_bad_values_by_name(train_tab):
    form = train_tab.form
    values = [update["value"] for update in form.updates(TrainConfig())]
    values[list(form.components).index("network_dim")] = 0
    values[list(form.components).index("resolution")] = "abc"
    config, problems = form.read(values)
    assert any("network_dim=0 must be at least 1" in p for p in problems)
    assert any("resolution" in p for p in problems)


def test_check_and_start_show_dataset_errors_in_the_page(train_tab, tmp_path):
    values = [update["value"] for update in train_tab.form.updates(TrainConfig(train_data_dir=str(tmp_path / "x")))]
    message, plan = train_tab._enqueue(True, *values)
    assert "lt-error" in message and "does not exist" in message
    assert train_tab.service.queue.snapshot() == []


def test_dataset_summary_shows_repeats_from_folder_names(small_root):
    text = dataset_summary(small_root)
    assert "10_ltdemo ball" in text and "4 images" in text and "10 repeats" in text
    assert "lt-error-text" in dataset_summary("/does/not/exist")


def test_presets_are_valid_and_touch_no_dataset_or_output(tmp_path):
    base = TrainConfig().replace(train_data_dir="d", output_dir="o", output_name="n", pretrained_model_name_or_path="m")
    for name in PRESETS:
        config = base.replace(**PRESETS[name])  # what choosing the preset in the form does
        assert config.problems() == [], name
        assert (config.train_data_dir, config.output_dir, config.output_name, config.pretrained_model_name_or_path) \
            == ("d", "o", "n", "m")


def test_form_starts_with_epochs_when_no_length_is_set():
    # Without either option a run would be kohya's 1600 steps; the form starts at 10 epochs,
    # and a config that sets a length keeps it.
    assert TrainConfig().max_train_epochs == 0
    assert beginner_start(TrainConfig()).max_train_epochs == 10
    assert beginner_start(TrainConfig().replace(max_train_steps=300)).max_train_epochs == 0
    assert beginner_start(TrainConfig().replace(max_train_epochs=4)).max_train_epochs == 4
    for name, settings in PRESETS.items():
        assert "max_train_steps" not in settings or settings.get("max_train_epochs"), name


def test_kohya_ss_gui_json_imports_with_notes(tmp_path):
    path = tmp_path / "kohya_ss.json"
    path.write_text(json.dumps({
        "LoRA_type": "Standard", "epoch": 4, "max_resolution": "768,768", "lr_warmup": 10, "optimizer": "Lion",
        "network_dim": 32, "network_alpha": 16, "xformers": "xformers", "max_train_steps": "",
        "unet_lr": 0.0002, "debug_dataset": False, "save_model_as": "safetensors"}))
    config, notes = read_config_file(str(path), TrainConfig())
    assert (config.max_train_epochs, config.resolution, config.lr_warmup_steps, config.optimizer_type) == \
        (4, "768", 0.1, "Lion")
    assert (config.network_dim, config.unet_lr, config.xformers, config.conv_dim) == (32, 2e-4, True, 0)
    assert any("debug_dataset" in note for note in notes)
    assert not any("save_model_as" in note for note in notes) and config.save_model_as == "safetensors"


def test_kohya_ss_gui_sample_prompts_text_becomes_a_prompt_file(tmp_path):
    path = tmp_path / "kohya_ss.json"
    text = "sks dog --n lowres --w 512 --h 768 --d 1\nsks dog, beach --s 20"
    path.write_text(json.dumps({"output_dir": str(tmp_path / "out"), "sample_every_n_steps": 100,
                                "sample_sampler": "euler_a", "sample_prompts": text}))
    config, notes = read_config_file(str(path), TrainConfig())
    assert config.sample_prompts == str(tmp_path / "out" / "sample" / "prompt.txt")
    assert (tmp_path / "out" / "sample" / "prompt.txt").read_text() == text + "\n"
    assert (config.sample_every_n_steps, config.sample_sampler) == (100, "euler_a")
    assert notes == [f"sample_prompts: the kohya_ss GUI's prompts were written to {config.sample_prompts}"]
    assert not any("sample_prompts" in p for p in config.problems())
    # Our own JSON and sd-scripts' TOML hold a path, which stays as it is.
    ours = tmp_path / "ours.json"
    ours.write_text(json.dumps({"sample_prompts": "prompts/dog.txt"}))
    assert read_config_file(str(ours), TrainConfig())[0].sample_prompts == "prompts/dog.txt"


def test_every_config_group_has_a_title():
    groups = {spec.metadata["group"] for spec in fields(TrainConfig)} - set(HIDDEN_GROUPS)
    assert groups <= set(GROUP_TITLES) and GROUP_TITLES["sampling"] == "Samples"


def test_sd_scripts_toml_with_sections_imports(tmp_path):
    path = tmp_path / "sd.toml"
    path.write_text('[network_arguments]\nnetwork_dim = 8\nnetwork_alpha = 4\n'
                    '[optimizer_arguments]\noptimizer_type = "AdamW"\nlearning_rate = 5e-4\n')
    config, notes = read_config_file(str(path), TrainConfig(train_data_dir="keep"))
    assert (config.network_dim, config.network_alpha, config.learning_rate, config.train_data_dir) == \
        (8, 4.0, 5e-4, "keep")
    assert notes == []


def test_messages_are_escaped_and_queue_labels_parse():
    assert "&lt;repeats&gt;" in message_html(errors=["<repeats>_<concept>"])
    service = LocalTrainService(TrainQueue(None))
    item = service.queue.add(TrainConfig(output_name="x", train_data_dir="/d/set"))
    assert queue_id(queue_label(item)) == item.id and queue_id("") is None
    assert queue_rows(service.queue.snapshot())[0][:3] == [item.id, "x", "set"]


def test_refresh_redraws_only_what_changed():
    service = LocalTrainService(TrainQueue(None))
    view = LiveView(service)
    first = view.refresh({}, None)
    versions = first[-1]
    unchanged = view.refresh(versions, None)
    assert all(update == gr.update() for update in unchanged[:-1])
    service.queue.add(TrainConfig(output_name="y"))
    changed = view.refresh(versions, None)
    assert changed[5] != gr.update() and changed[6]["choices"] == ["#1 y"]


def test_load_config_in_the_ui_maps_a_kohya_ss_gui_file_as_the_cli_does(train_tab):
    path = os.path.join(os.path.dirname(__file__), "data", "config_import", "kohya_ss_gui_lokr.json")
    values = [update["value"] for update in train_tab.form.updates(TrainConfig())]
    message, network_type, *updates = train_tab._load_config(path, *values)
    shown = dict(zip(train_tab.form.components, (update["value"] for update in updates)))
    assert (shown["network_module"], shown["network_args"], shown["max_train_epochs"]) == \
        ("lycoris.kohya", "algo=lokr preset=attn-mlp factor=6", 10)
    assert "out of scope here (2)" in message and "blocks_to_swap" in message
