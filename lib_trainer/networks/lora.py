"""LoRA (kohya `networks.lora`), and LoCon when convolutions are adapted too.

output = base(x) + multiplier * scale * up(down(x)), scale = alpha / rank.
`down` is initialised like a Linear layer (Kaiming-uniform), `up` with zeros, so a fresh
network leaves the model's output unchanged. Files store `lora_down.weight`,
`lora_up.weight` and `alpha` per layer, as kohya does. An alpha of 0 means "alpha = rank"
(scale 1), and the file stores the alpha used, as kohya does: loaders read alpha 0 as scale 0.
"""
from __future__ import annotations

import json
import math

import torch
from torch import nn

from typing import Any, Iterable

from ..config import ConfigError
from ..errors import InvalidInput
from ..formats.kohya_names import TargetLayer
from .base import AdapterModule, Network
from .blocks import BLOCK_ARGS, block_index, block_ranks, check_block_args, is_sdxl_layout, lr_weights
from .functional import lora_delta_weight, lora_down_forward, lora_scale, lora_up_forward, max_norm_ratio
from .method import NetworkMethod


# LoRA+ (Hayou et al. 2024): the up weights learn `ratio` times faster; kohya's network_args,
# and config fields here.
LORAPLUS_ARGS = ("loraplus_lr_ratio", "loraplus_unet_lr_ratio", "loraplus_text_encoder_lr_ratio")


class LoRAModule(AdapterModule):
    up_parameters = ("up",)

    def __init__(self, target: TargetLayer, rank: int, alpha: float, dropout: float = 0.0,
                 rank_dropout: float = 0.0, module_dropout: float = 0.0) -> None:
        super().__init__(target)
        layer = target.module
        self.is_conv = isinstance(layer, nn.Conv2d)
        if self.is_conv:
            in_features, out_features = layer.in_channels, layer.out_channels
            self.conv = {"stride": layer.stride, "padding": layer.padding, "dilation": layer.dilation}
            if layer.groups != 1:
                raise ValueError(f"{target.name}: grouped convolutions cannot take a LoRA")
            down_shape = (rank, in_features, *layer.kernel_size)
            up_shape = (out_features, rank, 1, 1)
        else:
            in_features, out_features = layer.in_features, layer.out_features
            self.conv = None
            down_shape, up_shape = (rank, in_features), (out_features, rank)
        self.rank = rank
        self.alpha = float(alpha or rank)
        self.scale = lora_scale(alpha, rank)
        self.down = nn.Parameter(torch.empty(down_shape))
        self.up = nn.Parameter(torch.zeros(up_shape))
        nn.init.kaiming_uniform_(self.down, a=math.sqrt(5))
        self.dropout, self.rank_dropout, self.module_dropout = dropout, rank_dropout, module_dropout

    def delta_output(self, x: torch.Tensor) -> torch.Tensor | None:
        if self.training and self.module_dropout and torch.rand(()) < self.module_dropout:
            return None
        hidden = lora_down_forward(x, self.down.to(x.dtype), self.conv)
        scale = self.scale
        if self.training and self.dropout:
            hidden = nn.functional.dropout(hidden, p=self.dropout)
        if self.training and self.rank_dropout:
            # Drop whole ranks per sample; scale the rest so the expected update is unchanged.
            if self.is_conv:  # (B, r, H, W)
                shape = (hidden.shape[0], self.rank, 1, 1)
            else:  # (B, r) or (B, tokens, r)
                shape = (hidden.shape[0],) + (1,) * (hidden.dim() - 2) + (self.rank,)
            keep = (torch.rand(shape, device=hidden.device) > self.rank_dropout).to(hidden.dtype)
            hidden = hidden * keep
            scale = scale / (1.0 - self.rank_dropout)
        return lora_up_forward(hidden, self.up.to(hidden.dtype), self.is_conv) * scale

    def delta_weight(self) -> torch.Tensor:
        return lora_delta_weight(self.up, self.down, self.scale)

    def scale_to_max_norm(self, max_norm: float) -> tuple[bool, float]:
        """Scale up and down alike so that the norm of the weight delta is at most max_norm
        (kohya's `apply_max_norm_regularization`); returns (scaled, the norm now)."""
        with torch.no_grad():
            norm = float(self.delta_weight().float().norm())
            ratio = max_norm_ratio(norm, max_norm)
            if ratio != 1.0:
                self.up.mul_(ratio ** 0.5)
                self.down.mul_(ratio ** 0.5)
        return ratio != 1.0, norm * ratio

    def file_tensors(self) -> dict[str, torch.Tensor]:
        return {"lora_down.weight": self.down, "lora_up.weight": self.up, "alpha": torch.tensor(self.alpha)}

    def load_file_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        down, up = tensors["lora_down.weight"], tensors["lora_up.weight"]
        if down.shape != self.down.shape or up.shape != self.up.shape:
            raise InvalidInput(f"{self.kohya_name}: file has rank {down.shape[0]}, this network rank {self.rank}; "
                               "use the same network_dim/conv_dim as the file")
        with torch.no_grad():
            self.down.copy_(down)
            self.up.copy_(up)
        if "alpha" in tensors:
            self.alpha = float(tensors["alpha"])
            self.scale = lora_scale(self.alpha, self.rank)


class LoRAMethod(NetworkMethod):
    """kohya's networks.lora; LoCon when conv_dim > 0 (the ResNet 3x3 convolutions too)."""
    module = "networks.lora"
    label = "LoRA"
    # network_args is emptied: a LyCORIS type chosen before leaves its algo= there.
    ui_types = {"LoRA": {"network_module": "networks.lora", "network_args": "", "conv_dim": 0},
                "LoCon": {"network_module": "networks.lora", "network_args": "", "conv_dim": 8, "conv_alpha": 4.0}}
    # network_args kohya's networks.lora takes that this method supports, and their types.
    ARGS = {"conv_dim": int, "conv_alpha": float, "rank_dropout": float, "module_dropout": float,
            "dropout": float, **{key: float for key in LORAPLUS_ARGS}, **{key: str for key in BLOCK_ARGS}}

    def settings(self, config) -> dict[str, Any]:
        settings = {
            "network_dim": config.network_dim, "network_alpha": config.network_alpha,
            "conv_dim": config.conv_dim, "conv_alpha": config.conv_alpha,
            "network_dropout": config.network_dropout, "rank_dropout": config.rank_dropout,
            "module_dropout": config.module_dropout,
            **{key: getattr(config, key) for key in LORAPLUS_ARGS}, "blocks": {},
        }
        # kohya spells these as --network_args "conv_dim=4"; they override the fields.
        problems = []
        settings["given_args"] = sorted(config.parsed_network_args())
        for key, value in config.parsed_network_args().items():
            if key not in self.ARGS:
                problems.append(f"network_args: {key} is not an option of {self.module} "
                                f"(it takes {', '.join(self.ARGS)})")
                continue
            if key in BLOCK_ARGS:  # read once the model's layout is known (blocks.py)
                settings["blocks"][key] = value
                continue
            try:
                settings["network_dropout" if key == "dropout" else key] = self.ARGS[key](value)
            except ValueError:
                problems.append(f"network_args: {key}={value!r} must be a number")
        problems += check_block_args(settings["blocks"])
        for key in LORAPLUS_ARGS:
            if settings[key] is not None and settings[key] < 0:
                problems.append(f"{key}={settings[key]} must not be negative")
        for key in ("network_dropout", "rank_dropout", "module_dropout"):
            if not 0.0 <= settings[key] < 1.0:
                problems.append(f"{key}={settings[key]} must be at least 0 and below 1")
        if settings["conv_dim"] < 0 or settings["conv_alpha"] < 0:
            problems.append("conv_dim and conv_alpha must not be negative")
        if problems:
            raise ConfigError("\n".join(problems))
        # alpha 0 (or unset) trains at scale 1; the file must say so with alpha = dim.
        settings["network_alpha"] = float(settings["network_alpha"] or settings["network_dim"])
        settings["conv_alpha"] = float(settings["conv_alpha"] or settings["conv_dim"])
        return settings

    def adapts_conv(self, settings: dict[str, Any]) -> bool:
        return settings["conv_dim"] > 0 or "conv_block_dims" in settings.get("blocks", {})

    def create(self, targets: list[TargetLayer], settings: dict[str, Any]) -> Network:
        return self._network([(target, rank, alpha) for target, rank, alpha in self._ranks(targets, settings)],
                             settings)

    def trainable_for(self, config, bundle, settings: dict[str, Any]):
        if not config.dim_from_weights:
            return super().trainable_for(config, bundle, settings)
        # kohya's create_network_from_weights: the layers the file has, each with its rank and
        # alpha; the loop then loads the weights themselves.
        from ..formats.lora_file import load_lora

        state = load_lora(config.network_weights)
        targets = bundle.target_layers(include_conv=True, train_unet=config.train_unet(),
                                       train_text_encoder=config.train_text_encoder())
        layers = []
        for target in targets:
            down, alpha = state.get(f"{target.name}.lora_down.weight"), state.get(f"{target.name}.alpha")
            if down is not None:
                layers.append((target, down.shape[0], float(alpha) if alpha is not None else down.shape[0]))
        if not layers:
            raise InvalidInput(f"dim_from_weights: {config.network_weights} has no LoRA layer of this model "
                               "(lora_down.weight keys of its layers)")
        return self._network(layers, settings)

    def _network(self, layers: list[tuple[TargetLayer, int, float]], settings: dict[str, Any]) -> Network:
        """The network of these (layer, rank, alpha), with its block lr weights and LoRA+ ratios."""
        adapters = [LoRAModule(target, rank, alpha, settings["network_dropout"], settings["rank_dropout"],
                               settings["module_dropout"]) for target, rank, alpha in layers]
        network = Network(adapters, self, settings)
        unet = [adapter.kohya_name for adapter in adapters if adapter.component == "unet"]
        sdxl = is_sdxl_layout(unet)
        weights = lr_weights(settings.get("blocks", {}), sdxl) if unet else None
        if weights is not None:
            network.lr_weights = {name: (block_index(name, sdxl), weights[block_index(name, sdxl)]) for name in unet}
        # kohya: the part's own ratio, else loraplus_lr_ratio (0 counts as not set there too)
        for part, key in (("unet", "loraplus_unet_lr_ratio"), ("text_encoder", "loraplus_text_encoder_lr_ratio")):
            ratio = settings.get(key) or settings.get("loraplus_lr_ratio")
            if ratio is not None:
                network.plus_ratios[part] = ratio
        return network

    def parameter_count(self, targets: list[TargetLayer], settings: dict[str, Any]) -> int:
        total = 0
        for target, rank, _ in self._ranks(targets, settings):
            layer = target.module
            if isinstance(layer, nn.Conv2d):
                kernel = layer.kernel_size[0] * layer.kernel_size[1]
                total += rank * (layer.in_channels * kernel + layer.out_channels)
            else:
                total += rank * (layer.in_features + layer.out_features)
        return total

    def file_metadata(self, settings: dict[str, Any]) -> dict[str, str]:
        args = dict(settings.get("blocks", {}))  # as given, as kohya records its network_args
        for key in LORAPLUS_ARGS:  # ss_network_args: the ratios given as network_args
            if key in settings.get("given_args", ()):
                args[key] = settings[key]
        if settings["conv_dim"]:
            args.update(conv_dim=settings["conv_dim"], conv_alpha=settings["conv_alpha"])
        for key in ("rank_dropout", "module_dropout"):
            if settings[key]:
                args[key] = settings[key]
        return {"ss_network_module": self.module, "ss_network_dim": str(settings["network_dim"]),
                "ss_network_alpha": str(settings["network_alpha"]),
                "ss_network_dropout": str(settings["network_dropout"]),
                "ss_network_args": json.dumps({key: str(value) for key, value in args.items()})}

    def ui_type_of(self, values: dict[str, Any]) -> str | None:
        if values.get("network_module", self.module) != self.module:
            return None
        try:
            return "LoCon" if int(values.get("conv_dim") or 0) > 0 else "LoRA"
        except (TypeError, ValueError):
            return "LoRA"

    def recognises(self, keys: Iterable[str]) -> bool:
        return any(key.endswith(".lora_down.weight") for key in keys)

    def from_file(self, targets: list[TargetLayer], state: dict, file_config=None) -> tuple[Network, list[str]]:
        """Each layer with the rank and alpha the file has for it (kohya's files may differ
        per layer, and files of other tools carry no metadata)."""
        by_name = {target.name: target for target in targets}
        adapters, used = [], set()
        for key, down in state.items():
            name, _, suffix = key.partition(".")
            if suffix != "lora_down.weight" or name not in by_name or f"{name}.lora_up.weight" not in state:
                continue
            alpha = state.get(f"{name}.alpha")
            adapter = LoRAModule(by_name[name], down.shape[0], float(alpha) if alpha is not None else down.shape[0])
            adapter.load_file_tensors({suffix: state[f"{name}.{suffix}"] for suffix in
                                       ("lora_down.weight", "lora_up.weight", "alpha") if f"{name}.{suffix}" in state})
            adapters.append(adapter)
            used.update(f"{name}.{suffix}" for suffix in ("lora_down.weight", "lora_up.weight", "alpha"))
        return Network(adapters, self, {}), sorted(set(state) - used)

    @staticmethod
    def _ranks(targets: list[TargetLayer], settings: dict[str, Any]):
        """(target, rank, alpha) of every adapted layer: 3x3 convs only with conv_dim; with
        block ranks or block lrs, the UNet layer's block decides (rank 0: no adapter)."""
        unet = [target.name for target in targets if target.component == "unet"]
        sdxl = is_sdxl_layout(unet)
        ranks = block_ranks(settings.get("blocks", {}), sdxl, settings["network_dim"], settings["network_alpha"],
                            settings["conv_dim"], settings["conv_alpha"]) if unet else None
        for target in targets:
            if ranks is not None and target.component == "unet":
                index = block_index(target.name, sdxl)  # kohya's -1 (no block) reads the last one
                kind = "conv_" if target.is_conv3x3 else ""
                if ranks[f"{kind}dims"] is not None and ranks[f"{kind}dims"][index]:
                    yield target, ranks[f"{kind}dims"][index], ranks[f"{kind}alphas"][index]
                continue
            if target.is_conv3x3:
                if settings["conv_dim"]:
                    yield target, settings["conv_dim"], settings["conv_alpha"]
            else:
                yield target, settings["network_dim"], settings["network_alpha"]


METHOD = LoRAMethod()
