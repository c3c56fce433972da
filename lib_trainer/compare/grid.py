"""A file x weight grid: one image per (network file, weight, prompt), labelled, in one PNG.

Columns are the files in the order asked (None: the base model alone, the baseline column),
rows the weights in the order asked, repeated for each prompt. Every cell has the same seed,
so a column shows how a file's effect grows with its weight and a row how training moved.
Cells are drawn file by file, so each file is loaded once; the base model's column is drawn
once per prompt, since no weight changes it.

Who draws a cell is the host's business (a `CellDrawer`): the standalone drawer applies the
file to our own model (compare/standalone.py); the WebUI's adds `<lora:name:w>` (a
hypernetwork's `<hypernet:name:w>`) to the prompt of its own txt2img (lib_trainer/webui/compare.py). The grid's PNG carries the first cell's
infotext as `parameters` (the WebUI's PNG Info tab reads it, as for its own grids) and every
cell's in `lib_trainer_grid` (JSON), beside a folder with each cell's own PNG.

A grid of embedding files has no weights (an embedding is a word, on or off): its rows are the
prompts, each cell's prompt has the embedding's word replaced by its file's name (as the X/Y/Z
plot's embedding file axis does, embedding_words.py), and the None column has the word taken
out: the prompt as it reads without the embedding. Weights given to such a grid are said once,
as a notice, and not used.
"""
from __future__ import annotations

import json
import os
import textwrap
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from PIL import Image, ImageDraw, ImageFont

from ..errors import InvalidInput, UserError
from ..progress import Progress
from ..train.samplers import SAMPLERS
from ..train.sampling import save_png
from .embedding_words import names_word, with_file, without_word
from .runs import SavedFile

BASE_LABEL = "None (base model)"
GRID_KEY = "lib_trainer_grid"


class CompareStopped(UserError, RuntimeError):
    pass


@dataclass(frozen=True)
class GridRequest:
    """What to draw: the columns (network files; None is the base model), the weights (rows)
    and the prompts, with the settings every cell shares."""
    files: Sequence[SavedFile | None]
    prompts: Sequence[str]
    weights: Sequence[float] = (1.0,)
    negative_prompt: str = ""
    seed: int = 1
    steps: int = 20
    sampler: str = "euler_a"
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512

    def problems(self) -> list[str]:
        found = []
        if not self.files:
            found.append("choose at least one file (or None for the base model)")
        if not [prompt for prompt in self.prompts if prompt.strip()]:
            found.append("write at least one prompt")
        if not self.weights and not self.compares_embeddings:
            found.append("give at least one weight, e.g. 0.6,0.8,1")
        found += self._embedding_problems()
        if self.sampler not in SAMPLERS:
            found.append(f"sampler {self.sampler!r} is unknown; available: {', '.join(SAMPLERS)}")
        if not 1 <= self.steps <= 1000:
            found.append(f"steps={self.steps} must be from 1 to 1000")
        for side, value in (("width", self.width), ("height", self.height)):
            if value < 64 or value % 8:
                found.append(f"{side}={value} must be a multiple of 8, at least 64")
        return found

    def checked(self) -> "GridRequest":
        problems = self.problems()
        if problems:
            raise InvalidInput("; ".join(problems))
        return self

    @property
    def used_prompts(self) -> list[str]:
        return [prompt.strip() for prompt in self.prompts if prompt.strip()]

    @property
    def compares_embeddings(self) -> bool:
        return any(_is_embedding(file) for file in self.files)

    @property
    def embedding_words(self) -> list[str]:
        words = []
        for file in self.files:
            if _is_embedding(file) and file.embedding_word not in words:
                words.append(file.embedding_word)
        return words

    @property
    def row_weights(self) -> tuple[float, ...]:
        """The weights the rows have: one row per prompt for embeddings, which take none."""
        return (1.0,) if self.compares_embeddings else tuple(self.weights)

    @property
    def image_count(self) -> int:
        """The images drawn: every cell, but the base model's once per prompt."""
        bases = sum(1 for file in self.files if file is None)
        prompts = len(self.used_prompts)
        return (len(self.files) - bases) * len(self.row_weights) * prompts + bases * prompts

    def notices(self) -> list[str]:
        """What the grid does other than asked, to say once before it is drawn."""
        unused = [weight for weight in self.weights if weight != 1]
        if self.compares_embeddings and unused:
            return [f"weights do not apply to an embedding (a word, on or off): one row per prompt, the weights "
                    f"{', '.join(f'{w:g}' for w in self.weights)} are not used"]
        return []

    def _embedding_problems(self) -> list[str]:
        if not self.compares_embeddings:
            return []
        found = []
        others = [file.name for file in self.files if file is not None and not _is_embedding(file)]
        if others:
            found.append(f"{', '.join(others)}: an embedding grid compares embedding files (and None) only, "
                         "as weights mean nothing to an embedding; compare these files in a grid of their own")
        for index, prompt in enumerate(self.used_prompts):
            for word in self.embedding_words:
                if not names_word(prompt, word):
                    found.append(f"prompt {index + 1} ({prompt!r}) does not say the embedding's word {word!r}: "
                                 f"put {word} in it (each cell replaces it by the file's name)")
        return found

    def cell_prompt(self, file: SavedFile | None, prompt: str) -> str:
        """The prompt a cell draws: an embedding file's name in place of its word, and for the
        None column of an embedding grid the prompt without the word."""
        if _is_embedding(file):
            return with_file(prompt, file.embedding_word, file.name)
        if file is None:
            for word in self.embedding_words:
                prompt = without_word(prompt, word)
        return prompt


def _is_embedding(file) -> bool:
    return bool(getattr(file, "is_embedding", False))  # None is the base model


@dataclass(frozen=True)
class Cell:
    row: int
    column: int
    file: SavedFile | None
    weight: float
    prompt: str          # as the cell draws it (GridRequest.cell_prompt)
    prompt_index: int


@dataclass
class DrawnCell:
    cell: Cell
    image: Image.Image
    infotext: str


# (cell, request) -> (image, infotext); the drawer keeps whatever it loaded between calls.
CellDrawer = Callable[[Cell, GridRequest], tuple[Image.Image, str]]


@dataclass
class Grid:
    request: GridRequest
    columns: list[str]
    rows: list[str]
    cells: list[DrawnCell] = field(default_factory=list)
    image: Image.Image | None = None

    def cell(self, row: int, column: int) -> DrawnCell:
        return next(drawn for drawn in self.cells if drawn.cell.row == row and drawn.cell.column == column)


def lora_tag(name: str, text_encoder: float, unet: float) -> str:
    """The WebUI's prompt tag for a network at these weights: `<lora:name:w>`, or
    `<lora:name:te:unet>` when the two differ."""
    if text_encoder == unet:
        return f"<lora:{name}:{unet:g}>"
    return f"<lora:{name}:{text_encoder:g}:{unet:g}>"


def network_tag(file: SavedFile, text_encoder: float, unet: float) -> str:
    """The tag that applies `file` in a WebUI prompt: `<hypernet:name:strength>` for a
    hypernetwork (only the UNet's weight means anything to it), none for an embedding (its
    name in the prompt applies it), the LoRA tag otherwise."""
    if file.is_embedding:
        return ""
    if file.is_hypernetwork:
        return f"<hypernet:{file.name}:{unet:g}>"
    return lora_tag(file.name, text_encoder, unet)


def column_label(file: SavedFile | None, request: GridRequest | None = None) -> str:
    if file is not None:
        return file.label
    words = request.embedding_words if request is not None else []
    return f"None (prompt without {', '.join(words)})" if words else BASE_LABEL


def row_labels(request: GridRequest) -> list[str]:
    prompts = request.used_prompts
    if request.compares_embeddings:
        return [f"prompt {p + 1}" if len(prompts) > 1 else "prompt" for p in range(len(prompts))]
    return [f"{f'prompt {p + 1}, ' if len(prompts) > 1 else ''}weight {weight:g}"
            for p in range(len(prompts)) for weight in request.weights]


def grid_cells(request: GridRequest) -> list[Cell]:
    """Every cell, in the order they are drawn: file by file, then prompt by prompt."""
    prompts, weights = request.used_prompts, request.row_weights
    cells = []
    for column, file in enumerate(request.files):
        for prompt_index, prompt in enumerate(prompts):
            for weight_index, weight in enumerate(weights):
                row = prompt_index * len(weights) + weight_index
                cells.append(Cell(row, column, file, weight, request.cell_prompt(file, prompt), prompt_index))
    return cells


def make_grid(request: GridRequest, draw: CellDrawer, progress: Progress) -> Grid:
    """Draw every cell and put them together; `progress` counts the images drawn and its stop
    request ends the grid between two images."""
    request = request.checked()
    grid = Grid(request, [column_label(file, request) for file in request.files], row_labels(request))
    cells = grid_cells(request)
    to_draw = request.image_count
    for notice in request.notices():
        progress.status(notice)
    progress.start("comparing", to_draw)
    drawn_base: dict[tuple[int, int], DrawnCell] = {}  # (column, prompt) -> the base image drawn once
    done = 0
    for cell in cells:
        if progress.stop_requested:
            progress.end(f"stopped after {done} of {to_draw} images")
            raise CompareStopped(f"comparison stopped after {done} of {to_draw} images")
        if cell.file is None and (cell.column, cell.prompt_index) in drawn_base:
            first = drawn_base[(cell.column, cell.prompt_index)]
            grid.cells.append(DrawnCell(cell, first.image, first.infotext))
            continue
        image, infotext = draw(cell, request)
        drawn = DrawnCell(cell, image, infotext)
        grid.cells.append(drawn)
        if cell.file is None:
            drawn_base[(cell.column, cell.prompt_index)] = drawn
        done += 1
        progress.step(done)
        progress.image(image, f"{grid.columns[cell.column]}, {grid.rows[cell.row]}")
    grid.image = compose(grid)
    progress.end(f"grid of {len(grid.columns)} x {len(grid.rows)} images")
    return grid


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow before 10.1 has one bitmap size
        return ImageFont.load_default()


def _wrapped(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> list[str]:
    """Lines of `text` that fit in `width` pixels."""
    average = max(1.0, draw.textlength("abcdefghij", font=font) / 10)
    return textwrap.wrap(text, max(4, int(width / average))) or [""]


def compose(grid: Grid) -> Image.Image:
    """The cells in rows and columns, the column labels above and the row labels left."""
    width, height = grid.request.width, grid.request.height
    font = _font(max(12, width // 22))
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_height = int(font.size * 1.3) if hasattr(font, "size") else 14
    column_lines = [_wrapped(scratch, label, font, width - 8) for label in grid.columns]
    header = line_height * max(len(lines) for lines in column_lines) + 12
    label_width = max(int(scratch.textlength(label, font=font)) for label in grid.rows) + 24
    canvas = Image.new("RGB", (label_width + width * len(grid.columns), header + height * len(grid.rows)), "white")
    pen = ImageDraw.Draw(canvas)
    for column, lines in enumerate(column_lines):
        for index, line in enumerate(lines):
            x = label_width + column * width + (width - scratch.textlength(line, font=font)) / 2
            pen.text((x, 6 + index * line_height), line, fill="black", font=font)
    for row, label in enumerate(grid.rows):
        pen.text((12, header + row * height + height / 2 - line_height / 2), label, fill="black", font=font)
    for drawn in grid.cells:
        image = drawn.image if drawn.image.size == (width, height) else drawn.image.resize((width, height))
        canvas.paste(image.convert("RGB"), (label_width + drawn.cell.column * width, header + drawn.cell.row * height))
    return canvas


def grid_record(grid: Grid) -> dict:
    """What the grid PNG says about its cells."""
    return {"columns": grid.columns, "rows": grid.rows,
            "cells": [{"row": d.cell.row, "column": d.cell.column, "weight": d.cell.weight,
                       "file": d.cell.file.path if d.cell.file else None, "prompt": d.cell.prompt,
                       "infotext": d.infotext} for d in sorted(grid.cells, key=lambda d: (d.cell.row, d.cell.column))]}


def grid_folder(output_dir: str) -> str:
    return os.path.join(output_dir, "compare")


def default_grid_path(output_dir: str, run: str) -> str:
    return os.path.join(grid_folder(output_dir), f"{run}-{time.strftime('%Y%m%d-%H%M%S')}.png")


def save_grid(grid: Grid, path: str, cells: bool = True) -> str:
    """The grid PNG at `path` and, with `cells`, each cell's PNG in a folder of the same name."""
    first = min(grid.cells, key=lambda d: (d.cell.row, d.cell.column))
    save_png(path, grid.image, first.infotext, **{GRID_KEY: json.dumps(grid_record(grid))})
    if cells:
        folder = os.path.splitext(path)[0]
        for drawn in grid.cells:
            save_png(cell_path(folder, drawn.cell), drawn.image, drawn.infotext)
    return path


def cell_path(folder: str, cell: Cell) -> str:
    return os.path.join(folder, f"r{cell.row:02d}-c{cell.column:02d}.png")


def read_grid_record(path: str) -> dict:
    with Image.open(path) as image:
        return json.loads(image.text[GRID_KEY])
