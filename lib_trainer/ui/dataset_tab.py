"""The "Dataset" sub-tab: crop and resize pictures into a training folder
(`preprocess_folder`), then caption them with a tagger (`tag_folder`), then check the result (doctor_panel.py).

Both run in the request that asked for them (the queue has room for the progress poll
meanwhile) and end with a summary; problems are shown as messages. WD14 models are
downloaded only when the user ticks "download"; otherwise the message says which two
files to put in which folder.
"""
from __future__ import annotations

import os

import gradio as gr

from ..preprocess.crop import CROP_MODES
from ..preprocess.focal import FocalSettings
from ..preprocess.pipeline import SIZE_MODES, PreprocessOptions, preprocess_folder
from ..preprocess.tagging import MERGE_MODES, TAGGERS, TagOptions, make_tagger, tag_folder
from ..preprocess.tags import clean_tags
from ..preprocess.wd14 import UI_DOWNLOAD
from .doctor_panel import DoctorPanel
from .guard import shows_errors
from .render import message_html
from ..errors import InvalidInput


def wd14_model_names() -> tuple[list[str], str]:
    from ..preprocess import wd14

    return list(wd14.load_model_list()), wd14.default_model_name()


class DatasetTab:
    def build(self) -> None:
        gr.Markdown("#### 1. Crop and resize\nOriginals are only read; the results go to the output folder, "
                    "in a `<repeats>_<trigger> <class>` folder when you give repeats and a trigger or class.")
        self.prep_message = gr.HTML(elem_id="lt_prep_message")
        with gr.Row():
            self.source = gr.Textbox(label="Pictures folder", elem_id="lt_prep_source", max_lines=1)
            self.destination = gr.Textbox(label="Output folder (the training dataset)", elem_id="lt_prep_dest",
                                          max_lines=1)
        with gr.Row():
            self.size_mode = gr.Dropdown(list(SIZE_MODES), value="fixed", label="Size",
                                         info="fixed: width x height; bucket: nearest bucket of width² area; "
                                              "auto: own shape within the area range", elem_id="lt_prep_size_mode")
            self.width = gr.Number(512, precision=0, label="Width", elem_id="lt_prep_width")
            self.height = gr.Number(512, precision=0, label="Height", elem_id="lt_prep_height")
            self.crop = gr.Dropdown(list(CROP_MODES), value="focal", label="Crop",
                                    info="focal: centred on faces, detail and edges", elem_id="lt_prep_crop")
        with gr.Accordion("Focal point, splitting, flips", open=False):
            defaults = FocalSettings()
            with gr.Row():
                self.face = gr.Slider(0, 1, defaults.face_weight, step=0.05, label="Face weight")
                self.entropy = gr.Slider(0, 1, defaults.entropy_weight, step=0.05, label="Entropy weight")
                self.edges = gr.Slider(0, 1, defaults.edges_weight, step=0.05, label="Edges weight")
            with gr.Row():
                self.split = gr.Checkbox(False, label="Split long pictures into tiles")
                self.flip = gr.Checkbox(False, label="Add mirrored copies")
                self.debug = gr.Checkbox(False, label="Save focal-point views (.focal_debug)")
        with gr.Row():
            self.repeats = gr.Number(0, precision=0, label="Repeats (kohya folder)", elem_id="lt_prep_repeats")
            self.trigger = gr.Textbox(label="Trigger word", elem_id="lt_prep_trigger", max_lines=1)
            self.class_token = gr.Textbox(label="Class", elem_id="lt_prep_class", max_lines=1)
        self.run_prep = gr.Button("Crop and resize", variant="primary", elem_id="lt_prep_run")

        gr.Markdown("#### 2. Caption with a tagger\nWrites a `.txt` caption next to each picture; earlier captions "
                    "are backed up in `.caption_backup/` first.")
        self.tag_message = gr.HTML(elem_id="lt_tag_message")
        names, default = wd14_model_names()
        with gr.Row():
            self.tag_folder = gr.Textbox(label="Folder to caption", elem_id="lt_tag_folder", max_lines=1)
            self.tagger = gr.Dropdown(list(TAGGERS), value="wd14", label="Tagger", elem_id="lt_tagger",
                                      info="deepbooru and the WebUI's BLIP work inside the WebUI only")
            self.model = gr.Dropdown(names, value=default, label="WD14 model", elem_id="lt_tag_model")
        with gr.Row():
            self.model_path = gr.Textbox(label="Model folder (optional)", elem_id="lt_tag_model_path", max_lines=1,
                                         info="A folder with model.onnx and selected_tags.csv; empty: the "
                                              "models folder")
            self.download = gr.Checkbox(False, label="Download the model if it is missing", elem_id="lt_tag_download")
        with gr.Row():
            self.general = gr.Slider(0, 1, 0.35, step=0.01, label="General threshold", elem_id="lt_tag_general")
            self.character = gr.Slider(0, 1, 0.85, step=0.01, label="Character threshold")
            self.merge = gr.Dropdown(list(MERGE_MODES), value="overwrite", label="Existing captions",
                                     elem_id="lt_tag_merge")
        with gr.Row():
            self.tag_trigger = gr.Textbox(label="Trigger word (first)", elem_id="lt_tag_trigger", max_lines=1)
            self.exclude = gr.Textbox(label="Exclude tags (comma-separated)", elem_id="lt_tag_exclude", max_lines=1)
            self.max_tags = gr.Number(0, precision=0, label="Max tags (0: all)")
        self.run_tag = gr.Button("Caption", variant="primary", elem_id="lt_tag_run")
        self.tag_result = gr.Textbox(label="Result", lines=4, interactive=False, elem_id="lt_tag_result")
        self.doctor = DoctorPanel()
        self.doctor.build()

    def wire(self, train_fields: dict | None = None) -> None:
        """`train_fields`: the Train form's components by config name, which the step
        planner's Apply fills in."""
        self.doctor.wire(train_fields)
        self.run_prep.click(self._preprocess,
                            [self.source, self.destination, self.size_mode, self.width, self.height, self.crop,
                             self.face, self.entropy, self.edges, self.split, self.flip, self.debug, self.repeats,
                             self.trigger, self.class_token],
                            [self.prep_message, self.tag_folder])
        self.run_tag.click(self._tag,
                           [self.tag_folder, self.tagger, self.model, self.model_path, self.download, self.general,
                            self.character, self.merge, self.tag_trigger, self.exclude, self.max_tags],
                           [self.tag_message, self.tag_result])

    @staticmethod
    @shows_errors(2)
    def _preprocess(source, destination, size_mode, width, height, crop, face, entropy, edges, split, flip, debug,
                    repeats, trigger, class_token):
        if not str(source).strip() or not str(destination).strip():
            raise InvalidInput("Enter the pictures folder and the output folder.")
        options = PreprocessOptions(
            source=source.strip(), destination=destination.strip(), width=int(width), height=int(height),
            size_mode=size_mode, crop=crop, focal=FocalSettings(face, entropy, edges), split=split, flip=flip,
            debug=debug, repeats=int(repeats or 0), trigger=trigger, class_token=class_token)
        options.validate()
        result = preprocess_folder(options)
        notes = list(result.warnings) + [f"skipped {path}: {why}" for path, why in result.skipped]
        return message_html(ok=f"{len(result.written)} images written to {result.output_folder}", notes=notes), \
            result.output_folder

    @staticmethod
    @shows_errors(2)
    def _tag(folder, tagger, model, model_path, download, general, character, merge, trigger, exclude, max_tags):
        if not str(folder).strip() or not os.path.isdir(folder.strip()):
            raise InvalidInput(f"{folder!r} is not a folder: enter the folder of pictures to caption.")
        options = TagOptions(general_threshold=general, character_threshold=character, exclude=clean_tags(exclude),
                             max_tags=int(max_tags or 0), trigger=trigger.strip(), merge=merge)
        notices: list[str] = []
        made = make_tagger(tagger, options, model=model, model_path=model_path.strip() or None, download=download,
                           notice=notices.append, download_hint=UI_DOWNLOAD)
        result = tag_folder(folder.strip(), made, options)
        return message_html(ok="Captions written.", notes=notices), result.summary()
