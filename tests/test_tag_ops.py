"""Properties of the pure tag operations (lib_trainer/preprocess/tags.py)."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lib_trainer.preprocess import tags as ops

tag = st.text(alphabet="abcdefgh _()", min_size=1, max_size=8).map(str.strip).filter(bool)
tag_lists = st.lists(tag, max_size=12)
unique_lists = st.lists(tag, max_size=12, unique=True)


@settings(max_examples=200, deadline=None)
@given(unique_lists, tag)
def test_remove_then_add_restores_the_tag_set(tags, extra):
    tags = tags + ([extra] if extra not in tags else [])
    assert set(ops.add(ops.remove(tags, [extra]), [extra])) == set(tags)


@settings(max_examples=200, deadline=None)
@given(tag_lists, tag_lists, st.sampled_from(["front", "end"]))
def test_add_keeps_existing_order_and_adds_each_tag_once(tags, new, position):
    result = ops.add(tags, new, position)
    assert set(result) == set(tags) | set(new)
    kept = [t for t in result if t in tags]
    assert kept == [t for t in tags]  # existing tags untouched, in order
    added = [t for t in result if t not in tags]
    assert len(added) == len(set(added))
    if position == "front" and added:
        assert result[: len(added)] == added


@settings(max_examples=200, deadline=None)
@given(tag_lists)
def test_dedupe_and_sort_keep_the_set(tags):
    assert set(ops.dedupe(tags)) == set(tags)
    assert len(ops.dedupe(tags)) == len(set(tags))
    assert sorted(ops.sort(tags)) == sorted(tags)
    assert ops.sort(tags, keep_first=2)[:2] == tags[:2]


@settings(max_examples=200, deadline=None)
@given(unique_lists, unique_lists)
def test_move_to_front_is_a_permutation_with_the_given_tags_first(tags, front):
    result = ops.move_to_front(tags, front)
    assert sorted(result) == sorted(tags)
    present = [t for t in front if t in tags]
    assert result[: len(present)] == present


@settings(max_examples=200, deadline=None)
@given(unique_lists, tag)
def test_trigger_is_first_exactly_once(tags, trigger):
    result = ops.insert_trigger(tags, trigger)
    assert result[0] == trigger and result.count(trigger) == 1
    assert set(result) == set(tags) | {trigger}


def test_replace_plain_whole_tags_only():
    assert ops.replace(["long hair", "hair bow", "smile"], "long hair", "very long hair") == [
        "very long hair", "hair bow", "smile"]
    # Replacing by an existing tag merges the duplicate; empty replacement removes it.
    assert ops.replace(["a", "b", "c"], "c", "a") == ["a", "b"]
    assert ops.replace(["a", "b"], "b", "") == ["a"]
    assert ops.replace(["a", "b"], "b", "x, y") == ["a", "x", "y"]


def test_replace_regex_inside_tags():
    tags = ["long_hair", "blue_eyes", "solo"]
    assert ops.replace(tags, r"_", " ", regex=True) == ["long hair", "blue eyes", "solo"]
    assert ops.replace(tags, r"^(\w+)_eyes$", r"\1 eyes, eyes", regex=True) == [
        "long_hair", "blue eyes", "eyes", "solo"]
    assert ops.replace(tags, r"^solo$", "", regex=True) == ["long_hair", "blue_eyes"]


def test_unknown_operation_and_bad_position_are_clear():
    with pytest.raises(ValueError, match="unknown tag operation 'shuffle'"):
        ops.apply("shuffle", ["a"])
    with pytest.raises(ValueError, match="position"):
        ops.add(["a"], ["b"], position="middle")
