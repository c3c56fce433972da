"""Pure functions from service state to what the page shows (HTML, table rows, chart
data). No Gradio here, so they are tested without a browser."""
from __future__ import annotations

import html
import os

from ..jobs.queue import QueueItem
from ..jobs.state import RunView

QUEUE_HEADERS = ["#", "name", "dataset", "steps", "status", "result / note"]


def message_html(errors=(), notes=(), ok: str = "") -> str:
    """The message box over a form: errors in red, notes in amber, success in green."""
    parts = []
    if errors:
        items = "".join(f"<li>{html.escape(str(e))}</li>" for e in errors)
        parts.append(f"<div class='lt-error' role='alert'><b>Cannot do that:</b><ul>{items}</ul></div>")
    if notes:
        items = "".join(f"<li>{html.escape(str(n))}</li>" for n in notes)
        parts.append(f"<div class='lt-note'><ul>{items}</ul></div>")
    if ok:
        parts.append(f"<div class='lt-ok'>{html.escape(ok)}</div>")
    return "".join(parts)


def error_lines(error: BaseException) -> list[str]:
    """A multi-line library error (ConfigError, DatasetError) as one line per problem."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines or [type(error).__name__]


def progress_html(view: RunView) -> str:
    fraction = (view.step / view.total) if view.total else 0.0
    css = {"failed": "lt-error", "stopped": "lt-note", "done": "lt-ok"}.get(view.phase, "")
    text = html.escape(view.progress_text()).replace("**", "")
    bar = (f"<div class='lt-bar'><div class='lt-bar-fill' style='width:{100 * fraction:.1f}%'></div></div>"
           if view.phase != "idle" else "")
    extra = ""
    if view.error:
        extra = f"<pre class='lt-error'>{html.escape(view.error)}</pre>"
    elif view.result:
        extra = f"<div class='lt-ok'>File: <code class='lt-result'>{html.escape(view.result)}</code></div>"
    return (f"<div class='lt-progress {css}' data-phase='{view.phase}' data-step='{view.step}' "
            f"data-total='{view.total or 0}'>{text}{bar}{extra}</div>")


def loss_frame(view: RunView):
    """Long-form data for the loss chart: one row per step and series."""
    import pandas as pd

    rows = [(step, loss, "loss") for step, loss, _ in view.losses]
    rows += [(step, avg, "average") for step, _, avg in view.losses]
    rows += [(step, loss, "validation") for step, loss in view.validation_losses]
    return pd.DataFrame(rows, columns=["step", "loss", "series"])


def queue_rows(items: list[QueueItem]) -> list[list]:
    rows = []
    for item in items:
        folder = item.config.get("dataset_config") or item.config.get("train_data_dir", "")
        dataset = os.path.basename(os.path.normpath(folder)) if folder else "-"
        detail = item.error or item.result or item.note
        if item.resumable():
            detail += " (Resume continues it)"
        rows.append([item.id, item.name, dataset, item.total_steps if item.total_steps is not None else "?",
                     item.status, detail])
    return rows or [["", "", "", "", "queue is empty", ""]]


def queue_choices(items: list[QueueItem]) -> list[str]:
    return [queue_label(item) for item in items]


def queue_label(item: QueueItem) -> str:
    return f"#{item.id} {item.name}"


def queue_id(label: str | None) -> int | None:
    if not label or not label.startswith("#"):
        return None
    try:
        return int(label[1:].split(" ", 1)[0])
    except ValueError:
        return None


def queue_signature(items: list[QueueItem]) -> tuple:
    return tuple((i.id, i.status, i.result, i.error, i.note, i.total_steps, i.resume_state) for i in items)


def files_text(view: RunView) -> str:
    files = list(dict.fromkeys(view.saved))
    return "\n".join(files)
