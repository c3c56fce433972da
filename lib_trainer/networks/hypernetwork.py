"""Hypernetworks (`--network_module hypernetwork`), as the WebUI trains and applies them.

For each attention width w it has, a hypernetwork holds two small MLPs, one for the keys' input
and one for the values' input of every attention whose key/value projection takes width w:

    to_k(x + m * mlp_k(x)),  to_v(x + m * mlp_v(x))

m is the strength (`<hypernet:name:m>`), 1 while training. Like the WebUI it matches by width
alone: a cross-attention's context (SD1 768, SD2 1024, SDXL 2048), or a self-attention's own
features (320, 640, 1280) when those widths are trained. An MLP is the WebUI's layer sequence,
for each step i of the layer structure [1, 2, 1]: Linear(w * s[i], w * s[i+1]), then the
activation (not after the last Linear unless activate_output; none for "linear"), then a
LayerNorm with layer norm, then a Dropout where the dropout structure says so; the indices in
that sequence are the file's key names (`linear.0.weight`, `linear.2.bias` ...).

The MLPs sit in forward pre-hooks on the projections, so the model itself is never replaced
or changed, and detaching is removing the hooks.
"""
from __future__ import annotations

import inspect
import json
import os
from dataclasses import asdict, dataclass
from typing import Any, Iterable

import torch
from torch import nn

from ..config import HYPERNETWORK_ACTIVATIONS, ConfigError
from ..errors import InvalidInput
from ..formats.hypernetwork_file import HypernetworkFile, read_hypernetwork_file, write_hypernetwork_file
from ..formats.kohya_names import TargetLayer
from .method import NetworkMethod
from .trainable import UNET, Trainable

MODULE = "hypernetwork"
# The WebUI's names first (swish is its name for hardswish), then every torch activation by
# its class name in lower case, as the WebUI accepts in files.
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "linear": nn.Identity, "relu": nn.ReLU, "leakyrelu": nn.LeakyReLU, "elu": nn.ELU, "swish": nn.Hardswish,
    "tanh": nn.Tanh, "sigmoid": nn.Sigmoid,
    **{name.lower(): cls for name, cls in inspect.getmembers(nn.modules.activation, inspect.isclass)
       if cls.__module__ == "torch.nn.modules.activation"}}
INITS = ("Normal", "XavierUniform", "XavierNormal", "KaimingUniform", "KaimingNormal")


@dataclass(frozen=True)
class HypernetworkSpec:
    """The shape and behaviour of every MLP of a hypernetwork (the file's plain fields)."""
    layer_structure: tuple[float, ...] = (1.0, 2.0, 1.0)
    activation_func: str = "linear"
    layer_norm: bool = False
    dropout_structure: tuple[float, ...] = (0.0, 0.0, 0.0)
    weight_init: str = "Normal"
    activate_output: bool = False
    use_dropout: bool = False

    def layers(self, width: int) -> list[nn.Module]:
        """The MLP's layer sequence for attention width `width`, uninitialised."""
        structure, count = self.layer_structure, len(self.layer_structure)
        layers: list[nn.Module] = []
        for i in range(count - 1):
            layers.append(nn.Linear(int(width * structure[i]), int(width * structure[i + 1])))
            last = i == count - 2
            if self.activation_func not in (None, "linear") and not (last and not self.activate_output):
                layers.append(ACTIVATIONS[self.activation_func]())
            if self.layer_norm:
                layers.append(nn.LayerNorm(int(width * structure[i + 1])))
            if self.dropout_structure[i + 1] > 0:
                layers.append(nn.Dropout(p=self.dropout_structure[i + 1]))
        return layers

    def file_fields(self) -> dict[str, Any]:
        return {"layer_structure": [float(s) for s in self.layer_structure], "activation_func": self.activation_func,
                "is_layer_norm": self.layer_norm, "weight_initialization": self.weight_init,
                "activate_output": self.activate_output, "dropout_structure": [float(d) for d in self.dropout_structure],
                # the WebUI's rule: the last layer drops out when the entry before the final 0 is set
                "last_layer_dropout": len(self.dropout_structure) > 1 and self.dropout_structure[-2] != 0,
                "use_dropout": self.use_dropout}

    @classmethod
    def of_file(cls, fields: dict[str, Any]) -> "HypernetworkSpec":
        """The spec a file describes, with the WebUI's defaults for fields it lacks."""
        structure = tuple(float(s) for s in fields.get("layer_structure") or (1, 2, 1))
        dropout = fields.get("dropout_structure")
        use_dropout = bool(fields.get("use_dropout", False)) or bool(dropout and any(dropout))
        if dropout is None:
            dropout = default_dropout(len(structure), use_dropout, bool(fields.get("last_layer_dropout", False)))
        return cls(structure, fields.get("activation_func") or "linear", bool(fields.get("is_layer_norm", False)),
                   tuple(float(d) for d in dropout), fields.get("weight_initialization") or "Normal",
                   bool(fields.get("activate_output", True)), use_dropout)


def default_dropout(count: int, use_dropout: bool, last_layer_dropout: bool) -> tuple[float, ...]:
    """The WebUI's dropout without a structure given: 0.3 after each hidden layer but the last,
    which has it only with last_layer_dropout; none after the input and output."""
    if not use_dropout or count < 3:
        return (0.0,) * count
    return (0.0, *([0.3] * (count - 3)), 0.3 if last_layer_dropout else 0.0, 0.0)


class HypernetworkModule(nn.Module):
    """One MLP: x + m * mlp(x), m the strength when applied (1 while training)."""

    def __init__(self, width: int, spec: HypernetworkSpec) -> None:
        super().__init__()
        self.linear = nn.Sequential(*spec.layers(width))
        self.multiplier = 1.0
        self._initialise(spec)

    def _initialise(self, spec: HypernetworkSpec) -> None:
        """The WebUI's initialisation: biases 0; weights by the chosen scheme, except layer norms
        (and every layer with Normal), whose weights are drawn from N(0, 0.01)."""
        relu_like = "leaky_relu" if spec.activation_func == "leakyrelu" else "relu"
        with torch.no_grad():
            for layer in self.linear:
                if type(layer) not in (nn.Linear, nn.LayerNorm):
                    continue
                weight, bias = layer.weight, layer.bias
                nn.init.zeros_(bias)
                if spec.weight_init == "Normal" or type(layer) is nn.LayerNorm:
                    nn.init.normal_(weight, mean=0.0, std=0.01)
                elif spec.weight_init == "XavierUniform":
                    nn.init.xavier_uniform_(weight)
                elif spec.weight_init == "XavierNormal":
                    nn.init.xavier_normal_(weight)
                elif spec.weight_init == "KaimingUniform":
                    nn.init.kaiming_uniform_(weight, nonlinearity=relu_like)
                else:
                    nn.init.kaiming_normal_(weight, nonlinearity=relu_like)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        strength = 1.0 if self.training else self.multiplier
        return x + self.linear(x) * strength


def attention_projections(bundle) -> list[TargetLayer]:
    """The key and value projections of every UNet attention (self and cross)."""
    return [target for target in bundle.target_layers(include_conv=False, train_unet=True, train_text_encoder=False)
            if target.name.endswith(("_to_k", "_to_v"))]


def model_widths(projections: list[TargetLayer]) -> tuple[list[int], list[int]]:
    """(cross-attention context widths, self-attention widths) of a model's attentions."""
    cross, own = [], []
    for target in projections:
        width = target.module.in_features
        group = cross if "attn2" in target.name else own
        if width not in group:
            group.append(width)
    return sorted(cross), sorted(own)


class Hypernetwork(Trainable):
    kind = "hypernetwork"
    file_extension = ".pt"

    def __init__(self, widths: Iterable[int], spec: HypernetworkSpec, projections: list[TargetLayer],
                 method: "HypernetworkMethod | None" = None, settings: dict | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.method, self.settings = method or METHOD, settings or {}
        self.pairs = nn.ModuleDict({str(width): nn.ModuleList([HypernetworkModule(width, spec),
                                                               HypernetworkModule(width, spec)])
                                    for width in widths})
        # A list, not attributes: the model's layers must not become our submodules.
        self._projections = [target for target in projections if str(target.module.in_features) in self.pairs]
        self._handles: list = []

    @property
    def widths(self) -> list[int]:
        return [int(width) for width in self.pairs]

    # --- applying ------------------------------------------------------------------------
    def attach(self, bundle=None) -> None:
        if self._handles:
            return
        for target in self._projections:
            pair = self.pairs[str(target.module.in_features)]
            module = pair[0] if target.name.endswith("_to_k") else pair[1]
            self._handles.append(target.module.register_forward_pre_hook(_input_through(module)))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def set_multipliers(self, text_encoder: float, unet: float) -> None:
        """The strength when applied (`<hypernet:name:m>`); a hypernetwork has only the UNet's."""
        for pair in self.pairs.values():
            for module in pair:
                module.multiplier = unet

    # --- training ------------------------------------------------------------------------
    def parameter_groups(self, unet_lr: float, text_encoder_lr: float) -> list[dict]:
        return [{"params": list(self.parameters()), "lr": unet_lr, "name": UNET}]

    def conditioned(self) -> dict[str, int]:
        return {UNET: len(self._projections)}

    # --- files ---------------------------------------------------------------------------
    def file_metadata(self) -> dict[str, str]:
        return self.method.file_metadata(self.settings or {"spec": self.spec, "widths": self.widths})

    def file_layers(self, dtype: torch.dtype | None = None) -> dict[int, tuple[dict, dict]]:
        def weights(module):
            return {key: (t.to(dtype) if dtype is not None and t.is_floating_point() else t).detach().cpu()
                    for key, t in module.state_dict().items()}

        return {int(width): (weights(pair[0]), weights(pair[1])) for width, pair in self.pairs.items()}

    def write_file(self, path: str, metadata: dict[str, str], dtype: torch.dtype | None) -> None:
        name = os.path.splitext(os.path.basename(path))[0]
        new_hash = metadata.get("ss_new_sd_model_hash") or ""
        fields = {**self.spec.file_fields(), "name": name, "step": int(metadata.get("ss_steps") or 0),
                  "sd_checkpoint": new_hash[:10] or metadata.get("ss_sd_model_hash") or None,
                  "sd_checkpoint_name": metadata.get("ss_sd_model_name") or None,
                  "optional_info": _description(metadata)}
        write_hypernetwork_file(path, self.file_layers(dtype), fields, metadata)

    def load_weights(self, path: str) -> None:
        self.load_file(read_hypernetwork_file(path), f"network_weights {path}")

    def load_file(self, file: HypernetworkFile, where: str) -> None:
        """The weights of a file made with the same spec and widths; raises InvalidInput saying
        which option differs."""
        spec = HypernetworkSpec.of_file(file.fields)
        differs = [f"{option}: the file has {theirs}, this run {ours}" for option, theirs, ours in (
            ("hypernetwork_layer_structure", spec.layer_structure, self.spec.layer_structure),
            ("hypernetwork_activation_func", spec.activation_func, self.spec.activation_func),
            ("hypernetwork_layer_norm", spec.layer_norm, self.spec.layer_norm),
            ("hypernetwork_activate_output", spec.activate_output, self.spec.activate_output),
            ("hypernetwork_dropout_structure", spec.dropout_structure, self.spec.dropout_structure),
            ("hypernetwork_sizes", sorted(file.layers), sorted(self.widths))) if theirs != ours]
        if differs:
            raise InvalidInput(f"{where}: a hypernetwork of another shape; set the same options as the file:\n  - "
                               + "\n  - ".join(differs))
        for width, (k, v) in file.layers.items():
            for module, weights in zip(self.pairs[str(width)], (k, v)):
                try:
                    module.load_state_dict(weights)
                except RuntimeError as error:
                    raise InvalidInput(f"{where}: width {width}: its weights do not fit ({error})") from None


def _input_through(module: HypernetworkModule):
    def hook(layer: nn.Module, args: tuple):
        x = args[0]
        dtype = next(module.parameters()).dtype
        return (module(x.to(dtype)).to(x.dtype), *args[1:])

    return hook


def _description(metadata: dict[str, str]) -> str:
    """optional_info: what the WebUI prints about the file (with its print_hypernet_extra)."""
    parts = [f"trained with lib_trainer: {metadata.get('ss_output_name', '')}"]
    for key, label in (("ss_epoch", "epoch"), ("ss_steps", "step")):
        if metadata.get(key):
            parts.append(f"{label} {metadata[key]}")
    if metadata.get("ss_sd_model_name"):
        parts.append(f"on {metadata['ss_sd_model_name']}")
    return ", ".join(parts)


def parse_numbers(text: str, option: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in str(text).replace(";", ",").split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"{option}={text!r}: write numbers separated by commas, e.g. 1, 2, 1") from None


class HypernetworkMethod(NetworkMethod):
    module = MODULE
    label = "Hypernetwork"
    # The WebUI's defaults (1, 2, 1, linear, Normal) at the learning rate its trainer starts with.
    ui_types = {"Hypernetwork": {"network_module": MODULE, "network_args": "", "learning_rate": 1e-5,
                                 "hypernetwork_layer_structure": "1, 2, 1", "hypernetwork_activation_func": "linear"}}

    def settings(self, config) -> dict[str, Any]:
        problems = []
        structure = parse_numbers(config.hypernetwork_layer_structure, "hypernetwork_layer_structure")
        if len(structure) < 2 or structure[0] != 1 or structure[-1] != 1 or min(structure) <= 0:
            problems.append(f"hypernetwork_layer_structure={config.hypernetwork_layer_structure!r}: give at least two "
                            "positive numbers, the first and the last 1 (e.g. 1, 2, 1)")
        if config.hypernetwork_activation_func not in HYPERNETWORK_ACTIVATIONS:
            problems.append(f"hypernetwork_activation_func={config.hypernetwork_activation_func!r} is not one of: "
                            + ", ".join(HYPERNETWORK_ACTIVATIONS))
        if config.hypernetwork_weight_init not in INITS:
            problems.append(f"hypernetwork_weight_init={config.hypernetwork_weight_init!r} is not one of: "
                            + ", ".join(INITS))
        dropout = default_dropout(len(structure), config.hypernetwork_use_dropout,
                                  config.hypernetwork_last_layer_dropout)
        if config.hypernetwork_use_dropout and str(config.hypernetwork_dropout_structure).strip():
            dropout = parse_numbers(config.hypernetwork_dropout_structure, "hypernetwork_dropout_structure")
            if (len(dropout) != len(structure) or dropout[0] != 0 or dropout[-1] != 0
                    or not all(0 <= d < 1 for d in dropout)):
                problems.append(f"hypernetwork_dropout_structure={config.hypernetwork_dropout_structure!r}: one "
                                f"number per layer structure entry ({len(structure)}), each from 0 to below 1, "
                                "the first and the last 0 (e.g. 0, 0.05, 0)")
        sizes = self._sizes(config.hypernetwork_sizes, problems)
        if config.parsed_network_args():
            problems.append("network_args: a hypernetwork takes none; its options are the hypernetwork_* ones")
        if config.network_weights and not config.network_weights.lower().endswith(".pt"):
            problems.append(f"network_weights {config.network_weights}: a hypernetwork starts from a hypernetwork "
                            ".pt file")
        if problems:
            raise ConfigError("\n".join(problems))
        spec = HypernetworkSpec(structure, config.hypernetwork_activation_func, config.hypernetwork_layer_norm,
                                tuple(dropout), config.hypernetwork_weight_init,
                                config.hypernetwork_activate_output, config.hypernetwork_use_dropout)
        return {"spec": spec, "sizes": sizes}

    @staticmethod
    def _sizes(text: str, problems: list[str]) -> tuple:
        """'context', 'self' and numbers, as given (resolved on a model by `widths`)."""
        sizes = []
        for part in str(text).replace(";", ",").split(","):
            part = part.strip().lower()
            if part in ("context", "self"):
                sizes.append(part)
            elif part.isdigit() and int(part) > 0:
                sizes.append(int(part))
            elif part:
                problems.append(f"hypernetwork_sizes: {part!r} is neither context, self nor a width like 768")
        if not sizes:
            problems.append("hypernetwork_sizes: give context, self or widths like 768, 320")
        return tuple(sizes)

    def widths(self, settings: dict[str, Any], projections: list[TargetLayer]) -> list[int]:
        """The widths a run trains on this model; raises ConfigError for one it does not have."""
        cross, own = model_widths(projections)
        chosen: list[int] = []
        for size in settings["sizes"]:
            for width in cross if size == "context" else own if size == "self" else [size]:
                if width not in cross + own:
                    raise ConfigError(f"hypernetwork_sizes: this model has no attention of width {width} (its "
                                      f"context is {', '.join(map(str, cross))}, its self-attentions "
                                      f"{', '.join(map(str, own))})")
                if width not in chosen:
                    chosen.append(width)
        return chosen

    def adapts_conv(self, settings: dict[str, Any]) -> bool:
        return False

    def trainable_for(self, config, bundle, settings: dict[str, Any]) -> Hypernetwork:
        projections = attention_projections(bundle)
        return Hypernetwork(self.widths(settings, projections), settings["spec"], projections, self, settings)

    def create(self, targets: list[TargetLayer], settings: dict[str, Any]) -> Hypernetwork:
        projections = [target for target in targets if target.name.endswith(("_to_k", "_to_v"))]
        return Hypernetwork(self.widths(settings, projections), settings["spec"], projections, self, settings)

    def parameter_count(self, targets: list[TargetLayer], settings: dict[str, Any]) -> int:
        projections = [target for target in targets if target.name.endswith(("_to_k", "_to_v"))]
        structure = settings["spec"].layer_structure
        total = 0
        for width in self.widths(settings, projections):
            sides = [int(width * s) for s in structure]
            per_module = sum(a * b + b for a, b in zip(sides, sides[1:]))
            if settings["spec"].layer_norm:
                per_module += sum(2 * b for b in sides[1:])
            total += 2 * per_module
        return total

    def file_metadata(self, settings: dict[str, Any]) -> dict[str, str]:
        spec = settings["spec"]
        return {"ss_network_module": MODULE, "ss_network_args": json.dumps(
            {key: str(value) for key, value in asdict(spec).items()})}

    def ui_type_of(self, values: dict[str, Any]) -> str | None:
        return self.label if values.get("network_module") == MODULE else None

    def recognises(self, keys: Iterable) -> bool:
        return any(isinstance(key, int) for key in keys)


def hypernetwork_from_file(path: str, bundle) -> Hypernetwork:
    """The hypernetwork a file holds, on `bundle`'s attentions, ready to attach (for comparing
    files); raises InvalidInput when none of its widths is one of the model's."""
    file = read_hypernetwork_file(path)
    spec = HypernetworkSpec.of_file(file.fields)
    if spec.activation_func not in ACTIVATIONS:
        raise InvalidInput(f"{path}: its activation {spec.activation_func!r} is not one torch has")
    projections = attention_projections(bundle)
    cross, own = model_widths(projections)
    if not set(file.layers) & set(cross + own):
        raise InvalidInput(f"{path}: its widths ({', '.join(map(str, sorted(file.layers)))}) are none of this "
                           f"{bundle.family} model's attention widths ({', '.join(map(str, cross + own))}); "
                           "was it trained on another model family?")
    network = Hypernetwork(sorted(file.layers), spec, projections)
    network.load_file(file, path)
    return network


METHOD = HypernetworkMethod()
