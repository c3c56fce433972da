"""The shared base of every network method.

An `AdapterModule` adapts one layer of the base model (an nn.Linear or nn.Conv2d). It is
attached with a forward hook that sees the layer's input and output (and can read its
weight), so the base layer itself is never replaced or modified, and detaching is removing
the hook. Most methods add a delta to the output; IA3 scales it and DoRA re-normalises the
merged weight, which is why the hook hands over both.
A `Network` is the `Trainable` of every LoRA-family method: it holds the adapters of a run,
attaches and detaches them together, gives the optimizer its parameter groups, and turns its
weights into the file's key/tensor dict.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import InvalidInput
from ..formats.kohya_names import TargetLayer
from ..formats.lora_file import load_lora, save_lora
from .trainable import Trainable


class AdapterModule(nn.Module):
    """One adapted layer. Subclasses create their tensors and compute the output delta."""
    up_parameters: tuple[str, ...] = ()  # the "up" side that LoRA+ trains faster (kohya: lora_up)

    def __init__(self, target: TargetLayer, multiplier: float = 1.0) -> None:
        super().__init__()
        self.kohya_name = target.name
        self.component = target.component
        self.multiplier = multiplier
        # A list, not an attribute: the base layer must not become a submodule, or its
        # weights would end up in our state dict and parameters.
        self._base = [target.module]
        self._handle = None

    @property
    def base_layer(self) -> nn.Module:
        return self._base[0]

    def attach(self) -> None:
        if self._handle is None:
            self._handle = self.base_layer.register_forward_hook(self._add_delta)

    def detach(self) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _add_delta(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        if self.multiplier == 0:
            return output
        return self.adapt(inputs[0], output)

    def adapt(self, x: torch.Tensor, base_output: torch.Tensor) -> torch.Tensor:
        """The adapted layer's output, from its input and what the base layer gave for it.
        Additive methods only implement `delta_output`."""
        delta = self.delta_output(x)
        if delta is None:
            return base_output
        return base_output + (delta * self.multiplier).to(base_output.dtype)

    def delta_output(self, x: torch.Tensor) -> torch.Tensor | None:
        """What this adapter adds to the base layer's output for input x (None: nothing)."""
        raise NotImplementedError

    def delta_weight(self) -> torch.Tensor:
        """The same change as a weight delta (for merging and checks)."""
        raise NotImplementedError

    def file_tensors(self) -> dict[str, torch.Tensor]:
        """Key suffix -> tensor, as this method's files store them."""
        raise NotImplementedError

    def load_file_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError


class Network(Trainable):
    kind = "network"

    def __init__(self, adapters: list[AdapterModule], method, settings: dict) -> None:
        super().__init__()
        self.adapters = nn.ModuleDict({a.kohya_name: a for a in adapters})
        self.method = method          # the NetworkMethod record that built it
        self.settings = settings      # what the method was built with (dim, alpha, conv_dim...)
        self.kind = method.label
        # Set by methods that have them (networks.lora): kohya name -> (block, lr weight) of the
        # UNet layers when block lr weights are given; part -> LoRA+ ratio of the up weights.
        self.lr_weights: dict[str, tuple[int, float]] = {}
        self.plus_ratios: dict[str, float] = {}

    def attach(self, bundle=None) -> None:
        for adapter in self.adapters.values():
            adapter.attach()

    def detach(self) -> None:
        for adapter in self.adapters.values():
            adapter.detach()

    def set_multipliers(self, text_encoder: float, unet: float) -> None:
        """How strongly the network applies to each part (the WebUI's `<lora:name:te:unet>`)."""
        for adapter in self.adapters.values():
            adapter.multiplier = text_encoder if adapter.component == "text_encoder" else unet

    def parameter_groups(self, unet_lr: float, text_encoder_lr: float) -> list[dict]:
        """One group per part; with block lr weights one per UNet block, and with LoRA+ the up
        weights of each in a group of their own (kohya's `prepare_optimizer_params`). Each group
        keeps its factor on the part's lr (`lr_factor`), so a resumed run with another lr keeps
        the ratios. Groups of factor 0 are left out, and their weights frozen, as in kohya."""
        groups: dict[tuple, dict] = {}
        for component, lr in (("unet", unet_lr), ("text_encoder", text_encoder_lr)):
            ratio = self.plus_ratios.get(component)
            for adapter in self.adapters.values():
                if adapter.component != component:
                    continue
                block = self.lr_weights.get(adapter.kohya_name)
                for name, parameter in adapter.named_parameters():
                    plus = ratio is not None and name in adapter.up_parameters
                    factor = (1.0 if block is None else block[1]) * (ratio if plus else 1.0)
                    label = component + ("" if block is None else f"_block{block[0]}") + (" plus" if plus else "")
                    group = groups.setdefault(label, {"params": [], "lr": lr * factor, "name": component,
                                                      "lr_factor": factor, "label": label})
                    group["params"].append(parameter)
        for group in groups.values():
            if group["lr_factor"] == 0:
                for parameter in group["params"]:
                    parameter.requires_grad_(False)
        return [group for group in groups.values() if group["lr_factor"] != 0]

    def conditioned(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for adapter in self.adapters.values():
            counts[adapter.component] = counts.get(adapter.component, 0) + 1
        return counts

    def file_metadata(self) -> dict[str, str]:
        return self.method.file_metadata(self.settings)

    def write_file(self, path: str, metadata: dict[str, str], dtype: torch.dtype | None) -> None:
        save_lora(path, self.file_state_dict(dtype), metadata)

    def load_weights(self, path: str) -> None:
        if path.lower().endswith(".pt"):
            raise InvalidInput(f"network_weights {path}: a .pt file is a hypernetwork (network_module hypernetwork); "
                               f"a {self.method.label} starts from a .safetensors file")
        state = load_lora(path)
        if not state:
            raise InvalidInput(f"network_weights {path}: the file holds no tensors")
        unmatched = self.load_file_state_dict(state)
        if len(unmatched) == len(state):
            raise InvalidInput(f"network_weights {path}: none of its keys is a layer of this network "
                               f"(e.g. {unmatched[0]}); is it a {self.method.label} file of this model family?")
        if unmatched:
            raise InvalidInput(f"network_weights {path}: {len(unmatched)} keys match no layer of this network "
                               f"(e.g. {unmatched[0]}); was it trained on another model family or with other settings?")

    def file_state_dict(self, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        state = {}
        for name, adapter in self.adapters.items():
            for suffix, tensor in adapter.file_tensors().items():
                tensor = tensor.detach().to("cpu")
                # Flags (IA3's on_input) stay integers; only weights take the save precision.
                if dtype is not None and tensor.is_floating_point():
                    tensor = tensor.to(dtype)
                state[f"{name}.{suffix}"] = tensor.contiguous()
        return state

    def load_file_state_dict(self, state: dict[str, torch.Tensor]) -> list[str]:
        """Load weights saved by `file_state_dict`; returns the file's keys that matched no adapter."""
        by_adapter: dict[str, dict[str, torch.Tensor]] = {}
        unmatched = []
        for key, tensor in state.items():
            name, _, suffix = key.partition(".")
            if name in self.adapters:
                by_adapter.setdefault(name, {})[suffix] = tensor
            else:
                unmatched.append(key)
        for name, tensors in by_adapter.items():
            self.adapters[name].load_file_tensors(tensors)
        return unmatched
