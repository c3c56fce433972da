"""Which errors are the user's to fix, and which are bugs.

An expected error (a bad option, a missing folder, a broken checkpoint, a full disk) is shown
as its message alone: the message says what to change. Anything else is a bug in this code,
and its traceback is what a bug report needs, so the CLI prints it, the job service and the
UI log it (and still show the message). The library's own error types derive from
`UserError`; plain `ValueError`/`RuntimeError`/`KeyError` raised by Python or a library are
not assumed to be the user's doing.
"""
from __future__ import annotations

import logging
import traceback

log = logging.getLogger("lib_trainer")


class UserError(Exception):
    """An error the user can fix; the message names the file or option and what to do."""


class InvalidInput(UserError, ValueError):
    """A value, file or folder given by the user that cannot be used. A ValueError too, so
    callers that catch ValueError around a check keep working."""


class Unavailable(UserError, RuntimeError):
    """Something asked for that cannot run here (a package or the WebUI is missing); a
    RuntimeError too, as these were before."""


def is_expected(error: BaseException) -> bool:
    """True for errors whose message is enough: our own `UserError`s, and the operating
    system's (no such file, permission denied, disk full: each names the path) and running
    out of memory (the user's batch or resolution, not a bug)."""
    if isinstance(error, (UserError, OSError, MemoryError)):
        return True
    # torch.OutOfMemoryError (a RuntimeError); matched by name so this module needs no torch
    return any(cls.__name__ == "OutOfMemoryError" for cls in type(error).__mro__)


def user_message(error: BaseException) -> str:
    """One message for the user: an expected error's own text; a bug's type and text, said to
    be a bug (its traceback is printed or logged beside it)."""
    text = str(error).strip() or type(error).__name__
    if is_expected(error):
        if type(error).__name__ == "OutOfMemoryError" or isinstance(error, MemoryError):
            return (f"out of memory ({text.splitlines()[0]}): lower train_batch_size or resolution, or turn on "
                    "gradient_checkpointing and mixed_precision")
        return text
    return f"{type(error).__name__}: {text} (an unexpected error, probably a bug in lib_trainer; please report it with its traceback)"


def log_unexpected(error: BaseException, what: str) -> str:
    """Log a bug's traceback once; returns the traceback text for whoever shows it."""
    trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    log.error("%s failed with an unexpected error:\n%s", what, trace)
    return trace
