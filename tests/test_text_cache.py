"""The text-encoder cache gives what encoding each step would give, and its rows stack at any
mix of caption lengths (short and long captions, 75/150/225 tokens), on the standalone host
and on the WebUI's, which chunks prompts with no upper limit."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from lib_trainer.hosts import load_bundle
from lib_trainer.hosts.ldm_bundle import LiveSDBundle
from lib_trainer.hosts.prompt_chunks import batch_chunk_ids
from lib_trainer.progress import Progress
from lib_trainer.train.text_cache import TextEncoderCache
from webui_models import webui_model

SHORT = [f"sks, short caption {n}" for n in range(9)]  # sorted first: they fill a whole group of 8
LONG = "sks, " + ", ".join(f"tag{n} detail" for n in range(40))  # about 194 tokens: 3 chunks
MIDDLE = "sks, " + ", ".join(f"tag{n}" for n in range(25))  # about 95 tokens: 2 chunks


def cached_equals_encoded(bundle, max_token_length: int, batches: list[list[str]]) -> None:
    cache = TextEncoderCache(bundle, max_token_length)
    cache.fill(SHORT + [LONG, MIDDLE], Progress())
    for batch in batches:
        cached = cache.get(batch, torch.device("cpu"))
        with torch.no_grad():
            encoded = bundle.encode_prompts(batch, max_token_length)
        assert cached.context.shape == encoded.context.shape, batch
        torch.testing.assert_close(cached.context, encoded.context, rtol=1e-5, atol=1e-5)
        if encoded.pooled is not None:
            torch.testing.assert_close(cached.pooled, encoded.pooled, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def bundles():
    return {family: load_bundle(f"tiny:{family}") for family in ("sd1", "sdxl")}


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
@pytest.mark.parametrize("max_token_length", [75, 150, 225])
def test_cached_rows_stack_and_equal_encoding_each_step(bundles, family, max_token_length):
    bundle = bundles[family]
    assert 150 < bundle.count_tokens(LONG) <= 225 and 75 < bundle.count_tokens(MIDDLE) <= 150
    cached_equals_encoded(bundle, max_token_length, [
        [SHORT[0], LONG], [LONG, SHORT[1]], [MIDDLE, SHORT[2], LONG], [SHORT[3], SHORT[4]], [LONG, MIDDLE]])


class WebUIChunkedCLIP(nn.Module):
    """What the WebUI's prompt handling makes of `get_learned_conditioning` (its
    FrozenCLIPEmbedderWithCustomWords): 75-token chunks with no limit on their number, each
    encoded on its own, a batch padded with empty chunks to its longest prompt."""

    def __init__(self, embedder: nn.Module) -> None:
        super().__init__()
        self.transformer, self.tokenizer = embedder.transformer, embedder.tokenizer

    def forward(self, prompts):
        tokenizer = self.tokenizer
        tokens = [tokenizer(p, add_special_tokens=False, truncation=False, verbose=False)["input_ids"] for p in prompts]
        comma = tokenizer(",", add_special_tokens=False)["input_ids"][0]
        chunks = batch_chunk_ids(tokens, comma, 100, tokenizer.bos_token_id, tokenizer.eos_token_id,
                                 tokenizer.eos_token_id)
        return torch.cat([self.transformer(input_ids=torch.tensor(ids)).last_hidden_state for ids in chunks], dim=1)


def test_webui_host_cache_stacks_at_any_length(tmp_path):
    model, _ = webui_model("sd1", tmp_path)
    model.cond_stage_model = WebUIChunkedCLIP(model.cond_stage_model)
    bundle = LiveSDBundle(model)
    # The WebUI's prompt length does not depend on max_token_length: every setting must stack.
    for max_token_length in (75, 225):
        cached_equals_encoded(bundle, max_token_length, [[SHORT[0], LONG], [MIDDLE, SHORT[1]], [LONG, MIDDLE]])
