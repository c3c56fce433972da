"""A stand-in for the WebUI 1.10 textual-inversion embedding database
(`modules.textual_inversion.textual_inversion`: `Embedding`, `EmbeddingDatabase`, reached as
`modules.sd_hijack.model_hijack.embedding_db`), written from its behaviour:

- `register_embedding_by_name(embedding, model, name)` puts an embedding in `word_embeddings`
  under `name` (None takes it out);
- `load_textual_inversion_embeddings(force_reload)` reads the embedding folders again when
  forced or when a folder changed since the last read: the list is cleared first, so whatever
  was registered by hand is gone; each file is named after its file name, its width (`shape`,
  the sum of both parts for SDXL) must be the model's (`expected_shape`) or it goes to
  `skipped_embeddings`; the Textual Inversion cards' Refresh button and the API's
  refresh-embeddings force it, every generation asks for it unforced.
"""
from __future__ import annotations

import os
import types

import torch


class Embedding:
    def __init__(self, vec, name, step=None):
        self.vec, self.name, self.step = vec, name, step
        self.shape, self.vectors = None, 0
        self.filename = self.hash = self.shorthash = None
        self.sd_checkpoint = self.sd_checkpoint_name = None


class EmbeddingDatabase:
    def __init__(self, expected_shape: int) -> None:
        self.word_embeddings: dict[str, Embedding] = {}
        self.skipped_embeddings: dict[str, Embedding] = {}
        self.embedding_dirs: dict[str, float | None] = {}
        self.expected_shape = expected_shape
        self.model_shape = expected_shape
        self.reloads = 0  # forced or changed-folder reads

    def add_embedding_dir(self, path: str) -> None:
        self.embedding_dirs[path] = None

    def register_embedding_by_name(self, embedding, model, name):
        if embedding is None:
            self.word_embeddings.pop(name, None)
            return None
        self.word_embeddings[name] = embedding
        return embedding

    def load_textual_inversion_embeddings(self, force_reload: bool = False) -> None:
        changed = any(os.path.isdir(path) and os.path.getmtime(path) != seen for path, seen in self.embedding_dirs.items())
        if not force_reload and not changed:
            return
        self.reloads += 1
        self.word_embeddings.clear()
        self.skipped_embeddings.clear()
        self.expected_shape = self.model_shape
        for path in self.embedding_dirs:
            if not os.path.isdir(path):
                continue
            for file in sorted(os.listdir(path)):
                if file.endswith(".safetensors"):
                    self._load(os.path.join(path, file))
            self.embedding_dirs[path] = os.path.getmtime(path)

    def _load(self, path: str) -> None:
        from safetensors.torch import load_file

        data = load_file(path)
        if "clip_l" in data and "clip_g" in data:
            vec, shape, vectors = data, data["clip_l"].shape[-1] + data["clip_g"].shape[-1], data["clip_g"].shape[0]
        else:
            (vec,) = data.values()
            shape, vectors = vec.shape[-1], vec.shape[0]
        embedding = Embedding(vec, os.path.splitext(os.path.basename(path))[0])
        embedding.shape, embedding.vectors, embedding.filename = shape, vectors, path
        embedding.shorthash = "0123456789ab"
        if self.expected_shape in (-1, shape):
            self.word_embeddings[embedding.name] = embedding
        else:
            self.skipped_embeddings[embedding.name] = embedding


class StableDiffusionProcessing:
    """modules.processing's class-wide conditioning caches: [cache key, conditioning] of the last
    prompts, reused by the next generation whose prompts and settings match."""
    cached_c = [None, None]
    cached_uc = [None, None]


class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    cached_hr_c = [None, None]
    cached_hr_uc = [None, None]


def webui_embedding_modules(expected_shape: int, embeddings_dir: str) -> dict[str, object]:
    """`modules.sd_hijack` and `modules.textual_inversion(.textual_inversion)` over one database
    that reads `embeddings_dir` (the WebUI's --embeddings-dir), and `modules.processing`'s
    conditioning caches."""
    database = EmbeddingDatabase(expected_shape)
    database.add_embedding_dir(embeddings_dir)
    textual_inversion = types.SimpleNamespace(Embedding=Embedding, EmbeddingDatabase=EmbeddingDatabase)
    return {
        "sd_hijack": types.SimpleNamespace(model_hijack=types.SimpleNamespace(embedding_db=database)),
        "textual_inversion": types.SimpleNamespace(textual_inversion=textual_inversion),
        "textual_inversion.textual_inversion": textual_inversion,
        "processing": types.SimpleNamespace(StableDiffusionProcessing=StableDiffusionProcessing,
                                            StableDiffusionProcessingTxt2Img=StableDiffusionProcessingTxt2Img),
    }


def prompts_with_embeddings(embedder, database: EmbeddingDatabase):
    """A forward for an SD1 `CLIPEmbedder` (webui_models.py) that puts the database's embeddings
    into prompts as the WebUI's prompt handling does (sd_hijack_clip / EmbeddingsWithFixes):
    a name's tokens become one slot per vector, and the token embedding's output carries the
    embedding's vectors there, so gradients reach them."""
    tokenizer = embedder.tokenizer
    table = next(module for name, module in embedder.named_modules()
                 if isinstance(module, torch.nn.Embedding) and name.endswith("token_embedding"))

    def forward(prompts):
        rows, fixes = [], []
        for row, prompt in enumerate(prompts):
            ids = tokenizer(prompt, add_special_tokens=False, truncation=False, verbose=False)["input_ids"]
            out, position = [], 0
            while position < len(ids):
                for name, embedding in database.word_embeddings.items():
                    name_ids = tokenizer(name, add_special_tokens=False, verbose=False)["input_ids"]
                    if ids[position:position + len(name_ids)] == name_ids:
                        fixes.append((row, 1 + len(out), embedding.vec))
                        out += [tokenizer.eos_token_id] * embedding.vectors
                        position += len(name_ids)
                        break
                else:
                    out.append(ids[position])
                    position += 1
            out = [tokenizer.bos_token_id, *out[:75], tokenizer.eos_token_id]
            rows.append(out + [tokenizer.eos_token_id] * (77 - len(out)))

        def replace(module, inputs, output):
            output = output.clone()
            for row, slot, vec in fixes:
                output[row, slot:slot + vec.shape[0]] = vec.to(output.dtype)
            return output

        handle = table.register_forward_hook(replace)
        try:
            return embedder.transformer(input_ids=torch.tensor(rows)).last_hidden_state
        finally:
            handle.remove()

    return forward


def vectors_with_lora(database: EmbeddingDatabase, lora_path: str, word: str) -> torch.Tensor:
    """The vectors `word` has in a prompt with `<lora:…>` of this file, by the WebUI's Lora
    loader's rule (extensions-builtin/Lora/networks.py, load_networks): the file's bundled
    embedding is skipped when the embeddings folder already has one of that name."""
    from safetensors.torch import load_file

    bundled = load_file(lora_path)[f"bundle_emb.{word}.string_to_param.*"]
    database.load_textual_inversion_embeddings(force_reload=True)
    in_folder = database.word_embeddings.get(word)
    return in_folder.vec if in_folder is not None else bundled
