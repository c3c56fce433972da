"""The few places where Gradio 3.41 (AUTOMATIC1111 WebUI 1.10, the standalone UI, CI) and
Gradio 4.x (Forge) differ, behind one small function each.

Everything else in lib_trainer/ui uses only what both versions have: `gr.Blocks`,
`gr.Tab`, `gr.Row`/`gr.Column`/`gr.Accordion`, the basic components with `info=`,
`gr.update(...)` returned from event handlers, `gr.State`, `gr.LinePlot` fed a pandas
DataFrame, `show_progress="hidden"`, and polling by a script that clicks a Refresh button.
Not used on purpose: `Component.update()` and `.style()` (gone in 4.x), `gr.Timer`
and `js=`/`head=` on Blocks (4.x only), `_js=` (3.x only; see `js_event_kwargs`), and
`every=` (in 3.41 its loop re-sends the first inputs, so `gr.State` never advances).
"""
from __future__ import annotations

import gradio as gr

GRADIO_MAJOR = int(gr.__version__.split(".")[0])


def queue(blocks: "gr.Blocks", concurrency: int) -> "gr.Blocks":
    """Enable the queue with `concurrency` workers, so polling goes on while a long
    dataset step runs. 3.x calls it concurrency_count, 4.x default_concurrency_limit."""
    if GRADIO_MAJOR >= 4:
        return blocks.queue(default_concurrency_limit=concurrency)
    return blocks.queue(concurrency_count=concurrency)


def js_event_kwargs(code: str) -> dict:
    """Run JavaScript on an event: `_js=` in 3.x, `js=` in 4.x."""
    return {"js": code} if GRADIO_MAJOR >= 4 else {"_js": code}


def uploaded_path(value) -> str | None:
    """A gr.File value as a path: 3.x passes a tempfile wrapper, 4.x a str (or FileData)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return getattr(value, "name", None) or getattr(value, "path", None)
