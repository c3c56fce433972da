"""A progress sink that writes training scalars for TensorBoard (when it is installed)."""
from __future__ import annotations

import os
import time

from ..progress import END, STEP, VALIDATION, ProgressEvent
from ..errors import Unavailable

SCALARS = {"loss": "loss/current", "avg_loss": "loss/average", "lr": "lr/unet", "lr_te": "lr/text_encoder",
           # scale_weight_norms, by kohya's tags
           "keys_scaled": "max_norm/keys_scaled", "avg_key_norm": "norm/avg_key_norm",
           "max_key_norm": "max_norm/max_key_norm"}


class TensorBoardSink:
    def __init__(self, logging_dir: str, prefix: str = "") -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            raise Unavailable("logging_dir needs the tensorboard package: pip install tensorboard") from error
        self.log_dir = os.path.join(logging_dir, prefix + time.strftime("%Y%m%d%H%M%S"))
        self.writer = SummaryWriter(self.log_dir)

    def __call__(self, event: ProgressEvent) -> None:
        if event.kind == STEP and event.label == "training":
            for key, tag in SCALARS.items():
                if key in event.info:
                    self.writer.add_scalar(tag, event.info[key], event.done)
        elif event.kind == VALIDATION:
            self.writer.add_scalar("loss/validation", event.info["validation_loss"], event.done)
        elif event.kind == END and event.label == "training":
            self.writer.flush()

    def close(self) -> None:
        self.writer.close()
