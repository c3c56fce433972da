"""The WebUI entry point: registers the "LoRA Train" tab, its settings and the WebUI's taggers.

The WebUI runs every file in scripts/ at start; the tab itself is built by lib_trainer.ui,
the same code as the standalone page, over the WebUI job service (lib_trainer/webui/service.py).
"""
from modules import script_callbacks, shared

from lib_trainer.jobs.queue import TrainQueue
from lib_trainer.optional import unavailable_features
from lib_trainer.ui.app import TAB_ID, build_tab
from lib_trainer.webui import service as webui_service
from lib_trainer.webui.taggers import register_webui_taggers

_service = None


def _get_service():
    """One service per WebUI process: the queue and its worker survive a UI reload."""
    global _service
    if _service is None:
        queue = TrainQueue(webui_service.queue_path())
        if webui_service.is_forge():
            from lib_trainer.jobs.service import LocalTrainService

            _service = LocalTrainService(queue)
        else:
            _service = webui_service.WebUITrainService(queue)
    return _service


def _notice() -> str:
    lines = []
    if webui_service.is_forge():
        lines.append(
            "**Forge:** dataset preparation, tagging and the tag editor work here. Training on Forge's loaded model "
            "is not supported yet (Forge runs its text encoders and VAE in inference mode): set the base model to a "
            "checkpoint file to train on a separate copy of it, or use the AUTOMATIC1111 WebUI 1.10.")
    lines += [f"- {text}" for text in unavailable_features()]
    return "\n".join(lines)


def on_ui_tabs():
    defaults = webui_service.webui_defaults()
    if webui_service.is_forge():
        defaults = defaults.replace(pretrained_model_name_or_path="")
    blocks = build_tab(_get_service(), defaults, notice=_notice(), memory=webui_service.memory_estimate)
    return [(blocks, "LoRA Train", TAB_ID)]


def on_ui_settings():
    shared.opts.add_option("lib_trainer_output_dir", shared.OptionInfo(
        "", "Folder for trained LoRA files (empty: the WebUI's Lora folder, so they show on the Lora cards)",
        section=webui_service.SETTINGS_SECTION))


register_webui_taggers()
script_callbacks.on_ui_tabs(on_ui_tabs)
script_callbacks.on_ui_settings(on_ui_settings)
