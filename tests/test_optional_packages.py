"""Missing optional packages turn off only their feature, with a message saying so;
the WebUI taggers run through the WebUI's own objects (faked here)."""
import sys
import types

import pytest
from PIL import Image

from helpers_draw import detail_patch_picture
from lib_trainer.preprocess.crop import crop_focal
from lib_trainer.preprocess.focal import FocalSettings
from lib_trainer.preprocess import tagging
from lib_trainer.preprocess.tagging import TagOptions, format_tags, make_tagger


def test_without_opencv_faces_are_off_and_entropy_edges_still_crop(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 -> ImportError
    picture = detail_patch_picture((1200, 500), (900, 150, 1100, 350))
    result = crop_focal(picture, (400, 400), FocalSettings())
    assert any("OpenCV is not installed" in w for w in result.focal.warnings)
    assert set(result.focal.parts) == {"entropy", "edges"}
    assert result.box[0] <= 900 * 400 / 500 - 2 and result.box[2] >= 1100 * 400 / 500 - 2


def test_without_onnxruntime_wd14_says_what_to_install(monkeypatch, tmp_path):
    from lib_trainer.preprocess import wd14

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(wd14.ModelMissing, match="pip install onnxruntime"):
        wd14.create_session(str(tmp_path / "model.onnx"))


@pytest.fixture
def fake_webui(monkeypatch, tmp_path):
    calls = []

    class DeepDanbooru:
        def start(self):
            calls.append("start")

        def stop(self):
            calls.append("stop")

        def tag_multi(self, image, force_disable_ranks=False):
            return "1girl, hat \\(object\\), long_hair"

    class Interrogator:
        def load(self):
            calls.append("load")

        def unload(self):
            calls.append("unload")

        def generate_caption(self, image):
            return " a girl in a hat "

    modules = types.ModuleType("modules")
    modules.deepbooru = types.SimpleNamespace(model=DeepDanbooru())
    modules.shared = types.SimpleNamespace(interrogator=Interrogator())
    modules.paths = types.SimpleNamespace(models_path=str(tmp_path / "models"))
    monkeypatch.setitem(sys.modules, "modules", modules)
    # The WebUI's entry script registers its taggers at start; here into a copy of the registry.
    monkeypatch.setattr(tagging, "TAGGERS", dict(tagging.TAGGERS))
    monkeypatch.delitem(sys.modules, "lib_trainer.webui.taggers", raising=False)
    from lib_trainer.webui.taggers import register_webui_taggers

    register_webui_taggers()
    yield calls
    # Forget the module imported against the fake WebUI, so later tests see no WebUI.
    sys.modules.pop("lib_trainer.webui.taggers", None)
    import lib_trainer.webui as webui

    if hasattr(webui, "taggers"):
        delattr(webui, "taggers")


def test_webui_deepbooru_and_blip(fake_webui, tmp_path):
    options = TagOptions()
    deepbooru = make_tagger("deepbooru", options)
    scored = deepbooru.tag([Image.new("RGB", (8, 8))])[0]
    assert format_tags(scored, options) == ["1girl", "hat \\(object\\)", "long hair"]  # order kept, escaped once
    blip = make_tagger("blip", options)
    assert blip.tag([Image.new("RGB", (8, 8))]) == [[("a girl in a hat", 1.0)]]
    assert fake_webui == ["start", "stop", "load", "unload"]
    from lib_trainer.preprocess import wd14

    with pytest.raises(wd14.ModelMissing, match=str(tmp_path / "models" / "wd14")):
        make_tagger("wd14", options)  # the WebUI's models folder is where WD14 is looked for


@pytest.mark.parametrize("cuda", [False, True])
def test_install_py_installs_only_missing_packages_with_the_webui_packages_pinned(monkeypatch, cuda):
    """The WebUI runs install.py with its `launch` module; nothing installed may move (protobuf
    moved from the WebUI's 3.20 when tensorboard came in with only a chosen list pinned)."""
    import importlib.metadata
    import os
    import runpy

    from lib_trainer.optional import OPTIONAL_PACKAGES

    calls = []

    def run_pip(command, description):
        constraints = command.split('-c "')[1].rstrip('"')
        with open(constraints, encoding="utf-8") as handle:
            calls.append((command, handle.read()))
        if "lion" in command:
            raise RuntimeError("no network")  # a failed optional install must not stop the WebUI

    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    installed = {"prodigyopt", "cv2", "tensorboard"}
    launch = types.SimpleNamespace(is_installed=lambda name: name in installed, run_pip=run_pip)
    monkeypatch.setitem(sys.modules, "launch", launch)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    runpy.run_path(os.path.join(root, "install.py"), run_name="__main__")

    requested = [command.split('"')[1] for command, _ in calls]
    skipped = set() if cuda else {"bitsandbytes"}  # without CUDA it is useless and slows every start
    assert requested == [OPTIONAL_PACKAGES[m][0] for m in OPTIONAL_PACKAGES if m not in installed | skipped]
    pins = calls[0][1].split()
    every_installed = {d.metadata["Name"].lower().replace("_", "-") for d in importlib.metadata.distributions()}
    assert {pin.split("==")[0].lower().replace("_", "-") for pin in pins} == every_installed
    assert f"torch=={importlib.metadata.version('torch')}" in pins
    assert f"numpy=={importlib.metadata.version('numpy')}" in pins
    assert f"gradio=={importlib.metadata.version('gradio')}" in pins


def test_missing_optional_packages_are_listed_with_how_to_install_them(monkeypatch):
    from lib_trainer import optional

    monkeypatch.setattr(optional, "is_available", lambda name: name != "prodigyopt")
    assert optional.unavailable_features() == ['the Prodigy optimizer is unavailable: pip install "prodigyopt"']
