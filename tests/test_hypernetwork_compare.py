"""Hypernetwork files in the comparison and the WebUI: listed with their run, epoch and step,
drawn in a file x strength grid (strength 0 is the base model bit for bit), the X/Y/Z plot's
Hypernetwork file and strength axes writing `<hypernet:name:strength>`, and a WebUI run saving
into its hypernetworks folder with the last generation's hypernetworks out of the way."""
from __future__ import annotations

import os
import sys
import types

import pytest
import torch
from PIL import ImageChops

from conftest import quick_config
from lib_trainer.compare.axes import NONE, AxisError
from lib_trainer.compare.grid import GridRequest
from lib_trainer.compare.runs import saved_files
from lib_trainer.compare.standalone import standalone_grid
from lib_trainer.hosts.tiny import build_tiny_bundle
from lib_trainer.progress import Progress
from lib_trainer.train.loop import train
from lib_trainer.webui import xyz_axes
from test_webui_jobs import sd1_model, webui  # noqa: F401  (fixtures)
from test_xyz_axes import FakeP, draw, fake_xyz_module, scripts_data, write_lora


@pytest.fixture(scope="module")
def hyper_run(tmp_path_factory, small_root) -> str:
    folder = str(tmp_path_factory.mktemp("hyper_run"))
    train(quick_config(small_root, folder, output_name="hn", network_module="hypernetwork", max_train_steps=2,
                       save_every_n_steps=1, learning_rate=1e-2, train_batch_size=1))
    write_lora(folder, "a-lora", "a-lora", 1, 5)  # a LoRA beside them stays on the LoRA axes
    return folder


def test_hypernetwork_files_are_listed_with_their_run_and_step(hyper_run):
    files = [saved for saved in saved_files(hyper_run) if saved.is_hypernetwork]
    assert [(saved.name, saved.label, saved.step) for saved in files] == [
        ("hn-step00000001", "hn step 1", 1), ("hn", "hn epoch 1 (final)", 2)]
    assert all(saved.average_loss is not None for saved in files)


def test_a_strength_grid_of_a_hypernetwork_on_our_own_model(hyper_run):
    final = next(saved for saved in saved_files(hyper_run) if saved.name == "hn")
    request = GridRequest(files=[None, final], prompts=["ltdemo, red ball"], weights=[0.0, 1.0], steps=2,
                          width=64, height=64)
    grid = standalone_grid(request, build_tiny_bundle("sd1"), Progress(), device="cpu")
    base, zero, one = grid.cell(0, 0), grid.cell(0, 1), grid.cell(1, 1)
    assert ImageChops.difference(base.image, zero.image).getbbox() is None
    assert ImageChops.difference(base.image, one.image).getbbox() is not None
    assert "<hypernet:hn:1>" in one.infotext and "<lora:" not in one.infotext


@pytest.fixture
def webui_lists(monkeypatch, hyper_run):
    """The WebUI's `shared.hypernetworks` (name -> path) and its reload, counted."""
    shared = types.SimpleNamespace(hypernetworks={}, reloads=0)

    def reload():
        shared.reloads += 1
        shared.hypernetworks = {saved.name: saved.path for saved in saved_files(hyper_run) if saved.is_hypernetwork}

    shared.reload_hypernetworks = reload
    package = types.ModuleType("modules")
    package.shared = shared
    monkeypatch.setitem(sys.modules, "modules", package)
    monkeypatch.setitem(sys.modules, "modules.shared", shared)
    return shared


def test_the_hypernetwork_axes_write_one_tag_per_cell(hyper_run, webui_lists):
    module = fake_xyz_module()
    assert xyz_axes.register_hypernetwork_axes(scripts_data(module), lambda: hyper_run) == 2
    assert xyz_axes.register_hypernetwork_axes(scripts_data(module), lambda: hyper_run) == 0
    axes = {option.label: option for option in module.axis_options}
    files, strength = axes[xyz_axes.HYPERNETWORK_FILE_AXIS], axes[xyz_axes.HYPERNETWORK_STRENGTH_AXIS]
    assert files.choices() == [NONE, "hn-step00000001", "hn"]
    assert files.format_value(None, files, "hn-step00000001") == "hn step 1"
    for order in ((files, strength), (strength, files)):
        values = {files: [NONE, "hn"], strength: [0.5, 1.0]}
        cells = draw(FakeP("ltdemo, red ball"), [(axis, values[axis]) for axis in order])
        prompts = sorted(cell.prompt for cell in cells.values())
        assert prompts == ["ltdemo, red ball", "ltdemo, red ball", "ltdemo, red ball <hypernet:hn:0.5>",
                           "ltdemo, red ball <hypernet:hn:1>"]
    # Without a file axis the strength rewrites the prompt's own tag; without a tag it says what to do.
    cells = draw(FakeP("a ball <hypernet:hn:1>, red"), [(strength, [0.3])])
    assert [cell.prompt for cell in cells.values()] == ["a ball <hypernet:hn:0.3>, red"]
    with pytest.raises(AxisError, match="needs a hypernetwork"):
        draw(FakeP("a ball"), [(strength, [0.3])])
    with pytest.raises(AxisError, match="no hypernetwork missing"):
        draw(FakeP("a ball"), [(files, ["missing"])])
    assert webui_lists.reloads >= 1  # a file saved after start-up is found without a restart


def test_the_lora_file_axis_leaves_hypernetworks_out(hyper_run):
    from lib_trainer.compare.axes import file_choices

    assert file_choices(hyper_run) == [NONE, "a-lora"]


def test_a_webui_run_saves_into_its_hypernetworks_folder_without_the_last_generations(webui, sd1_model, small_root,
                                                                                        tmp_path, monkeypatch):
    shared = webui.fake.shared
    shared.sd_model = sd1_model
    last_generation = object()
    shared.loaded_hypernetworks = [last_generation]
    shared.reloads = 0
    shared.reload_hypernetworks = lambda: setattr(shared, "reloads", shared.reloads + 1)
    read_back = []

    class WebUIHypernetwork:
        """The WebUI's loader, as far as the check uses it: one (k, v) pair per integer key."""

        def load(self, path):
            content = torch.load(path, weights_only=True)
            self.layers = {key: value for key, value in content.items() if isinstance(key, int)}
            read_back.append(path)

    loader = types.SimpleNamespace(Hypernetwork=WebUIHypernetwork)
    monkeypatch.setitem(sys.modules, "modules.hypernetworks", types.SimpleNamespace(hypernetwork=loader))
    monkeypatch.setitem(sys.modules, "modules.hypernetworks.hypernetwork", loader)
    seen, messages = [], []

    def sink(event):
        if event.kind == "step" and event.label == "training":
            seen.append(list(shared.loaded_hypernetworks))
        if event.kind == "status":
            messages.append(event.text)

    config = quick_config(small_root, webui.service.lora_folder(), max_train_steps=2, save_every_n_steps=1,
                          network_module="hypernetwork", output_name="hn", train_batch_size=1,
                          pretrained_model_name_or_path=webui.service.LOADED_MODEL)
    result = webui.service.webui_trainer(config, Progress([sink]))
    folder = os.path.join(str(tmp_path), "models", "hypernetworks")
    assert result.final_path == os.path.join(folder, "hn.pt")
    assert seen == [[], []]                                     # nothing of the last generation while training
    assert shared.loaded_hypernetworks == [last_generation]     # ... and it is back after
    assert shared.reloads == 2 and read_back == [os.path.join(folder, "hn-step00000001.pt"), result.final_path]
    assert messages.count("checked with the WebUI's hypernetwork loader; use it as <hypernet:hn:1>") == 1
    assert not [m for m in messages if "WARNING" in m]
    assert webui.fake.lora.listed == 0  # the Lora list is not the one that changed
