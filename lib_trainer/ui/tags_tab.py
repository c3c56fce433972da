"""The "Tags" sub-tab: a `TagEditor` session over one folder's captions.

Load a folder, filter the images by tags or text, run batch operations (add, remove,
replace...) on the filtered images, undo, see what a save would change, then save (the
originals are backed up first). The session lives in a per-browser `gr.State`; nothing
touches the disk before Save.
"""
from __future__ import annotations

import gradio as gr

from ..preprocess.captions import backups, restore_backup
from ..dataset import encodings
from ..preprocess.tag_editor import TagEditor, convert_encodings
from ..preprocess.tags import OPERATIONS, clean_tags
from .guard import shows_errors
from .render import message_html
from ..errors import InvalidInput

PREVIEW_LIMIT = 60
FREQUENCY_LIMIT = 100
# How the two text boxes map onto each operation's parameters.
OPERATION_PARAMS = {
    "add": lambda tags, other, option: {"new": tags, "position": "front" if option else "end"},
    "remove": lambda tags, other, option: {"unwanted": tags},
    "replace": lambda tags, other, option: {"old": tags, "new": other, "regex": bool(option)},
    "move_to_front": lambda tags, other, option: {"front": tags},
    "dedupe": lambda tags, other, option: {},
    "sort": lambda tags, other, option: {"keep_first": int(other or 0) if str(other).strip().isdigit() else 0},
    "trigger": lambda tags, other, option: {"trigger": tags},
}
OPERATION_HELP = ("add: tags (option: at the front) · remove: tags · replace: old → new (option: regex) · "
                  "move_to_front: tags · dedupe · sort: keep the first N (N in 'new') · trigger: the word")


class TagsTab:
    def build(self) -> None:
        self.editor = gr.State(None)
        self.message = gr.HTML(elem_id="lt_tags_message")
        with gr.Row():
            self.folder = gr.Textbox(label="Folder of pictures and captions", elem_id="lt_tags_folder", max_lines=1)
            self.load = gr.Button("Load", elem_id="lt_tags_load")
        with gr.Row():
            self.include = gr.Textbox(label="With tags", elem_id="lt_tags_include", max_lines=1)
            self.mode = gr.Radio(["and", "or"], value="and", label="Match", elem_id="lt_tags_mode")
            self.exclude = gr.Textbox(label="Without tags", elem_id="lt_tags_exclude", max_lines=1)
            self.text = gr.Textbox(label="Caption contains", elem_id="lt_tags_text", max_lines=1)
        self.selection = gr.Markdown(elem_id="lt_tags_selection")
        with gr.Row():
            self.operation = gr.Dropdown(list(OPERATIONS), value="add", label="Operation", info=OPERATION_HELP,
                                         elem_id="lt_tags_operation")
            self.tags = gr.Textbox(label="Tags / old", elem_id="lt_tags_tags", max_lines=1)
            self.other = gr.Textbox(label="New", elem_id="lt_tags_new", max_lines=1)
            self.option = gr.Checkbox(False, label="Front / regex", elem_id="lt_tags_option")
        with gr.Row():
            self.apply = gr.Button("Apply to the selection", variant="primary", elem_id="lt_tags_apply")
            self.undo = gr.Button("Undo", elem_id="lt_tags_undo")
            self.save = gr.Button("Save", elem_id="lt_tags_save")
        with gr.Row():
            self.summary = gr.Textbox(label="What Save will write", lines=5, interactive=False,
                                      elem_id="lt_tags_summary")
            self.frequency = gr.Dataframe(headers=["tag", "images"], interactive=False, elem_id="lt_tags_frequency")
        self.gallery = gr.Gallery(label="Selection", columns=6, height=360, elem_id="lt_tags_gallery")
        with gr.Row():
            self.backup = gr.Dropdown([], label="Caption backups (newest first)", elem_id="lt_tags_backup")
            self.restore = gr.Button("Restore", elem_id="lt_tags_restore")
            # Load refuses captions that are not UTF-8 and lists them; this is the user's go-ahead.
            self.convert = gr.Button("Convert captions to UTF-8", elem_id="lt_tags_convert")

    def wire(self) -> None:
        view = [self.message, self.editor, self.selection, self.summary, self.frequency, self.gallery]
        filters = [self.include, self.mode, self.exclude, self.text]
        self.load.click(self._load, [self.folder, *filters], view)
        self.folder.submit(self._load, [self.folder, *filters], view)
        for box in (self.include, self.exclude, self.text):
            box.submit(self._refresh, [self.editor, *filters], view)
        self.mode.change(self._refresh, [self.editor, *filters], view)
        self.apply.click(self._apply, [self.editor, *filters, self.operation, self.tags, self.other, self.option],
                         view)
        self.undo.click(self._undo, [self.editor, *filters], view)
        self.save.click(self._save, [self.editor, *filters], view)
        self.convert.click(self._convert, [self.folder, *filters], view)
        for event in (self.load.click, self.folder.submit, self.save.click, self.convert.click):
            event(self._backups, [self.folder], [self.backup])
        self.restore.click(self._restore, [self.folder, self.backup, *filters], view).then(
            self._backups, [self.folder], [self.backup])

    # --- handlers: each returns the whole view -----------------------------------------
    @staticmethod
    def _view(editor: TagEditor, filters, message: str):
        include, mode, exclude, text = filters
        indices = editor.filter(clean_tags(include), mode, clean_tags(exclude), text)
        shown = [(editor.thumbnail(i), editor.caption(i)) for i in indices[:PREVIEW_LIMIT]]
        more = f" (showing the first {PREVIEW_LIMIT})" if len(indices) > PREVIEW_LIMIT else ""
        selection = f"**{len(indices)} of {len(editor)} images selected**{more}; undo: " + \
            (", ".join(reversed(editor.undo_names[-5:])) or "nothing")
        frequency = [[tag, count] for tag, count in editor.frequency(indices)[:FREQUENCY_LIMIT]] or [["", 0]]
        gallery = [(image, caption) for image, caption in shown if image is not None]
        return message, editor, selection, editor.summary(), frequency, gallery

    @shows_errors(6)
    def _load(self, folder, *filters):
        if not str(folder).strip():
            raise InvalidInput("Enter a folder of pictures with .txt captions.")
        editor = TagEditor(folder.strip())
        if not len(editor):
            raise InvalidInput(f"{folder}: no pictures found")
        return self._view(editor, filters, message_html(ok=f"Loaded {len(editor)} captions from {folder}"))

    @staticmethod
    def _require(editor) -> TagEditor:
        if editor is None:
            raise InvalidInput("Load a folder first.")
        return editor

    @shows_errors(6)
    def _refresh(self, editor, *filters):
        return self._view(self._require(editor), filters, "")

    @shows_errors(6)
    def _apply(self, editor, include, mode, exclude, text, operation, tags, other, option):
        editor = self._require(editor)
        filters = (include, mode, exclude, text)
        indices = editor.filter(clean_tags(include), mode, clean_tags(exclude), text)
        params = OPERATION_PARAMS[operation](tags, other, option)
        changed = editor.apply(operation, indices, **params)
        return self._view(editor, filters, message_html(ok=f"{operation}: {changed} captions changed (not saved yet)"))

    @shows_errors(6)
    def _undo(self, editor, *filters):
        editor = self._require(editor)
        name = editor.undo()
        return self._view(editor, filters, message_html(ok=f"Undid {name}") if name
                          else message_html(notes=["Nothing to undo."]))

    @shows_errors(6)
    def _save(self, editor, *filters):
        editor = self._require(editor)
        changes = editor.save()
        text = (f"Saved {len(changes)} captions; the originals are in {editor.backup_dir}" if changes
                else "Nothing to save.")
        return self._view(editor, filters, message_html(ok=text))

    @shows_errors(6)
    def _convert(self, folder, *filters):
        folder = str(folder or "").strip()
        if not folder:
            raise InvalidInput("Enter the folder whose captions to convert.")
        converted, backup = convert_encodings(folder)
        text = (f"Converted {len(converted)} captions to UTF-8 ({encodings.describe(converted)}); the originals "
                f"are in {backup}" if converted else "All captions are UTF-8: nothing to convert.")
        return self._view(TagEditor(folder), filters, message_html(ok=text))

    @staticmethod
    def _backups(folder):
        names = backups(str(folder or "").strip()) if str(folder or "").strip() else []
        return gr.update(choices=names, value=names[0] if names else None)

    @shows_errors(6)
    def _restore(self, folder, backup, *filters):
        folder = str(folder or "").strip()
        if not folder or not backup:
            raise InvalidInput("Load a folder and choose one of its caption backups.")
        restored, previous = restore_backup(folder, backup)
        note = f"; the captions they replaced are in {previous}" if previous else ""
        return self._view(TagEditor(folder), filters,
                          message_html(ok=f"Restored {len(restored)} captions from {backup}{note}"))
