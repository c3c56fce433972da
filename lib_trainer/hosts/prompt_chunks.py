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
    return split_with_embeddings(tokens, comma_id, max_chunks)[0]


def split_with_embeddings(tokens: list[int], comma_id: int, max_chunks: int, find_embedding=None
                          ) -> tuple[list[list[int]], list[tuple[int, int, str]]]:
    """As `split_into_chunks`, with embeddings: `find_embedding(tokens, position)` gives
    (name, ids its name takes, vectors it takes) of an embedding named at `position`, or None.
    Its vectors take as many slots (id 0, replaced when encoding) and never straddle two chunks:
    one that does not fit ends the chunk, as in the WebUI. Returns (chunks, fixes), a fix being
    (chunk index, slot in the chunk, name)."""
    chunks: list[list[int]] = []
    fixes: list[tuple[int, int, str]] = []
    current: list[int] = []
    last_comma = -1
    position = 0
    while position < len(tokens):
        token = tokens[position]
        if len(current) == CHUNK_LENGTH:
            # Like the WebUI, no backtrack when the token arriving at a full chunk is itself a comma.
            if token != comma_id and last_comma != -1 and len(current) - last_comma <= COMMA_BACKTRACK:
                carried = current[last_comma + 1:]
                chunks.append(current[: last_comma + 1])
                current = carried
                # An embedding carried over moves with its slots (the WebUI leaves it behind,
                # over the closed chunk's padding).
                closed, cut = len(chunks) - 1, last_comma + 1
                fixes = [(c + 1, s - cut, n) if c == closed and s >= cut else (c, s, n) for c, s, n in fixes]
            else:
                chunks.append(current)
                current = []
            last_comma = -1
        found = find_embedding(tokens, position) if find_embedding is not None else None
        if found is None:
            if token == comma_id:
                last_comma = len(current)
            current.append(token)
            position += 1
            continue
        name, id_count, vector_count = found
        if len(current) + vector_count > CHUNK_LENGTH:
            chunks.append(current)
            current, last_comma = [], -1
        fixes.append((len(chunks), len(current), name))
        current += [0] * vector_count
        position += id_count
    if current or not chunks:
        chunks.append(current)
    return chunks[:max_chunks], [fix for fix in fixes if fix[0] < max_chunks]


def frame_chunk(chunk: list[int], bos_id: int, eos_id: int, pad_id: int) -> list[int]:
    """[start] + tokens + [end] + padding, 77 ids."""
    return [bos_id] + chunk + [eos_id] + [pad_id] * (CHUNK_LENGTH - len(chunk))


def batch_chunk_ids(prompts_tokens: list[list[int]], comma_id: int, max_chunks: int,
                    bos_id: int, eos_id: int, pad_id: int) -> list[list[list[int]]]:
    """For a batch: [chunk index][prompt index] -> 77 ids, every prompt with the same chunk count."""
    return batch_chunks_with_embeddings(prompts_tokens, comma_id, max_chunks, bos_id, eos_id, pad_id)[0]


def batch_chunks_with_embeddings(prompts_tokens: list[list[int]], comma_id: int, max_chunks: int, bos_id: int,
                                 eos_id: int, pad_id: int, find_embedding=None):
    """`batch_chunk_ids` and the embeddings' places: fixes[chunk index] lists (prompt index,
    position in the framed 77 ids, name)."""
    split = [split_with_embeddings(tokens, comma_id, max_chunks, find_embedding) for tokens in prompts_tokens]
    count = max(len(chunks) for chunks, _ in split)
    ids = [[frame_chunk(chunks[i] if i < len(chunks) else [], bos_id, eos_id, pad_id) for chunks, _ in split]
           for i in range(count)]
    fixes: list[list[tuple[int, int, str]]] = [[] for _ in range(count)]
    for row, (_, found) in enumerate(split):
        for chunk, slot, name in found:
            fixes[chunk].append((row, slot + 1, name))  # + 1: after the start token
    return ids, fixes
