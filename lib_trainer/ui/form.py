"""The training form, generated from `TrainConfig`'s field metadata.

Each config field gets one component, chosen from its type and metadata (a checkbox for
a bool, a dropdown for choices, a number with its range, a text box otherwise), labelled
with its kohya name and its help text. The beginner view places a few fields by hand;
`build_expert` lays out every other field by group, so a field added to TrainConfig
appears here without any change. `ConfigForm` hands back one `TrainConfig` (or the list
of problems), never a row of positional values.
"""
from __future__ import annotations

import dataclasses
from dataclasses import fields
from typing import Any

import gradio as gr

from ..config import ConfigError, TrainConfig, coerce_values

GROUP_TITLES = {"model": "Model", "dataset": "Dataset", "network": "Network", "optimizer": "Optimizer",
                "training": "Training", "noise": "Noise, timesteps and loss", "sampling": "Samples",
                "validation": "Validation loss",
                "embedding": "Embedding (textual inversion)", "hypernetwork": "Hypernetwork"}
HIDDEN_GROUPS = ("meta",)  # config_version: a file-format detail, not a setting


def elem_id(name: str) -> str:
    return f"lt_cfg_{name}"


def _kind(spec: dataclasses.Field) -> str:
    return str(spec.type).split(" ")[0].split("|")[0].strip()


def _default(spec: dataclasses.Field) -> Any:
    if spec.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return spec.default_factory()  # type: ignore[misc]
    return spec.default


def to_widget_value(spec: dataclasses.Field, value: Any) -> Any:
    """A config value as its component shows it."""
    kind = _kind(spec)
    if kind == "list":
        return " ".join(value or [])
    if value is None:
        return ""
    if spec.metadata.get("choices"):
        return str(value)
    if kind == "float" and "None" in str(spec.type):
        return f"{value:g}"
    return value


def from_widget_value(spec: dataclasses.Field, value: Any) -> Any:
    """A component's value as the config takes it (coerce_values converts types after)."""
    if isinstance(value, str) and not value.strip() and "None" in str(spec.type):
        return None
    if spec.metadata.get("choices") and value is not None:
        for choice in spec.metadata["choices"]:
            if str(choice) == str(value):
                return choice
    if _kind(spec) == "str" and value is None:
        return ""
    return value


def make_component(spec: dataclasses.Field, value: Any = None, info: str | None = None) -> gr.components.Component:
    """One component for one config field; `info`: the host's help instead of the config's."""
    meta, kind = spec.metadata, _kind(spec)
    value = to_widget_value(spec, _default(spec) if value is None else value)
    common = dict(label=spec.name, info=info or meta["help"], elem_id=elem_id(spec.name))
    if kind == "bool":
        return gr.Checkbox(value=bool(value), **common)
    if meta.get("choices"):
        # open choices (optimizer_type): any module.Class path may be typed in too
        custom = {"allow_custom_value": True} if meta.get("open_choices") else {}
        return gr.Dropdown(choices=[str(c) for c in meta["choices"]], value=value, **custom, **common)
    if kind in ("int", "float") and "None" not in str(spec.type):
        return gr.Number(value=value, precision=0 if kind == "int" else None, **common)
    if kind == "float":  # optional number: empty means "not set"
        return gr.Textbox(value=value, placeholder=meta.get("placeholder", "empty: use learning_rate"), max_lines=1,
                          **common)
    if kind == "list":
        return gr.Textbox(value=value, placeholder="key=value key=value", max_lines=1, **common)
    return gr.Textbox(value=value, max_lines=1, placeholder=meta.get("placeholder"), **common)


class ConfigForm:
    """Components by config field name, plus the beginner's network type."""

    def __init__(self) -> None:
        self.specs = {spec.name: spec for spec in fields(TrainConfig)}
        self.components: dict[str, gr.components.Component] = {}
        self.network_type: gr.Dropdown | None = None

    def add(self, name: str, value: Any = None, info: str | None = None) -> gr.components.Component:
        component = make_component(self.specs[name], value, info)
        self.components[name] = component
        return component

    def build_expert(self, defaults: TrainConfig) -> None:
        """Every field not placed yet, in one accordion per group, in TrainConfig's order."""
        groups: dict[str, list[str]] = {}
        for name, spec in self.specs.items():
            group = spec.metadata["group"]
            # ui=False: a command-line action (output_config), not a setting of a run
            if name not in self.components and group not in HIDDEN_GROUPS and spec.metadata.get("ui", True):
                groups.setdefault(group, []).append(name)
        for group, names in groups.items():
            with gr.Accordion(GROUP_TITLES.get(group, group.title()), open=False,
                              elem_id=f"lt_group_{group}"):
                for first in range(0, len(names), 3):
                    with gr.Row():
                        for name in names[first:first + 3]:
                            self.add(name, getattr(defaults, name))

    # --- values in and out -------------------------------------------------------------
    @property
    def inputs(self) -> list[gr.components.Component]:
        return list(self.components.values())

    def values(self, values: list[Any]) -> dict[str, Any]:
        return dict(zip(self.components, values))

    def read(self, values: list[Any], base: TrainConfig | None = None) -> tuple[TrainConfig | None, list[str]]:
        """(config, problems): the config is None when a value cannot be read at all."""
        raw = {name: from_widget_value(self.specs[name], value) for name, value in self.values(values).items()}
        try:
            config = (base or TrainConfig()).replace(**coerce_values(raw, "the form"))
        except ConfigError as error:
            return None, [line.strip(" -") for line in str(error).splitlines()[1:]] or [str(error)]
        return config, config.problems()

    def updates(self, config: TrainConfig, only: set[str] | None = None) -> list[Any]:
        """gr.update()s that show `config`, in `inputs` order; `only` limits which change."""
        return [gr.update(value=to_widget_value(self.specs[name], getattr(config, name)))
                if only is None or name in only else gr.update() for name in self.components]
