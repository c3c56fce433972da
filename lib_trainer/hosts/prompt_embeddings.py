"""Textual-inversion embeddings in prompts, for a host that tokenizes prompts itself.

An embedding is a word whose vectors replace the token vectors the text encoder would look
up: its name, found in a prompt's token ids, takes `n` slots (one per vector), and when the
text encoder embeds the ids, those slots get the embedding's vectors instead (the WebUI does
the same, finding names by their token ids and patching the token-embedding output). SDXL
embeddings have one set of vectors per text encoder (`clip_l` [n, 768], `clip_g` [n, 1280]).
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch import nn


class PromptEmbeddings:
    """The embeddings prompts may name: name -> vectors, one [n, width] tensor per text encoder."""

    def __init__(self, token_ids: Callable[[str], list[int]]) -> None:
        self._token_ids = token_ids
        self.vectors: dict[str, list[torch.Tensor]] = {}
        self._by_first_id: dict[int, list[tuple[list[int], str]]] = {}

    def set(self, name: str, vectors: list[torch.Tensor]) -> None:
        self.remove(name)
        ids = self._token_ids(name)
        if not ids:
            raise ValueError(f"the embedding name {name!r} has no tokens; give it a word")
        self.vectors[name] = vectors
        entries = self._by_first_id.setdefault(ids[0], [])
        entries.append((ids, name))
        entries.sort(key=lambda entry: len(entry[0]), reverse=True)  # the longest name that matches wins

    def remove(self, name: str) -> None:
        self.vectors.pop(name, None)
        for first, entries in list(self._by_first_id.items()):
            entries[:] = [entry for entry in entries if entry[1] != name]
            if not entries:
                del self._by_first_id[first]

    def find(self, tokens: list[int], position: int) -> tuple[str, int, int] | None:
        """(name, ids the name takes, vectors it takes) of the embedding named at `position`."""
        for ids, name in self._by_first_id.get(tokens[position], ()):
            if tokens[position:position + len(ids)] == ids:
                return name, len(ids), self.vectors[name][0].shape[0]
        return None

    @contextlib.contextmanager
    def using(self, embeddings: dict[str, list[torch.Tensor]]) -> Iterator[None]:
        """These embeddings while the block runs; those of the same names before it afterwards."""
        before = {name: self.vectors[name] for name in embeddings if name in self.vectors}
        for name, vectors in embeddings.items():
            self.set(name, vectors)
        try:
            yield
        finally:
            for name in embeddings:
                self.remove(name)
            for name, vectors in before.items():
                self.set(name, vectors)


@contextlib.contextmanager
def vectors_in_slots(token_embedding: nn.Module, fixes: list[tuple[int, int, torch.Tensor]]) -> Iterator[None]:
    """While the block runs, the token embedding's output has each fix's vectors [n, width] at
    (row, first slot). Out of place, so gradients reach the vectors."""
    if not fixes:
        yield
        return

    def replace(module, inputs, output):
        output = output.clone()
        for row, slot, vectors in fixes:
            output[row, slot:slot + vectors.shape[0]] = vectors.to(output.device, output.dtype)
        return output

    handle = token_embedding.register_forward_hook(replace)
    try:
        yield
    finally:
        handle.remove()
