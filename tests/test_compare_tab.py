"""The Compare sub-tab's logic without a browser: listing runs, pre-filling from their
metadata, the weights field, making a grid on the tiny model, cells, Keep as best, and
errors shown as messages."""
from __future__ import annotations

import os
import shutil

import gradio as gr
import pytest

from lib_trainer.compare.grid import BASE_LABEL, read_grid_record
from lib_trainer.compare.keep import keep_as_best
from lib_trainer.compare.runs import read_saved_file
from lib_trainer.config import TrainConfig
from lib_trainer.errors import InvalidInput
from lib_trainer.formats.lora_file import read_metadata
from lib_trainer.jobs import LocalTrainService, TrainQueue
from lib_trainer.ui.compare_tab import CompareTab


@pytest.fixture
def run_folder(compare_run, tmp_path):
    """A copy of the trained run's folder, so a test may add files to it."""
    folder = tmp_path / "runs"
    shutil.copytree(compare_run["folder"], folder)
    return str(folder)


@pytest.fixture
def tab():
    service = LocalTrainService(TrainQueue(None))
    with gr.Blocks():
        made = CompareTab(service, TrainConfig(output_dir="out", pretrained_model_name_or_path="tiny:sd1"))
        made.build()
        made.wire()
    return made


def start(tab, folder, chosen, weights="0.5,1", prompts="ltdemo, ball", **changes):
    """Make grid: (message, progress); the grid goes on in its thread."""
    values = dict(negative="", seed=3, steps=2, sampler="euler", cfg=5.0, width=64, height=64, model="tiny:sd1")
    values.update(changes)
    return tab.make_grid(folder, "cmp", chosen, weights, prompts, values["negative"], values["seed"],
                         values["steps"], values["sampler"], values["cfg"], values["width"], values["height"],
                         values["model"])


def finished(tab, shown=0):
    """What the page's poll shows once the grid's thread has ended."""
    tab.job.thread.join(300)
    return tab.poll(shown)


# --- listing and pre-filling -------------------------------------------------------------------
def test_refresh_lists_the_runs_and_their_files_in_epoch_order(tab, run_folder):
    message, run, files, keep_file = tab.refresh_runs(run_folder, None)
    assert message == "" and run["choices"] == ["cmp"] and run["value"] == "cmp"
    labels = files["choices"]
    assert labels[0] == BASE_LABEL and files["value"] == labels  # all ticked, the base model too
    assert labels[1].startswith("cmp epoch 1, step 5, avg loss ")
    assert labels[2].startswith("cmp epoch 2 (final), step 10, avg loss ")
    assert keep_file["value"] == labels[2]  # the final file, to start with


def test_refresh_says_what_is_wrong_with_the_folder(tab, tmp_path):
    message = tab.refresh_runs(str(tmp_path / "nope"), None)[0]
    assert "lt-error" in message and "is not a folder" in message
    message, run = tab.refresh_runs(str(tmp_path), None)[:2]
    assert "No trained network files" in message and run["choices"] == []


def test_choosing_a_run_fills_in_what_it_trained_for(tab, run_folder):
    message, files, keep_file, keep_name, prompt, width, height, model, weights = tab.choose_run(run_folder, "cmp")
    assert len(files["value"]) == 3 and keep_name == "cmp-best"
    assert weights == "0.6,0.8,1"  # a LoRA's; an embedding's is 1 (test_embedding_compare.py)
    assert prompt == "ltdemo, ball, smile"  # trigger word, the class of its folder, and a new feature
    assert (width, height) == (64, 64)  # the bucket most pictures trained in
    assert model == "tiny:sd1"  # from the config saved beside the files


# --- the grid --------------------------------------------------------------------------------
def test_make_grid_draws_saves_and_shows_the_cells(tab, run_folder):
    labels = tab.refresh_runs(run_folder, None)[2]["choices"]
    message, progress = start(tab, run_folder, [BASE_LABEL, labels[2]])
    assert "Drawing 3 images" in message and "data-phase='drawing'" in progress  # the base model's once per prompt
    progress, message, image, path, gallery, cells, cell_image, cell_info, shown = finished(tab)
    assert "lt-ok" in message and "2 files x 2 rows" in message
    assert path.startswith(os.path.join(run_folder, "compare", "cmp-")) and os.path.isfile(path)
    assert image.size[0] > 2 * 64 and image.size[1] > 2 * 64  # the cells and their labels
    record = read_grid_record(path)
    assert record["columns"] == [BASE_LABEL, "cmp epoch 2 (final)"] and record["rows"] == ["weight 0.5", "weight 1"]
    assert len(gallery["value"]) == 4 and all(os.path.isfile(p) for p, _ in gallery["value"])
    assert [cell["file"] for cell in cells] == ["", labels[2], "", labels[2]]
    assert "<lora:cmp:0.5>" in cells[1]["infotext"] and "Seed: 3" in cells[1]["infotext"]
    assert "data-phase='done' data-done='3' data-total='3'" in progress and "width:100.0%" in progress
    assert shown == tab.job.id and all(update == gr.update() for update in tab.poll(shown)[:-1])  # shown once

    # A cell's click shows it at full size with its infotext, and picks its file to keep.
    class Click:
        index = 3
    shown, infotext, keep = tab.cell_selected(cells, Click())
    assert shown == cells[3]["path"] and "<lora:cmp:1>" in infotext and keep["value"] == labels[2]


def test_grid_errors_are_messages_and_leave_the_page_as_it_was(tab, run_folder):
    labels = tab.refresh_runs(run_folder, None)[2]["choices"]
    for changes, says in ((dict(weights="0.5, x"), "is not a number"), (dict(prompts="  \n"), "at least one prompt"),
                          (dict(width=60), "multiple of 8"), (dict(steps="2.5"), "whole number")):
        out = start(tab, run_folder, [labels[1]], **changes)
        assert "lt-error" in out[0] and says in out[0], (changes, out[0])
        assert "Traceback" not in out[0] and out[1] == gr.update() and tab.job is None
    out = tab.make_grid(run_folder, None, [], "1", "p", "", 1, 2, "euler", 5, 64, 64, "")
    assert "Choose a run first" in out[0]
    # What goes wrong while drawing comes with the poll, as a message.
    start(tab, run_folder, [labels[1]], model="/no/model.safetensors")
    out = finished(tab)
    assert "data-phase='failed'" in out[0] and "lt-error" in out[1] and "no such file" in out[1]
    assert all(update == gr.update() for update in out[2:-1])


def test_a_grid_is_refused_while_the_machine_trains(tab, run_folder):
    labels = tab.refresh_runs(run_folder, None)[2]["choices"]
    service = tab.service
    service._machine.acquire()  # what a running training holds
    service._commands = object()
    try:
        start(tab, run_folder, [labels[1]])
        message = finished(tab)[1]
    finally:
        service._commands = None
        service._machine.release()
    assert "training is running" in message and "Compare when done" in message


def test_stop_ends_the_grid_between_images(tab, run_folder):
    labels = tab.refresh_runs(run_folder, None)[2]["choices"]
    assert "No grid is being drawn" in tab.stop_grid()
    start(tab, run_folder, [labels[1], labels[2]], weights="0-1 [5]")
    assert "stops after the image" in tab.stop_grid()
    progress, message = finished(tab)[:2]
    assert "data-phase='stopped'" in progress and "comparison stopped after" in message and "of 10 images" in message
    assert not os.path.isdir(os.path.join(run_folder, "compare"))  # a stopped grid is not saved


# --- keep as best ----------------------------------------------------------------------------
def test_keep_as_best_copies_with_the_metadata_and_never_overwrites_unasked(tab, run_folder):
    labels = tab.refresh_runs(run_folder, None)[2]["choices"]
    message, files, keep_file = tab.keep_best(run_folder, "cmp", labels[1], "", False)
    target = os.path.join(run_folder, "cmp-best.safetensors")
    assert "lt-ok" in message and "&lt;lora:cmp-best:1&gt;" in message and os.path.isfile(target)
    source = os.path.join(run_folder, "cmp-000001.safetensors")
    assert open(target, "rb").read() == open(source, "rb").read()
    assert read_metadata(target) == read_metadata(source)
    assert read_saved_file(target).label == "cmp epoch 1 (cmp-best)"  # told apart from the file it copies
    assert any(label.startswith("cmp epoch 1 (cmp-best)") for label in files["choices"])

    message = tab.keep_best(run_folder, "cmp", labels[2], "cmp-best", False)[0]
    assert "already exists" in message and "overwrite" in message
    assert open(target, "rb").read() == open(source, "rb").read()  # the earlier copy is still there
    assert "lt-ok" in tab.keep_best(run_folder, "cmp", labels[2], "cmp-best.safetensors", True)[0]
    assert open(target, "rb").read() == open(os.path.join(run_folder, "cmp.safetensors"), "rb").read()


def test_keep_as_best_refuses_names_that_leave_the_folder(run_folder):
    source = os.path.join(run_folder, "cmp.safetensors")
    for bad in ("../elsewhere", "a/b", "", ".hidden", "cmp"):
        with pytest.raises(InvalidInput):
            keep_as_best(source, bad)
    assert sorted(name for name in os.listdir(run_folder) if name.endswith(".safetensors")) == \
        ["cmp-000001.safetensors", "cmp.safetensors"]


# --- compare when done -----------------------------------------------------------------------
def test_compare_when_done_goes_with_the_queued_run_not_its_config(small_root, tmp_path):
    from lib_trainer.ui.train_tab import TrainTab

    service = LocalTrainService(TrainQueue(None))
    with gr.Blocks():
        train_tab = TrainTab(service, TrainConfig())
        train_tab.build()
        train_tab.wire()
    config = TrainConfig(train_data_dir=small_root, output_dir=str(tmp_path), output_name="later",
                         pretrained_model_name_or_path="tiny:sd1", max_train_epochs=1)
    values = [update["value"] for update in train_tab.form.updates(config)]
    message = train_tab._enqueue(False, *values, compare_when_done=True)[0]
    assert "lt-ok" in message
    item = service.queue.snapshot()[0]
    assert item.compare_when_done is True and "compare_when_done" not in item.config
