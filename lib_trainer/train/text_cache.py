"""`cache_text_encoder_outputs`: every caption encoded once before training.

Only valid while captions are the same every step and no text-encoder layer trains (the
config checks both); each step then skips the text encoders entirely, which matters most
for SDXL's two encoders.
"""
from __future__ import annotations

from typing import Iterable

import torch

from ..hosts.bundle import Conditioning, ModelBundle
from ..progress import Progress


class TextEncoderCache:
    def __init__(self, bundle: ModelBundle, max_token_length: int) -> None:
        self.bundle = bundle
        self.max_token_length = max_token_length
        self.rows: dict[str, Conditioning] = {}

    def fill(self, prompts: Iterable[str], progress: Progress, batch_size: int = 8) -> None:
        unique = sorted(set(prompts) - set(self.rows))
        progress.start("caching text-encoder outputs", len(unique))
        for start in range(0, len(unique), batch_size):
            batch = unique[start: start + batch_size]
            with torch.no_grad():
                encoded = self.bundle.encode_prompts(batch, self.max_token_length).detach()
            self.rows.update(zip(batch, encoded.rows()))
            progress.step(min(start + batch_size, len(unique)))
        progress.end()

    def get(self, prompts: list[str], device: torch.device) -> Conditioning:
        return Conditioning.cat([self.rows[prompt] for prompt in prompts]).to(device)
