"""The WebUI's built-in Lora extension (extensions-builtin/Lora), seen from training.

- It merges the last generation's networks into the weights in place and takes them out
  only on the next forward with another set: training would start on top of the user's last
  LoRA. They are cleared while training and merged back after.
- Every saved file is read back through its own loader, and a layer it cannot place is
  reported loudly: the file would silently do less than it was trained to.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Iterator

import torch

from ..progress import SAVED, Progress, ProgressEvent

log = logging.getLogger("lib_trainer")


def lora_extension():
    """The built-in Lora extension's `networks` module, if it is loaded."""
    module = sys.modules.get("networks")
    return module if module is not None and hasattr(module, "loaded_networks") else None


@contextlib.contextmanager
def lora_networks_cleared(sd_model) -> Iterator[None]:
    """The model's base weights while training; the user's merged networks back after, in
    exactly the layers they were merged into (the layer mapping also holds every container
    module, which the Lora extension cannot merge into)."""
    networks = lora_extension()
    merged = [layer for layer in getattr(sd_model, "network_layer_mapping", {}).values()
              if getattr(layer, "network_current_names", ())]
    if networks is None:
        yield
        return
    # Cleared even when nothing is merged: in lora_functional mode the networks are added in
    # each forward instead, which would add them to what is being trained.
    held = list(networks.loaded_networks)
    networks.loaded_networks.clear()
    with torch.no_grad():
        for layer in merged:
            networks.network_restore_weights_from_backup(layer)
            layer.network_current_names = ()
    try:
        yield
    finally:
        networks.loaded_networks[:] = held
        if held:
            with torch.no_grad():
                for layer in merged:
                    networks.network_apply_weights(layer)


class ReadBack:
    """A progress sink: after each save, load the file with the WebUI's own Lora loader, and
    refresh the WebUI's list of networks, so `<lora:name>` finds the new file at once (the
    list also maps each file's ss_output_name to it: a stale list sends the name to an earlier
    step file)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress

    def __call__(self, event: ProgressEvent) -> None:
        if event.kind != SAVED or not event.text or not event.text.endswith(".safetensors"):
            return
        from ..formats.lora_file import read_tensor_names
        from ..networks.registry import METHODS

        if METHODS[("embedding", None)].recognises(read_tensor_names(event.text)):
            return  # an embedding file: webui/embeddings.py reads it back
        matched, problem = check_with_webui_loader(event.text)
        if problem:
            log.warning(problem)
            self.progress.status("WARNING: " + problem)
        elif matched:
            self.progress.status(f"checked with the WebUI's Lora loader: all {matched} layers matched")
        refresh_network_list()


def refresh_network_list() -> None:
    """Make the Lora extension list its folder again (nothing when it is disabled)."""
    refresh = getattr(lora_extension(), "list_available_networks", None)
    if refresh is not None:
        refresh()


def check_with_webui_loader(path: str) -> tuple[int, str]:
    """(layers the WebUI's Lora loader placed, '' or what it missed)."""
    networks, network = lora_extension(), sys.modules.get("network")
    if networks is None or network is None:
        return 0, ""  # the built-in Lora extension is disabled: nothing to check against
    from safetensors import safe_open

    name = os.path.splitext(os.path.basename(path))[0]
    loaded = networks.load_network(name, network.NetworkOnDisk(name, path))
    with safe_open(path, "pt") as handle:
        # A pivotal run's bundled embedding is not a layer (the loader keeps it apart).
        layers = {key.partition(".")[0] for key in handle.keys()} - {"bundle_emb"}
    matched = {module.network_key.partition(".")[0] for module in loaded.modules.values()}
    missing = sorted(layers - matched)
    if not missing:
        return len(matched), ""
    return len(matched), (f"{os.path.basename(path)}: the WebUI's Lora loader did not match {len(missing)} of {len(layers)} layers "
            f"(e.g. {', '.join(missing[:3])}); those parts of the LoRA will have no effect in the WebUI")
