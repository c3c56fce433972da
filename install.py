"""Run by the WebUI when the extension is installed (and at start unless
--skip-prepare-environment).

Installs only optional packages that are missing, each with the WebUI's own packages pinned
at their installed versions, so nothing it depends on (torch, torchvision, gradio,
transformers, numpy, safetensors, accelerate, pydantic) is ever upgraded or replaced. Each
package only enables a feature; without it the extension loads and says what is unavailable.
"""
import importlib.metadata
import os
import sys
import tempfile

import launch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib_trainer.optional import OPTIONAL_PACKAGES  # noqa: E402  (the extension folder is not on sys.path)

PROTECTED = ("torch", "torchvision", "gradio", "transformers", "numpy", "safetensors", "accelerate", "pydantic",
             "pillow", "fastapi")


def _constraints_file() -> str:
    """pip constraints holding every protected package at the version installed now."""
    pins = []
    for name in PROTECTED:
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    handle = tempfile.NamedTemporaryFile("w", suffix=".txt", prefix="lib_trainer_pins_", delete=False)
    with handle:
        handle.write("\n".join(pins) + "\n")
    return handle.name


def main() -> None:
    missing = {module: entry for module, entry in OPTIONAL_PACKAGES.items() if not launch.is_installed(module)}
    if not missing:
        return
    constraints = _constraints_file()
    try:
        for module, (requirement, feature) in missing.items():
            try:
                launch.run_pip(f'install "{requirement}" -c "{constraints}"', f"lib_trainer: {requirement}")
            except Exception as error:  # a failed optional install must not stop the WebUI
                print(f"lib_trainer: could not install {requirement} ({error}); {feature} stays unavailable")
    finally:
        os.unlink(constraints)


main()
