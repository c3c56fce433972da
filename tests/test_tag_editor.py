"""The TagEditor session: batch operations, filters, undo, backup, atomic save."""
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from lib_trainer.errors import InvalidInput
from lib_trainer.preprocess.captions import CaptionEncodingError
from lib_trainer.preprocess.tag_editor import TagEditor, convert_encodings

CAPTIONS = {
    "a": "trig, 1girl, long hair, smile",
    "b": "1girl, short hair, smile, smile",
    "c": "1boy, short hair",
    "d": None,  # no caption file
}


def make_dataset(folder, captions_by_name=CAPTIONS):
    for i, (name, text) in enumerate(captions_by_name.items()):
        Image.new("RGB", (32, 24), (40 * i, 80, 120)).save(folder / f"{name}.png")
        if text is not None:
            (folder / f"{name}.txt").write_text(text, encoding="utf-8")
    (folder / "notes.md").write_text("not an image")
    return folder


@pytest.fixture
def editor(tmp_path):
    return TagEditor(str(make_dataset(tmp_path)))


def test_loads_captions_frequency_and_thumbnails(editor):
    assert len(editor) == 4
    assert editor.caption(1) == "1girl, short hair, smile, smile"
    assert editor.caption(3) == ""
    freq = dict(editor.frequency())
    assert freq == {"1girl": 2, "short hair": 2, "smile": 2, "trig": 1, "long hair": 1, "1boy": 1}
    assert editor.frequency()[0] == ("1girl", 2)  # ties broken by name
    thumb = editor.thumbnail(0)
    assert thumb.size[0] <= 256 and thumb is editor.thumbnail(0)  # cached


def test_filters_and_or_not_text(editor):
    assert editor.filter(["1girl", "smile"]) == [0, 1]
    assert editor.filter(["1boy", "long hair"], mode="or") == [0, 2]
    assert editor.filter(["short hair"], exclude=["1boy"]) == [1]
    assert editor.filter(text="hair") == [0, 1, 2]
    assert editor.filter(text=r"^1\w+, short", regex=True) == [1, 2]
    assert editor.filter(exclude=["smile"]) == [2, 3]


def test_batch_operations_on_a_selection_and_undo(editor):
    girls = editor.filter(["1girl"])
    assert editor.apply("add", girls, new="blue eyes", position="front") == 2
    assert editor.caption(0).startswith("blue eyes, trig")
    assert editor.apply("remove", None, unwanted="short hair") == 2
    assert editor.apply("dedupe") == 1
    assert editor.caption(1) == "blue eyes, 1girl, smile"
    assert editor.apply("replace", None, old="smile", new="grin") == 2
    assert editor.apply("replace", None, old=r"(\w+) hair", new=r"hair \1", regex=True) == 1
    assert editor.caption(0) == "blue eyes, trig, 1girl, hair long, grin"
    assert editor.apply("move_to_front", None, front="1girl") == 2
    assert editor.apply("sort", None, keep_first=1) == 1  # b is already in order
    assert editor.apply("trigger", None, trigger="trig") == 4
    assert [editor.caption(i) for i in range(4)] == [
        "trig, 1girl, blue eyes, grin, hair long", "trig, 1girl, blue eyes, grin", "trig, 1boy", "trig"]
    assert editor.apply("remove", None, unwanted="nothing-here") == 0  # no-op: nothing to undo for it
    undone = [editor.undo() for _ in range(len(editor.undo_names))]
    assert undone[0] == "trigger" and undone[-1] == "add"
    assert editor.undo() is None
    assert [editor.caption(i) for i in range(4)] == [
        "trig, 1girl, long hair, smile", "1girl, short hair, smile, smile", "1boy, short hair", ""]
    assert editor.pending() == []


def test_a_bad_regex_changes_nothing(editor):
    with pytest.raises(InvalidInput, match="'\\(unclosed' is not a valid regular expression"):
        editor.apply("replace", None, old="(unclosed", new="x", regex=True)
    assert editor.pending() == [] and editor.undo_names == []


def test_per_image_edit_is_undoable(editor):
    editor.set_caption(2, "1boy,  glasses ,, ")
    assert editor.caption(2) == "1boy, glasses"
    assert editor.undo() == "edit c.png"
    assert editor.caption(2) == "1boy, short hair"


def test_summary_then_save_backs_up_originals_and_writes_atomically(editor, tmp_path):
    editor.apply("remove", None, unwanted="smile")
    editor.apply("add", [3], new="1other")
    summary = editor.summary()
    assert "3 of 4 captions will be written" in summary
    assert "removed: smile (x2)" in summary and "added: 1other (x1)" in summary
    assert (tmp_path / "a.txt").read_text() == CAPTIONS["a"]  # nothing written before save
    written = editor.save()
    assert {os.path.basename(c.caption_file) for c in written} == {"a.txt", "b.txt", "d.txt"}
    assert (tmp_path / "a.txt").read_text() == "trig, 1girl, long hair"
    assert (tmp_path / "d.txt").read_text() == "1other"
    backup = editor.backup_dir
    assert sorted(os.listdir(backup)) == ["a.txt", "b.txt"]  # d had no file to back up
    assert open(os.path.join(backup, "b.txt")).read() == CAPTIONS["b"]
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    # A second save in the same session keeps the first backup (the true originals).
    editor.apply("add", [0], new="again")
    editor.save()
    assert open(os.path.join(backup, "a.txt")).read() == CAPTIONS["a"]
    assert editor.summary() == "No caption changes to save."
    assert TagEditor(str(tmp_path)).caption(0) == "trig, 1girl, long hair, again"


def test_failed_write_leaves_the_caption_intact(editor, tmp_path, monkeypatch):
    editor.apply("add", [0], new="x")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        editor.save()
    assert (tmp_path / "a.txt").read_text() == CAPTIONS["a"]
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_captions_in_other_encodings_are_refused_until_converted(tmp_path):
    make_dataset(tmp_path, {"u16": None, "latin": None, "bom": None})
    (tmp_path / "u16.txt").write_bytes("café, ß".encode("utf-16"))
    (tmp_path / "latin.txt").write_bytes("naïve, tag".encode("cp1252"))
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbfsolo, smile\n")
    with pytest.raises(CaptionEncodingError, match=r"2 captions in .* are not UTF-8: .*latin.txt \(Windows-1252\), "
                                                   r".*u16.txt \(UTF-16\)") as refused:
        TagEditor(str(tmp_path))
    assert "--convert-encoding" in str(refused.value) and (tmp_path / "u16.txt").read_bytes() == "café, ß".encode("utf-16")
    converted, backup = convert_encodings(str(tmp_path))
    assert sorted(os.path.basename(path) for path in converted) == ["latin.txt", "u16.txt"]
    editor = TagEditor(str(tmp_path))
    assert [editor.caption(i) for i in range(3)] == ["solo, smile", "naïve, tag", "café, ß"]
    assert (tmp_path / "u16.txt").read_text(encoding="utf-8") == "café, ß"
    assert open(os.path.join(backup, "u16.txt"), "rb").read() == "café, ß".encode("utf-16")  # original bytes kept


tag = st.sampled_from(["a", "b", "c", "d", "e", "long hair", "x_y"])
ops = st.one_of(
    st.tuples(st.just("add"), st.fixed_dictionaries({"new": st.lists(tag, max_size=3),
                                                     "position": st.sampled_from(["front", "end"])})),
    st.tuples(st.just("remove"), st.fixed_dictionaries({"unwanted": st.lists(tag, max_size=3)})),
    st.tuples(st.just("replace"), st.fixed_dictionaries({"old": tag, "new": tag})),
    st.tuples(st.just("dedupe"), st.just({})),
    st.tuples(st.just("sort"), st.just({})),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(ops, min_size=1, max_size=6))
def test_undo_of_every_operation_restores_the_captions(editor, sequence):
    start = [list(e.tags) for e in editor.entries]
    applied = sum(1 for name, params in sequence if editor.apply(name, None, **params))
    for _ in range(applied):
        assert editor.undo() is not None
    assert [e.tags for e in editor.entries] == start
    assert editor.undo() is None
