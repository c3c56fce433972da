"""Any file that is not a readable checkpoint, given as the model or as `--vae`, is a
CheckpointError naming the file and what to do: fixed garbage (never os.urandom: the failures
depend on the bytes) and empty files."""
from __future__ import annotations

import random

import pytest

from lib_trainer.hosts.components import build_components
from lib_trainer.hosts.single_file import CheckpointError, load_single_file, load_vae_file, save_single_file


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("model") / "tiny-sd1.safetensors")
    save_single_file(build_components("tiny-sd1", seed=1), path)
    return path


def noise_bytes(seed: int) -> bytes:
    """Fixed garbage of a few lengths; torch's weights-only unpickler fails on such bytes with
    IndexError, KeyError, struct.error... depending on the bytes (seeds 1, 12, 45, 47-49 do)."""
    generator = random.Random(seed)
    return generator.randbytes(generator.choice([1, 16, 64, 512, 4096]))


@pytest.mark.parametrize("extension", [".ckpt", ".safetensors", ".pt"])
def test_random_and_empty_files_are_checkpoint_errors_as_model_and_as_vae(model, tmp_path, extension):
    vae = build_components("tiny-sd1", device="meta", seed=None).vae
    cases = {f"noise{seed}{extension}": noise_bytes(seed) for seed in range(50)}
    cases[f"empty{extension}"] = b""
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        for load in (lambda: load_single_file(str(path)), lambda: load_single_file(model, vae_path=str(path)),
                     lambda: load_vae_file(str(path), vae)):
            with pytest.raises(CheckpointError) as error:
                load()
            message = str(error.value)
            assert str(path) in message, name
            what_to_do = "did not finish; download it again" if not data else "download it again"
            assert what_to_do in message and ("not a readable" in message or not data), (name, message)
