"""Network methods by the name kohya stores in ss_network_module."""
from __future__ import annotations

from ..config import TrainConfig
from ..formats.kohya_names import TargetLayer
from . import lora
from .base import Network
from ..errors import InvalidInput

METHODS = {
    lora.METHOD: lora.create,
}


def network_settings(config: TrainConfig) -> dict:
    settings = {
        "network_dim": config.network_dim, "network_alpha": config.network_alpha,
        "conv_dim": config.conv_dim, "conv_alpha": config.conv_alpha,
        "network_dropout": config.network_dropout, "rank_dropout": config.rank_dropout,
        "module_dropout": config.module_dropout,
    }
    # kohya spells conv/dropout settings as --network_args "conv_dim=4"; accept that too.
    for key, value in config.parsed_network_args().items():
        if key in ("conv_dim", "network_dim"):
            settings[key] = int(value)
        elif key in settings:
            settings[key] = float(value)
        else:
            raise InvalidInput(f"network_args: {key} is not an option of {config.network_module}")
    return settings


def create_network(config: TrainConfig, targets: list[TargetLayer]) -> Network:
    if config.network_module not in METHODS:
        raise InvalidInput(f"network_module {config.network_module!r} is unknown; available: {', '.join(METHODS)}")
    return METHODS[config.network_module](targets, network_settings(config))
