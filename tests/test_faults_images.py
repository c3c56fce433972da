"""Hostile pictures (issue: the fault suite, items 9-11 and 13): truncated files found at scan
time, 16-bit greyscale at its real range, formats and links that cannot be read listed with
the reason, and preprocess names that never overwrite each other. No user file changes."""
from __future__ import annotations

import hashlib
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from lib_trainer.dataset.folders import scan_dataset
from lib_trainer.dataset.images import load_picture
from lib_trainer.preprocess.pipeline import PreprocessOptions, preprocess_folder


def noise_image(seed: int, size=(96, 96)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def folder_hashes(folder) -> dict[str, str]:
    hashes = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                with open(path, "rb") as handle:
                    hashes[path] = hashlib.sha256(handle.read()).hexdigest()
    return hashes


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def sixteen_bit_png(path, values: np.ndarray, colour_type: int) -> None:
    """A 16-bit PNG written byte by byte (PIL writes 16-bit greyscale only)."""
    height, width = values.shape[:2]
    rows = values.astype(">u2").reshape(height, -1)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)
    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    with open(path, "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(raw))
                     + png_chunk(b"IEND", b""))


@pytest.fixture
def concept(tmp_path):
    folder = tmp_path / "data" / "10_thing"
    folder.mkdir(parents=True)
    for index in range(3):
        noise_image(index).save(folder / f"good{index}.png")
    return folder


@pytest.mark.parametrize("kind", ["jpg", "png", "webp"])
def test_a_truncated_picture_is_skipped_and_listed_at_scan_time(concept, kind):
    noise_image(9, (256, 256)).save(concept / f"whole.{kind}")
    data = (concept / f"whole.{kind}").read_bytes()
    (concept / f"cut.{kind}").write_bytes(data[: len(data) * 2 // 3])
    before = folder_hashes(concept)
    scan = scan_dataset(str(concept.parent))
    skipped = {os.path.basename(path): reason for path, reason in scan.skipped}
    assert list(skipped) == [f"cut.{kind}"] and "cannot read image" in skipped[f"cut.{kind}"]
    assert sorted(os.path.basename(item.path) for item in scan.items) == [
        "good0.png", "good1.png", "good2.png", f"whole.{kind}"]
    assert folder_hashes(concept) == before


def test_many_pictures_are_checked_in_parallel_in_order(concept):
    for index in range(3, 12):
        noise_image(index).save(concept / f"good{index:02d}.jpg")
    (concept / "good05.jpg").write_bytes((concept / "good05.jpg").read_bytes()[:300])
    scan = scan_dataset(str(concept.parent))
    assert [os.path.basename(path) for path, _ in scan.skipped] == ["good05.jpg"]
    assert len(scan.items) == 11


def test_16_bit_greyscale_is_read_at_its_real_range(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "grey16.png")
    assert Image.open(tmp_path / "grey16.png").mode == "I;16"
    picture = np.asarray(load_picture(tmp_path / "grey16.png"), dtype=np.float64)
    expected = np.rint(ramp / 257.0)
    assert np.abs(picture[..., 0] - expected).max() <= 1
    assert 120 < picture.mean() < 135  # PIL's own conversion gives ~254 (near-white)


def test_16_bit_rgb_and_grey_with_alpha_keep_their_colours(tmp_path):
    ramp = np.linspace(0, 65535, 32 * 32).reshape(32, 32)
    sixteen_bit_png(tmp_path / "rgb16.png", np.stack([ramp, ramp / 2, 65535 - ramp], -1), colour_type=2)
    sixteen_bit_png(tmp_path / "la16.png", np.stack([ramp, np.full_like(ramp, 65535)], -1), colour_type=4)
    rgb = np.asarray(load_picture(tmp_path / "rgb16.png"), dtype=np.float64).reshape(-1, 3).mean(0)
    assert rgb == pytest.approx([127.5, 63.5, 127.5], abs=1.5)
    grey = np.asarray(load_picture(tmp_path / "la16.png"), dtype=np.float64)
    assert grey.mean() == pytest.approx(127.5, abs=1.5)


def test_tiff_and_the_first_frame_of_a_gif_are_read(concept):
    noise_image(5).save(concept / "scan.tif")
    frames = [Image.new("RGB", (80, 80), colour) for colour in ("red", "blue")]
    frames[0].save(concept / "moving.gif", save_all=True, append_images=frames[1:])
    scan = scan_dataset(str(concept.parent))
    assert {"scan.tif", "moving.gif"} <= {os.path.basename(item.path) for item in scan.items}
    assert load_picture(concept / "moving.gif").getpixel((10, 10)) == (255, 0, 0)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symbolic links here")
def test_unsupported_formats_and_broken_links_are_listed_with_the_reason(concept, tmp_path):
    (concept / "phone.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")
    (concept / "new.avif").write_bytes(b"\x00\x00\x00\x1cftypavif")
    os.symlink(tmp_path / "gone.png", concept / "dangling.png")
    os.symlink(concept / "loop_b.png", concept / "loop_a.png")
    os.symlink(concept / "loop_a.png", concept / "loop_b.png")
    scan = scan_dataset(str(concept.parent))
    reasons = {os.path.basename(path): reason for path, reason in scan.skipped}
    assert "format not supported (.heic): convert it to PNG" in reasons["phone.heic"]
    assert "format not supported (.avif)" in reasons["new.avif"]
    for link in ("dangling.png", "loop_a.png", "loop_b.png"):
        assert reasons[link].startswith("broken link")
    assert len(scan.items) == 3

    result = preprocess_folder(PreprocessOptions(source=str(concept), destination=str(tmp_path / "out"),
                                                 width=64, height=64, crop="center"))
    skipped = {os.path.basename(path): reason for path, reason in result.skipped}
    assert skipped["phone.heic"].startswith("format not supported")
    assert skipped["dangling.png"].startswith("broken link")
    assert len(result.written) == 3


def test_preprocess_gives_pictures_of_the_same_name_their_own_outputs(tmp_path):
    source = tmp_path / "raw"
    source.mkdir()
    for index, extension in enumerate(("png", "jpg", "webp")):
        noise_image(index).save(source / f"x.{extension}")
    (source / "X.bmp").write_bytes(b"")  # unreadable: skipped
    noise_image(7).save(source / "X.tif")
    before = folder_hashes(source)
    result = preprocess_folder(PreprocessOptions(source=str(source), destination=str(tmp_path / "out"),
                                                 width=64, height=64, crop="center"))
    names = sorted(os.path.basename(path) for path in result.written)
    assert len(names) == len(set(names)) == 4
    assert sorted(os.listdir(tmp_path / "out")) == names
    assert f"{len(names)} images written" in result.summary()
    assert folder_hashes(source) == before
