"""What the LyCORIS methods (loha.py, lokr.py, ia3.py, locon.py, oft.py, full.py) share: their
network_args as LyCORIS' `lycoris.kohya` reads them, their `ss_*` metadata as it writes them,
and an adapter base for methods that change the layer's weight by a computed delta.

sd-scripts users type `--network_module lycoris.kohya --network_args "algo=loha" "conv_dim=4"
"conv_alpha=1" "preset=attn-mlp"`; LyCORIS keeps every argument as the string typed and
sd-scripts stores them as JSON in `ss_network_args`, which the WebUI's Lora cards and civitai
show. The records here parse the same names (and refuse unknown ones with what is accepted).

One difference from LyCORIS, by design: 3x3 convolutions are adapted only with conv_dim > 0,
as with networks.lora (LyCORIS falls back to network_dim), so a file never holds layers the
user did not ask for.

Adapters here run as a hook beside the base layer (base.py): the output is base(x) + op(x, dW)
with the layer's own op, which is LyCORIS' `bypass_mode`; the base weight is never modified, so
`bypass_mode` is accepted and recorded but changes nothing. It is refused where LyCORIS' bypass
computes something else than the WebUI applies: OFT/BOFT (oft.py) and DoRA.
"""
from __future__ import annotations

import json
import math
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ConfigError
from ..errors import InvalidInput
from ..formats.kohya_names import TargetLayer
from .base import AdapterModule, Network
from .functional import dora_magnitude, weight_decompose
from .method import NetworkMethod
from .norm import NormModule
from .presets import PRESETS, preset_targets

MODULE = "lycoris.kohya"
TRUE, FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _bool(text: str) -> bool:
    lowered = str(text).strip().lower()
    if lowered in TRUE:
        return True
    if lowered in FALSE:
        return False
    raise ValueError(text)


# Every argument a LyCORIS method here may take: name -> (parser, default). Each method lists
# the ones it supports; LyCORIS' own aliases of use_tucker are read as use_tucker.
ARGUMENTS: dict[str, tuple[Any, Any]] = {
    "conv_dim": (int, None), "conv_alpha": (float, None),
    "dropout": (float, 0.0), "rank_dropout": (float, 0.0), "module_dropout": (float, 0.0),
    "rank_dropout_scale": (_bool, False),
    "preset": (str, "full"), "train_norm": (_bool, False), "use_tucker": (_bool, False), "rs_lora": (_bool, False),
    "bypass_mode": (_bool, False),
    "dora_wd": (_bool, False), "wd_on_output": (_bool, False),
    "factor": (int, -1), "decompose_both": (_bool, False), "full_matrix": (_bool, False),
    "unbalanced_factorization": (_bool, False),
    "train_on_input": (_bool, False),
    "constraint": (float, 0.0), "rescaled": (_bool, False),
}
TUCKER_ALIASES = ("use_cp", "use_conv_cp")
COMMON = ("algo", "conv_dim", "conv_alpha", "dropout", "rank_dropout", "module_dropout", "rank_dropout_scale",
          "preset", "train_norm", "bypass_mode")
# What LyCORIS users may type that LyCORIS itself spells otherwise.
SPELLED_OTHERWISE = {"weight_decompose": "dora_wd", "constrain": "constraint"}


class LycorisMethod(NetworkMethod):
    """A LyCORIS algo: subclasses set algo, label, ui_types, OPTIONS (arguments beyond COMMON)
    and ADAPTER (the AdapterModule class, built as ADAPTER(target, rank, alpha, settings))."""
    module = MODULE
    OPTIONS: tuple[str, ...] = ()
    ADAPTER: type | None = None
    # Whether layers carry a rank (LoHa, LoKr) or not (IA3, full): ranks appear in the metadata.
    RANKED = True

    def __init__(self, module: str | None = None, algo: str | None = "") -> None:
        # The same method under kohya's own module name (networks.loha), which takes no algo.
        if module is not None:
            self.module = module
        if algo != "":
            self.algo = algo

    # --- settings --------------------------------------------------------------------------
    def accepted(self) -> tuple[str, ...]:
        return COMMON + self.OPTIONS

    def settings(self, config) -> dict[str, Any]:
        args = dict(config.parsed_network_args())
        for alias in TUCKER_ALIASES:
            if alias in args and "use_tucker" in self.OPTIONS:
                args.setdefault("use_tucker", args.pop(alias))
        problems = []
        settings: dict[str, Any] = {name: ARGUMENTS[name][1] for name in self.accepted() if name != "algo"}
        settings.update(network_dim=config.network_dim, network_alpha=config.network_alpha,
                        conv_dim=config.conv_dim, conv_alpha=config.conv_alpha,
                        dropout=config.network_dropout, rank_dropout=config.rank_dropout,
                        module_dropout=config.module_dropout)
        given = {}
        for key, value in args.items():
            if key == "algo":
                continue
            if key in SPELLED_OTHERWISE:
                problems.append(f"network_args: {key} is spelled {SPELLED_OTHERWISE[key]} in LyCORIS' network_args "
                                f"({SPELLED_OTHERWISE[key]}={value})")
                continue
            if key not in self.accepted():
                problems.append(f"network_args: {key} is not an option of {self.module}"
                                f"{f' algo={self.algo}' if self.algo else ''} (it takes "
                                f"{', '.join(name for name in self.accepted() if name != 'algo')})")
                continue
            parser = ARGUMENTS[key][0]
            try:
                settings[key] = parser(value)
                given[key] = value
            except ValueError:
                kind = "true or false" if parser is _bool else "a number" if parser in (int, float) else "text"
                problems.append(f"network_args: {key}={value!r} must be {kind}")
        for key in ("dropout", "rank_dropout", "module_dropout"):
            if not 0.0 <= settings[key] < 1.0:
                problems.append(f"{key}={settings[key]} must be at least 0 and below 1")
        if settings["conv_dim"] < 0 or settings["conv_alpha"] < 0:
            problems.append("conv_dim and conv_alpha must not be negative")
        if settings["preset"] not in PRESETS:
            problems.append(f"network_args: preset={settings['preset']!r} is not one of LyCORIS' presets here: "
                            f"{', '.join(PRESETS)}")
        elif PRESETS[settings["preset"]].conv_blocks_only and not self.adapts_conv(settings):
            problems.append(f"network_args: preset={settings['preset']} adapts the conv blocks only: it needs "
                            f"conv_dim > 0{'' if self.algo != 'ia3' else ' and an algo that adapts convolutions'}")
        if settings.get("dora_wd") and settings["bypass_mode"]:
            problems.append("network_args: bypass_mode cannot go with dora_wd (LyCORIS' bypass leaves DoRA's "
                            "normalisation out, the WebUI applies it); leave bypass_mode out")
        problems += self.check(settings)
        if problems:
            raise ConfigError("\n".join(problems))
        settings["network_alpha"] = float(settings["network_alpha"] or settings["network_dim"])
        settings["conv_alpha"] = float(settings["conv_alpha"] or settings["conv_dim"])
        settings["given_args"] = given  # written back to ss_network_args as typed
        return settings

    def check(self, settings: dict[str, Any]) -> list[str]:
        """Problems with this method's own options."""
        return []

    # --- layers ----------------------------------------------------------------------------
    def adapts_conv(self, settings: dict[str, Any]) -> bool:
        return settings["conv_dim"] > 0

    def target_layers(self, bundle, config, settings: dict[str, Any]) -> list[TargetLayer]:
        """The layers LyCORIS' `preset` chooses (presets.py), with the norm layers in them
        when train_norm is set."""
        return preset_targets(bundle, settings["preset"], self.adapts_conv(settings), config.train_unet(),
                              config.train_text_encoder(), norms=settings["train_norm"])

    def layers(self, targets: list[TargetLayer], settings: dict[str, Any]):
        """(target, rank, alpha) of every adapted layer: 3x3 convs only with conv_dim, norm
        layers only with train_norm."""
        for target in targets:
            if target.is_norm:
                if settings["train_norm"]:
                    yield target, 0, 0.0
                continue
            if not self.adapts(target):
                continue
            if target.is_conv3x3:
                if settings["conv_dim"]:
                    yield target, settings["conv_dim"], settings["conv_alpha"]
            else:
                yield target, settings["network_dim"], settings["network_alpha"]

    def adapts(self, target: TargetLayer) -> bool:
        return True

    def create(self, targets: list[TargetLayer], settings: dict[str, Any]) -> Network:
        adapters = [NormModule(target, settings) if target.is_norm else self.ADAPTER(target, rank, alpha, settings)
                    for target, rank, alpha in self.layers(targets, settings)]
        return Network(adapters, self, settings)

    def parameter_count(self, targets: list[TargetLayer], settings: dict[str, Any]) -> int:
        # Built on the meta device: the exact shapes the network will have, no memory used.
        with torch.device("meta"):
            network = self.create(targets, settings)
        return sum(parameter.numel() for parameter in network.parameters())

    # --- files -----------------------------------------------------------------------------
    def file_metadata(self, settings: dict[str, Any]) -> dict[str, str]:
        """As sd-scripts writes a LyCORIS run: the module, the dims, and the network_args
        as typed (with algo and preset always present) in ss_network_args."""
        args = {"algo": self.algo} if self.algo else {}
        args["preset"] = settings["preset"]
        if settings["conv_dim"]:
            args.update(conv_dim=settings["conv_dim"], conv_alpha=settings["conv_alpha"])
        args.update(settings["given_args"])
        if settings.get("dora_wd"):
            # Always said: LyCORIS assumes the output axis when the key is missing, the
            # default here is the WebUI's input axis.
            args["wd_on_output"] = settings["wd_on_output"]
        for key in ("dropout", "rank_dropout", "module_dropout"):
            if settings[key]:
                args[key] = settings[key]
        return {"ss_network_module": self.module, "ss_network_dim": str(settings["network_dim"]),
                "ss_network_alpha": str(settings["network_alpha"]),
                "ss_network_dropout": str(settings["dropout"]),
                "ss_network_args": json.dumps({key: str(value) for key, value in args.items()})}

    def ui_type_of(self, values: dict[str, Any]) -> str | None:
        """The entry whose network_args all appear in the config's (the most specific one:
        "algo=locon dora_wd=True" is DoRA, not LoCon); dims the user changed do not matter."""
        if values.get("network_module") != self.module:
            return None
        current = set(arg_tokens(values.get("network_args")))
        if self.algo and not any(token.replace(" ", "") == f"algo={self.algo}" for token in current):
            return None
        matching = [(len(arg_tokens(chosen.get("network_args"))), label) for label, chosen in self.ui_types.items()
                    if set(arg_tokens(chosen.get("network_args"))) <= current]
        return max(matching)[1] if matching else None

    def recognises(self, keys: Iterable[str]) -> bool:
        suffixes = {key.partition(".")[2] for key in keys}
        return bool(self.ADAPTER.FILE_KEYS & suffixes)


def arg_tokens(args) -> list[str]:
    """network_args as the config holds them (a list) or as the UI's text box shows them
    (one string, space separated) -> ["algo=loha", "conv_dim=4"]."""
    if not args:
        return []
    if isinstance(args, str):
        return args.split()
    return [str(arg).strip() for arg in args]


def rank_scale(alpha: float, rank: int, rs_lora: bool) -> tuple[float, float]:
    """(scale, alpha to store): scale = alpha / rank, or alpha / sqrt(rank) with rs_lora
    (rank-stabilised). The stored alpha is the one that gives that scale as alpha / rank, which
    is what every loader computes."""
    alpha = alpha or rank
    scale = alpha / (math.sqrt(rank) if rs_lora else rank)
    return scale, scale * rank


class WeightDeltaModule(AdapterModule):
    """A layer whose change is a weight delta dW (LoHa, LoKr, full, LoCon), applied
    beside the base layer as op(x, dW), optionally re-normalised by DoRA (`dora_wd`).

    Subclasses create their tensors and implement `weight_delta` (the scaled dW) and
    `file_tensors` / `_load`."""
    FILE_KEYS: frozenset = frozenset()

    def __init__(self, target: TargetLayer, settings: dict[str, Any]) -> None:
        super().__init__(target)
        layer = target.module
        self.is_conv = isinstance(layer, nn.Conv2d)
        if self.is_conv and layer.groups != 1:
            raise ValueError(f"{target.name}: grouped convolutions cannot be adapted")
        self.shape = tuple(layer.weight.shape)
        self.conv = ({"stride": layer.stride, "padding": layer.padding, "dilation": layer.dilation}
                     if self.is_conv else None)
        self.dropout = settings.get("dropout", 0.0)
        self.rank_dropout = settings.get("rank_dropout", 0.0)
        self.rank_dropout_scale = settings.get("rank_dropout_scale", False)
        self.module_dropout = settings.get("module_dropout", 0.0)
        self.dora_on_output = bool(settings.get("wd_on_output", False))
        if settings.get("dora_wd"):
            self.dora_scale = nn.Parameter(dora_magnitude(layer.weight.detach().float(), self.dora_on_output))
        else:
            self.dora_scale = None

    def weight_delta(self) -> torch.Tensor:
        """The scaled dW in the layer's weight shape, before DoRA and dropout."""
        raise NotImplementedError

    def delta_weight(self) -> torch.Tensor:
        delta = self.weight_delta()
        if self.training and self.rank_dropout:
            # As LyCORIS: drop whole output channels of dW, optionally rescaling the rest.
            keep = (torch.rand(delta.shape[0], device=delta.device) > self.rank_dropout).to(delta.dtype)
            if self.rank_dropout_scale:
                keep = keep / keep.mean().clamp(min=1e-8)
            delta = delta * keep.view(-1, *(1,) * (delta.dim() - 1))
        if self.dora_scale is not None:
            weight = self.base_layer.weight.detach().to(delta.dtype)
            delta = weight_decompose(weight, delta, self.dora_scale.to(delta.dtype), self.dora_on_output)
        return delta

    def delta_output(self, x: torch.Tensor) -> torch.Tensor | None:
        if self.training and self.module_dropout and torch.rand(()) < self.module_dropout:
            return None
        delta = self.delta_weight().to(x.dtype)
        if self.conv is None:
            out = F.linear(x, delta)
        else:
            out = F.conv2d(x, delta, **self.conv)
        if self.training and self.dropout:
            out = F.dropout(out, p=self.dropout)
        return out

    def file_tensors(self) -> dict[str, torch.Tensor]:
        tensors = self._file_tensors()
        if self.dora_scale is not None:
            tensors["dora_scale"] = self.dora_scale
        return tensors

    def _file_tensors(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def load_file_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        own = self.file_tensors()
        missing = [key for key in own if key not in tensors and key != "alpha"]
        if missing or set(tensors) - set(own):
            raise InvalidInput(f"{self.kohya_name}: the file has {', '.join(sorted(tensors))}, this network "
                               f"{', '.join(sorted(own))}; use the method and options the file was trained with")
        with torch.no_grad():
            for key, tensor in tensors.items():
                target = own[key]
                if key == "alpha":
                    self._load_alpha(float(tensor))
                    continue
                if tensor.shape != target.shape:
                    raise InvalidInput(f"{self.kohya_name}.{key}: the file has shape {list(tensor.shape)}, this "
                                       f"network {list(target.shape)}; use the dims and factor the file was "
                                       "trained with")
                target.copy_(tensor)

    def _load_alpha(self, alpha: float) -> None:
        """Methods with a rank take the file's alpha (scale = alpha / rank)."""
