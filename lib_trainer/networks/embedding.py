"""Textual-inversion embeddings (`--network_module embedding`) and pivotal tuning (an embedding
trained together with a LoRA-family network, `pivotal_tuning`).

An embedding is a new word: `num_vectors_per_token` vectors per text encoder that take the
place of the token vectors wherever its name is in a prompt (the host substitutes them:
hosts/prompt_embeddings.py standalone, the WebUI's embedding database in the WebUI). Only
these vectors train; every model weight, the token table included, stays as it was. They
start from the token vectors of `init_word`, repeated or cut to the count (`*`: zeros).
"""
from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Iterable

import torch
from torch import nn

from ..config import ConfigError, _file_name_problems
from ..errors import InvalidInput
from ..formats.embedding_file import embedding_tensors, existing_embedding_file, load_embedding, save_embedding
from ..formats.lora_file import load_lora, save_lora
from .method import NetworkMethod
from .trainable import TOKEN_EMBEDDINGS, Trainable

MODULE = "embedding"
BUNDLE_PREFIX = "bundle_emb"  # the WebUI's Lora loader reads bundle_emb.<name>.<vectors> keys
PRESET_LR = 5e-3


def is_embedding_run(config) -> bool:
    return config.network_module == MODULE or config.pivotal_tuning


def embedding_name(config) -> str:
    """The word in prompts: embedding_name; else, for an embedding run, its file name (output_name),
    for a pivotal run the concept's word (token_string, trigger_word), since its captions have it."""
    if config.embedding_name.strip():
        return config.embedding_name.strip()
    if config.pivotal_tuning:
        return (config.token_string or config.trigger_word).strip() or config.output_name
    return config.output_name


def embedding_folder(config) -> str:
    return config.output_dir if config.network_module == MODULE else config.embedding_output_dir or config.output_dir


def embedding_file_stem(config) -> str:
    """A pivotal run's own embedding file is named this (plus the LoRA file's suffix); an
    embedding run's file is named after its word."""
    if config.pivotal_tuning and config.embedding_file_name.strip():
        return config.embedding_file_name.strip()
    return embedding_name(config)


def embedding_run_config(config):
    """An embedding run's files carry the embedding's name (the WebUI names an embedding after its file)."""
    if config.network_module == MODULE and config.output_name != embedding_name(config):
        return config.replace(output_name=embedding_name(config))
    return config


def embedding_problems(config) -> list[str]:
    """What keeps a config from training an embedding; each says what to change."""
    from ..dataset.embedding_prompts import template_lines, template_name

    found = []
    name = embedding_name(config)
    found += [problem.replace("output_name", "embedding_name") for problem in _file_name_problems("output_name", name)]
    if "." in name:
        found.append(f"embedding_name={name!r}: no dots (the WebUI's Lora loader splits bundled names at a dot)")
    if config.cache_text_encoder_outputs:
        found.append("cache_text_encoder_outputs: an embedding changes the conditioning at every step; turn it off")
    if config.network_module == MODULE and config.pivotal_tuning:
        found.append("pivotal_tuning trains an embedding with a LoRA-family network: set network_module to one "
                     "(networks.lora, lycoris.kohya), not embedding")
    if config.use_object_template and config.use_style_template:
        found.append("use_object_template and use_style_template exclude each other")
    try:
        template_lines(template_name(config))
    except ConfigError as error:
        found.append(str(error))
    stem = embedding_file_stem(config)
    if config.pivotal_tuning and stem != name:
        found += [problem.replace("output_name", "embedding_file_name")
                  for problem in _file_name_problems("output_name", stem)]
    if config.pivotal_tuning and embedding_folder(config) == config.output_dir and stem == config.output_name:
        found.append(f"pivotal_tuning: the embedding and the LoRA would both be {stem}.safetensors in "
                     "output_dir; give embedding_name, embedding_file_name or output_name another value")
    return found


def embedding_prompts(config):
    """caption, rng -> the prompt a step trains the embedding with."""
    from ..dataset.embedding_prompts import EmbeddingPrompts, template_lines, template_name

    return EmbeddingPrompts(embedding_name(config), config.token_string or config.trigger_word,
                            template_lines(template_name(config)), config.caption_separator)


def refuse_existing(config) -> None:
    """An embedding of the same name is not replaced unless embedding_overwrite is set."""
    if config.embedding_overwrite or config.resume:
        return
    existing = existing_embedding_file(embedding_folder(config), embedding_file_stem(config))
    if existing:
        raise InvalidInput(f"an embedding named {embedding_file_stem(config)!r} already exists: {existing}; choose "
                           "another embedding_name, or set embedding_overwrite to replace it")


def initial_vectors(bundle, init_word: str, count: int) -> list[torch.Tensor]:
    """[count, width] per text encoder: the init word's token vectors, repeated or cut to count."""
    widths = bundle.embedding_widths()
    text = init_word.strip()
    per_encoder = bundle.token_vectors(text) if text and text != "*" else None
    if not per_encoder or per_encoder[0].shape[0] == 0:
        return [torch.zeros(count, width) for width in widths]
    return [vectors[torch.arange(count) % vectors.shape[0]].clone() for vectors in per_encoder]


class Embedding(Trainable):
    kind = "embedding"

    def __init__(self, name: str, vectors: list[torch.Tensor], lr: float, file_format: str = "safetensors",
                 init_word: str = "*") -> None:
        super().__init__()
        self.name, self.lr, self.file_format, self.init_word = name, lr, file_format, init_word
        self.vectors = nn.ParameterList(nn.Parameter(v.float().clone()) for v in vectors)
        self._context: contextlib.ExitStack | None = None

    @property
    def count(self) -> int:
        return self.vectors[0].shape[0]

    def parameter_groups(self, unet_lr: float, text_encoder_lr: float) -> list[dict]:
        return [{"params": list(self.vectors), "lr": self.lr, "name": "embedding"}]

    def conditioned(self) -> dict[str, int]:
        return {TOKEN_EMBEDDINGS: self.count}

    def attach(self, bundle) -> None:
        if self._context is None:
            stack = contextlib.ExitStack()
            stack.enter_context(bundle.prompt_embeddings({self.name: list(self.vectors)}))
            self._context = stack

    def detach(self) -> None:
        if self._context is not None:
            context, self._context = self._context, None
            context.close()

    def file_metadata(self) -> dict[str, str]:
        return {"ss_network_module": MODULE, "ss_network_dim": str(self.count),
                "ss_network_args": json.dumps({"embedding_name": self.name, "init_word": self.init_word})}

    def file_path(self, path: str) -> str:
        return os.path.splitext(path)[0] + (".pt" if self.file_format == "pt" else ".safetensors")

    def write_file(self, path: str, metadata: dict[str, str], dtype: torch.dtype | None) -> None:
        # Always fp32, as the WebUI writes them: a few KB, and what training used exactly.
        save_embedding(path, self.name, list(self.vectors), int(metadata.get("ss_steps") or 0),
                       *checkpoint_of(metadata), metadata)

    def load_weights(self, path: str) -> None:
        self.load_vectors(load_embedding(path)[1], path)

    def load_vectors(self, vectors: list[torch.Tensor], path: str) -> None:
        shapes = [list(v.shape) for v in vectors]
        if shapes != [list(v.shape) for v in self.vectors]:
            raise InvalidInput(f"network_weights {path}: the embedding's vectors are {shapes}, this run's "
                               f"{[list(v.shape) for v in self.vectors]}; set num_vectors_per_token to its count, "
                               "on a model of its family")
        with torch.no_grad():
            for mine, theirs in zip(self.vectors, vectors):
                mine.copy_(theirs)


def checkpoint_of(metadata: dict[str, str]) -> tuple[str | None, str | None]:
    """sd_checkpoint (the WebUI's short hash) and sd_checkpoint_name of the base model."""
    full = metadata.get("ss_new_sd_model_hash", "")
    return (full[:10] if full else metadata.get("ss_sd_model_hash") or None), metadata.get("ss_sd_model_name") or None


class Pivotal(Trainable):
    """A LoRA-family network and an embedding trained together; the LoRA file bundles the
    embedding (`bundle_emb.<name>.string_to_param.*`, SDXL `.clip_l`/`.clip_g`), and the
    embedding is also written as its own file (Forge and ComfyUI ignore bundled ones)."""

    def __init__(self, network: Trainable, embedding: Embedding, output_name: str, embedding_dir: str,
                 file_stem: str | None = None) -> None:
        super().__init__()
        self.network, self.embedding = network, embedding
        self.output_name, self.embedding_dir = output_name, embedding_dir
        self.file_stem = file_stem or embedding.name
        self.kind = f"{network.kind} + embedding"

    def parameter_groups(self, unet_lr: float, text_encoder_lr: float) -> list[dict]:
        return self.network.parameter_groups(unet_lr, text_encoder_lr) + self.embedding.parameter_groups(0, 0)

    def conditioned(self) -> dict[str, int]:
        return {**self.network.conditioned(), **self.embedding.conditioned()}

    def attach(self, bundle) -> None:
        self.embedding.attach(bundle)
        try:
            self.network.attach(bundle)
        except BaseException:
            self.embedding.detach()
            raise

    def detach(self) -> None:
        try:
            self.network.detach()
        finally:
            self.embedding.detach()

    def file_metadata(self) -> dict[str, str]:
        return {**self.network.file_metadata(), "lib_trainer_embedding": self.embedding.name}

    def embedding_path(self, path: str) -> str:
        """The embedding's file beside a LoRA file: the same suffix (-000002, -step00000100)."""
        stem = os.path.splitext(os.path.basename(path))[0]
        suffix = stem[len(self.output_name):] if stem.startswith(self.output_name) else ""
        return self.embedding.file_path(os.path.join(self.embedding_dir, self.file_stem + suffix))

    def write_file(self, path: str, metadata: dict[str, str], dtype: torch.dtype | None) -> None:
        tensors = self.network.file_state_dict(dtype)
        prefix = f"{BUNDLE_PREFIX}.{self.embedding.name}."
        for key, tensor in bundled_tensors(list(self.embedding.vectors)).items():
            tensors[prefix + key] = tensor
        self.embedding.write_file(self.embedding_path(path), metadata, None)
        save_lora(path, tensors, metadata)

    def load_weights(self, path: str) -> None:
        state = load_lora(path)
        bundled = {key: value for key, value in state.items() if key.startswith(f"{BUNDLE_PREFIX}.")}
        network_state = {key: value for key, value in state.items() if key not in bundled}
        unmatched = self.network.load_file_state_dict(network_state)
        if unmatched:
            raise InvalidInput(f"network_weights {path}: {len(unmatched)} keys match no layer of this network "
                               f"(e.g. {unmatched[0]})")
        prefix = f"{BUNDLE_PREFIX}.{self.embedding.name}."
        mine = {key[len(prefix):]: value for key, value in bundled.items() if key.startswith(prefix)}
        if mine:
            vectors = [mine[k] for k in ("clip_l", "clip_g")] if "clip_l" in mine else [next(iter(mine.values()))]
            self.embedding.load_vectors(vectors, path)


def bundled_tensors(vectors: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Key (after bundle_emb.<name>.) -> tensor, as the WebUI's Lora loader reads them."""
    tensors = embedding_tensors([v.detach().float().cpu().contiguous() for v in vectors])
    if "emb_params" in tensors:
        return {"string_to_param.*": tensors["emb_params"]}
    return tensors


def bundled_embeddings(state: dict[str, torch.Tensor]) -> dict[str, list[torch.Tensor]]:
    """name -> vectors per text encoder of the embeddings a LoRA file bundles, read as the
    WebUI's Lora loader reads them: `bundle_emb.<name>.` then `string_to_param.<k>` or one
    tensor (SD1/SD2), or `clip_l` and `clip_g` (SDXL). The name ends at its first dot."""
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        layer, _, rest = key.partition(".")
        name, _, part = rest.partition(".")
        if layer == BUNDLE_PREFIX and name and part:
            parts.setdefault(name, {})[part] = tensor
    found = {}
    for name, tensors in parts.items():
        if "clip_l" in tensors and "clip_g" in tensors:
            found[name] = [tensors["clip_l"].float(), tensors["clip_g"].float()]
        elif len(tensors) == 1:
            tensor = next(iter(tensors.values())).float()
            found[name] = [tensor.unsqueeze(0) if tensor.dim() == 1 else tensor]
    return found


def create_embedding(config, bundle) -> Embedding:
    vectors = initial_vectors(bundle, config.init_word, config.num_vectors_per_token)
    lr = config.embedding_lr if config.embedding_lr is not None else config.learning_rate
    return Embedding(embedding_name(config), vectors, lr, config.embedding_format, config.init_word)


def pivotal_trainable(config, bundle, network: Trainable) -> Pivotal:
    return Pivotal(network, create_embedding(config, bundle), config.output_name, embedding_folder(config),
                   embedding_file_stem(config))


class EmbeddingMethod(NetworkMethod):
    module = MODULE
    label = "Embedding"
    ui_types = {
        "Embedding": {"network_module": MODULE, "network_args": "", "pivotal_tuning": False,
                      "learning_rate": PRESET_LR, "num_vectors_per_token": 2},
        "Embedding + LoRA (pivotal)": {"network_module": "networks.lora", "network_args": "", "conv_dim": 0,
                                       "pivotal_tuning": True, "embedding_lr": PRESET_LR,
                                       "num_vectors_per_token": 2},
    }

    def settings(self, config) -> dict[str, Any]:
        if config.network_args:
            raise ConfigError(f"network_args: an embedding takes none (got {' '.join(config.network_args)}); "
                              "its options are the embedding_* ones")
        return {"num_vectors_per_token": config.num_vectors_per_token}

    def adapts_conv(self, settings: dict[str, Any]) -> bool:
        return False

    def trainable_for(self, config, bundle, settings: dict[str, Any]) -> Embedding:
        return create_embedding(config, bundle)

    def create(self, targets, settings):
        raise ConfigError("an embedding adapts no layers; it is built from the model bundle (trainable_for)")

    def parameter_count(self, targets, settings: dict[str, Any]) -> int:
        return 0  # counted on the bundle (parameters_on): its widths are not layers

    def parameters_on(self, config, bundle, settings: dict[str, Any]) -> int:
        return config.num_vectors_per_token * sum(bundle.embedding_widths())

    def file_metadata(self, settings: dict[str, Any]) -> dict[str, str]:
        return {"ss_network_module": MODULE, "ss_network_dim": str(settings["num_vectors_per_token"])}

    def ui_type_of(self, values: dict[str, Any]) -> str | None:
        if values.get("network_module") == MODULE:
            return "Embedding"
        pivotal = str(values.get("pivotal_tuning", False)).lower() in ("true", "1")
        if pivotal and values.get("network_module") == "networks.lora" and not int(values.get("conv_dim") or 0):
            return "Embedding + LoRA (pivotal)"
        return None

    def recognises(self, keys: Iterable[str]) -> bool:
        keys = set(keys)
        return keys in ({"emb_params"}, {"clip_l", "clip_g"})


METHOD = EmbeddingMethod()
