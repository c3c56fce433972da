"""An embedding's word in a prompt, swapped for one saved file's name or taken out.

The WebUI names an embedding after its file, so a run's files are `word`, `word-000002`,
`word-step00000100`: a prompt that says `word` uses the final file, and the same prompt with
`word-000002` in its place uses epoch 2's (the X/Y/Z plot's embedding file axis does this,
axes.py, and so do the grid's cells). The word matches whole: not inside `words` or
`word-000002`.
"""
from __future__ import annotations

import re


def _word(word: str) -> re.Pattern:
    return re.compile(rf"(?<![\w-]){re.escape(word)}(?![\w-])")


def names_word(prompt: str, word: str) -> bool:
    return bool(_word(word).search(prompt or ""))


def with_file(prompt: str, word: str, name: str) -> str:
    """`prompt` with every `word` replaced by the file's `name`."""
    return _word(word).sub(name, prompt)


def without_word(prompt: str, word: str) -> str:
    """`prompt` with `word` taken out, and the comma it leaves: `mycat, smile` -> `smile`."""
    text = _word(word).sub("", prompt)
    text = re.sub(r"\s*,(\s*,)+", ",", text)          # `a, , b` -> `a, b`
    text = re.sub(r"^[\s,]+|[\s,]+$", "", text)        # a leading or trailing comma
    return re.sub(r" {2,}", " ", text)
