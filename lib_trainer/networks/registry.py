"""Network methods by the names sd-scripts users type, and the trainable of a run.

Adding a method is one file with its `NetworkMethod` record and one line in `METHODS`.
"""
from __future__ import annotations

import json
from typing import Any

from ..config import ConfigError, TrainConfig
from ..errors import InvalidInput
from ..formats.hypernetwork_file import is_hypernetwork_path
from ..formats.lora_file import load_lora, read_metadata
from ..formats.kohya_names import TargetLayer
from . import embedding, full, hypernetwork, ia3, locon, loha, lokr, lora, oft
from .method import NetworkMethod
from .trainable import Trainable

METHODS: dict[tuple[str, str | None], NetworkMethod] = {method.key: method for method in (
    lora.METHOD,
    loha.METHOD, loha.KOHYA,
    lokr.METHOD, lokr.KOHYA,
    ia3.METHOD,
    locon.METHOD, locon.LORA,
    full.METHOD,
    oft.METHOD, oft.BOFT,
    embedding.METHOD,
    hypernetwork.METHOD,
)}
# The algo LyCORIS uses when network_args names none.
DEFAULT_ALGO = {"lycoris.kohya": "lora"}
# Modules of other tools that are not offered, and what to use instead.
INSTEAD = {"networks.oft": "lycoris.kohya with algo=diag-oft (kohya's networks.oft names its keys oft_unet_..., "
                           "which the WebUI 1.10 finds on SDXL only)"}


def find_method(config: TrainConfig) -> NetworkMethod:
    """The record for --network_module (and, for LyCORIS' module, its algo= argument)."""
    algo = config.parsed_network_args().get("algo") or DEFAULT_ALGO.get(config.network_module)
    algo = algo.lower() if algo else None
    method = METHODS.get((config.network_module, algo)) or METHODS.get((config.network_module, None))
    if method is None:
        known = ", ".join(module if algo is None else f"{module} algo={algo}" for module, algo in METHODS)
        instead = INSTEAD.get(config.network_module)
        raise ConfigError(f"network_module {config.network_module!r}"
                          f"{f' with algo={algo}' if algo else ''} is unknown; "
                          + (f"use {instead}" if instead else f"available: {known}"))
    return method


def method_problems(config: TrainConfig) -> list[str]:
    """What is wrong with the network settings, for the config's own checks."""
    try:
        find_method(config).settings(config)
    except ConfigError as error:
        return str(error).splitlines()
    return embedding.embedding_problems(config) if embedding.is_embedding_run(config) else []


def network_targets(config: TrainConfig, bundle) -> tuple[NetworkMethod, dict[str, Any], list[TargetLayer]]:
    """The method, its settings and the layers of `bundle` a run of this config adapts."""
    method = find_method(config)
    settings = method.settings(config)
    return method, settings, method.target_layers(bundle, config, settings)


def create_trainable(config: TrainConfig, bundle) -> Trainable:
    """What this run trains, on this bundle."""
    method = find_method(config)
    trainable = method.trainable_for(config, bundle, method.settings(config))
    return embedding.pivotal_trainable(config, bundle, trainable) if config.pivotal_tuning else trainable


def trainable_parameter_count(config: TrainConfig, bundle) -> int:
    """The parameters a run of this config trains on `bundle` (for the memory estimate)."""
    method = find_method(config)
    count = method.parameters_on(config, bundle, method.settings(config))
    if config.pivotal_tuning:
        count += embedding.METHOD.parameters_on(config, bundle, {})
    return count


def create_network(config: TrainConfig, targets: list[TargetLayer]) -> Trainable:
    """The configured network on layers chosen by the caller (tests, tools)."""
    method = find_method(config)
    return method.create(targets, method.settings(config))


def network_from_file(path: str, bundle) -> Trainable:
    """The network a saved file holds, on `bundle`'s layers, ready to attach (for comparing
    files). The method is the one its metadata names (ss_network_module and its algo), else
    the first whose keys it has (a file another tool wrote without metadata). Raises
    InvalidInput when no method knows the file, or when some of its keys name no layer of this
    model (a file of another model family)."""
    if is_hypernetwork_path(path):  # the WebUI's .pt layout, not a safetensors LoRA
        return hypernetwork.hypernetwork_from_file(path, bundle)
    state, metadata = load_lora(path), read_metadata(path)
    # A pivotal run's LoRA bundles its embedding; the layers are the rest.
    state = {key: value for key, value in state.items() if not key.startswith(f"{embedding.BUNDLE_PREFIX}.")}
    file_config = config_of_file(metadata)
    method = _method_of(file_config) or next((m for m in METHODS.values() if m.recognises(state)), None)
    if method is None:
        raise InvalidInput(f"{path}: not a network file this trainer knows (keys like {next(iter(state), 'none')})")
    try:
        network, unmatched = method.from_file(bundle.target_layers(include_conv=True, top_level=True, norms=True),
                                             state, file_config)
    except ConfigError as error:
        raise InvalidInput(f"{path}: its metadata describes no network this trainer can build: {error}") from None
    if unmatched:
        raise InvalidInput(f"{path}: {len(unmatched)} of its {len(state)} tensors match no layer of this "
                           f"{bundle.family} model (e.g. {unmatched[0]}); was it trained on another model family?")
    return network


def config_of_file(metadata: dict[str, str]) -> TrainConfig:
    """The network options a file's ss_network_* metadata records (kohya and LyCORIS write them)."""
    try:
        args = json.loads(metadata.get("ss_network_args") or "{}")
    except ValueError:
        args = {}
    values = {"network_module": metadata.get("ss_network_module") or "networks.lora",
              "network_args": [f"{key}={value}" for key, value in (args.items() if isinstance(args, dict) else ())]}
    for key, field_name in (("ss_network_dim", "network_dim"), ("ss_network_alpha", "network_alpha")):
        if metadata.get(key) not in (None, "", "None"):
            values[field_name] = float(metadata[key]) if field_name == "network_alpha" else int(float(metadata[key]))
    try:
        return TrainConfig().replace(**values)
    except (ConfigError, ValueError):
        return TrainConfig()


def _method_of(config: TrainConfig) -> NetworkMethod | None:
    try:
        return find_method(config)
    except ConfigError:
        return None


def ui_network_types() -> dict[str, dict[str, Any]]:
    """The UI's network type list: label -> the config values it sets."""
    # An entry that does not train an embedding with its network turns pivotal tuning off.
    return {label: {"pivotal_tuning": False, **values} for method in METHODS.values()
            for label, values in method.ui_types.items()}


def ui_network_type_of(values: dict[str, Any]) -> str | None:
    """The UI label of a config's network settings (None when no entry describes them)."""
    if str(values.get("pivotal_tuning", False)).lower() in ("true", "1"):
        return embedding.METHOD.ui_type_of(values)
    for method in METHODS.values():
        label = method.ui_type_of(values)
        if label:
            return label
    return None
