"""The real CLIP ViT-L/14 tokenizer, built offline.

The WebUI and kohya load `openai/clip-vit-large-patch14`'s tokenizer from the Hugging Face
hub. Its vocabulary is the byte-level BPE that also ships inside the `open_clip_torch`
package (`bpe_simple_vocab_16e6.txt.gz`), so we derive the hub's `vocab.json` /
`merges.txt` from that file instead of downloading anything. The package is located with
`find_spec`, never imported: importing open_clip pulls in torchvision.
"""
from __future__ import annotations

import functools
import gzip
import importlib.util
import json
import os
import tempfile

from ..errors import Unavailable

# 49152 merges minus the 256 byte symbols and their 256 end-of-word forms, plus the header.
_MERGE_COUNT = 49152 - 256 - 2
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"


def _byte_symbols() -> list[str]:
    """GPT-2's reversible byte -> printable character table, in byte order of its rank."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return [chr(code) for code in codes]


def bpe_vocab_path() -> str:
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise Unavailable(
            "The CLIP vocabulary comes from the open_clip_torch package, which is not installed. "
            "Install it with: pip install --no-deps open_clip_torch"
        )
    return os.path.join(spec.submodule_search_locations[0], "bpe_simple_vocab_16e6.txt.gz")


@functools.lru_cache(maxsize=1)
def clip_vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    with gzip.open(bpe_vocab_path(), "rt", encoding="utf-8") as handle:
        merges = handle.read().split("\n")[1 : _MERGE_COUNT + 1]
    symbols = _byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split(" ")) for m in merges]
    tokens += [BOS_TOKEN, EOS_TOKEN]
    return {token: index for index, token in enumerate(tokens)}, merges


@functools.lru_cache(maxsize=1)
def clip_tokenizer_files() -> str:
    """A folder holding vocab.json and merges.txt in the Hugging Face layout."""
    vocab, merges = clip_vocab_and_merges()
    folder = tempfile.mkdtemp(prefix="lib_trainer_clip_")
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as handle:
        json.dump(vocab, handle, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as handle:
        handle.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    return folder


def load_clip_tokenizer(model_max_length: int = 77, pad_token: str = EOS_TOKEN):
    """transformers' CLIPTokenizer over the derived files (works on transformers 4.x and 5.x).
    OpenCLIP text encoders (SD2, SDXL's second) pad with "!" (id 0) instead of the end token."""
    from transformers import CLIPTokenizer

    folder = clip_tokenizer_files()
    return CLIPTokenizer(
        os.path.join(folder, "vocab.json"),
        os.path.join(folder, "merges.txt"),
        model_max_length=model_max_length,
        pad_token=pad_token,
    )
