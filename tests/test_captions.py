"""Captions: reading files, the trigger word, and the prompt each step trains with."""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lib_trainer.dataset.captions import (
    CaptionError, CaptionOptions, put_trigger_first, read_caption, training_caption,
)


def write_bytes(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


# --- read_caption ---

def test_read_caption_plain(tmp_path):
    assert read_caption(write_bytes(tmp_path / "a.txt", b"1girl, solo\n")) == "1girl, solo"


def test_read_caption_joins_lines_and_drops_blank_ones(tmp_path):
    path = write_bytes(tmp_path / "a.txt", b"1girl\n\n  smile  \r\nlong hair")
    assert read_caption(path) == "1girl, smile, long hair"


def test_read_caption_accepts_bom(tmp_path):
    path = write_bytes(tmp_path / "a.txt", "\ufeffcafé".encode("utf-8"))
    assert read_caption(path) == "café"


def test_read_caption_rejects_latin1(tmp_path):
    path = write_bytes(tmp_path / "a.txt", "caf\xe9".encode("latin-1"))
    with pytest.raises(CaptionError) as error:
        read_caption(path)
    message = str(error.value)
    assert path in message
    assert "UTF-8" in message
    assert "position 3" in message  # 'c', 'a', 'f', then the bad byte


# --- trigger word ---

@pytest.mark.parametrize("caption, expected", [
    ("1girl, sks, smile", "sks, 1girl, smile"),   # moved to the front
    ("1girl, smile", "sks, 1girl, smile"),        # added when missing
    ("sks, 1girl", "sks, 1girl"),                 # already first: unchanged
    ("sks, 1girl, sks", "sks, 1girl"),            # never twice
    ("", "sks"),
    ("sksx, 1girl", "sks, sksx, 1girl"),          # a tag that merely contains it is another tag
])
def test_put_trigger_first(caption, expected):
    assert put_trigger_first(caption, "sks") == expected


def test_put_trigger_first_multiword_trigger_and_blank_trigger():
    assert put_trigger_first("1girl, sls 1girl", "sls 1girl") == "sls 1girl, 1girl"
    assert put_trigger_first("1girl, smile", "  ") == "1girl, smile"


# --- training_caption ---

CAPTION = "sks, 1girl, smile, long hair, red eyes, outdoors"
TAGS = ["sks", "1girl", "smile", "long hair", "red eyes", "outdoors"]


def split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def test_no_random_options_returns_caption_unchanged():
    assert training_caption(CAPTION, CaptionOptions(), random.Random(0)) == CAPTION


def test_shuffle_keeps_first_tokens_and_permutes_the_rest():
    options = CaptionOptions(shuffle_caption=True, keep_tokens=2)
    rng = random.Random(1)
    seen = set()
    for _ in range(50):
        tags = split(training_caption(CAPTION, options, rng))
        assert tags[:2] == ["sks", "1girl"]
        assert sorted(tags[2:]) == sorted(TAGS[2:])
        seen.add(tuple(tags[2:]))
    assert len(seen) > 1  # it really shuffles


tag_text = st.sampled_from(["sks", "1girl", "solo", "smile", "long hair", "red eyes", "outdoors", "a", "b c"])


@settings(max_examples=200, deadline=None, database=None)
@given(tags=st.lists(tag_text, min_size=0, max_size=12), keep=st.integers(0, 14), seed=st.integers(0, 2**32))
def test_shuffle_property(tags, keep, seed):
    caption = ", ".join(tags)
    out = split(training_caption(caption, CaptionOptions(shuffle_caption=True, keep_tokens=keep),
                                 random.Random(seed)))
    assert out[:keep] == tags[:keep]
    assert sorted(out[keep:]) == sorted(tags[keep:])
    assert len(out) == len(tags)


def test_caption_dropout_rate_one_gives_empty_caption():
    options = CaptionOptions(caption_dropout_rate=1.0, shuffle_caption=True, keep_tokens=1)
    rng = random.Random(0)
    assert all(training_caption(CAPTION, options, rng) == "" for _ in range(20))


def test_caption_dropout_rate_half_drops_about_half():
    options = CaptionOptions(caption_dropout_rate=0.5)
    rng = random.Random(0)
    results = [training_caption(CAPTION, options, rng) for _ in range(2000)]
    dropped = results.count("")
    assert 850 < dropped < 1150
    assert set(results) == {"", CAPTION}  # otherwise untouched


def test_tag_dropout_never_drops_kept_tokens():
    options = CaptionOptions(caption_tag_dropout_rate=1.0, keep_tokens=2)
    assert training_caption(CAPTION, options, random.Random(0)) == "sks, 1girl"


def test_tag_dropout_drops_some_tags_keeps_order_without_shuffle():
    options = CaptionOptions(caption_tag_dropout_rate=0.5, keep_tokens=1)
    rng = random.Random(3)
    lengths = set()
    for _ in range(200):
        tags = split(training_caption(CAPTION, options, rng))
        assert tags[0] == "sks"
        # without shuffle_caption the surviving tags stay in their original order
        assert tags[1:] == [t for t in TAGS[1:] if t in tags[1:]]
        lengths.add(len(tags))
    assert min(lengths) < len(TAGS) and max(lengths) > 1


def test_same_seed_same_captions():
    options = CaptionOptions(shuffle_caption=True, keep_tokens=1, caption_tag_dropout_rate=0.3,
                             caption_dropout_rate=0.1)
    first = training_caption(CAPTION, options, random.Random(42))
    rng_a, rng_b = random.Random(42), random.Random(42)
    a = [training_caption(CAPTION, options, rng_a) for _ in range(30)]
    b = [training_caption(CAPTION, options, rng_b) for _ in range(30)]
    assert a == b
    assert a[0] == first
    rng_c = random.Random(7)
    assert [training_caption(CAPTION, options, rng_c) for _ in range(30)] != a  # another seed, another sequence


def test_custom_separator():
    options = CaptionOptions(shuffle_caption=True, keep_tokens=1, separator=";")
    out = training_caption("sks; a; b; c", options, random.Random(0))
    parts = [p.strip() for p in out.split(";")]
    assert parts[0] == "sks" and sorted(parts[1:]) == ["a", "b", "c"]


def test_trigger_word_stays_first_when_shuffling_without_keep_tokens():
    import random

    from lib_trainer.config import TrainConfig
    from lib_trainer.dataset.plan import caption_options

    options = caption_options(TrainConfig().replace(trigger_word="sls", shuffle_caption=True, keep_tokens=0,
                                                    caption_tag_dropout_rate=0.5))
    rng = random.Random(0)
    for _ in range(50):
        assert training_caption("sls, a, b, c, d", options, rng).startswith("sls")
