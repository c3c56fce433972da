"""Event handlers that never end in a bare stack trace: any exception becomes a message
in the page's message box, and the other outputs stay as they were."""
from __future__ import annotations

import functools
import logging
import traceback

import gradio as gr

from .render import error_lines, message_html

log = logging.getLogger("lib_trainer.ui")

# Exceptions that carry a message for the user; anything else is a bug and also logged.
EXPECTED = (ValueError, OSError, RuntimeError, KeyError)


def shows_errors(outputs: int, message_index: int = 0):
    """Decorate a handler with `outputs` outputs whose `message_index`-th is the message box."""

    def decorate(function):
        @functools.wraps(function)
        def handler(*args):
            try:
                return function(*args)
            except Exception as error:  # noqa: BLE001 - shown to the user, never swallowed silently
                lines = error_lines(error)
                if not isinstance(error, EXPECTED):
                    log.error("%s failed:\n%s", function.__name__, traceback.format_exc())
                    lines = [f"{type(error).__name__}: {line}" for line in lines[:1]] + lines[1:]
                result = [gr.update() for _ in range(outputs)]
                result[message_index] = message_html(errors=lines)
                return result[0] if outputs == 1 else tuple(result)

        return handler

    return decorate
