"""preprocess_folder on a messy folder: outputs, kohya naming, captions, nothing lost."""
import hashlib
import os

import pytest
from PIL import Image

from helpers_draw import detail_patch_picture
from lib_trainer.__main__ import main
from lib_trainer.preprocess.focal import FocalSettings
from lib_trainer.preprocess.pipeline import PreprocessOptions, preprocess_folder
from lib_trainer.progress import Progress


def digest(folder):
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in os.listdir(folder)}


@pytest.fixture
def messy(tmp_path):
    src = tmp_path / "raw"
    src.mkdir()
    detail_patch_picture((900, 400), (700, 100, 850, 250)).save(src / "wide.jpg")
    (src / "wide.txt").write_text("trig, 1girl")
    detail_patch_picture((300, 1400), (50, 50, 250, 250)).save(src / "long.png")
    rgba = Image.new("RGBA", (300, 300), (255, 0, 0, 0))
    rgba.paste((0, 0, 255, 255), (100, 100, 200, 200))
    rgba.save(src / "clear.png")
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (src / "readme.md").write_text("notes")
    return src


def test_batch_with_bad_files_naming_flip_split_and_originals_kept(messy, tmp_path):
    before = digest(messy)
    events = []
    options = PreprocessOptions(str(messy), str(tmp_path / "train"), 256, 256, split=True, split_threshold=0.7, flip=True,
                                repeats=5, trigger="trig", class_token="1girl", debug=True,
                                focal=FocalSettings(face_weight=0))
    result = preprocess_folder(options, Progress([events.append]))
    assert result.output_folder == str(tmp_path / "train" / "5_trig 1girl")
    names = sorted(os.listdir(result.output_folder))
    tiles = [n for n in names if n.startswith("long_tile") and n.endswith(".png") and "_flip" not in n]
    assert len(tiles) >= 3
    assert {"wide.png", "wide_flip.png", "wide.txt", "wide_flip.txt", "clear.png", "clear_flip.png"} <= set(names)
    assert open(os.path.join(result.output_folder, "wide_flip.txt")).read() == "trig, 1girl"
    assert all(Image.open(p).size == (256, 256) for p in result.written)
    skipped = dict(result.skipped)
    assert "cannot read image" in skipped[str(messy / "broken.png")]
    assert skipped[str(messy / "readme.md")] == "not an image file"
    assert digest(messy) == before  # originals untouched
    clear = Image.open(os.path.join(result.output_folder, "clear.png"))
    assert clear.mode == "RGB" and clear.getpixel((0, 0)) == (255, 255, 255)  # flattened on white
    assert os.path.isfile(os.path.join(result.output_folder, ".focal_debug", "wide.jpg"))
    assert [e.kind for e in events][0] == "start" and events[-1].kind == "end"
    assert any(e.kind == "status" and "broken.png" in e.text for e in events)


def test_transparency_kept_on_request_and_output_cannot_be_the_source(messy, tmp_path):
    result = preprocess_folder(PreprocessOptions(str(messy), str(tmp_path / "out"), 128, 128, crop="center",
                                                 background=None))
    assert Image.open(os.path.join(result.output_folder, "clear.png")).mode == "RGBA"
    with pytest.raises(ValueError, match="originals stay untouched"):
        preprocess_folder(PreprocessOptions(str(messy), str(messy)))
    with pytest.raises(ValueError, match="unknown crop mode 'smart'"):
        preprocess_folder(PreprocessOptions(str(messy), str(tmp_path / "x"), crop="smart"))
    with pytest.raises(ValueError, match="needs both repeats"):
        preprocess_folder(PreprocessOptions(str(messy), str(tmp_path / "x"), trigger="trig"))


def test_huge_image_is_skipped_with_a_clear_message(messy, tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100_000)  # the 900x400 picture is now a "bomb"
    result = preprocess_folder(PreprocessOptions(str(messy), str(tmp_path / "out"), 128, 128, crop="center"))
    assert "too large" in dict(result.skipped)[str(messy / "wide.jpg")]
    assert os.path.isfile(os.path.join(result.output_folder, "clear.png"))


def test_stop_request_ends_the_batch_early(messy, tmp_path):
    progress = Progress()
    progress.commands.request_stop()
    result = preprocess_folder(PreprocessOptions(str(messy), str(tmp_path / "out"), 128, 128), progress)
    assert result.stopped and result.written == []


def test_cli_bucket_mode(messy, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["preprocess", str(messy), str(out), "--bucket", "256", "--face-weight", "0", "--quiet"]) == 0
    # The training bucket of a 9:4 picture at 256: by aspect-ratio difference (kohya's rule)
    # 320x192 (1.67, off by 0.58) beats 384x128 (3.0, off by 0.75).
    assert Image.open(out / "wide.png").size == (320, 192)
    assert "images written" in capsys.readouterr().out
