"""The WebUI's hypernetworks (modules/hypernetworks), seen from training.

- The WebUI applies every hypernetwork in `shared.loaded_hypernetworks` inside each attention
  forward, and that list keeps the last generation's `<hypernet:…>`: a run of any kind would
  train with it applied. It is emptied while training and given back after.
- Hypernetwork runs save into the WebUI's hypernetworks folder (`--hypernetwork-dir`); after
  each save its list is reloaded, so `<hypernet:name:1>` finds the file at once, and the file
  is read back through the WebUI's own loader.
"""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Iterator

from modules import paths_internal, shared  # ImportError outside the WebUI

from ..formats.hypernetwork_file import is_hypernetwork_path, read_hypernetwork_file
from ..progress import SAVED, Progress, ProgressEvent

log = logging.getLogger("lib_trainer")


def hypernetwork_folder() -> str:
    return getattr(shared.cmd_opts, "hypernetwork_dir", "") or os.path.join(paths_internal.models_path,
                                                                            "hypernetworks")


@contextlib.contextmanager
def loaded_hypernetworks_cleared() -> Iterator[None]:
    """No hypernetwork applies while training; the user's come back after. The list is changed
    in place: the attention forwards read it through `shared` at every call."""
    loaded = getattr(shared, "loaded_hypernetworks", None)
    if loaded is None:
        yield
        return
    held = list(loaded)
    loaded.clear()
    try:
        yield
    finally:
        loaded[:] = held


def refresh_hypernetwork_list() -> None:
    reload = getattr(shared, "reload_hypernetworks", None)
    if reload is not None:
        reload()


def check_with_webui_loader(path: str) -> str:
    """'' when the WebUI's own loader reads the file with every width the file has, else what
    went wrong."""
    from modules.hypernetworks import hypernetwork as webui_hypernetwork

    try:
        loaded = webui_hypernetwork.Hypernetwork()
        loaded.load(path)
    except Exception as error:  # whatever the WebUI's loader raises, the user must hear of it
        return f"{os.path.basename(path)}: the WebUI's hypernetwork loader failed ({type(error).__name__}: {error})"
    expected = sorted(read_hypernetwork_file(path).layers)
    if sorted(loaded.layers) != expected:
        return (f"{os.path.basename(path)}: the WebUI's hypernetwork loader read widths {sorted(loaded.layers)}, "
                f"the file has {expected}")
    return ""


class HypernetworkReadBack:
    """A progress sink: after each hypernetwork save, reload the WebUI's list and read the file
    back with its loader, warning loudly when it cannot."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def __call__(self, event: ProgressEvent) -> None:
        if event.kind != SAVED or not event.text or not is_hypernetwork_path(event.text):
            return
        refresh_hypernetwork_list()
        problem = check_with_webui_loader(event.text)
        if problem:
            log.warning(problem)
            self.progress.status("WARNING: " + problem)
        else:
            name = os.path.splitext(os.path.basename(event.text))[0]
            self.progress.status(f"checked with the WebUI's hypernetwork loader; use it as <hypernet:{name}:1>")
