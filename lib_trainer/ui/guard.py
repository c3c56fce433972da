"""Event handlers that never end in a bare stack trace: any exception becomes a message
in the page's message box, and the other outputs stay as they were."""
from __future__ import annotations

import functools

import gradio as gr

from ..errors import is_expected, log_unexpected, user_message
from .render import error_lines, message_html


def shows_errors(outputs: int, message_index: int = 0):
    """Decorate a handler with `outputs` outputs whose `message_index`-th is the message box.

    An expected error (errors.is_expected) is shown as its message; anything else is a bug:
    logged with its traceback, and shown as a message that names its type."""

    def decorate(function):
        @functools.wraps(function)
        def handler(*args):
            try:
                return function(*args)
            except Exception as error:  # noqa: BLE001 - shown to the user, never swallowed silently
                if is_expected(error):
                    lines = error_lines(error)
                else:
                    log_unexpected(error, function.__name__)
                    lines = [user_message(error)]
                result = [gr.update() for _ in range(outputs)]
                result[message_index] = message_html(errors=lines)
                return result[0] if outputs == 1 else tuple(result)

        return handler

    return decorate
