"""Long prompts split the way the WebUI splits them, so a LoRA trains on the conditioning
it will see at generation time.

CLIP reads 77 tokens: a start token, 75 prompt tokens and an end token. The WebUI cuts a
longer prompt into 75-token chunks, preferring to cut after a comma if one lies within the
last 20 tokens of a full chunk (so a tag is not split across chunks), pads every chunk,
encodes each chunk separately and concatenates the results along the sequence. A batch
is padded with empty chunks to the longest prompt's chunk count.
"""
from __future__ import annotations

CHUNK_LENGTH = 75
COMMA_BACKTRACK = 20


def split_into_chunks(tokens: list[int], comma_id: int, max_chunks: int) -> list[list[int]]:
    """Prompt token ids (no start/end tokens) -> at most `max_chunks` lists of <= 75 ids."""
    chunks: list[list[int]] = []
    current: list[int] = []
    last_comma = -1
    for token in tokens:
        if len(current) == CHUNK_LENGTH:
            # Like the WebUI, no backtrack when the token arriving at a full chunk is itself a comma.
            if token != comma_id and last_comma != -1 and len(current) - last_comma <= COMMA_BACKTRACK:
                carried = current[last_comma + 1:]
                chunks.append(current[: last_comma + 1])
                current = carried
            else:
                chunks.append(current)
                current = []
            last_comma = -1
        if token == comma_id:
            last_comma = len(current)
        current.append(token)
    if current or not chunks:
        chunks.append(current)
    return chunks[:max_chunks]


def frame_chunk(chunk: list[int], bos_id: int, eos_id: int, pad_id: int) -> list[int]:
    """[start] + tokens + [end] + padding, 77 ids."""
    return [bos_id] + chunk + [eos_id] + [pad_id] * (CHUNK_LENGTH - len(chunk))


def batch_chunk_ids(prompts_tokens: list[list[int]], comma_id: int, max_chunks: int,
                    bos_id: int, eos_id: int, pad_id: int) -> list[list[list[int]]]:
    """For a batch: [chunk index][prompt index] -> 77 ids, every prompt with the same chunk count."""
    per_prompt = [split_into_chunks(tokens, comma_id, max_chunks) for tokens in prompts_tokens]
    count = max(len(chunks) for chunks in per_prompt)
    return [
        [frame_chunk(chunks[i] if i < len(chunks) else [], bos_id, eos_id, pad_id) for chunks in per_prompt]
        for i in range(count)
    ]
