"""The LoRA axes of the WebUI's X/Y/Z plot, in plain Python: what each axis does to a cell.

A cell is a copy of the WebUI's processing object `p`; the X/Y/Z script calls each axis'
`apply(p, value, values)` on it, x then y then z, before the cell is drawn. The file axis and
the weight axes each record their value on the cell (`CellLora`) and rewrite the prompt from
it, first undoing what they wrote before, so whichever axis applies last leaves the one final
tag and file and weight combine in one cell whatever axes they are on:

- with a file axis on the grid, the cell's file gets `<lora:name:te:unet>` at the end of the
  prompt (None: no tag, the baseline column), at the weights of the weight axes (1 otherwise);
- without one, the weight axes rewrite the weights of the first `<lora:…>` tag already in the
  prompt, so a grid of weights works on the file the prompt names.

The network is applied by the WebUI's built-in Lora from that tag, so the grid shows exactly
what the user gets when typing it, and each image's infotext carries it. The file axis'
`confirm` runs on `p` itself before any cell, and marks it: every cell copies that mark, so a
weight axis that applies before the file axis (weight on X, file on Y) knows to wait for it.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace

from ..errors import InvalidInput, UserError
from .embedding_words import names_word, with_file
from .grid import lora_tag
from .runs import saved_files
from .values import parse_numbers

NONE = "None"                  # the file axis' baseline value: no network in the cell
STATE_ATTRIBUTE = "lib_trainer_xyz"
# The prompts a cell's networks are read from: the hires pass parses its own prompt, and an
# empty hires prompt means "the prompt" (the WebUI fills it in after the axes applied).
PROMPT_FIELDS = ("prompt", "hr_prompt")
WEIGHT_PARTS = ("weight", "te", "unet")

# The WebUI's extra-network syntax (modules/extra_networks.py: re_extra_net); the built-in Lora
# answers to `lora` and its old alias `lyco`.
_EXTRA_NETWORK = re.compile(r"<(\w+):([^>]+)>")
_LORA_KINDS = ("lora", "lyco")


class AxisError(UserError, RuntimeError):
    """A grid that cannot be drawn as asked; a RuntimeError, as the X/Y/Z script's own."""


@dataclass(frozen=True)
class LoraTag:
    """One `<lora:name:te:unet…>` tag in a prompt, read as the built-in Lora reads it: the
    text-encoder weight is the second argument (or `te=`), 1 if absent; the UNet weight the
    third (or `unet=`), the text encoder's if absent. Further arguments (`dyn`) are kept."""
    start: int
    end: int
    kind: str
    name: str
    te: float
    unet: float
    rest: tuple[str, ...] = ()

    def with_weights(self, te: float, unet: float) -> str:
        if not self.rest:
            return lora_tag(self.name, te, unet).replace("<lora:", f"<{self.kind}:", 1)
        return f"<{self.kind}:{self.name}:{te:g}:{unet:g}:{':'.join(self.rest)}>"


def lora_tags(prompt: str) -> list[LoraTag]:
    """The prompt's Lora tags in order; raises AxisError for one whose weight is not a number."""
    found = []
    for match in _EXTRA_NETWORK.finditer(prompt):
        if match.group(1) not in _LORA_KINDS:
            continue
        positional, named = [], {}
        for item in match.group(2).split(":"):
            key, sep, value = item.partition("=")
            if sep:
                named[key] = value
            else:
                positional.append(item)
        if not positional or not positional[0]:
            continue  # names no file: nothing to weight
        try:
            te = float(named.pop("te", positional[1] if len(positional) > 1 else 1.0))
            unet = float(named.pop("unet", positional[2] if len(positional) > 2 else te))
        except ValueError:
            raise AxisError(f"the weights of {match.group(0)} in the prompt are not numbers") from None
        rest = tuple(positional[3:]) + tuple(f"{key}={value}" for key, value in named.items())
        found.append(LoraTag(match.start(), match.end(), match.group(1), positional[0], te, unet, rest))
    return found


@dataclass(frozen=True)
class CellLora:
    """What the LoRA axes chose for one cell. Frozen and replaced, never changed: the cells are
    shallow copies of one `p`, and would otherwise share it."""
    file_axis: bool = False            # a file axis is on this grid
    file_set: bool = False             # ... and has applied in this cell
    file: str | None = None            # its file's network name; None: no network
    weight: float | None = None        # both parts
    te: float | None = None
    unet: float | None = None
    edits: tuple = ()                  # (field, (before, after)): our last change to each prompt

    def weights(self, te: float = 1.0, unet: float = 1.0) -> tuple[float, float]:
        """(te, unet): a part's own axis first, then the weight axis, then the given default."""
        both = self.weight
        return (self.te if self.te is not None else both if both is not None else te,
                self.unet if self.unet is not None else both if both is not None else unet)

    @property
    def has_weight(self) -> bool:
        return any(getattr(self, part) is not None for part in WEIGHT_PARTS)


def cell_state(p) -> CellLora:
    return getattr(p, STATE_ATTRIBUTE, None) or CellLora()


def mark_file_axis(p) -> None:
    """Called by the file axis' confirm on the grid's `p`, which every cell copies."""
    setattr(p, STATE_ATTRIBUTE, replace(cell_state(p), file_axis=True))


def apply_file(p, name: str) -> None:
    """The file axis: this cell's file (NONE for the baseline)."""
    _apply(p, file_set=True, file=None if name == NONE else name)


def apply_weight(p, value: float, part: str = "weight") -> None:
    """A weight axis: `weight` sets both parts, `te` / `unet` one each (and win over `weight`)."""
    if part not in WEIGHT_PARTS:
        raise ValueError(f"unknown weight part {part!r}")
    _apply(p, **{part: float(value)})


def _apply(p, **changes) -> None:
    rewrite_prompts(p, STATE_ATTRIBUTE, replace(cell_state(p), **changes), _render)


def rewrite_prompts(p, attribute: str, state, render) -> None:
    """Each prompt field of the cell's `p` without the edit made for it before, then rendered
    from `state` by `render(text, state, required)`; `state` (a frozen dataclass with an
    `edits` field) goes back on `p` under `attribute` with the new edits. Shared by the LoRA
    and the hypernetwork axes."""
    before = dict(state.edits)
    edits = []
    for field in PROMPT_FIELDS:
        text = getattr(p, field, None)
        if not isinstance(text, str) or (field != "prompt" and not text):
            continue
        text = _undo(text, before.get(field))
        text, edit = render(text, state, required=field == "prompt")
        setattr(p, field, text)
        if edit:
            edits.append((field, edit))
    setattr(p, attribute, replace(state, edits=tuple(edits)))


def _render(prompt: str, state: CellLora, required: bool):
    """(prompt, edit): the prompt with the cell's tag, and (before, after) to undo it with."""
    if state.file_axis or state.file_set:
        if not state.file_set or state.file is None:
            return prompt, None  # no file yet (its axis applies later in this cell), or None
        added = lora_tag(state.file, *state.weights())
        added = f" {added}" if prompt.strip() else added
        return prompt + added, ("", added)
    if not state.has_weight:
        return prompt, None
    tags = lora_tags(prompt)
    if not tags:
        if required:
            raise AxisError("a LoRA weight axis needs a LoRA: put one in the prompt (<lora:name:1>) "
                            "or add a 'LoRA Train: LoRA file' axis")
        return prompt, None
    first = tags[0]
    after = first.with_weights(*state.weights(first.te, first.unet))
    return prompt[:first.start] + after + prompt[first.end:], (prompt[first.start:first.end], after)


def _undo(prompt: str, edit) -> str:
    """The prompt without our last change: an appended tag is the last of its text, a rewritten
    one the first. A change someone else rewrote since (Prompt S/R) is left as it is."""
    if not edit:
        return prompt
    before, after = edit
    at = prompt.rfind(after) if before == "" else prompt.find(after)
    return prompt if at < 0 else prompt[:at] + before + prompt[at + len(after):]


def file_choices(folder: str) -> list[str]:
    """NONE, then the network name of every file in `folder`, grouped by run in training
    order; read from the folder each time, so a run's new files show at once."""
    names = []
    for saved in saved_files(folder):
        # hypernetworks and embeddings (a pivotal run's, beside its LoRA) have axes of their own
        if saved.name not in names and not saved.is_hypernetwork and not saved.is_embedding:
            names.append(saved.name)
    return [NONE, *names]


def file_label(folder: str, name: str) -> str:
    """`run epoch 2`, `run step 100` for a file of ours, its name for another's, None for None."""
    if name == NONE:
        return NONE
    for saved in saved_files(folder):
        if saved.name == name:
            return saved.label
    return name


def parse_weights(text: str) -> list[float]:
    """The weights of an axis in the X/Y/Z syntax (compare/values.py), as the script's own
    error type. Unlike the script's float ranges (numpy's arange over end + step) the end is
    included only when a step reaches it: `0.6-1 (+0.1)` is 0.6 … 1, not six ending at 1.1."""
    try:
        return parse_numbers(text)
    except InvalidInput as error:
        raise AxisError(str(error)) from None


def weight_label(part: str, value: float) -> str:
    name = {"weight": "weight", "te": "TE weight", "unet": "UNet weight"}[part]
    return f"{name} {round(float(value), 8):g}"


# --- the embedding file axis ---------------------------------------------------------------------
# A run's embedding files are named by its word: `word.safetensors`, `word-000002.pt` after
# epoch 2, `word-step00000100.safetensors`; the WebUI names each embedding after its file.
_SAVE_SUFFIX = re.compile(r"-(?:\d{6}|step\d{8})$")
EMBEDDING_EXTENSIONS = (".safetensors", ".pt")


def embedding_word(name: str) -> str:
    """The word a run's prompts use for the embedding saved as `name`."""
    return _SAVE_SUFFIX.sub("", name)


def apply_embedding_file(p, name: str) -> None:
    """The embedding file axis: the run's word in the prompts becomes this file's name, so the
    cell uses that file's vectors (weights do not apply to an embedding)."""
    word = embedding_word(name)
    if not names_word(getattr(p, "prompt", "") or "", word):
        raise AxisError(f"the embedding file axis replaces the embedding's word {word!r} in the prompt by the "
                        f"file's name ({name}): put {word} in the prompt")
    for field in PROMPT_FIELDS:
        text = getattr(p, field, None)
        if isinstance(text, str) and text:
            setattr(p, field, with_file(text, word, name))


def embedding_file_choices(folder: str) -> list[str]:
    """The embedding names (file stems) in `folder` and below, by word, then in saving order."""
    names = []
    for root, _, files in os.walk(folder):
        for file in files:
            stem, extension = os.path.splitext(file)
            if extension.lower() in EMBEDDING_EXTENSIONS and not stem.endswith(".preview"):
                names.append((embedding_word(stem), os.path.getmtime(os.path.join(root, file)), stem))
    return [stem for _, _, stem in sorted(names)]
