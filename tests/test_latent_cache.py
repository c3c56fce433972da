"""The latent cache on disk: one file per image file, broken files encoded again."""
from __future__ import annotations

import os
from pathlib import Path

import torch
from PIL import Image

from lib_trainer.dataset.buckets import Placement
from lib_trainer.dataset.folders import Concept, ImageItem
from lib_trainer.dataset.latent_cache import LatentCache
from lib_trainer.dataset.training_set import Example
from lib_trainer.progress import STATUS, Progress


def mean_colour_encoder(calls: list[int]):
    """A stand-in VAE: each latent is the image's mean colour per channel (plus a zero
    channel), so two different pictures give different latents."""
    def encode(pixels: torch.Tensor) -> torch.Tensor:
        calls.append(pixels.shape[0])
        batch, _, height, width = pixels.shape
        means = pixels.mean(dim=(2, 3))
        latents = torch.cat([means, torch.zeros(batch, 1)], dim=1)
        return latents[:, :, None, None].expand(batch, 4, height // 8, width // 8).clone()
    return encode


def example(path: str) -> Example:
    concept = Concept(os.path.dirname(path), 1, "c", False)
    return Example(ImageItem(path, "c", concept, (64, 64), False), Placement((64, 64), (64, 64)), "c")


def statuses() -> tuple[Progress, list[str]]:
    seen: list[str] = []
    return Progress([lambda e: seen.append(e.text) if e.kind == STATUS else None]), seen


def test_same_stem_other_extension_gets_its_own_cache_file(tmp_path):
    Image.new("RGB", (64, 64), (255, 0, 0)).save(tmp_path / "a.png")
    Image.new("RGB", (64, 64), (0, 0, 255)).save(tmp_path / "a.jpg", quality=95)
    examples = [example(str(tmp_path / "a.png")), example(str(tmp_path / "a.jpg"))]
    calls: list[int] = []
    first = LatentCache(mean_colour_encoder(calls), "vae", flip_aug=False, to_disk=True)
    first.fill(examples, Progress())
    assert first.disk_path(examples[0].path) != first.disk_path(examples[1].path)
    assert sorted(n for n in os.listdir(tmp_path) if n.endswith(".npz")) == \
        ["a.jpg.lib_trainer.npz", "a.png.lib_trainer.npz"]
    # A second run reads both back: neither file was overwritten by the other image.
    second = LatentCache(mean_colour_encoder(calls), "vae", flip_aug=False, to_disk=True)
    second.fill(examples, Progress())
    assert second.reused_from_disk == 2
    red, blue = (second.get(e, flip=False)[:3, 0, 0] for e in examples)
    assert red[0] > 0.9 and red[2] < -0.9 and blue[2] > 0.9 and blue[0] < -0.9


def test_cache_dir_names_keep_the_extension_too(tmp_path):
    cache = LatentCache(mean_colour_encoder([]), "vae", flip_aug=False, to_disk=True, cache_dir=str(tmp_path / "c"))
    assert cache.disk_path("/data/a.png") != cache.disk_path("/data/a.jpg")
    assert os.path.basename(cache.disk_path("/data/a.png")).startswith("a.png.")


def test_empty_or_truncated_cache_file_is_encoded_again(tmp_path):
    path = tmp_path / "a.png"
    Image.new("RGB", (64, 64), (0, 255, 0)).save(path)
    calls: list[int] = []
    first = LatentCache(mean_colour_encoder(calls), "vae", flip_aug=True, to_disk=True)
    first.fill([example(str(path))], Progress())
    cache_file = Path(first.disk_path(str(path)))
    whole = cache_file.read_bytes()
    for broken in (b"", whole[: len(whole) // 2]):
        cache_file.write_bytes(broken)
        progress, seen = statuses()
        cache = LatentCache(mean_colour_encoder(calls), "vae", flip_aug=True, to_disk=True)
        cache.fill([example(str(path))], progress)
        assert cache.reused_from_disk == 0
        assert [s for s in seen if "unreadable" in s and "encoding again" in s and str(cache_file) in s]
        assert cache.get(example(str(path)), flip=False)[1, 0, 0] > 0.9
        # ... and the file was rewritten whole, so the next run reuses it.
        again = LatentCache(mean_colour_encoder(calls), "vae", flip_aug=True, to_disk=True)
        again.fill([example(str(path))], Progress())
        assert again.reused_from_disk == 1
