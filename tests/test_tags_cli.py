"""`python -m lib_trainer tags`: operations in command-line order, filters, dry run."""
from lib_trainer.__main__ import main

from test_tag_editor import make_dataset


def test_operations_in_order_on_the_selection(tmp_path, capsys):
    make_dataset(tmp_path)
    assert main(["tags", str(tmp_path), "--with", "short hair", "--without", "1boy", "--remove", "smile",
                 "--add-front", "new", "--regex-replace", "^(short) hair$", r"\1 cut", "--trigger", "trig"]) == 0
    assert (tmp_path / "b.txt").read_text() == "trig, new, 1girl, short cut"
    assert (tmp_path / "a.txt").read_text() == "trig, 1girl, long hair, smile"  # not selected
    out = capsys.readouterr().out
    assert "1 of 4 images selected" in out and "1 captions saved" in out and "backs up the original captions" in out


def test_dry_run_and_frequency(tmp_path, capsys):
    make_dataset(tmp_path)
    assert main(["tags", str(tmp_path), "--dedupe", "--sort", "--freq", "--dry-run"]) == 0
    assert (tmp_path / "b.txt").read_text() == "1girl, short hair, smile, smile"
    out = capsys.readouterr().out
    assert "     2  1girl" in out and "2 of 4 captions will be written" in out and "saved" not in out
