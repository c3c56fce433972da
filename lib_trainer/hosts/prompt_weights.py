"""weighted_captions: emphasis weights written in a caption, read as the WebUI and sd-scripts
read them.

`(words)` multiplies the words' weight by 1.1, `[words]` divides it by 1.1, `(words:1.3)` sets
the factor to 1.3; brackets nest (their factors multiply), an unclosed one reaches to the end,
and `\\(`, `\\)`, `\\[`, `\\]`, `\\\\` are the plain characters. sd-scripts multiplies each token's
text-encoder output by its weight (no rescaling of the mean, unlike the WebUI's default
emphasis); start, end and padding tokens keep weight 1.
"""
from __future__ import annotations

import re
from typing import Callable

import torch

UP, DOWN = 1.1, 1 / 1.1
_PIECES = re.compile(r"\\[()\[\]\\]|\\|\(|\[|:\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*\)|\)|\]|[^\\()\[\]:]+|:")


def parse_weights(text: str) -> list[tuple[str, float]]:
    """'a (b:1.2) [c]' -> [('a ', 1.0), ('b', 1.2), (' ', 1.0), ('c', 0.909...)], pieces with
    the same weight next to each other merged."""
    pieces: list[list] = []
    rounds: list[int] = []   # where each open ( started, and each open [: kept apart, as the WebUI does
    squares: list[int] = []

    def scale(start: int, factor: float) -> None:
        for piece in pieces[start:]:
            piece[1] *= factor

    for match in _PIECES.finditer(text):
        piece, number = match.group(0), match.group(1)
        if piece.startswith("\\") and len(piece) == 2:
            pieces.append([piece[1], 1.0])
        elif piece == "(":
            rounds.append(len(pieces))
        elif piece == "[":
            squares.append(len(pieces))
        elif number is not None and rounds:
            scale(rounds.pop(), float(number))
        elif piece == ")" and rounds:
            scale(rounds.pop(), UP)
        elif piece == "]" and squares:
            scale(squares.pop(), DOWN)
        else:
            pieces.append([piece, 1.0])
    for start in rounds:  # unclosed brackets reach to the end
        scale(start, UP)
    for start in squares:
        scale(start, DOWN)
    merged: list[list] = []
    for piece, weight in pieces:
        if merged and merged[-1][1] == weight:
            merged[-1][0] += piece
        else:
            merged.append([piece, weight])
    return [(piece, weight) for piece, weight in merged] or [("", 1.0)]


def weighted_token_ids(text: str, token_ids: Callable[[str], list[int]]) -> tuple[list[int], list[float]]:
    """The caption's token ids without its brackets, and one weight per token."""
    ids, weights = [], []
    for piece, weight in parse_weights(text):
        piece_ids = token_ids(piece)
        ids += piece_ids
        weights += [weight] * len(piece_ids)
    return ids, weights


def chunk_weights(weights: list[float], chunk_lengths: list[int], count: int) -> torch.Tensor:
    """(count, 77) weights of one prompt's framed chunks: its token weights after each start
    token, in the chunks' lengths; 1 for start, end and padding, and for missing chunks."""
    framed = torch.ones((count, 77))
    position = 0
    for index, length in enumerate(chunk_lengths[:count]):
        framed[index, 1:1 + length] = torch.tensor(weights[position:position + length])
        position += length
    return framed
