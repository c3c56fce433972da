"""`cache_text_encoder_outputs`: every caption encoded once before training.

Only valid while captions are the same every step and no text-encoder layer trains (the
config checks both); each step then skips the text encoders entirely, which matters most
for SDXL's two encoders.

A long caption is several 77-token chunks (hosts/prompt_chunks.py; the WebUI chunks the
same way, with no upper limit), and a batch the encoder sees is padded with empty chunks to
its longest prompt. So each caption is cached at its own chunk count, and a batch taken from
the cache is padded the same way, with the host's own encoding of an empty chunk: cached
conditioning stacks at any length mix and equals what encoding each step would give.
"""
from __future__ import annotations

from typing import Iterable

import torch

from ..hosts.bundle import Conditioning, ModelBundle
from ..progress import Progress

CHUNK_TOKENS = 77  # a start token, 75 prompt tokens, an end token (padded)


class TextEncoderCache:
    def __init__(self, bundle: ModelBundle, max_token_length: int) -> None:
        self.bundle = bundle
        self.max_token_length = max_token_length
        self.rows: dict[str, Conditioning] = {}
        self._empty_chunk: torch.Tensor | None = None  # (1, 77, dim): the context of one empty chunk

    def fill(self, prompts: Iterable[str], progress: Progress) -> None:
        unique = sorted(set(prompts) - set(self.rows))
        progress.start("caching text-encoder outputs", len(unique))
        with torch.no_grad():
            if self._empty_chunk is None:
                # An empty prompt is exactly one empty chunk, in every host's encoder.
                self._empty_chunk = self._encode("").context[:, -CHUNK_TOKENS:]
            for done, prompt in enumerate(unique, 1):
                # One prompt at a time: encoded in a group it would be padded to the group's
                # longest, and the padding could not be told apart from its own chunks.
                self.rows[prompt] = self._encode(prompt)
                progress.step(done)
        progress.end()

    def get(self, prompts: list[str], device: torch.device) -> Conditioning:
        rows = [self.rows[prompt] for prompt in prompts]
        longest = max(row.context.shape[1] for row in rows)
        return Conditioning.cat([self._padded(row, longest) for row in rows]).to(device)

    def _encode(self, prompt: str) -> Conditioning:
        encoded = self.bundle.encode_prompts([prompt], self.max_token_length).detach()
        if encoded.context.shape[1] % CHUNK_TOKENS:
            raise ValueError(f"the text encoder gave {encoded.context.shape[1]} tokens for a prompt, not a multiple "
                             f"of {CHUNK_TOKENS}; cache_text_encoder_outputs cannot pad it")
        return encoded

    def _padded(self, row: Conditioning, length: int) -> Conditioning:
        """`row` extended with empty chunks to `length` tokens; SDXL's pooled output comes
        from the first chunk only, so it stays as it is."""
        missing = (length - row.context.shape[1]) // CHUNK_TOKENS
        if not missing:
            return row
        padding = self._empty_chunk.to(row.context.device, row.context.dtype).repeat(1, missing, 1)
        return Conditioning(torch.cat([row.context, padding], dim=1), row.pooled)
