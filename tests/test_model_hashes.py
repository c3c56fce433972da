"""kohya's base-model hashes in the LoRA's metadata: computed from the checkpoint file
standalone (once, then from the cache), taken from the WebUI's own hashes of its loaded model,
and left out for the built-in tiny models."""
from __future__ import annotations

import hashlib
import os
import types

import pytest

import lib_trainer.hosts.model_hashes as model_hashes
from lib_trainer.formats.lora_file import read_metadata
from lib_trainer.hosts import load_bundle
from lib_trainer.hosts.components import build_components
from lib_trainer.hosts.ldm_bundle import LiveSDBundle
from lib_trainer.hosts.single_file import save_single_file
from lib_trainer.train.loop import train
from tests.conftest import quick_config


@pytest.fixture
def checkpoint(tmp_path, monkeypatch):
    """A tiny SD1 checkpoint file, with the hash cache kept under tmp_path, and the hashes
    worked out by hand: kohya's model_hash (64 KiB at 1 MiB, 8 hex digits) and calculate_sha256."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = str(tmp_path / "base.safetensors")
    save_single_file(build_components("tiny-sd1", seed=3), path)
    with open(path, "rb") as handle:
        data = handle.read()
    assert len(data) > 0x110000  # else the legacy hash would be that of an empty read
    return path, hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8], hashlib.sha256(data).hexdigest()


def test_a_run_on_a_checkpoint_file_writes_kohyas_hashes_of_it(checkpoint, small_root, tmp_path):
    path, legacy, full = checkpoint
    result = train(quick_config(small_root, str(tmp_path / "out"), pretrained_model_name_or_path=path,
                                max_train_steps=1))
    metadata = read_metadata(result.final_path)
    assert (metadata["ss_sd_model_hash"], metadata["ss_new_sd_model_hash"]) == (legacy, full)
    assert metadata["ss_sd_model_name"] == "base"


def test_the_hashes_are_read_once_per_file_and_again_when_it_changes(checkpoint, monkeypatch):
    path, legacy, full = checkpoint
    assert model_hashes.model_hashes(path) == (legacy, full)
    assert os.path.isfile(model_hashes.cache_path())
    reads = []
    real = model_hashes.file_sha256
    monkeypatch.setattr(model_hashes, "file_sha256", lambda p: reads.append(p) or real(p))
    bundle = load_bundle(path)
    assert (bundle.sd_model_hash, bundle.new_sd_model_hash) == (legacy, full) and reads == []
    with open(path, "r+b") as handle:  # the same name, other bytes (a new download)
        handle.seek(0x100000)
        handle.write(b"\xff" * 16)
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with open(path, "rb") as handle:
        data = handle.read()
    assert model_hashes.model_hashes(path) == (hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8],
                                               hashlib.sha256(data).hexdigest())
    assert reads == [os.path.abspath(path)]


def test_tiny_models_have_no_base_model_hash(small_root, tmp_path):
    result = train(quick_config(small_root, str(tmp_path), max_train_steps=1))
    metadata = read_metadata(result.final_path)
    assert "ss_sd_model_hash" not in metadata and "ss_new_sd_model_hash" not in metadata


def test_the_webui_bundle_takes_the_webuis_own_hashes(tmp_path):
    from webui_models import webui_model

    model, _ = webui_model("sd1", tmp_path)
    model.sd_checkpoint_info = types.SimpleNamespace(  # what the WebUI's CheckpointInfo holds
        model_name="anything-v5", hash="9a8b7c6d", sha256="ab" * 32, shorthash="ab" * 5)
    bundle = LiveSDBundle(model)
    assert (bundle.sd_model_hash, bundle.new_sd_model_hash) == ("9a8b7c6d", "ab" * 32)
    model.sd_checkpoint_info = types.SimpleNamespace(model_name="new", hash="9a8b7c6d", sha256=None,
                                                     shorthash=None)  # not computed yet by the WebUI
    assert LiveSDBundle(model).new_sd_model_hash == ""
