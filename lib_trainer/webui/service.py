"""Training inside the AUTOMATIC1111 WebUI on the checkpoint it has loaded: the job service.

Training is a WebUI job: it waits for and blocks generation through `queue_lock`, reports to
`shared.state` (job, steps, loss and it/s as textinfo, samples as the live preview) and stops
after the current step, saving what it has, when Interrupt is pressed. The model is borrowed
through model.py and given back as it was; each saved file is read back through the WebUI's
Lora loader (lora_networks.py); a hypernetwork goes to the WebUI's hypernetworks folder and is
read back by its hypernetwork loader (hypernetworks.py).

Grids are WebUI jobs the same way: under the same lock and shared.state, drawn by the WebUI's
own txt2img with `<lora:name:w>` (compare.py), so they show what the user gets later, and
Interrupt ends them between two images.
"""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Iterator

import torch

from modules import call_queue, devices, paths_internal, shared  # ImportError outside the WebUI

from ..config import TrainConfig
from ..errors import InvalidInput
from ..jobs.queue import QueueItem, TrainQueue
from ..jobs.service import LocalTrainService
from ..progress import END, IMAGE, START, STEP, Commands, Progress, ProgressEvent
from .embeddings import EmbeddingReadBack, embeddings_folder, known_for_grid
from .hypernetworks import HypernetworkReadBack, hypernetwork_folder, refresh_hypernetwork_list
from .lora_networks import ReadBack, refresh_network_list
from .model import borrowed_model, loaded_bundle

log = logging.getLogger("lib_trainer")

LOADED_MODEL = "(the WebUI's loaded checkpoint)"
QUEUE_FILE = "queue.json"
SETTINGS_SECTION = ("lib_trainer", "LoRA Train")


def lora_folder() -> str:
    """Where trained files go: the setting, else the WebUI's Lora folder (--lora-dir)."""
    configured = getattr(shared.opts, "lib_trainer_output_dir", "") or ""
    return configured or getattr(shared.cmd_opts, "lora_dir", "") or os.path.join(paths_internal.models_path, "Lora")


def state_folder() -> str:
    """The extension's own folder in the WebUI's data folder: the queue, and what later
    features keep between runs."""
    return os.path.join(paths_internal.data_path, "lib_trainer")


def queue_path() -> str:
    """`<state folder>/queue.json`, the folder made (and an old queue file moved into it)."""
    folder = state_folder()
    migrate_queue_file(folder)
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, QUEUE_FILE)


def migrate_queue_file(folder: str) -> None:
    """Earlier versions kept the queue as a JSON file at the state folder's own path: move it
    aside, make the folder, and put it in the folder as queue.json. Each step can be redone,
    so a start interrupted half-way finishes the move on the next one."""
    aside = folder + ".queue-moving"
    if os.path.isfile(folder):
        os.replace(folder, aside)
    if not os.path.isfile(aside):
        return
    os.makedirs(folder, exist_ok=True)
    target = os.path.join(folder, QUEUE_FILE)
    if os.path.exists(target):  # never overwrite a newer queue; say where the old one is
        log.warning("an old lib_trainer queue file was left at %s: %s already exists", aside, target)
        return
    os.replace(aside, target)
    log.info("moved the lib_trainer queue file into %s", target)


# --- reporting ------------------------------------------------------------------------------------

class WebUIState:
    """A progress sink that drives `shared.state` (the WebUI's progress API and live preview)
    and turns its Interrupt into a stop request."""

    def __init__(self, commands: Commands) -> None:
        self.commands = commands

    def __call__(self, event: ProgressEvent) -> None:
        state = shared.state
        if event.kind == START:
            state.job = f"LoRA {'grid' if event.label == 'comparing' else 'training'}: {event.label}"
            state.job_count = event.total or 0
            state.job_no = 0
        elif event.kind == STEP:
            state.job_count = event.total or state.job_count
            state.job_no = event.done
            state.sampling_step = state.sampling_steps = 0
            info = event.info
            parts = [f"{event.label} step {event.done}/{event.total or '?'}"]
            if "loss" in info:
                parts.append(f"loss {info['loss']:.4f}")
            if "it_per_s" in info:
                parts.append(f"{info['it_per_s']:.2f} it/s")
            state.textinfo = ", ".join(parts)
        elif event.kind == IMAGE:
            state.assign_current_image(event.info["image"])
        elif event.kind == END:
            state.textinfo = event.text
        if state.interrupted or getattr(state, "stopping_generation", False):
            self.commands.request_stop()


# --- the job service --------------------------------------------------------------------------------

def webui_trainer(config: TrainConfig, progress: Progress):
    """Train one queued config on the loaded model, as a WebUI job."""
    from ..train.loop import train

    problems = webui_problems(config)
    if problems:
        raise InvalidInput("\n".join(problems))
    bundle = loaded_bundle()
    changes = {"device": str(devices.device)}
    unet_dtype = next(bundle.denoiser().parameters()).dtype
    if unet_dtype == torch.float16 and config.mixed_precision in ("no", "auto"):
        # fp16 weights without autocast would train the LoRA with unscaled fp16 gradients.
        changes["mixed_precision"] = "fp16"
        progress.status("the loaded model is in fp16: training with mixed_precision=fp16")
    changes.update(_embedding_folders(config))
    hypernetwork = config.network_module == "hypernetwork"
    if hypernetwork and config.output_dir in ("", lora_folder()):
        # The WebUI lists hypernetworks from its own folder only: <hypernet:name> must find the file.
        changes["output_dir"] = hypernetwork_folder()
        progress.status(f"hypernetworks are saved in the WebUI's hypernetworks folder: {changes['output_dir']}")
    config = config.replace(**changes)
    progress.sinks.append(HypernetworkReadBack(progress) if hypernetwork else ReadBack(progress))
    progress.sinks.append(EmbeddingReadBack(bundle, progress))
    with borrowed_model(bundle, config.clip_skip):
        return train(config, bundle=bundle, progress=progress)


def _embedding_folders(config: TrainConfig) -> dict:
    """Embeddings go to the WebUI's embeddings folder (--embeddings-dir) unless another folder
    was chosen: an embedding run's output, a pivotal run's embedding file.

    The WebUI's Lora loader ignores a LoRA's bundled embedding when its embeddings folder has
    one of the same name, so a pivotal run's own file there named after the word would stand
    in for every file's bundled one: `<lora:name-000001:1> word` would get the last epoch's
    vectors with the first epoch's LoRA. There it is named after the LoRA file instead
    (Forge ignores bundled embeddings: its users type the word, which its file must carry)."""
    if config.network_module == "embedding" and config.output_dir in ("", lora_folder()):
        return {"output_dir": embeddings_folder()}
    if not config.pivotal_tuning:
        return {}
    changes = {} if config.embedding_output_dir else {"embedding_output_dir": embeddings_folder()}
    folder = changes.get("embedding_output_dir", config.embedding_output_dir)
    if (not config.embedding_file_name.strip() and not is_forge()
            and os.path.realpath(folder) == os.path.realpath(embeddings_folder())):
        changes["embedding_file_name"] = config.output_name
    return changes


def webui_problems(config: TrainConfig) -> list[str]:
    """What a WebUI run refuses: another base model than the loaded checkpoint."""
    if config.pretrained_model_name_or_path in ("", LOADED_MODEL):
        return []
    return [f"pretrained_model_name_or_path={config.pretrained_model_name_or_path!r}: in the WebUI, training uses "
            "the checkpoint the WebUI has loaded; pick it in the checkpoint list at the top and set the base model "
            f"to {LOADED_MODEL!r} (other paths and tiny:sd1 are for the standalone trainer)"]


class WebUITrainService(LocalTrainService):
    """The standalone service's queue and worker, with each run and grid taken as a WebUI job."""

    compares_on_loaded_model = True
    field_help = {"pretrained_model_name_or_path": f"Base model: {LOADED_MODEL}, the one picked in the checkpoint "
                                                   "list at the top of the page (switch it there to train on another)."}

    def host_problems(self, config: TrainConfig) -> list[str]:
        return webui_problems(config)

    def base_family(self, model: str) -> str | None:
        return loaded_bundle().family if model in ("", LOADED_MODEL) and shared.sd_model is not None else None

    def compare_folders(self, output_dir: str) -> list[str]:
        """Runs save where the WebUI reads each kind of file: LoRAs in the Lora folder (or the
        configured one), embeddings in its embeddings folder, hypernetworks in its own."""
        folders = []
        for folder in (output_dir, lora_folder(), embeddings_folder(), hypernetwork_folder()):
            if folder and folder not in folders:
                folders.append(folder)
        return folders

    def __init__(self, queue: TrainQueue) -> None:
        super().__init__(queue, trainer=webui_trainer)

    def _host_sinks(self, commands: Commands) -> list:
        return [WebUIState(commands)]

    def _host_job(self, item: QueueItem, progress: Progress):
        return webui_job(f"lib_trainer-{item.id}", progress)

    def _draw_grid(self, request, progress: Progress, model: str):
        """The grid by the WebUI's txt2img on its loaded checkpoint (the one a WebUI run trains on)."""
        from ..compare.grid import make_grid
        from .compare import webui_draw_cell

        if model.strip() not in ("", LOADED_MODEL):
            raise InvalidInput(f"base model {model!r}: in the WebUI, grids are drawn on the checkpoint it has "
                               "loaded; pick it in the checkpoint list at the top")
        with webui_job("lib_trainer-compare", progress):
            # Files saved since the WebUI last listed its Lora folder are unknown to <lora:name>
            # until it lists it again.
            refresh_network_list()
            refresh_hypernetwork_list()
            embeddings = [file.name for file in request.files if file is not None and file.is_embedding]
            if embeddings:
                known_for_grid(embeddings)
            return make_grid(request, webui_draw_cell, progress)


@contextlib.contextmanager
def webui_job(job: str, progress: Progress) -> Iterator[None]:
    """A WebUI job: generation waits for it and it for generation (`queue_lock`); Interrupt
    reaches it through shared.state."""
    lock = call_queue.queue_lock
    if not lock.acquire(blocking=False):  # say so only when there is something to wait for
        progress.status("waiting for the WebUI's current job to finish")
        lock.acquire()
    try:
        shared.state.begin(job=job)
        try:
            yield
        finally:
            shared.state.end()
    finally:
        lock.release()


def webui_defaults() -> TrainConfig:
    return TrainConfig().replace(pretrained_model_name_or_path=LOADED_MODEL, output_dir=lora_folder())


def is_forge() -> bool:
    return os.path.isdir(os.path.join(paths_internal.script_path, "modules_forge"))


def memory_estimate(config: TrainConfig) -> str:
    """The estimate for the loaded model: its weights as held, the network on its real layers."""
    from ..train.memory import bundle_memory

    bundle = loaded_bundle()
    where = "GPU" if devices.device.type == "cuda" else str(devices.device)
    estimate = bundle_memory(config, bundle, where)
    return f"Base model: {bundle.model_name or 'the loaded checkpoint'} ({bundle.family}).\n{estimate.summary()}"
