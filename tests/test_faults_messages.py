"""One message, no traceback (the fault suite, item 14): each bad input to `preprocess`, `tags`,
`tag` and `train` (a diffusers folder) ends with a message naming the file or option, exit
status 1, and no user file changed; `--debug` adds the traceback. A queue file that cannot be
read is moved aside and the queue starts empty."""
from __future__ import annotations

import hashlib
import os

import pytest
import torch
from PIL import Image

from lib_trainer.__main__ import main
from lib_trainer.jobs.queue import TrainQueue


def hashes(folder) -> dict[str, str]:
    found = {}
    for root, _, files in os.walk(folder):
        for name in files:
            with open(os.path.join(root, name), "rb") as handle:
                found[os.path.relpath(os.path.join(root, name), folder)] = hashlib.sha256(handle.read()).hexdigest()
    return found


@pytest.fixture
def pictures(tmp_path):
    folder = tmp_path / "pictures"
    folder.mkdir()
    for index in range(2):
        Image.new("RGB", (80, 80), (index * 100, 40, 40)).save(folder / f"{index}.png")
        (folder / f"{index}.txt").write_text(f"cat, tag{index}", encoding="utf-8")
    return folder


def fails_cleanly(argv, capsys, *words) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, err
    return err


@pytest.mark.parametrize("case", ["output is input", "missing source", "size 0x0"])
def test_preprocess_refuses_with_a_message(pictures, tmp_path, capsys, case):
    before = hashes(tmp_path)
    argv, words = {
        "output is input": ([str(pictures), str(pictures)], ["the output folder is the source folder"]),
        "missing source": ([str(tmp_path / "nowhere"), str(tmp_path / "out")], ["nowhere: source folder not found"]),
        "size 0x0": ([str(pictures), str(tmp_path / "out"), "--size", "0x0"], ["target size 0x0 is too small"]),
    }[case]
    fails_cleanly(["preprocess", *argv, "--quiet"], capsys, *words)
    assert hashes(tmp_path) == before


def test_tags_with_a_bad_regex_or_a_missing_folder(pictures, tmp_path, capsys):
    before = hashes(tmp_path)
    fails_cleanly(["tags", str(pictures), "--regex-replace", "(cat", "dog"], capsys,
                  "'(cat' is not a valid regular expression")
    fails_cleanly(["tags", str(pictures), "--regex-replace", "cat", r"\9"], capsys, "replacement '\\\\9'")
    fails_cleanly(["tags", str(tmp_path / "nowhere"), "--add", "x"], capsys, "nowhere: no such folder")
    assert hashes(tmp_path) == before
    assert main(["--debug", "tags", str(pictures), "--regex-replace", "(cat", "dog"]) == 1
    assert "Traceback" in capsys.readouterr().err  # --debug shows it


def test_tags_with_a_caption_that_cannot_be_written(pictures, capsys, monkeypatch):
    """An immutable (chattr +i) or read-only caption: the others are saved, it is named and kept."""
    real_replace = os.replace

    def replace(source, target):
        if os.path.basename(target) == "0.txt":
            raise PermissionError(1, "Operation not permitted")
        return real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    err = fails_cleanly(["tags", str(pictures), "--add", "extra"], capsys,
                        f"could not write 1 captions, left as they were: {pictures / '0.txt'} (Operation not "
                        "permitted). 1 others were saved", "chattr -i")
    assert "Errno" not in err
    assert (pictures / "0.txt").read_text(encoding="utf-8") == "cat, tag0"
    assert (pictures / "1.txt").read_text(encoding="utf-8") == "cat, tag1, extra"
    assert not [name for name in os.listdir(pictures) if name.endswith(".tmp")]


@pytest.fixture
def wd14_folder(tmp_path):
    pytest.importorskip("onnxruntime")
    from lib_trainer.preprocess.wd14_testmodel import build_wd14_test_model

    return build_wd14_test_model(str(tmp_path / "wd14"), [("general", 9), ("cat", 0)], [0.5, 0.9], size=16)


def test_tag_with_a_corrupt_model_onnx(pictures, wd14_folder, tmp_path, capsys):
    generator = torch.Generator().manual_seed(0)
    with open(os.path.join(wd14_folder, "model.onnx"), "wb") as handle:
        handle.write(bytes(torch.randint(0, 256, (2048,), generator=generator, dtype=torch.uint8).tolist()))
    before = hashes(tmp_path)
    fails_cleanly(["tag", str(pictures), "--model-path", wd14_folder, "--cpu", "--quiet"], capsys,
                  "model.onnx: onnxruntime cannot load it", "download it again")
    assert hashes(tmp_path) == before


@pytest.mark.parametrize("gone", ["model.onnx", "selected_tags.csv"])
def test_tag_with_a_model_folder_missing_one_file_names_both(pictures, wd14_folder, tmp_path, capsys, gone):
    os.remove(os.path.join(wd14_folder, gone))
    before = hashes(tmp_path)
    fails_cleanly(["tag", str(pictures), "--model-path", wd14_folder, "--cpu", "--quiet"], capsys,
                  f"has no {gone}", "two files, model.onnx and selected_tags.csv")
    assert hashes(tmp_path) == before


@pytest.fixture(scope="module")
def diffusers_model(tmp_path_factory):
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    from lib_trainer.hosts.components import build_components

    parts = build_components("tiny-sd1")
    folder = tmp_path_factory.mktemp("diffusers") / "model"
    StableDiffusionPipeline(vae=parts.vae, unet=parts.unet, scheduler=EulerDiscreteScheduler(),
                            text_encoder=parts.text_encoders[0], tokenizer=parts.tokenizers[0], safety_checker=None,
                            feature_extractor=None, requires_safety_checker=False).save_pretrained(
        str(folder), safe_serialization=False)  # .bin files, as older downloads have
    return folder


def copy_tree(source, target):
    import shutil

    shutil.copytree(source, target)
    return target


@pytest.mark.parametrize("damage", ["no unet", "bad .bin"])
def test_train_on_a_damaged_diffusers_folder(diffusers_model, small_root, tmp_path, capsys, monkeypatch, damage):
    import logging
    import shutil

    # diffusers' own warnings (its handler holds the stream of whichever test first logged) are not ours
    monkeypatch.setattr(logging.getLogger("diffusers"), "handlers", [])

    model = copy_tree(diffusers_model, tmp_path / "model")
    if damage == "no unet":
        shutil.rmtree(model / "unet")
        words = ["is an incomplete diffusers model folder: it has no unet subfolder"]
    else:
        (model / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"not a pickle at all" * 50)
        words = ["its unet cannot be loaded", "download the model again"]
    before = hashes(model)
    fails_cleanly(["train", "--train_data_dir", small_root, "--output_dir", str(tmp_path / "out"),
                   "--pretrained_model_name_or_path", str(model), "--max_train_steps", "1"], capsys, str(model), *words)
    assert hashes(model) == before and not (tmp_path / "out").exists()


@pytest.mark.parametrize("content", [b"[]", b'{"items": [{"id": "one", "name": 3, "config": {}}]}',
                                     b"\xff\xfe{\x00}\x00"])
def test_a_queue_file_that_cannot_be_read_is_moved_aside(tmp_path, content):
    path = tmp_path / "queue.json"
    path.write_bytes(content)
    queue = TrainQueue(str(path))  # the server starts: an empty queue and a notice
    aside = [name for name in os.listdir(tmp_path) if name.startswith("queue.json.broken-")]
    assert queue.snapshot() == [] and len(aside) == 1 and (tmp_path / aside[0]).read_bytes() == content
    assert aside[0] in queue.load_notice and "the queue starts empty" in queue.load_notice
