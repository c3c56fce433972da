"""The "Check dataset" panel of the Dataset sub-tab: the dataset doctor's findings with
thumbnails, duplicate pairs side by side, the step planner, and the changes the user
confirms (set duplicates aside, remove a tag from all captions, rename folders).

Nothing in the folder changes without its confirmation box ticked. The last report lives in
a per-browser `gr.State`.
"""
from __future__ import annotations

import html
import os

import gradio as gr

from ..config import TrainConfig
from ..dataset.doctor import FINE, LOOK, PROBLEM, Report, examine
from ..dataset.doctor.captions import remove_tag_from_all
from ..dataset.doctor.duplicates import set_aside
from ..dataset.doctor.planner import STEP_RANGES, apply_renames, parse_step_range, propose
from ..dataset.images import ImageReadError, load_rgb
from ..dataset.plan import make_plan
from ..errors import InvalidInput
from .guard import shows_errors
from .render import message_html

THUMBNAIL = 160
GALLERY_LIMIT = 60
SEVERITY_CLASS = {PROBLEM: "lt-error", LOOK: "lt-note", FINE: "lt-ok"}
# The Train form's fields "Apply" fills in.
PLAN_FIELDS = ("train_data_dir", "max_train_epochs", "max_train_steps", "save_every_n_epochs", "train_batch_size",
               "gradient_accumulation_steps", "resolution")


def findings_html(report: Report) -> str:
    rows = "".join(
        f"<tr class='{SEVERITY_CLASS[f.severity]}' data-check='{html.escape(f.check)}'><td>{f.severity}</td>"
        f"<td>{html.escape(f.check)}</td><td>{html.escape(f.reason)}</td><td>{html.escape(f.action)}</td></tr>"
        for f in report.sorted_findings())
    return (f"<div class='lt-doctor' data-problems='{report.counts()[PROBLEM]}'><p>{html.escape(report.headline())}"
            "</p><table><tr><th>severity</th><th>check</th><th>reason</th><th>what to do</th></tr>"
            f"{rows}</table></div>")


def _thumbnail(path: str):
    try:
        image = load_rgb(path)
    except ImageReadError:
        return None
    image.thumbnail((THUMBNAIL, THUMBNAIL))
    return image


def flagged_gallery(report: Report) -> list:
    """(thumbnail, caption) for each picture with a finding that is not fine, worst first."""
    shown, seen = [], set()
    for finding in report.sorted_findings():
        if finding.severity == FINE or "duplicate" in finding.check:
            continue
        for path in finding.paths:
            if path in seen or len(shown) >= GALLERY_LIMIT:
                continue
            seen.add(path)
            reasons = "; ".join(f"{f.severity}: {f.check}" for f in report.findings_for(path) if f.severity != FINE)
            image = _thumbnail(path)
            if image is not None:
                shown.append((image, f"{os.path.basename(path)}: {reasons}"))
    return shown


def pairs_gallery(report: Report) -> list:
    """The duplicate pairs side by side (the gallery has two columns): keep left, set right aside."""
    shown = []
    for finding in report.findings:
        if "duplicate" in finding.check and len(shown) < GALLERY_LIMIT:
            keep, other = sorted(finding.paths)
            for path, role in ((keep, "keep"), (other, "set aside")):
                image = _thumbnail(path)
                if image is not None:
                    shown.append((image, f"{role}: {os.path.basename(path)} ({finding.check})"))
    return shown


def doctor_line(config: TrainConfig) -> str:
    """One line for the Train sub-tab's plan: how many findings the doctor has."""
    counts = examine(config).counts()
    return (f"Dataset doctor: {counts[PROBLEM]} problems, {counts[LOOK]} worth a look "
            "(Dataset sub-tab, Check dataset, shows them)")


class DoctorPanel:
    def build(self) -> None:
        self.report = gr.State(None)
        gr.Markdown("#### 3. Check dataset\nThe tutorials' advice measured on your folder. Only reads: each change "
                    "below needs its box ticked.")
        self.message = gr.HTML(elem_id="lt_doc_message")
        with gr.Row():
            self.folder = gr.Textbox(label="Dataset folder (holds the <repeats>_<concept> folders)",
                                     elem_id="lt_doc_folder", max_lines=1)
            self.trigger = gr.Textbox(label="Trigger word (empty: each concept's first word)", elem_id="lt_doc_trigger",
                                      max_lines=1)
            self.resolution = gr.Textbox("512", label="Training resolution", elem_id="lt_doc_resolution", max_lines=1)
        with gr.Row():
            self.run = gr.Button("Check dataset", variant="primary", elem_id="lt_doc_run")
            self.save = gr.Button("Save report (JSON + Markdown in the folder)", elem_id="lt_doc_save")
        self.findings = gr.HTML(elem_id="lt_doc_findings")
        self.flagged = gr.Gallery(label="Pictures to look at", columns=6, height=320, elem_id="lt_doc_gallery")
        self.pairs = gr.Gallery(label="Duplicate pairs (left: kept, right: set aside)", columns=2, height=320,
                                elem_id="lt_doc_pairs")
        with gr.Row():
            self.confirm_aside = gr.Checkbox(False, label="Yes, move the right-hand pictures to _set_aside/",
                                             elem_id="lt_doc_confirm_aside")
            self.aside = gr.Button("Keep one of each pair", elem_id="lt_doc_aside")
        with gr.Row():
            self.tag = gr.Dropdown([], label="Tag in (nearly) every caption", elem_id="lt_doc_tag")
            self.confirm_tag = gr.Checkbox(False, label="Yes, remove it from all captions (backed up first)",
                                           elem_id="lt_doc_confirm_tag")
            self.remove = gr.Button("Remove from all", elem_id="lt_doc_remove")
        gr.Markdown("**Step planner**: repeats, epochs and save interval for a step target, counted as the "
                    "trainer counts.")
        with gr.Row():
            self.target = gr.Textbox("", label="Target steps (empty: the kind's range)", elem_id="lt_doc_target",
                                     max_lines=1)
            self.kind = gr.Dropdown(list(STEP_RANGES), value="character", label="Kind", elem_id="lt_doc_kind")
            self.epochs = gr.Number(0, precision=0, label="Epochs (0: choose)", elem_id="lt_doc_epochs")
            self.batch = gr.Number(1, precision=0, label="Batch size", elem_id="lt_doc_batch")
            self.accumulation = gr.Number(1, precision=0, label="Gradient accumulation", elem_id="lt_doc_accum")
        self.plan = gr.Textbox(label="Proposal", lines=6, interactive=False, elem_id="lt_doc_plan")
        with gr.Row():
            self.rename = gr.Checkbox(False, label="Yes, rename the <repeats>_<concept> folders",
                                      elem_id="lt_doc_rename")
            self.apply = gr.Button("Apply to the Train form", elem_id="lt_doc_apply")

    def wire(self, train_fields: dict | None = None) -> None:
        common = [self.folder, self.trigger, self.resolution]
        planning = [self.target, self.kind, self.epochs, self.batch, self.accumulation]
        view = [self.message, self.report, self.findings, self.flagged, self.pairs, self.tag, self.plan]
        self.run.click(self._check, [*common, *planning], view)
        self.save.click(self._save, [self.report], [self.message])
        self.aside.click(self._set_aside, [self.report, self.confirm_aside, *common, *planning],
                         view + [self.confirm_aside])
        self.remove.click(self._remove_tag, [self.report, self.tag, self.confirm_tag, *common, *planning],
                          view + [self.confirm_tag])
        targets = [train_fields[name] for name in PLAN_FIELDS] if train_fields else []
        self.apply.click(self._apply_plan, [self.rename, *common, *planning],
                         [self.message, self.plan, self.rename, *targets])
        self._targets = len(targets)

    # --- handlers ------------------------------------------------------------------------
    @staticmethod
    def _config(folder, resolution, batch=1, accumulation=1) -> TrainConfig:
        folder = str(folder or "").strip()
        if not folder:
            raise InvalidInput("Enter the dataset folder: the one that holds the <repeats>_<concept> folders.")
        text = str(resolution or "").strip() or "512"
        config = TrainConfig().replace(train_data_dir=folder, resolution=text, train_batch_size=int(batch or 1),
                                       gradient_accumulation_steps=int(accumulation or 1))
        try:
            side = max(config.resolution_wh())
        except ValueError:
            raise InvalidInput(f"Training resolution {text!r}: write 512, or 512,768") from None
        config = config.replace(max_bucket_reso=max(config.max_bucket_reso, side))
        return config.validate()

    @staticmethod
    def _proposal(config, target, kind, epochs):
        return propose(config, parse_step_range(target) if str(target).strip() else None, int(epochs or 0), kind)

    def _view(self, note, folder, trigger, resolution, target, kind, epochs, batch, accumulation):
        config = self._config(folder, resolution, batch, accumulation)
        report = examine(config, str(trigger).strip() or None)
        tags = [f.data["tag"] for f in report.findings if f.check == "tag in every caption"]
        plan = self._proposal(config, target, kind, epochs).summary()
        counts = report.counts()
        ok = f"{report.headline()}." + (f" {note}" if note else "")
        message = message_html(ok=ok) if not counts[PROBLEM] else message_html(notes=[ok])
        return (message, report, findings_html(report), flagged_gallery(report), pairs_gallery(report),
                gr.update(choices=tags, value=tags[0] if tags else None), plan)

    @shows_errors(7)
    def _check(self, *values):
        return self._view("", *values)

    @shows_errors(1)
    def _save(self, report):
        if report is None:
            raise InvalidInput("Check the dataset first.")
        json_path, md_path = report.save()
        return message_html(ok=f"Report written: {json_path} and {md_path}")

    @shows_errors(8)
    def _set_aside(self, report, confirmed, *values):
        if report is None:
            raise InvalidInput("Check the dataset first.")
        if not confirmed:
            raise InvalidInput("Tick the box to confirm: the right-hand picture of each pair moves to _set_aside/.")
        moving = []
        for finding in report.findings:
            if "duplicate" in finding.check:
                keep, other = sorted(finding.paths)
                if keep not in moving and other not in moving:
                    moving.append(other)
        moved = set_aside(moving)
        return (*self._view(f"{len(moved)} pictures set aside in _set_aside/.", *values), False)

    @shows_errors(8)
    def _remove_tag(self, report, tag, confirmed, *values):
        if report is None or not tag:
            raise InvalidInput("Check the dataset and choose a tag first.")
        if not confirmed:
            raise InvalidInput(f"Tick the box to confirm: {tag!r} is removed from every caption (backed up first).")
        changed, folders = 0, set()
        for row in report.images:
            folders.add(os.path.join(report.dataset, row.concept))
        for folder in sorted(folders):
            changed += remove_tag_from_all(folder, tag)[0]
        note = f"{tag!r} removed from {changed} captions; the Tags sub-tab's Restore brings them back."
        return (*self._view(note, *values), False)

    def _apply_plan(self, rename, folder, trigger, resolution, target, kind, epochs, batch, accumulation):
        @shows_errors(3 + self._targets)
        def apply():
            config = self._config(folder, resolution, batch, accumulation)
            proposal = self._proposal(config, target, kind, epochs)
            notes = []
            if rename:
                apply_renames(proposal)
            elif proposal.renames():
                left = make_plan(config.replace(**proposal.config_changes())).total_steps
                notes.append(f"The folders keep their repeats (tick the box to rename them): with them the run is "
                             f"{left} steps, not {proposal.total_steps}.")
            changes = dict(proposal.config_changes(), resolution=config.resolution)
            fields = [changes[name] for name in PLAN_FIELDS][: self._targets]
            ok = "The Train form is filled in" + (" and the folders are renamed." if rename else ".")
            return (message_html(ok=ok, notes=notes), proposal.summary(), False, *fields)
        return apply()
