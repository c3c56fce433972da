"""One image loader for the dataset and the preprocess step: the same pixels either way for
every kind of transparency, on white, upright per EXIF."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lib_trainer.dataset.buckets import Placement
from lib_trainer.dataset.pixels import load_pixels
from lib_trainer.preprocess.pipeline import PreprocessOptions, preprocess_folder

WIDTH, HEIGHT = 64, 96
KEY, INK = (10, 20, 30), (200, 0, 0)  # the left half is transparent, the right half opaque INK


def halves(mode: str, left, right) -> Image.Image:
    image = Image.new(mode, (WIDTH, HEIGHT), left)
    image.paste(right, (WIDTH // 2, 0, WIDTH, HEIGHT))
    return image


def palette_with_trns() -> tuple[Image.Image, dict]:
    image = halves("P", 0, 1)
    image.putpalette([*KEY, *INK] + [0] * 762)
    return image, {"transparency": 0}  # palette entry 0 transparent (a tRNS chunk)


CASES = {
    # name: (image, save options, expected opaque-half colour)
    "palette+tRNS": (*palette_with_trns(), INK),
    "RGB+tRNS": (halves("RGB", KEY, INK), {"transparency": KEY}, INK),
    "L+tRNS": (halves("L", 10, 200), {"transparency": 10}, (200, 200, 200)),
    "LA": (halves("LA", (10, 0), (200, 255)), {}, (200, 200, 200)),
    "RGBA": (halves("RGBA", (*KEY, 0), (*INK, 255)), {}, INK),
}


def dataset_pixels(path: str, size: tuple[int, int]) -> np.ndarray:
    tensor = load_pixels(path, Placement(size, size), (0, 0), flip=False)
    return ((tensor.permute(1, 2, 0).numpy() + 1.0) * 127.5).round().astype(np.uint8)


def preprocess_pixels(source, destination, size: tuple[int, int]) -> np.ndarray:
    # A fixed size equal to the picture's own: nothing is resized or cropped.
    result = preprocess_folder(PreprocessOptions(str(source), str(destination), size[0], size[1], crop="center"))
    assert len(result.written) == 1, result.skipped
    return np.asarray(Image.open(result.written[0]).convert("RGB"))


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("rotated", [False, True])
def test_dataset_and_preprocess_read_the_same_pixels(tmp_path, name, rotated):
    image, options, ink = CASES[name]
    source = tmp_path / "raw"
    source.mkdir()
    path = str(source / "picture.png")
    if rotated:
        exif = Image.Exif()
        exif[0x0112] = 6  # shown turned 90 degrees clockwise
        options = {**options, "exif": exif.tobytes()}
    image.save(path, **options)
    size = (HEIGHT, WIDTH) if rotated else (WIDTH, HEIGHT)

    from_dataset = dataset_pixels(path, size)
    from_preprocess = preprocess_pixels(source, tmp_path / "out", size)
    np.testing.assert_array_equal(from_dataset, from_preprocess)
    # Upright: turned clockwise, the transparent left half becomes the top half.
    transparent = from_dataset[: WIDTH // 2] if rotated else from_dataset[:, : WIDTH // 2]
    opaque = from_dataset[WIDTH // 2:] if rotated else from_dataset[:, WIDTH // 2:]
    assert (transparent == 255).all(), "transparent pixels are white"
    assert (opaque == np.array(ink, dtype=np.uint8)).all()


def test_half_transparent_pixels_blend_on_white(tmp_path):
    source = tmp_path / "raw"
    source.mkdir()
    halves("RGBA", (*KEY, 0), (*INK, 128)).save(source / "picture.png")
    from_dataset = dataset_pixels(str(source / "picture.png"), (WIDTH, HEIGHT))
    np.testing.assert_array_equal(from_dataset, preprocess_pixels(source, tmp_path / "out", (WIDTH, HEIGHT)))
    # 255 * (1 - 128/255) + 200 * 128/255 = 227.4; 255 * (1 - 128/255) = 127
    assert from_dataset[0, -1].tolist() == [227, 127, 127]
