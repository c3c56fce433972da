"""The WebUI entry point for the X/Y/Z plot's LoRA axes: LoRA file, LoRA weight, UNet weight,
Text-encoder weight, and Hypernetwork file and strength (lib_trainer/webui/xyz_axes.py).

They are added before the UI is built, when the X/Y/Z script reads its list of axes; the WebUI
runs this file again on "Reload UI" and the axes are added to the reloaded script's list once.
"""
from modules import script_callbacks, scripts

from lib_trainer.webui import xyz_axes


def on_before_ui():
    xyz_axes.register_axes(scripts.scripts_data, xyz_axes.webui_lora_dir)
    xyz_axes.register_hypernetwork_axes(scripts.scripts_data, xyz_axes.webui_hypernetwork_dir)


script_callbacks.on_before_ui(on_before_ui)
