"""The "Compare" sub-tab: a run's saved files x weights in one labelled grid, and Keep as best.

The runs are read from a folder (the service's output folder to start; in the WebUI the list
offers its Lora, embeddings and hypernetworks folders, where each kind of run saves, and any
folder may be typed), again each time the sub-tab is opened or Refresh is pressed, so files a
running run saves show up. Choosing a run fills in its files and the prompt, size and weights
it trained for (compare/defaults.py; an embedding run's grid has one row per prompt). "Make
grid" asks the service to draw it (the WebUI's txt2img there, our own sampler standalone),
saves it beside the run's files, and shows it with its cells; clicking a cell shows that
image at full size with its infotext, and picks its file for Keep as best.

The grid is drawn in the background (compare_job.py says why) and the page polls its progress
bar and its result; Stop asks it to end after the image being drawn (in the WebUI, Interrupt
does too).
"""
from __future__ import annotations

import os
import random
from dataclasses import replace

import gradio as gr

from ..compare.defaults import DEFAULT_WEIGHTS_TEXT, run_defaults, save_beside_run
from ..compare.grid import BASE_LABEL, GridRequest, cell_path, network_tag
from ..compare.keep import best_name, keep_as_best
from ..compare.runs import SavedFile, run_files, run_names, saved_files
from ..compare.values import parse_numbers
from ..config import TrainConfig
from ..errors import InvalidInput
from ..jobs.service import TrainService
from ..train.samplers import SAMPLERS
from .compare_job import GridJob
from .guard import shows_errors
from .render import message_html


def file_choices(files: list[SavedFile]) -> dict[str, SavedFile]:
    """Checkbox label -> file: the summary (epoch, step, average loss), made unique with the
    file's name where two read the same (two folders holding the same run)."""
    choices: dict[str, SavedFile] = {}
    for saved in files:
        label = saved.summary
        if label in choices:
            label = f"{label} [{os.path.relpath(saved.path, os.path.dirname(os.path.dirname(saved.path)))}]"
        choices[label] = saved
    return choices


def newest_run(folder: str) -> str | None:
    """The run whose newest file was written last: most likely the one to look at."""
    newest: dict[str, float] = {}
    for saved in saved_files(folder):
        try:
            newest[saved.run] = max(newest.get(saved.run, 0.0), os.path.getmtime(saved.path))
        except OSError:
            continue
    return max(newest, key=newest.get) if newest else None


class CompareTab:
    def __init__(self, service: TrainService, defaults: TrainConfig) -> None:
        self.service = service
        self.folder_default = defaults.output_dir
        self.folders = service.compare_folders(defaults.output_dir)
        self.model_default = defaults.pretrained_model_name_or_path
        self.job: GridJob | None = None  # the newest grid; one at a time, as the machine draws one

    # --- layout ------------------------------------------------------------------------
    def build(self) -> None:
        where = ("the WebUI's txt2img on the loaded checkpoint" if self.service.compares_on_loaded_model
                 else "this trainer's sampler on the base model below")
        gr.Markdown(f"Each file a run saved, at each weight, in one labelled grid drawn by {where}; the grid is "
                    "saved in the `compare` folder beside the run's files. Click a cell to see it at full size.")
        self.message = gr.HTML(elem_id="lt_compare_message")
        with gr.Row():
            self.folder = gr.Dropdown(self.folders, value=self.folder_default, label="Folder of the runs' files",
                                      allow_custom_value=True, elem_id="lt_compare_folder",
                                      info="LoRA, embedding and hypernetwork runs each save in their own "
                                           "folder; pick it, or type another")
            self.run = gr.Dropdown([], label="Run", elem_id="lt_compare_run")
            self.refresh = gr.Button("Refresh", size="sm", elem_id="lt_compare_refresh")
        self.files = gr.CheckboxGroup([BASE_LABEL], value=[BASE_LABEL], label="Files (columns)",
                                      elem_id="lt_compare_files")
        with gr.Row():
            self.weights = gr.Textbox(DEFAULT_WEIGHTS_TEXT, label="Weights (rows)", max_lines=1,
                                      info="0.6,0.8,1 or a range as in X/Y/Z: 0.6-1 (+0.1), 0-1 [5]; an "
                                           "embedding has none (one row per prompt)",
                                      elem_id="lt_compare_weights")
            self.seed = gr.Number(1, precision=0, label="Seed", elem_id="lt_compare_seed")
            self.steps = gr.Number(20, precision=0, label="Steps", elem_id="lt_compare_steps")
            self.sampler = gr.Dropdown(list(SAMPLERS), value="euler_a", label="Sampler", elem_id="lt_compare_sampler")
            self.cfg = gr.Number(7.0, label="CFG scale", elem_id="lt_compare_cfg")
        with gr.Row():
            self.prompts = gr.Textbox(label="Prompts (one per line)", lines=2, elem_id="lt_compare_prompts")
            self.negative = gr.Textbox(label="Negative prompt", lines=2, elem_id="lt_compare_negative")
        with gr.Row():
            self.width = gr.Number(512, precision=0, label="Width", elem_id="lt_compare_width")
            self.height = gr.Number(512, precision=0, label="Height", elem_id="lt_compare_height")
            self.model = gr.Textbox(self.model_default, label="Base model", max_lines=1,
                                    visible=not self.service.compares_on_loaded_model,
                                    info="A checkpoint file, a diffusers folder or tiny:sd1; filled with the one "
                                         "the run trained on", elem_id="lt_compare_model")
        with gr.Row():
            self.make = gr.Button("Make grid", variant="primary", elem_id="lt_compare_make")
            self.stop = gr.Button("Stop", variant="stop", elem_id="lt_compare_stop")
            # clicked about once a second by javascript/lib_trainer.js while the sub-tab shows
            self.poll_button = gr.Button("Refresh progress", size="sm", elem_id="lt_compare_poll")
        self.progress = gr.HTML(elem_id="lt_compare_progress")
        self.grid = gr.Image(label="Grid", type="pil", interactive=False, elem_id="lt_compare_grid")
        self.path = gr.Textbox(label="Grid saved to", max_lines=1, interactive=False, elem_id="lt_compare_path")
        self.cells = gr.Gallery(label="Cells (click one)", columns=4, height=300, elem_id="lt_compare_cells")
        with gr.Row():
            self.cell_image = gr.Image(label="Cell", type="filepath", interactive=False,
                                       elem_id="lt_compare_cell_image")
            self.cell_info = gr.Textbox(label="Cell infotext", lines=6, interactive=False,
                                        elem_id="lt_compare_cell_info")
        self.cell_state = gr.State([])  # the shown grid's cells: [{"path", "infotext", "file"}], in gallery order
        self.shown = gr.State(0)  # the id of the grid job whose result this page shows
        gr.Markdown("#### Keep as best\nCopies the chosen file beside it under a clean name, metadata and all, "
                    "so the prompt can say `<lora:name-best:0.8>`.")
        with gr.Row():
            self.keep_file = gr.Dropdown([], label="File", elem_id="lt_compare_keep_file")
            self.keep_name = gr.Textbox(label="New name", max_lines=1, elem_id="lt_compare_keep_name")
            self.overwrite = gr.Checkbox(False, label="Overwrite a file of that name", elem_id="lt_compare_overwrite")
            self.keep = gr.Button("Keep as best", elem_id="lt_compare_keep")

    # --- events ------------------------------------------------------------------------
    def wire(self, tab=None) -> None:
        """`tab`: the sub-tab, re-read whenever it is opened."""
        listing = [self.message, self.run, self.files, self.keep_file]
        if tab is not None and hasattr(tab, "select"):
            tab.select(self.refresh_runs, [self.folder, self.run], listing)
        self.refresh.click(self.refresh_runs, [self.folder, self.run], listing)
        self.folder.change(self.refresh_runs, [self.folder, self.run], listing)  # picked, or typed and left
        self.run.change(self.choose_run, [self.folder, self.run],
                        [self.message, self.files, self.keep_file, self.keep_name, self.prompts, self.width,
                         self.height, self.model, self.weights])
        self.make.click(self.make_grid,
                        [self.folder, self.run, self.files, self.weights, self.prompts, self.negative, self.seed,
                         self.steps, self.sampler, self.cfg, self.width, self.height, self.model],
                        [self.message, self.progress])
        self.poll_button.click(self.poll, self.shown, self.poll_outputs, show_progress="hidden")
        self.stop.click(self.stop_grid, None, self.message)
        self.cells.select(self.cell_selected, self.cell_state, [self.cell_image, self.cell_info, self.keep_file])
        self.keep.click(self.keep_best, [self.folder, self.run, self.keep_file, self.keep_name, self.overwrite],
                        [self.message, self.files, self.keep_file])

    # --- handlers ----------------------------------------------------------------------
    def _folder(self, folder) -> str:
        folder = str(folder or "").strip()
        if not folder or not os.path.isdir(folder):
            raise InvalidInput(f"{folder!r} is not a folder: enter the folder the runs saved their files in")
        return folder

    def _files(self, folder: str, run) -> dict[str, SavedFile]:
        if not run:
            raise InvalidInput("Choose a run first (Refresh lists the runs in the folder).")
        files = file_choices(run_files(folder, run))
        if not files:
            raise InvalidInput(f"the folder has no files of {run!r} any more: press Refresh")
        return files

    def refresh_runs(self, folder, run):
        """The runs in `folder` (the chosen one kept, else the newest), and its files, all ticked."""
        @shows_errors(4)
        def refresh():
            where = self._folder(folder)
            runs = run_names(where)
            if not runs:
                return (message_html(notes=[f"No trained network files in {where} yet."]),
                        gr.update(choices=[], value=None), gr.update(choices=[BASE_LABEL], value=[BASE_LABEL]),
                        gr.update(choices=[], value=None))
            chosen = run if run in runs else newest_run(where)
            labels = list(file_choices(run_files(where, chosen)))
            return ("", gr.update(choices=runs, value=chosen),
                    gr.update(choices=[BASE_LABEL, *labels], value=[BASE_LABEL, *labels]),
                    gr.update(choices=labels, value=labels[-1] if labels else None))
        return refresh()

    def choose_run(self, folder, run):
        """A run's files, all ticked, and the prompt, size and base model it trained with."""
        @shows_errors(9)
        def choose():
            if not run:
                return tuple(gr.update() for _ in range(9))
            files = self._files(self._folder(folder), run)
            labels = list(files)
            settings = run_defaults(list(files.values()), self.model_default)
            model = settings.model if not self.service.compares_on_loaded_model else gr.update()
            return ("", gr.update(choices=[BASE_LABEL, *labels], value=[BASE_LABEL, *labels]),
                    gr.update(choices=labels, value=labels[-1]), best_name(files[labels[-1]]), settings.prompt,
                    settings.width, settings.height, model, settings.weights)
        return choose()

    def make_grid(self, folder, run, chosen, weights, prompts, negative, seed, steps, sampler, cfg, width, height,
                  model):
        """Check the fields and start drawing; the poll brings the grid."""
        @shows_errors(2)
        def make():
            where = self._folder(folder)
            known = self._files(where, run)
            missing = [label for label in chosen or [] if label != BASE_LABEL and label not in known]
            if missing:
                raise InvalidInput(f"{', '.join(missing)}: no longer in the folder; press Refresh")
            columns = [None if label == BASE_LABEL else known[label] for label in (chosen or [])]
            request = GridRequest(
                files=columns, prompts=str(prompts or "").splitlines(), weights=parse_numbers(weights),
                negative_prompt=str(negative or ""), seed=_seed(seed), steps=_whole(steps, "steps"),
                sampler=sampler, cfg_scale=float(cfg if cfg is not None else 7.0), width=_whole(width, "width"),
                height=_whole(height, "height")).checked()
            if self.job is not None and self.job.running:
                raise InvalidInput("A grid is being drawn: wait for it, or press Stop.")
            total = request.image_count
            self.job = GridJob(lambda progress: self._draw(request, progress, str(model or ""), where, known),
                               total).start()
            return message_html(ok=f"Drawing {total} images...", notes=request.notices()), self.job.progress_html()
        return make()

    def _draw(self, request: GridRequest, progress, model: str, folder: str, known: dict) -> dict:
        """In the job's thread: the grid, saved beside the run, and what the page shows of it."""
        grid = self.service.compare(request, progress, model)
        path = save_beside_run(grid, folder)
        folder_of_cells = os.path.splitext(path)[0]
        cells = [{"path": cell_path(folder_of_cells, drawn.cell), "infotext": drawn.infotext,
                  "caption": f"{grid.columns[drawn.cell.column]}, {grid.rows[drawn.cell.row]}",
                  "file": _label_of(known, drawn.cell.file)}
                 for drawn in sorted(grid.cells, key=lambda d: (d.cell.row, d.cell.column))]
        return {"image": grid.image, "path": path, "cells": cells, "columns": len(grid.columns),
                "text": f"Grid of {len(grid.columns)} files x {len(grid.rows)} rows saved."}

    @property
    def poll_outputs(self) -> list:
        return [self.progress, self.message, self.grid, self.path, self.cells, self.cell_state, self.cell_image,
                self.cell_info, self.shown]

    def poll(self, shown):
        """The grid's progress while it is drawn; its result once, when it is done."""
        job = self.job
        keep = [gr.update() for _ in range(8)]
        if job is None or (shown == job.id and not job.running):
            return (*keep, shown)
        if job.running:
            return (job.progress_html(), *keep[1:], shown)
        if job.phase != "done":
            message = message_html(errors=job.errors) if job.phase == "failed" else message_html(notes=job.errors)
            return (job.progress_html(), message, *keep[2:], job.id)
        result = job.result
        gallery = gr.update(value=[(cell["path"], cell["caption"]) for cell in result["cells"]],
                            columns=result["columns"])
        return (job.progress_html(), message_html(ok=result["text"]), result["image"], result["path"], gallery,
                result["cells"], None, "", job.id)

    @shows_errors(1)
    def stop_grid(self):
        job = self.job
        if job is None or not job.running:
            return message_html(notes=["No grid is being drawn."])
        job.commands.request_stop()
        return message_html(ok="The grid stops after the image being drawn.")

    def cell_selected(self, cells, event: gr.SelectData):
        index = event.index if isinstance(event.index, int) else None
        if not cells or index is None or not 0 <= index < len(cells):
            return gr.update(), gr.update(), gr.update()
        cell = cells[index]
        return cell["path"], cell["infotext"], gr.update(value=cell["file"]) if cell["file"] else gr.update()

    def keep_best(self, folder, run, label, name, overwrite):
        @shows_errors(3)
        def keep():
            where = self._folder(folder)
            files = self._files(where, run)
            if label not in files:
                raise InvalidInput("Choose the file to keep (click its cell in the grid, or pick it in the list).")
            saved = files[label]
            target = keep_as_best(saved.path, str(name or "").strip() or best_name(saved), bool(overwrite))
            labels = list(file_choices(run_files(where, run)))
            stem = os.path.splitext(os.path.basename(target))[0]
            use = stem if saved.is_embedding else network_tag(replace(saved, path=target), 1.0, 1.0)
            return (message_html(ok=f"Kept {saved.label} as {target}: use it as {use} in a prompt."),
                    gr.update(choices=[BASE_LABEL, *labels]), gr.update(choices=labels, value=label))
        return keep()


def _label_of(known: dict[str, SavedFile], file: SavedFile | None) -> str:
    if file is None:
        return ""
    return next((label for label, saved in known.items() if saved.path == file.path), "")


def _seed(value) -> int:
    """-1, as in the WebUI, is a random seed: one for the whole grid, so its cells compare."""
    seed = _whole(value, "seed")
    return random.randrange(2 ** 32) if seed < 0 else seed


def _whole(value, name: str) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{name}={value!r} is not a number") from None
    if number != int(number):
        raise InvalidInput(f"{name}={number:g} must be a whole number")
    return int(number)
