"""The "Train" sub-tab: beginner form, expert options, config files, plan, start/stop.

The live progress and the queue are drawn by live_view.py; all work goes through the
`TrainService` the tab is built with.
"""
from __future__ import annotations

import html
import os
from typing import Callable

import gradio as gr

from ..config import TrainConfig
from ..config_export import export_sd_scripts_toml
from ..config_files import save_config
from ..config_import import read_config_file
from ..dataset.folders import scan_dataset
from ..dataset.plan import make_plan, suggested_resolution
from ..train.memory import memory_summary
from ..jobs.service import TrainService
from ..networks.registry import ui_network_type_of, ui_network_types
from .compat import uploaded_path
from .doctor_panel import doctor_line
from .form import ConfigForm
from .guard import shows_errors
from .presets import CUSTOM, PRESETS
from .render import error_lines, message_html
from ..errors import InvalidInput, is_expected, log_unexpected, user_message

BEGINNER_FIELDS = (("pretrained_model_name_or_path",), ("train_data_dir", "trigger_word"),
                   ("output_dir", "output_name"))
PATH_FIELDS = ("train_data_dir", "reg_data_dir", "output_dir", "logging_dir", "latents_cache_dir", "vae",
               "network_weights", "resume", "dataset_config")


def absolute_paths(config: TrainConfig) -> TrainConfig:
    """Relative folders are taken from where the server runs, once, when a run is queued."""
    changes = {name: os.path.abspath(getattr(config, name)) for name in PATH_FIELDS if getattr(config, name)}
    model = config.pretrained_model_name_or_path
    if model and not model.startswith("tiny:") and os.path.exists(model):
        changes["pretrained_model_name_or_path"] = os.path.abspath(model)
    return config.replace(**changes)


def dataset_summary(folder: str) -> str:
    """The concepts of a dataset folder with their repeats, from the N_concept folder names."""
    return _scanned(folder)[0]


def _scanned(folder: str):
    """(the summary, the scan or None)."""
    if not folder.strip():
        return "Choose the folder that holds `<repeats>_<concept>` folders (e.g. `10_sks dog`).", None
    try:
        scan = scan_dataset(folder.strip())
    except Exception as error:  # noqa: BLE001 - runs on leaving the field, outside the handlers' guard
        if not is_expected(error):
            log_unexpected(error, "reading the dataset folder")
        text = " ".join(error_lines(error)) if is_expected(error) else user_message(error)
        return "<span class='lt-error-text'>" + html.escape(text) + "</span>", None
    return _summary(scan), scan


def _summary(scan) -> str:
    lines = []
    for concept in scan.concepts:
        count = sum(1 for item in scan.items if item.concept is concept)
        lines.append(f"- `{os.path.basename(concept.folder)}`: {count} images × **{concept.repeats} repeats** "
                     f"= {count * concept.repeats} per epoch")
    return "\n".join(lines) + "\n\nRepeats come from the folder names: rename a folder to change them."


class TrainTab:
    def __init__(self, service: TrainService, defaults: TrainConfig,
                 memory: Callable[[TrainConfig], str] = memory_summary) -> None:
        self.service = service
        self.defaults = defaults
        self.memory = memory  # the host's memory estimate for a config
        self.form = ConfigForm()

    # --- layout ------------------------------------------------------------------------
    def build(self) -> None:
        form, d = self.form, self.defaults
        self.message = gr.HTML(elem_id="lt_train_message")
        with gr.Row():
            self.preset = gr.Dropdown([CUSTOM, *PRESETS], value=CUSTOM, label="Preset", elem_id="lt_preset",
                                      info="Fills in sensible settings; dataset, output and model stay as they are.")
        for row in BEGINNER_FIELDS:
            with gr.Row():
                for name in row:
                    form.add(name, getattr(d, name), info=self.service.field_help.get(name))
        self.dataset_info = gr.Markdown(dataset_summary(d.train_data_dir), elem_id="lt_dataset_info")
        with gr.Row():
            self.network_type = gr.Dropdown([*ui_network_types(), CUSTOM], value=_network_type(d),
                                            label="Network type", elem_id="lt_network_type",
                                            info="LoCon also trains the 3x3 convolutions (conv_dim); LoHa, LoKr, IA3, "
                                                 "DoRA and full are LyCORIS' methods (lycoris.kohya).")
            for name in ("network_dim", "network_alpha", "max_train_epochs", "resolution"):
                form.add(name, getattr(d, name))
        with gr.Accordion("Expert: every option", open=False, elem_id="lt_expert"):
            form.build_expert(d)
        with gr.Accordion("Config files", open=False, elem_id="lt_config_files"):
            self.config_path = gr.Textbox(label="Config file (.toml or .json)", elem_id="lt_config_path",
                                          info="Save writes this form there; Load reads ours, sd-scripts' TOML or "
                                               "kohya_ss GUI JSON. Empty: <output_dir>/<output_name>.toml. Export "
                                               "writes an sd-scripts --config_file TOML (empty: "
                                               "<output_dir>/<output_name>-sd-scripts.toml).")
            with gr.Row():
                self.save_config = gr.Button("Save config", elem_id="lt_save_config")
                self.load_config = gr.Button("Load config", elem_id="lt_load_config")
                self.export_config = gr.Button("Export for sd-scripts", elem_id="lt_export_config")
            self.upload = gr.File(label="Import a kohya_ss / sd-scripts config file", file_types=[".toml", ".json"],
                                  elem_id="lt_import_config")
        self.compare_when_done = gr.Checkbox(
            False, label="Compare when done", elem_id="lt_compare_when_done",
            info="When the run ends (not when it fails or is stopped), make its epoch x weight grid at 0.6, 0.8 "
                 "and 1 with the trigger word, in <output_dir>/compare; the Compare sub-tab shows it.")
        with gr.Row():
            self.check = gr.Button("Check", elem_id="lt_check")
            self.start = gr.Button("Start", variant="primary", elem_id="lt_start")
            self.enqueue = gr.Button("Add to queue", elem_id="lt_enqueue")
            self.stop = gr.Button("Stop", variant="stop", elem_id="lt_stop")
            self.save_now = gr.Button("Save now", elem_id="lt_save_now")
        self.plan = gr.Textbox(label="Plan (steps before training)", lines=6, max_lines=30, interactive=False,
                               elem_id="lt_plan")

    # --- events ------------------------------------------------------------------------
    def wire(self) -> None:
        form, inputs = self.form, self.form.inputs
        type_fields = [form.components[name] for name in NETWORK_TYPE_FIELDS]
        data_dir = form.components["train_data_dir"]
        # Leaving the dataset field shows its concepts and, for a folder not seen before, fills in
        # a resolution that fits its pictures (tabbing through keeps the one the user typed).
        model, resolution = form.components["pretrained_model_name_or_path"], form.components["resolution"]
        seen = gr.State(self.defaults.train_data_dir)
        for event in (data_dir.blur, data_dir.submit):
            event(self._dataset_changed, [data_dir, model, seen], [self.dataset_info, resolution, seen])
        self.network_type.change(_network_type_changed, [self.network_type, *type_fields], type_fields)
        for component in type_fields:
            component.change(_network_type_shown, [self.network_type, *type_fields], self.network_type)
        self.preset.change(self._preset_changed, self.preset, inputs)
        self.check.click(self._check, inputs, [self.message, self.plan])
        # The checkbox is the last input: it goes with the queue item, not into the config.
        queued = [*inputs, self.compare_when_done]
        self.start.click(lambda *v: self._enqueue(True, *v[:-1], compare_when_done=v[-1]), queued,
                         [self.message, self.plan])
        self.enqueue.click(lambda *v: self._enqueue(False, *v[:-1], compare_when_done=v[-1]), queued,
                           [self.message, self.plan])
        self.stop.click(self._stop, None, self.message)
        self.save_now.click(self._save_now, None, self.message)
        self.save_config.click(self._save_config, [self.config_path, *inputs], self.message)
        self.export_config.click(self._export_config, [self.config_path, *inputs], self.message)
        self.load_config.click(self._load_config, [self.config_path, *inputs],
                               [self.message, self.network_type, *inputs])
        self.upload.upload(self._import_config, [self.upload, *inputs], [self.message, self.network_type, *inputs])

    def _dataset_changed(self, folder, model, seen=""):
        summary, scan = _scanned(str(folder or ""))
        if scan is None or not scan.train_items() or str(folder or "").strip() == str(seen or "").strip():
            return summary, gr.update(), seen
        try:
            family = self.service.base_family(str(model or "").strip())
        except Exception as error:  # noqa: BLE001 - a suggestion never blocks the form
            log_unexpected(error, "the base model's family")
            family = None
        side = suggested_resolution([item.size for item in scan.train_items()], family)
        return summary, gr.update(value=str(side)), str(folder).strip()

    def _preset_changed(self, name):
        if name == CUSTOM:
            return self.form.updates(TrainConfig(), only=set())
        return self.form.updates(TrainConfig().replace(**PRESETS[name]), only=set(PRESETS[name]))

    def _read(self, values) -> TrainConfig:
        config, problems = self.form.read(list(values))
        if problems:
            raise InvalidInput("\n".join(problems))
        return config

    def _check(self, *values):
        @shows_errors(2)
        def check():
            config = self._read(values)
            problems = self.service.host_problems(config)  # what Start would refuse, refused now
            if problems:
                raise InvalidInput("\n".join(problems))
            plan = make_plan(config)
            return (message_html(ok=f"{plan.total_steps} steps; the plan is below."),
                    f"{doctor_line(config)}\n{self._plan_text(config, plan)}")
        return check()

    def _enqueue(self, start: bool, *values, compare_when_done: bool = False):
        @shows_errors(2)
        def enqueue():
            config = absolute_paths(self._read(values))
            plan = make_plan(config)  # a bad dataset is reported now, not when its turn comes
            busy = self.service.snapshot().busy
            item = self.service.enqueue(config, start=start, compare_when_done=bool(compare_when_done))
            if start and busy:
                text = f"#{item.id} {item.name} queued behind the running training ({plan.total_steps} steps)."
            elif start:
                text = f"#{item.id} {item.name}: training starts ({plan.total_steps} steps)."
            else:
                text = f"#{item.id} {item.name} added to the queue ({plan.total_steps} steps). Press Run queue to start."
            return message_html(ok=text), self._plan_text(config, plan)
        return enqueue()

    def _plan_text(self, config: TrainConfig, plan) -> str:
        try:
            memory = self.memory(config)
        except Exception as error:  # noqa: BLE001 - an estimate must never block a run
            if not is_expected(error):
                log_unexpected(error, "the memory estimate")  # a bug: keep its traceback
            memory = f"Memory estimate unavailable: {user_message(error)}"
        return f"{plan.summary()}\n\n{memory}"

    @shows_errors(1)
    def _stop(self):
        if self.service.stop():
            return message_html(ok="Stopping after this step; what was trained is saved as name-stepN. "
                                   "The queue is paused.")
        return message_html(notes=["No training is running. The queue is paused."])

    @shows_errors(1)
    def _save_now(self):
        if self.service.save_now():
            return message_html(ok="Saving a name-stepN file after this step.")
        return message_html(notes=["No training is running."])

    def _save_config(self, path, *values):
        @shows_errors(1)
        def save():
            config, problems = self.form.read(list(values))
            if config is None:
                raise InvalidInput("\n".join(problems))
            target = path.strip() or os.path.join(config.output_dir, config.output_name + ".toml")
            save_config(config, target)
            notes = [f"this config has problems to fix before training: {p}" for p in problems]
            return message_html(ok=f"Config saved to {os.path.abspath(target)}", notes=notes)
        return save()

    def _export_config(self, path, *values):
        @shows_errors(1)
        def export():
            config, problems = self.form.read(list(values))
            if config is None or problems:
                raise InvalidInput("\n".join(problems))
            target = path.strip() or os.path.join(config.output_dir, config.output_name + "-sd-scripts.toml")
            notes = export_sd_scripts_toml(config, target)
            return message_html(ok=f"sd-scripts config written to {os.path.abspath(target)} (train_network.py "
                                   "--config_file)", notes=notes)
        return export()

    def _load_config(self, path, *values):
        if not path.strip():
            return (message_html(errors=["Enter the path of a config file to load."]),
                    gr.update(), *[gr.update() for _ in values])
        return self._apply_file(path.strip(), values)

    def _import_config(self, upload, *values):
        path = uploaded_path(upload)
        if not path:
            return (gr.update(), gr.update(), *[gr.update() for _ in values])
        return self._apply_file(path, values)

    def _apply_file(self, path: str, values):
        @shows_errors(2 + len(values))
        def apply():
            base, _ = self.form.read(list(values))
            config, notes = read_config_file(path, base or self.defaults)
            problems = [f"to fix before training: {p}" for p in config.problems()]
            return (message_html(ok=f"Loaded {os.path.basename(path)}", notes=notes + problems),
                    _network_type(config), *self.form.updates(config))
        return apply()


# The config fields the network type list sets (the union of what its entries set).
NETWORK_TYPE_FIELDS = tuple(dict.fromkeys(name for values in ui_network_types().values() for name in values))


def _network_type(config: TrainConfig) -> str:
    return ui_network_type_of({name: getattr(config, name) for name in NETWORK_TYPE_FIELDS}) or CUSTOM


def _network_type_changed(kind, *values):
    """Choosing a type fills in its settings, unless the form already is of that type (so a
    LoCon's own conv_dim is kept)."""
    current = dict(zip(NETWORK_TYPE_FIELDS, values))
    if kind not in ui_network_types() or ui_network_type_of(current) == kind:
        return [gr.update() for _ in NETWORK_TYPE_FIELDS]
    chosen = ui_network_types()[kind]
    return [chosen[name] if name in chosen else gr.update() for name in NETWORK_TYPE_FIELDS]


def _network_type_shown(kind, *values):
    shown = ui_network_type_of(dict(zip(NETWORK_TYPE_FIELDS, values))) or CUSTOM
    return gr.update() if shown == kind else shown
