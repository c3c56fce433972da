"""The files a training run saved, read back from their metadata: what the grids compare.

A run writes `name-000002.safetensors` after epoch 2, `name-step00000100.safetensors` after a
step save or a stop, and `name.safetensors` at the end (train/checkpoints.py), each with
`ss_output_name`, `ss_epoch`, `ss_steps`, our `lib_trainer_average_loss` and, when the run
computed one, `ss_validation_loss` in its metadata.
Files are grouped by run (their `ss_output_name`, or their own name when they have none, as
for a file another tool wrote) and ordered by step, then epoch, so a run's files read in the
order they were trained. Hypernetworks (`.pt`, the WebUI's layout) carry the same keys in
a plain field of the file (formats/hypernetwork_file.py). Embeddings (`.safetensors` or `.pt`,
told apart by their tensors) are a run of their word (the embedding's `name`: an embedding
run's files, and the embedding files a pivotal run writes beside its LoRA); an SDXL `.pt`
embedding holds no metadata, so its epoch or step is read from its name. Metadata is read
from the header only and cached by file size and modification time: a Lora folder of
hundreds of files lists in milliseconds.
"""
from __future__ import annotations

import json
import os
import re
import threading
from collections import Counter
from dataclasses import dataclass

from ..config import ConfigError
from ..config_files import load_config_file
from ..formats.embedding_file import read_embedding_metadata
from ..formats.hypernetwork_file import is_hypernetwork_path, read_hypernetwork_metadata
from ..formats.lora_file import read_metadata
from ..formats.metadata import AVERAGE_LOSS_KEY, VALIDATION_LOSS_KEY

NETWORK_EXTENSIONS = (".safetensors", ".pt")
EMBEDDING = "embedding"
_SAVE_SUFFIX = re.compile(r"-(?:(\d{6})|step(\d{8}))$")  # train/checkpoints.py: -000002, -step00000100


@dataclass(frozen=True)
class SavedFile:
    path: str
    run: str                     # the run's output name
    epoch: int | None
    step: int | None
    average_loss: float | None   # over the last epoch's steps when the file was saved
    metadata: dict
    kind: str = "network"        # or EMBEDDING: a textual-inversion embedding
    validation_loss: float | None = None  # the run's newest validation loss when the file was saved

    @property
    def name(self) -> str:
        """The name the WebUI knows the file by (`<lora:name:1>`, `<hypernet:name:1>`)."""
        return os.path.splitext(os.path.basename(self.path))[0]

    @property
    def is_hypernetwork(self) -> bool:
        return self.kind != EMBEDDING and is_hypernetwork_path(self.path)

    @property
    def is_embedding(self) -> bool:
        return self.kind == EMBEDDING

    @property
    def embedding_word(self) -> str:
        """The word a prompt names the run's embedding by (its run), which a grid cell replaces
        by this file's name."""
        return self.run

    @property
    def label(self) -> str:
        """`run epoch 2`, `run step 100`, or the file's name when its metadata says neither;
        the final file says so, and a renamed copy (Keep as best) its own name."""
        if self.step is None and self.epoch is None:
            return self.name
        final = " (final)" if self.name == self.run else ""
        if self.name != self.run and not re.fullmatch(rf"{re.escape(self.run)}-(\d+|step\d+)", self.name):
            final = f" ({self.name})"
        if self.name.startswith(f"{self.run}-step") or self.epoch is None:
            return f"{self.run} step {self.step}{final}"
        return f"{self.run} epoch {self.epoch}{final}"

    @property
    def summary(self) -> str:
        """The label with the step and the loss, for lists."""
        parts = [self.label]
        if self.step is not None and "step" not in self.label:
            parts.append(f"step {self.step}")
        if self.average_loss is not None:
            parts.append(f"avg loss {self.average_loss:.4f}")
        if self.validation_loss is not None:
            parts.append(f"val loss {self.validation_loss:.4f}")
        return ", ".join(parts)


_cache: dict[str, tuple[tuple[int, int], SavedFile]] = {}
_cache_lock = threading.Lock()


def read_saved_file(path: str) -> SavedFile:
    """The file's run, epoch, step and loss from its metadata; raises OSError/ValueError for a
    file that is not a readable safetensors file or hypernetwork."""
    stat = os.stat(path)
    stamp = (stat.st_size, stat.st_mtime_ns)
    with _cache_lock:
        cached = _cache.get(path)
    if cached and cached[0] == stamp:
        return cached[1]
    stem = os.path.splitext(os.path.basename(path))[0]
    embedding = read_embedding_metadata(path)
    if embedding is not None:
        saved = _embedding_file(path, stem, embedding)
    else:
        metadata = read_hypernetwork_metadata(path) if is_hypernetwork_path(path) else read_metadata(path)
        saved = SavedFile(path=path, run=metadata.get("ss_output_name") or stem,
                          epoch=_number(metadata, "ss_epoch", int), step=_number(metadata, "ss_steps", int),
                          average_loss=_number(metadata, AVERAGE_LOSS_KEY, float), metadata=metadata,
                          validation_loss=_number(metadata, VALIDATION_LOSS_KEY, float))
    with _cache_lock:
        _cache[path] = (stamp, saved)
    return saved


def _embedding_file(path: str, stem: str, metadata: dict) -> SavedFile:
    """An embedding's run is its word: the `name` it was trained as (a pivotal run's own
    ss_output_name is its LoRA's), else the file's name less a save suffix."""
    suffix = _SAVE_SUFFIX.search(stem)
    word = metadata.get("name") or (stem[:suffix.start()] if suffix else stem)
    epoch, step = _number(metadata, "ss_epoch", int), _number(metadata, "ss_steps", int)
    if step is None:
        step = _number(metadata, "step", int)
    if epoch is None and step is None and suffix:  # an SDXL .pt: its name says when it was saved
        epoch, step = (int(suffix.group(1)), None) if suffix.group(1) else (None, int(suffix.group(2)))
    return SavedFile(path=path, run=word, epoch=epoch, step=step,
                     average_loss=_number(metadata, AVERAGE_LOSS_KEY, float), metadata=metadata, kind=EMBEDDING,
                     validation_loss=_number(metadata, VALIDATION_LOSS_KEY, float))


def saved_files(folder: str) -> list[SavedFile]:
    """Every readable network file under `folder` (its subfolders too, as the WebUI walks its
    Lora folder), grouped by run in name order, each run's files in training order. Files that
    cannot be read are left out: a broken download must not hide the rest."""
    found = []
    for root, folders, files in os.walk(folder):
        folders[:] = sorted(f for f in folders if not f.startswith(".") and not f.endswith("-state"))
        for file in sorted(files):
            if file.lower().endswith(NETWORK_EXTENSIONS) and not file.startswith("."):
                try:
                    found.append(read_saved_file(os.path.join(root, file)))
                except (OSError, ValueError, UnicodeDecodeError):
                    continue
    return sorted(found, key=_training_order)


def run_names(folder: str) -> list[str]:
    """The runs with files in `folder`, in name order."""
    return sorted({saved.run for saved in saved_files(folder)}, key=str.casefold)


def run_files(folder: str, run: str) -> list[SavedFile]:
    return [saved for saved in saved_files(folder) if saved.run == run]


def find_saved(folder: str, name_or_path: str) -> SavedFile:
    """A file given by path, by name (`sls-000002`) or by label (`sls epoch 2`); raises
    LookupError naming what is there."""
    if os.path.isfile(name_or_path):
        return read_saved_file(name_or_path)
    files = saved_files(folder)
    for saved in files:
        if name_or_path in (saved.name, saved.label, os.path.basename(saved.path)):
            return saved
    known = ", ".join(saved.name for saved in files[:12]) or "none"
    raise LookupError(f"no network file {name_or_path!r} in {folder} (there: {known})")


def training_prompt(saved: SavedFile, extra: str = "smile") -> str:
    """A prompt for comparing a run's files: the trigger word and the class of its first
    concept folder (`10_sls 1girl` -> `sls, 1girl`), then a feature the dataset did not have."""
    words = []
    try:
        folders = json.loads(saved.metadata.get("ss_dataset_dirs") or "{}")
    except ValueError:
        folders = {}
    if folders:
        first = sorted(folders)[0]
        words = first.split("_", 1)[1].split() if "_" in first else first.split()
    words = [word for word in words if word] or [saved.run]
    if saved.is_embedding and saved.embedding_word not in words:
        # As its captions trained it (dataset/embedding_prompts.py): the trigger word replaced
        # by the embedding's name, else the name put first.
        settings = training_config(saved)
        trigger = str(settings.get("token_string") or settings.get("trigger_word") or "").strip()
        word = saved.embedding_word
        words = [word if w == trigger else w for w in words] if trigger in words else [word, *words]
    return ", ".join([*words, extra] if extra else words)


def training_size(saved: SavedFile, default: tuple[int, int] = (512, 512)) -> tuple[int, int]:
    """(width, height) of the bucket most of the run's images trained in: the training's
    aspect ratio at its resolution."""
    try:
        buckets = json.loads(saved.metadata.get("ss_bucket_info") or "{}").get("buckets", {})
    except (ValueError, AttributeError):
        buckets = {}
    counts: Counter = Counter()
    for bucket in buckets.values():
        try:
            counts[tuple(int(side) for side in bucket["resolution"])] += int(bucket["count"])
        except (KeyError, TypeError, ValueError):
            continue
    if counts:
        return counts.most_common(1)[0][0]
    resolution = saved.metadata.get("ss_resolution", "")
    try:
        width, height = (int(side) for side in resolution.strip("()").split(","))
        return width, height
    except ValueError:
        return default


def training_config(saved: SavedFile) -> dict:
    """The options of the run, from the config saved beside its files (`output_name.toml`); {}
    when there is none (a file from another tool)."""
    # A pivotal run's embedding files are a run of their word, saved by the LoRA's run.
    run = saved.metadata.get("ss_output_name") or saved.run
    path = os.path.join(os.path.dirname(saved.path), f"{run}.toml")
    try:
        return load_config_file(path)
    except (ConfigError, OSError):
        return {}


def training_model(saved: SavedFile) -> str:
    """The base model the run trained on; "" when its config is not there."""
    return str(training_config(saved).get("pretrained_model_name_or_path") or "")


def _number(metadata: dict, key: str, kind):
    try:
        return kind(metadata[key])
    except (KeyError, TypeError, ValueError):
        return None


def _training_order(saved: SavedFile):
    unknown = 1 << 62
    return (saved.run.casefold(), saved.step if saved.step is not None else unknown,
            saved.epoch if saved.epoch is not None else unknown, saved.name == saved.run, saved.name)
