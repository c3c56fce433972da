"""lib_trainer: from a folder of pictures to a tested LoRA, in the WebUI or on its own.

Nothing here runs at import time; entry points are `python -m lib_trainer` and the
WebUI scripts in `scripts/`.
"""

__version__ = "0.1.0"
