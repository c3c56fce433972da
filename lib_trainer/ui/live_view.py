"""Live progress and the queue: step/total, loss, it/s, ETA, the loss chart, sample
images, the files written, the log, and the queue table with its controls.

The page polls `refresh()` about every second: javascript/lib_trainer.js clicks the
Refresh button while the tab is visible (a click, unlike Gradio 3's `every=`, passes the
session's `gr.State`, which holds what this page already shows). Each part is redrawn only
when its version in the service state changed, so the chart and the queue controls do
not flicker or lose the user's selection.
"""
from __future__ import annotations

import gradio as gr

from ..jobs.queue import QueueError
from ..jobs.service import TrainService
from .guard import shows_errors
from .render import (QUEUE_HEADERS, files_text, loss_frame, message_html, progress_html, queue_choices, queue_id,
                     queue_rows, queue_signature)


class LiveView:
    def __init__(self, service: TrainService) -> None:
        self.service = service

    def build(self) -> None:
        snapshot = self.service.snapshot()
        self.progress = gr.HTML(progress_html(snapshot.run), elem_id="lt_progress")
        with gr.Row():
            with gr.Column(scale=3):
                self.chart = gr.LinePlot(value=None, x="step", y="loss", color="series", title="Loss",
                                         label="Loss (0 steps)", show_label=True, elem_id="lt_loss_plot",
                                         height=260, width=520, tooltip=["step", "loss", "series"])
            with gr.Column(scale=2):
                self.gallery = gr.Gallery(label="Samples", elem_id="lt_samples", columns=4, height=260)
        with gr.Row():
            self.files = gr.Textbox(label="Files written", lines=3, interactive=False, elem_id="lt_files")
            self.log = gr.Textbox(label="Log", lines=3, max_lines=12, interactive=False, elem_id="lt_log")
        self.refresh_button = gr.Button("Refresh", size="sm", elem_id="lt_refresh")

        gr.Markdown("### Queue\nRuns wait here and train one after another. The queue is kept on disk: it "
                    "survives a page reload and a restart (after a restart it waits for Run queue).")
        self.queue_message = gr.HTML(elem_id="lt_queue_message")
        self.table = gr.Dataframe(value=queue_rows(snapshot.items), headers=QUEUE_HEADERS, interactive=False,
                                  wrap=True, elem_id="lt_queue_table")
        with gr.Row():
            self.selected = gr.Dropdown(queue_choices(snapshot.items), label="Run", elem_id="lt_queue_select")
            self.up = gr.Button("Up", size="sm", elem_id="lt_queue_up")
            self.down = gr.Button("Down", size="sm", elem_id="lt_queue_down")
            self.remove = gr.Button("Remove", size="sm", elem_id="lt_queue_remove")
            self.resume = gr.Button("Resume", size="sm", elem_id="lt_queue_resume")
        with gr.Row():
            self.run_queue = gr.Button("Run queue", variant="primary", size="sm", elem_id="lt_queue_run")
            self.pause = gr.Button("Pause after this run", size="sm", elem_id="lt_queue_pause")
            self.clear = gr.Button("Clear finished", size="sm", elem_id="lt_queue_clear")
        self.versions = gr.State({})

    # --- polling -----------------------------------------------------------------------
    @property
    def poll_outputs(self) -> list:
        return [self.progress, self.chart, self.gallery, self.files, self.log, self.table, self.selected,
                self.versions]

    def refresh(self, versions: dict | None, selected: str | None):
        """Updates for the poll outputs; unchanged parts get a no-op update."""
        versions = dict(versions or {})
        snapshot = self.service.snapshot()
        run = snapshot.run
        out = [gr.update() for _ in range(7)]
        key = (run.item_id, run.version)
        if versions.get("run") != key:
            versions["run"] = key
            out[0] = progress_html(run)
            out[3] = files_text(run)
            out[4] = "\n".join(run.messages[-40:])
        if versions.get("chart") != (run.item_id, run.chart_version):
            versions["chart"] = (run.item_id, run.chart_version)
            out[1] = gr.update(value=loss_frame(run), label=f"Loss ({len(run.losses)} steps)")
        if versions.get("images") != (run.item_id, run.images_version):
            versions["images"] = (run.item_id, run.images_version)
            out[2] = [(image, caption) for image, caption in run.images if image is not None]
        signature = (queue_signature(snapshot.items), snapshot.paused)
        if versions.get("queue") != signature:
            versions["queue"] = signature
            choices = queue_choices(snapshot.items)
            out[5] = queue_rows(snapshot.items)
            out[6] = gr.update(choices=choices, value=selected if selected in choices else None)
        return (*out, versions)

    def wire(self, blocks: gr.Blocks) -> None:
        inputs = [self.versions, self.selected]
        blocks.load(self.refresh, inputs, self.poll_outputs, show_progress="hidden")
        self.refresh_button.click(self.refresh, inputs, self.poll_outputs, show_progress="hidden")
        self.up.click(lambda s: self._move(s, -1), self.selected, self.queue_message)
        self.down.click(lambda s: self._move(s, 1), self.selected, self.queue_message)
        self.remove.click(self._remove, self.selected, [self.queue_message, self.selected])
        self.resume.click(self._resume, self.selected, self.queue_message)
        self.run_queue.click(self._run_queue, None, self.queue_message)
        self.pause.click(self._pause, None, self.queue_message)
        self.clear.click(self._clear, None, self.queue_message)

    # --- queue actions -----------------------------------------------------------------
    def _item(self, selected):
        item_id = queue_id(selected)
        if item_id is None:
            raise QueueError("Choose a run in the list first.")
        return self.service.queue.get(item_id)

    @shows_errors(1)
    def _move(self, selected, offset):
        item = self._item(selected)
        self.service.queue.move(item.id, offset)
        return message_html(ok=f"Moved #{item.id} {item.name} {'up' if offset < 0 else 'down'}.")

    @shows_errors(2)
    def _remove(self, selected):
        item = self.service.queue.remove(self._item(selected).id)
        return message_html(ok=f"Removed #{item.id} {item.name}."), gr.update(value=None)

    @shows_errors(1)
    def _resume(self, selected):
        item = self.service.resume(self._item(selected).id)
        return message_html(ok=f"#{item.id} {item.name} {item.note}.")

    @shows_errors(1)
    def _run_queue(self):
        if not self.service.queue.waiting():
            return message_html(notes=["No run is waiting."])
        self.service.start_queue()
        return message_html(ok="The queue runs.")

    @shows_errors(1)
    def _pause(self):
        self.service.pause_queue()
        return message_html(ok="The queue pauses after the current run.")

    @shows_errors(1)
    def _clear(self):
        removed = self.service.queue.clear_finished()
        return message_html(ok=f"Removed {removed} finished runs.")
