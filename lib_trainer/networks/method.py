"""The record every network method fills in; the registry (registry.py) lists them.

A method is known by the names sd-scripts users type: `--network_module networks.lora`, or
`--network_module lycoris.kohya --network_args "algo=loha"`, so the registry is keyed by
(module, algo). A record turns the config into the method's settings (and says what is wrong
with them), chooses the layers it adapts, builds the network, counts its parameters for the
memory estimate, writes its `ss_network_*` metadata, offers its entries in the UI's network
type list, and recognises its own keys in a file.
"""
from __future__ import annotations

from typing import Any, Iterable

from ..formats.kohya_names import TargetLayer


class NetworkMethod:
    module: str = ""          # --network_module, stored as ss_network_module
    algo: str | None = None   # LyCORIS' algo= network argument; None for kohya's own modules
    label: str = ""
    # Entries of the UI's network type list -> the config values each one sets.
    ui_types: dict[str, dict[str, Any]] = {}

    @property
    def key(self) -> tuple[str, str | None]:
        return self.module, self.algo

    def settings(self, config) -> dict[str, Any]:
        """The method's settings from the config and its network_args; raises ConfigError
        naming each bad or unknown value."""
        raise NotImplementedError

    def adapts_conv(self, settings: dict[str, Any]) -> bool:
        """Whether the 3x3 convolutions (and the ResNet blocks around them) are adapted."""
        raise NotImplementedError

    def create(self, targets: list[TargetLayer], settings: dict[str, Any]):
        """The network (a Trainable) on these layers."""
        raise NotImplementedError

    def target_layers(self, bundle, config, settings: dict[str, Any]) -> list[TargetLayer]:
        """The layers of `bundle` a run of this config adapts (LyCORIS' presets choose others)."""
        return bundle.target_layers(include_conv=self.adapts_conv(settings), train_unet=config.train_unet(),
                                    train_text_encoder=config.train_text_encoder())

    def trainable_for(self, config, bundle, settings: dict[str, Any]):
        """What a run of this method trains on `bundle`: the network on the layers the config
        chooses. A kind that adapts no layers (an embedding, a hypernetwork) overrides this."""
        return self.create(self.target_layers(bundle, config, settings), settings)

    def parameter_count(self, targets: list[TargetLayer], settings: dict[str, Any]) -> int:
        raise NotImplementedError

    def parameters_on(self, config, bundle, settings: dict[str, Any]) -> int:
        """The parameters a run of this method trains on `bundle`: on the layers it adapts."""
        return self.parameter_count(self.target_layers(bundle, config, settings), settings)

    def file_metadata(self, settings: dict[str, Any]) -> dict[str, str]:
        """ss_network_module, ss_network_dim, ss_network_alpha, ss_network_args."""
        raise NotImplementedError

    def ui_type_of(self, values: dict[str, Any]) -> str | None:
        """Which of this method's UI entries a config's values are, or None."""
        raise NotImplementedError

    def recognises(self, keys: Iterable[str]) -> bool:
        """Whether a file with these tensor keys holds this method's weights."""
        raise NotImplementedError

    def from_file(self, targets: list[TargetLayer], state: dict, file_config) -> tuple[Any, list[str]]:
        """(the network a file describes, on the layers of `targets` its keys name, with its
        weights loaded; the file's keys that matched no layer): what the comparison applies.
        `file_config` holds the network options its metadata records; a method whose files
        say their own ranks (LoRA) may read them from the tensors instead."""
        settings = self.settings(file_config)
        names = {key.partition(".")[0] for key in state}
        network = self.create([target for target in targets if target.name in names], settings)
        return network, network.load_file_state_dict(state)
