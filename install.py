"""Run by the WebUI when the extension is installed (and at start unless
--skip-prepare-environment).

Installs only optional packages that are missing, with every package already installed
pinned at its installed version (pip constraints), so nothing the WebUI or another extension
depends on (torch, gradio, transformers, numpy, protobuf, ...) is ever upgraded or replaced. A
package that cannot be installed without changing one is not installed: pip's resolver says
which, and that feature stays off. Each package only enables a feature; without it the
extension loads and says what is unavailable. bitsandbytes is only installed where CUDA works:
elsewhere it is useless and accelerate would import it (slowly, with errors) at every start.
"""
import importlib.metadata
import os
import sys
import tempfile

import launch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib_trainer.optional import CUDA_ONLY, OPTIONAL_PACKAGES  # noqa: E402  (the extension folder is not on sys.path)


def installed_pins() -> list[str]:
    """name==version of every distribution installed now (the first of each name)."""
    pins = {}
    for distribution in importlib.metadata.distributions():
        name, version = distribution.metadata["Name"], distribution.version
        if name and version:
            pins.setdefault(name.lower().replace("_", "-"), f"{name}=={version}")
    return sorted(pins.values())


def _cuda_works() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # a broken torch is the WebUI's to report
        return False


def _constraints_file() -> str:
    """pip constraints holding every installed package at the version installed now."""
    pins = installed_pins()
    handle = tempfile.NamedTemporaryFile("w", suffix=".txt", prefix="lib_trainer_pins_", delete=False)
    with handle:
        handle.write("\n".join(pins) + "\n")
    return handle.name


def main() -> None:
    missing = {module: entry for module, entry in OPTIONAL_PACKAGES.items() if not launch.is_installed(module)}
    if not _cuda_works():
        for module in CUDA_ONLY & set(missing):
            print(f"lib_trainer: not installing {missing.pop(module)[0]}: it needs an NVIDIA GPU with CUDA")
    if not missing:
        return
    constraints = _constraints_file()
    try:
        for module, (requirement, feature) in missing.items():
            try:
                launch.run_pip(f'install "{requirement}" -c "{constraints}"', f"lib_trainer: {requirement}")
            except Exception as error:  # a failed optional install must not stop the WebUI
                print(f"lib_trainer: could not install {requirement} without changing a package already "
                      f"installed, or at all ({error}; pip's message above names the conflict); {feature} stays "
                      "unavailable")
    finally:
        os.unlink(constraints)


main()
