"""The LoRA axes of the WebUI's X/Y/Z plot, on a module shaped like its scripts/xyz_grid.py
(the same `AxisOption` signature, subclasses and `type(x) == AxisOption` filter) and a fake
processing object: registered once across reloads, choices read from the Lora folder each
time, and each cell's prompt carrying exactly the one `<lora:…>` tag its file and weights make."""
from __future__ import annotations

import copy
import os
import re
import sys
import types
from collections import namedtuple
from itertools import product

import pytest
import torch

from lib_trainer.compare.axes import AxisError, lora_tags, parse_weights
from lib_trainer.formats.lora_file import save_lora
from lib_trainer.webui import xyz_axes

ScriptClassData = namedtuple("ScriptClassData", ["script_class", "path", "basedir", "module"])


def fake_xyz_module():
    """A fresh module as the WebUI loads scripts/xyz_grid.py: a new `AxisOption` class and list each time."""
    module = types.ModuleType("xyz_grid.py")

    class AxisOption:
        def __init__(self, label, type, apply, format_value=None, confirm=None, cost=0.0, choices=None, prepare=None):
            self.label, self.type, self.apply, self.format_value = label, type, apply, format_value
            self.confirm, self.cost, self.choices, self.prepare = confirm, cost, choices, prepare

    class AxisOptionImg2Img(AxisOption):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.is_img2img = True

    def do_nothing(p, x, xs):
        pass

    module.AxisOption, module.AxisOptionImg2Img = AxisOption, AxisOptionImg2Img
    module.axis_options = [AxisOption("Nothing", str, do_nothing), AxisOption("Seed", int, do_nothing),
                           AxisOptionImg2Img("Image CFG Scale", float, do_nothing)]
    return module


def scripts_data(module):
    other = types.ModuleType("prompt_matrix.py")
    return [ScriptClassData(object, "/webui/scripts/prompt_matrix.py", "/webui", other),
            ScriptClassData(object, "/webui/scripts/xyz_grid.py", "/webui", module)]


def shown_in_tab(module, is_img2img):
    """The X/Y/Z script's own filter in ui()."""
    return [x.label for x in module.axis_options if type(x) == module.AxisOption or x.is_img2img == is_img2img]


def write_lora(folder, name, run=None, epoch=None, steps=None):
    metadata = {key: value for key, value in
                (("ss_output_name", run), ("ss_epoch", epoch), ("ss_steps", steps)) if value is not None}
    save_lora(os.path.join(folder, f"{name}.safetensors"),
              {"lora_unet_a.lora_down.weight": torch.zeros(1, 2), "lora_unet_a.lora_up.weight": torch.zeros(2, 1)},
              metadata)


class FakeP:
    """The fields of the WebUI's processing object that the axes touch."""

    def __init__(self, prompt, hr_prompt=None):
        self.prompt, self.negative_prompt = prompt, "lowres"
        if hr_prompt is not None:
            self.hr_prompt = hr_prompt


def draw(p, axes):
    """What the X/Y/Z script does: each used axis' confirm on `p` itself, x then y then z, then
    per cell a copy of `p` and each axis' apply in x, y, z order. Returns {(x, y, z): cell}."""
    lists = []
    for option, values in axes:
        if option.confirm:
            option.confirm(p, values)
        lists.append(values)
    while len(lists) < 3:
        lists.append([None])
        axes = [*axes, (None, [None])]
    cells = {}
    for key in product(*lists):
        cell = copy.copy(p)
        for (option, values), value in zip(axes, key):
            if option is not None:
                option.apply(cell, value, values)
        cells[key] = cell
    return cells


@pytest.fixture
def folder(tmp_path):
    root = str(tmp_path / "Lora")
    os.makedirs(root)
    write_lora(root, "sls-000002", "sls", 2, 20)
    write_lora(root, "sls-000001", "sls", 1, 10)
    write_lora(root, "sls", "sls", 3, 30)
    write_lora(root, "sls-step00000025", "sls", 3, 25)
    write_lora(root, "another", None)
    return root


@pytest.fixture
def axes(folder, monkeypatch):
    monkeypatch.delitem(sys.modules, "networks", raising=False)  # no Lora extension unless a test adds one
    module = fake_xyz_module()
    xyz_axes.register_axes(scripts_data(module), lambda: folder)
    return {option.label: option for option in module.axis_options}


FILE, WEIGHT = xyz_axes.FILE_AXIS, xyz_axes.WEIGHT_AXES["weight"]
UNET, TE = xyz_axes.WEIGHT_AXES["unet"], xyz_axes.WEIGHT_AXES["te"]


def test_axes_are_appended_once_at_the_end_and_shown_in_both_tabs(folder):
    module = fake_xyz_module()
    data = scripts_data(module)
    ours = [FILE, WEIGHT, UNET, TE, xyz_axes.EMBEDDING_AXIS]
    assert xyz_axes.register_axes(data, lambda: folder) == len(ours)
    assert xyz_axes.register_axes(data, lambda: folder) == 0   # "Reload UI" keeping the same module
    assert [option.label for option in module.axis_options][3:] == ours
    for is_img2img in (False, True):
        assert shown_in_tab(module, is_img2img)[-len(ours):] == ours
    reloaded = fake_xyz_module()                                # "Reload UI" loading the script again
    assert xyz_axes.register_axes(scripts_data(reloaded), lambda: folder) == len(ours)
    assert xyz_axes.register_axes(scripts_data(reloaded), lambda: folder) == 0
    assert [option.label for option in reloaded.axis_options].count(FILE) == 1
    assert all(type(option) is reloaded.AxisOption for option in reloaded.axis_options[3:])


def test_nothing_is_added_without_the_xyz_script(folder):
    assert xyz_axes.register_axes([ScriptClassData(object, "/x/scripts/other.py", "/x", fake_xyz_module())],
                                  lambda: folder) == 0


def test_file_choices_are_the_runs_in_training_order_and_refresh(axes, folder):
    choices = axes[FILE].choices
    assert choices() == ["None", "another", "sls-000001", "sls-000002", "sls-step00000025", "sls"]
    write_lora(folder, "sls-000004", "sls", 4, 40)              # a run still going saves again
    assert choices() == ["None", "another", "sls-000001", "sls-000002", "sls-step00000025", "sls", "sls-000004"]


def test_values_are_labelled_from_the_metadata(axes):
    label = axes[FILE].format_value
    assert [label(None, axes[FILE], name) for name in ("None", "sls-000002", "sls-step00000025", "sls", "another")] == \
        ["None", "sls epoch 2", "sls step 25", "sls epoch 3 (final)", "another"]
    assert axes[WEIGHT].format_value(None, axes[WEIGHT], 0.7000000000000001) == "weight 0.7"
    assert axes[UNET].format_value(None, axes[UNET], 1.0) == "UNet weight 1"


def tags(prompt):
    return re.findall(r"<lora:[^>]*>", prompt)


def test_file_axis_adds_exactly_one_tag_and_none_adds_none(axes):
    cells = draw(FakeP("sls, 1girl, smile"), [(axes[FILE], ["None", "sls-000001", "sls"])])
    assert cells[("None", None, None)].prompt == "sls, 1girl, smile"
    assert cells[("sls-000001", None, None)].prompt == "sls, 1girl, smile <lora:sls-000001:1>"
    assert tags(cells[("sls", None, None)].prompt) == ["<lora:sls:1>"]


@pytest.mark.parametrize("file_first", [True, False])
def test_file_and_weight_on_different_axes_combine_in_one_cell(axes, file_first):
    file_axis, weight_axis = (axes[FILE], ["None", "sls-000002"]), (axes[WEIGHT], [0.5, 1.0])
    cells = draw(FakeP("sls, smile"), [file_axis, weight_axis] if file_first else [weight_axis, file_axis])
    prompt = {(file, weight): cell.prompt for key, cell in cells.items()
              for file, weight in [key[:2] if file_first else key[1::-1]]}
    assert prompt[("sls-000002", 0.5)] == "sls, smile <lora:sls-000002:0.5>"
    assert prompt[("sls-000002", 1.0)] == "sls, smile <lora:sls-000002:1>"
    assert prompt[("None", 0.5)] == prompt[("None", 1.0)] == "sls, smile"  # the baseline column is the same in every row


def test_unet_and_text_encoder_weights_are_separate(axes):
    cells = draw(FakeP("sls"), [(axes[FILE], ["sls"]), (axes[UNET], [0.25]), (axes[TE], [0.75])])
    assert cells[("sls", 0.25, 0.75)].prompt == "sls <lora:sls:0.75:0.25>"
    cells = draw(FakeP("sls"), [(axes[UNET], [0.5]), (axes[FILE], ["sls-000001"]), (axes[WEIGHT], [0.8])])
    assert cells[(0.5, "sls-000001", 0.8)].prompt == "sls <lora:sls-000001:0.8:0.5>"  # the part's own axis wins


def test_weight_axis_without_file_axis_rewrites_the_prompts_tag(axes):
    p = FakeP("sls, <lora:sls-000002:1> smile, <lora:style:0.5>")
    cells = draw(p, [(axes[WEIGHT], [0.6, 1.2])])
    assert cells[(0.6, None, None)].prompt == "sls, <lora:sls-000002:0.6> smile, <lora:style:0.5>"
    assert cells[(1.2, None, None)].prompt == "sls, <lora:sls-000002:1.2> smile, <lora:style:0.5>"
    assert p.prompt == "sls, <lora:sls-000002:1> smile, <lora:style:0.5>"    # the grid's own p is untouched
    cells = draw(FakeP("x <lora:sls:0.5:0.9:8>"), [(axes[WEIGHT], [0.7]), (axes[UNET], [0.2])])
    assert cells[(0.7, 0.2, None)].prompt == "x <lora:sls:0.7:0.2:8>"     # dyn kept, UNet from its own axis
    cells = draw(FakeP("x <lora:sls:te=0.3:unet=0.4>"), [(axes[TE], [1.0])])
    assert cells[(1.0, None, None)].prompt == "x <lora:sls:1:0.4>"


def test_weight_axis_without_any_lora_says_what_to_do(axes):
    with pytest.raises(AxisError, match="put one in the prompt"):
        draw(FakeP("sls, smile"), [(axes[WEIGHT], [0.5])])


def test_the_hires_prompt_gets_the_same_tag(axes):
    cells = draw(FakeP("a", hr_prompt="a, detailed"), [(axes[FILE], ["sls"]), (axes[WEIGHT], [0.5])])
    assert cells[("sls", 0.5, None)].hr_prompt == "a, detailed <lora:sls:0.5>"
    cells = draw(FakeP("a", hr_prompt=""), [(axes[FILE], ["sls"])])
    assert cells[("sls", None, None)].hr_prompt == ""   # empty: the WebUI uses the prompt, tag and all


def test_weight_values_take_the_scripts_range_syntax(axes):
    prepare = axes[WEIGHT].prepare
    assert [float(value) for value in prepare("0.6-1 (+0.1)")] == [0.6, 0.7, 0.8, 0.9, 1.0]
    assert [float(value) for value in prepare("0, 0.00001, 1-0 (-0.5)")] == [0.0, 0.00001, 1.0, 0.5, 0.0]
    assert all(re.fullmatch(r"-?\d+(\.\d+)?", value) for value in prepare("0.00001, -0.25, 1e-3"))
    assert parse_weights("0-1 [5]") == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert parse_weights("-1-1") == [-1.0, 0.0, 1.0]
    with pytest.raises(AxisError):
        parse_weights("0.5-1 (-0.1)")
    with pytest.raises(AxisError):
        parse_weights("heavy")


def test_tags_are_read_as_the_lora_extension_reads_them():
    read = [(tag.name, tag.te, tag.unet, tag.rest) for tag in lora_tags("<lora:a> <lora:b:0.5> <lyco:c:0.5:1:dyn=4> <hypernet:d:1>")]
    assert read == [("a", 1.0, 1.0, ()), ("b", 0.5, 0.5, ()), ("c", 0.5, 1.0, ("dyn=4",))]


class FakeNetworks(types.ModuleType):
    """The built-in Lora's `networks` module: it knows the files it listed last."""

    def __init__(self, folder):
        super().__init__("networks")
        self.folder, self.loaded_networks, self.refreshes = folder, [], 0
        self.list_available_networks()
        self.refreshes = 0

    def list_available_networks(self):
        self.refreshes += 1
        self.available_networks = {os.path.splitext(name)[0]: object() for name in os.listdir(self.folder)}
        self.available_network_aliases = dict(self.available_networks)


def test_a_file_saved_after_start_up_is_found_without_a_restart(axes, folder, monkeypatch):
    networks = FakeNetworks(folder)
    monkeypatch.setitem(sys.modules, "networks", networks)
    draw(FakeP("sls"), [(axes[FILE], ["None", "sls"])])
    assert networks.refreshes == 0                              # every name known: no listing
    write_lora(folder, "sls-000005", "sls", 5, 50)
    cells = draw(FakeP("sls"), [(axes[FILE], ["sls-000005"])])
    assert networks.refreshes == 1 and "sls-000005" in networks.available_networks
    assert tags(cells[("sls-000005", None, None)].prompt) == ["<lora:sls-000005:1>"]
    with pytest.raises(AxisError, match="no LoRA file gone"):
        draw(FakeP("sls"), [(axes[FILE], ["gone"])])
    write_lora(folder, "later", "later", 1, 5)                  # a weight grid over a file the prompt names
    draw(FakeP("x <lora:later:1>"), [(axes[WEIGHT], [0.5])])
    assert "later" in networks.available_networks
