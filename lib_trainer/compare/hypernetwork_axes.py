"""The hypernetwork axes of the WebUI's X/Y/Z plot, in plain Python: "Hypernetwork file" and
"Hypernetwork strength".

They work as the LoRA axes (axes.py): each records its value on the cell (`CellHypernetwork`)
and rewrites the prompt from it, first undoing what it wrote before, so whichever applies last
leaves the one final tag:
- with a file axis on the grid, the cell's file gets `<hypernet:name:strength>` at the end of
  the prompt (None: no tag, the baseline), at the strength axis' value (1 otherwise);
- without one, the strength axis rewrites the strength of the first `<hypernet:…>` tag already
  in the prompt.
The WebUI applies the hypernetwork from that tag (its extra network `hypernet`), so the grid
shows what the user gets when typing it, and each image's infotext carries it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

from .axes import NONE, AxisError, rewrite_prompts
from .runs import saved_files

STATE_ATTRIBUTE = "lib_trainer_xyz_hypernetwork"
_HYPERNET_TAG = re.compile(r"<hypernet:([^:>]+)(?::([^:>]*))?>")


@dataclass(frozen=True)
class CellHypernetwork:
    """What the hypernetwork axes chose for one cell; replaced, never changed (cells share `p`)."""
    file_axis: bool = False
    file_set: bool = False
    file: str | None = None
    strength: float | None = None
    edits: tuple = ()


def hypernetwork_tag(name: str, strength: float) -> str:
    return f"<hypernet:{name}:{strength:g}>"


def cell_state(p) -> CellHypernetwork:
    return getattr(p, STATE_ATTRIBUTE, None) or CellHypernetwork()


def mark_file_axis(p) -> None:
    setattr(p, STATE_ATTRIBUTE, replace(cell_state(p), file_axis=True))


def apply_file(p, name: str) -> None:
    _apply(p, file_set=True, file=None if name == NONE else name)


def apply_strength(p, value: float) -> None:
    _apply(p, strength=float(value))


def _apply(p, **changes) -> None:
    rewrite_prompts(p, STATE_ATTRIBUTE, replace(cell_state(p), **changes), _render)


def _render(prompt: str, state: CellHypernetwork, required: bool):
    strength = 1.0 if state.strength is None else state.strength
    if state.file_axis or state.file_set:
        if not state.file_set or state.file is None:
            return prompt, None
        added = hypernetwork_tag(state.file, strength)
        added = f" {added}" if prompt.strip() else added
        return prompt + added, ("", added)
    if state.strength is None:
        return prompt, None
    match = _HYPERNET_TAG.search(prompt)
    if match is None:
        if required:
            raise AxisError("a hypernetwork strength axis needs a hypernetwork: put one in the prompt "
                            "(<hypernet:name:1>) or add a 'LoRA Train: Hypernetwork file' axis")
        return prompt, None
    after = hypernetwork_tag(match.group(1), strength)
    return prompt[:match.start()] + after + prompt[match.end():], (match.group(0), after)


def hypernetwork_names(prompt: str) -> list[str]:
    return [match.group(1) for match in _HYPERNET_TAG.finditer(prompt)]


def file_choices(folder: str) -> list[str]:
    """NONE, then the name of every hypernetwork file in `folder`, each run's in training order."""
    names = []
    for saved in saved_files(folder):
        if saved.is_hypernetwork and saved.name not in names:
            names.append(saved.name)
    return [NONE, *names]


def strength_label(value: float) -> str:
    return f"strength {round(float(value), 8):g}"
