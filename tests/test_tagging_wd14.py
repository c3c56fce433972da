"""WD14 tagging with a tiny ONNX model of the WD14 contract: hand-worked expectations."""
import os
import sys
import types

import numpy as np
import pytest
from PIL import Image

from lib_trainer.__main__ import main
from lib_trainer.preprocess import wd14
from lib_trainer.preprocess.tagging import TagOptions, format_tags, make_tagger, merge_caption, tag_folder
from lib_trainer.preprocess.wd14_testmodel import build_wd14_test_model

# (name, category, probability for every picture)
TABLE = [("general", 9, 0.7), ("sensitive", 9, 0.2),
         ("1girl", 0, 0.99), ("long_hair", 0, 0.6), ("smile", 0, 0.36), ("blush", 0, 0.34), ("^_^", 0, 0.5),
         ("hat_(object)", 0, 0.8), ("hatsune_miku", 4, 0.9), ("kagamine_rin", 4, 0.8)]
DEFAULT = ["1girl", "hatsune miku", r"hat \(object\)", "long hair", "^_^", "smile"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wd14") / "tiny"
    return build_wd14_test_model(str(folder), [(n, c) for n, c, _ in TABLE], [p for _, _, p in TABLE], size=32)


@pytest.fixture
def dataset(tmp_path):
    for name, colour in (("a", "red"), ("b", "blue"), ("c", "white")):
        Image.new("RGB", (40, 24), colour).save(tmp_path / f"{name}.png")
    (tmp_path / "b.txt").write_text("trig, old tag, smile")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    return tmp_path


def tagger_for(model_dir, **options):
    opts = TagOptions(**options)
    return make_tagger("wd14", opts, model_path=model_dir, use_gpu=False), opts


def test_thresholds_categories_formatting_and_order(model_dir):
    tagger, options = tagger_for(model_dir)
    scored = tagger.tag([Image.new("RGB", (50, 20), "green")])[0]
    assert format_tags(scored, options) == DEFAULT
    assert [t for t, _ in scored if t in ("general", "sensitive", "blush", "kagamine_rin")] == []
    tagger, options = tagger_for(model_dir, general_threshold=0.5, character_threshold=0.75, include_rating=True,
                                 replace_underscores=False, escape_parentheses=False, sort_by="alphabetical")
    assert format_tags(tagger.tag([Image.new("RGB", (8, 8))])[0], options) == [
        "1girl", "^_^", "general", "hat_(object)", "hatsune_miku", "kagamine_rin", "long_hair"]


def test_exclusions_max_tags_and_kaomoji(model_dir):
    tagger, options = tagger_for(model_dir, exclude=["long hair", r"hat \(object\)", "HATSUNE_MIKU"], max_tags=2)
    assert format_tags(tagger.tag([Image.new("RGB", (8, 8))])[0], options) == ["1girl", "^_^"]


@pytest.mark.parametrize("mode,expected_b", [
    ("overwrite", ["trig"] + DEFAULT),
    ("append", ["trig", "old tag", "smile"] + [t for t in DEFAULT if t != "smile"]),
    ("prepend", ["trig"] + DEFAULT + ["old tag"]),
    ("skip", ["trig", "old tag", "smile"]),
])
def test_merge_modes_write_backup_and_skip_bad_files(model_dir, dataset, mode, expected_b):
    tagger, options = tagger_for(model_dir, merge=mode, trigger="trig", batch_size=2)
    result = tag_folder(str(dataset), tagger, options)
    assert (dataset / "b.txt").read_text() == ", ".join(expected_b)
    assert (dataset / "a.txt").read_text() == ", ".join(["trig"] + DEFAULT)
    assert "cannot read image" in dict(result.skipped)[str(dataset / "broken.jpg")]
    if mode == "skip":
        assert result.unchanged == [str(dataset / "b.txt")]
    else:
        assert open(os.path.join(result.backup_dir, "b.txt")).read() == "trig, old tag, smile"
    assert not [n for n in os.listdir(dataset) if n.endswith(".tmp")]


def test_merge_caption_puts_the_trigger_first_once():
    options = TagOptions(merge="append", trigger="trig")
    assert merge_caption(["a", "trig"], ["b", "a"], options) == ["trig", "a", "b"]


def test_dry_run_writes_nothing(model_dir, dataset):
    tagger, options = tagger_for(model_dir)
    result = tag_folder(str(dataset), tagger, options, dry_run=True)
    assert len(result.written) == 3 and not (dataset / "a.txt").exists()


def test_preparation_pads_on_white_and_feeds_bgr(tmp_path):
    array = wd14.prepare(Image.new("RGB", (20, 10), (255, 0, 0)), 20)
    assert array.shape == (20, 20, 3) and array.dtype == np.float32
    assert tuple(array[10, 10]) == (0, 0, 255)  # red, in BGR order
    assert tuple(array[0, 0]) == (255, 255, 255)  # padding
    # A model that answers "red" from the third (R) input channel tells red from blue.
    weights = np.zeros((3, 1), np.float32)
    weights[2, 0] = 20.0
    folder = build_wd14_test_model(str(tmp_path / "m"), [("red", 0)], [1 / (1 + np.exp(10))], weights, size=16)
    model = wd14.WD14Model(folder, use_gpu=False)
    red, blue = model.predict([Image.new("RGB", (16, 16), "red"), Image.new("RGB", (16, 16), "blue")])[:, 0]
    assert red > 0.99 and blue < 0.01
    transparent = Image.new("RGBA", (16, 16), (255, 0, 0, 0))
    assert model.predict([transparent])[0, 0] > 0.99  # transparent is white: R = 255


def test_mismatched_files_are_reported(tmp_path, model_dir):
    folder = build_wd14_test_model(str(tmp_path / "m"), [("a", 0), ("b", 0)], [0.5, 0.5], size=16)
    with open(os.path.join(folder, "selected_tags.csv"), "a") as handle:
        handle.write("2,c,0,1\n")
    with pytest.raises(ValueError, match="do not belong together"):
        wd14.WD14Model(folder, use_gpu=False)


def test_missing_model_message_and_download_only_on_request(tmp_path, monkeypatch, model_dir):
    info = wd14.ModelInfo("wd-vit-tagger-v3", "SmilingWolf/wd-vit-tagger-v3")
    with pytest.raises(wd14.ModelMissing) as error:
        wd14.ensure_model(info, str(tmp_path))
    message = str(error.value)
    assert "model.onnx and selected_tags.csv" in message and str(tmp_path / "wd-vit-tagger-v3") in message
    calls = []

    def fake_download(repo, name, local_dir):
        calls.append(name)
        with open(os.path.join(model_dir, name), "rb") as src, open(os.path.join(local_dir, name), "wb") as dst:
            dst.write(src.read())

    def offline(repo, name, local_dir):
        raise OSError("no network")

    monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(hf_hub_download=offline))
    with pytest.raises(wd14.ModelMissing, match="download of wd-vit-tagger-v3 failed .no network.; put model.onnx"):
        wd14.ensure_model(info, str(tmp_path), download=True)
    os.makedirs(tmp_path / "wd-vit-tagger-v3", exist_ok=True)
    monkeypatch.setitem(sys.modules, "huggingface_hub", types.SimpleNamespace(hf_hub_download=fake_download))
    assert wd14.ensure_model(info, str(tmp_path), download=True) == str(tmp_path / "wd-vit-tagger-v3")
    assert calls == ["model.onnx", "selected_tags.csv"]
    wd14.ensure_model(info, str(tmp_path), download=True)  # on disk now: no second download
    assert len(calls) == 2


def test_gpu_provider_failure_falls_back_to_cpu_with_a_notice(model_dir, monkeypatch):
    import onnxruntime as ort

    real = ort.InferenceSession

    def session(path, providers):
        if "CUDAExecutionProvider" in providers:
            raise RuntimeError("libcudnn.so.9: cannot open shared object file")
        return real(path, providers=providers)

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", session)
    notices = []
    model = wd14.WD14Model(model_dir, use_gpu=True, notice=notices.append)
    assert model.session.get_providers() == ["CPUExecutionProvider"]
    assert "libcudnn" in notices[0] and "CPU" in notices[0]


def test_model_list_is_data_with_thresholds():
    models = wd14.load_model_list()
    assert {"wd-vit-tagger-v3", "wd-eva02-large-tagger-v3", "wd-v1-4-moat-tagger-v2"} <= set(models)
    assert all(m.repo.startswith("SmilingWolf/") and m.general_threshold == 0.35 for m in models.values())
    assert wd14.default_model_name() in models


def test_other_taggers_say_what_is_missing(tmp_path):
    with pytest.raises(RuntimeError, match="only inside the WebUI"):
        make_tagger("deepbooru", TagOptions())
    with pytest.raises(FileNotFoundError, match="BLIP outside the WebUI needs a local model folder"):
        make_tagger("blip", TagOptions(), model_path=str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="unknown tagger 'clip'"):
        make_tagger("clip", TagOptions())


def test_cli_tag(model_dir, dataset, capsys):
    assert main(["tag", str(dataset), "--model-path", model_dir, "--mode", "append", "--trigger", "trig",
                 "--exclude", "smile,^_^", "--max-tags", "3", "--cpu", "--quiet"]) == 0
    assert (dataset / "c.txt").read_text() == "trig, 1girl, hatsune miku, hat \\(object\\)"
    assert "captions written" in capsys.readouterr().out
