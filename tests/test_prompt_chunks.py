"""Long prompts cut into 75-token chunks the way the AUTOMATIC1111 WebUI cuts them.

Reference: `modules/sd_hijack_clip.py`, `tokenize_line` (comma_padding_backtrack = 20).
"""
from __future__ import annotations

from lib_trainer.hosts.prompt_chunks import batch_chunk_ids, frame_chunk, split_into_chunks

COMMA, BOS, EOS, PAD = 267, 49406, 49407, 49407


def words(count: int, start: int = 1000) -> list[int]:
    """`count` distinct non-comma token ids."""
    return list(range(start, start + count))


def with_commas(count: int, *positions: int) -> list[int]:
    tokens = words(count)
    for position in positions:
        tokens[position] = COMMA
    return tokens


def test_short_prompt_is_one_framed_chunk():
    chunks = split_into_chunks([1001, 1002, 1003], COMMA, max_chunks=3)
    assert chunks == [[1001, 1002, 1003]]
    framed = frame_chunk(chunks[0], BOS, EOS, PAD)
    assert len(framed) == 77
    assert framed == [BOS, 1001, 1002, 1003, EOS] + [PAD] * 72


def test_frame_with_a_distinct_pad_id():
    # SD2's OpenCLIP pads with 0 after the end token
    assert frame_chunk([5, 6], BOS, EOS, 0) == [BOS, 5, 6, EOS] + [0] * 73


def test_empty_prompt_is_one_empty_chunk():
    assert split_into_chunks([], COMMA, max_chunks=3) == [[]]


def test_exactly_75_tokens_is_one_chunk():
    tokens = words(75)
    assert split_into_chunks(tokens, COMMA, 3) == [tokens]


def test_80_tokens_without_commas_split_75_plus_5():
    tokens = words(80)
    assert split_into_chunks(tokens, COMMA, 3) == [tokens[:75], tokens[75:]]


def test_comma_near_the_end_moves_the_last_tag_to_the_next_chunk():
    tokens = with_commas(80, 70)
    chunks = split_into_chunks(tokens, COMMA, 3)
    # 75 - 70 = 5 <= 20: cut right after the comma, so tokens 71..74 start chunk two
    assert chunks == [tokens[:71], tokens[71:]]
    assert chunks[0][-1] == COMMA
    assert [len(c) for c in chunks] == [71, 9]


def test_comma_too_far_back_does_not_move_anything():
    tokens = with_commas(80, 20, 40)
    # last comma at 40: 75 - 40 = 35 > 20, a plain cut at 75
    assert split_into_chunks(tokens, COMMA, 3) == [tokens[:75], tokens[75:]]


def test_backtrack_limit_is_inclusive_at_20():
    at_55 = with_commas(80, 55)   # 75 - 55 = 20: moved
    assert [len(c) for c in split_into_chunks(at_55, COMMA, 3)] == [56, 24]
    at_54 = with_commas(80, 54)   # 75 - 54 = 21: not moved
    assert [len(c) for c in split_into_chunks(at_54, COMMA, 3)] == [75, 5]


def test_comma_arriving_at_a_full_chunk_is_a_plain_cut():
    # The WebUI only backtracks when the token that finds the chunk full is not a comma;
    # here token 75 is a comma, so chunk one keeps all 75 tokens and chunk two starts with it.
    tokens = with_commas(80, 70, 75)
    assert split_into_chunks(tokens, COMMA, 3) == [tokens[:75], tokens[75:]]


def test_comma_as_last_token_of_a_full_chunk():
    tokens = with_commas(80, 74)
    assert split_into_chunks(tokens, COMMA, 3) == [tokens[:75], tokens[75:]]


def test_tag_list_is_never_cut_inside_a_tag():
    # 20 tags of 5 words each followed by a comma: 120 tokens
    tokens = []
    for tag in range(20):
        tokens += words(5, start=1000 + 5 * tag) + [COMMA]
    chunks = split_into_chunks(tokens, COMMA, 3)
    # 12 tags fill 72 tokens; the 13th tag's words 72..74 fill the chunk, and when its 4th word
    # arrives the comma at 71 is 4 back: those 3 words move on. 72 + 48
    assert [len(c) for c in chunks] == [72, 48]
    assert all(c[-1] == COMMA for c in chunks)
    assert sum(chunks, []) == tokens


def test_max_chunks_truncates():
    tokens = words(200)
    chunks = split_into_chunks(tokens, COMMA, max_chunks=2)
    assert chunks == [tokens[:75], tokens[75:150]]  # max_token_length=150: the last 50 are dropped
    assert split_into_chunks(tokens, COMMA, max_chunks=1) == [tokens[:75]]


def test_batch_is_padded_with_empty_chunks():
    short, long = [1001, 1002], words(100)
    batch = batch_chunk_ids([short, long], COMMA, 3, BOS, EOS, PAD)
    assert len(batch) == 2                      # [chunk index][prompt index]
    assert all(len(chunk) == 2 for chunk in batch)
    assert all(len(ids) == 77 for chunk in batch for ids in chunk)
    assert batch[0][0] == [BOS, 1001, 1002, EOS] + [PAD] * 73
    assert batch[1][0] == [BOS, EOS] + [PAD] * 75  # the short prompt's filler chunk
    assert batch[0][1] == [BOS] + long[:75] + [EOS]
    assert batch[1][1] == [BOS] + long[75:] + [EOS] + [PAD] * 50


def test_batch_of_short_prompts_is_one_chunk():
    batch = batch_chunk_ids([[1], [2, 3]], COMMA, 3, BOS, EOS, PAD)
    assert len(batch) == 1 and len(batch[0]) == 2
