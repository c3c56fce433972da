"""Optional packages: each turns on one feature; without it the rest works.

`install.py` installs the missing ones into the WebUI's environment; the tab lists what is
unavailable. Checked with find_spec, never imported (some pull in heavy dependencies).
"""
from __future__ import annotations

import importlib.util

# import name -> (pip requirement, the feature it enables)
OPTIONAL_PACKAGES = {
    "prodigyopt": ("prodigyopt", "the Prodigy optimizer"),
    "lion_pytorch": ("lion-pytorch", "the Lion optimizer"),
    "bitsandbytes": ("bitsandbytes", "the AdamW8bit optimizer"),
    "onnxruntime": ("onnxruntime", "the WD14 tagger"),
    "tensorboard": ("tensorboard", "TensorBoard logs"),
    "cv2": ("opencv-python-headless<5", "face detection in the focal-point crop"),
    # the WebUI has it through requests; without it captions in other encodings are "unknown"
    "charset_normalizer": ("charset-normalizer", "telling the encoding of GBK, Big5 or Shift-JIS captions"),
}

# Useful only with CUDA: install.py leaves them out elsewhere.
CUDA_ONLY = {"bitsandbytes"}


def is_available(module_name: str) -> bool:
    try:
        return importlib.util.find_spec(module_name) is not None
    except (ImportError, ValueError):
        return False


def unavailable_features() -> list[str]:
    """One line per missing package: what is off and how to turn it on."""
    return [f"{feature} is unavailable: pip install \"{requirement}\""
            for module, (requirement, feature) in OPTIONAL_PACKAGES.items() if not is_available(module)]
