"""The table of every TrainConfig option (README "Every option", `python -m lib_trainer
options --markdown`): its meaning, default, sd-scripts' equivalent and where ours differs,
all from the fields' metadata and sd-scripts' argument list, so it stays current."""
from __future__ import annotations

import dataclasses
from dataclasses import fields

from .config import TrainConfig
from .config_export import NETWORK_ARGS_FIELDS, kohya_name
from .sd_scripts_args import OUT_OF_SCOPE, OUT_OF_SCOPE_WHY, SCRIPT_NAMES, TEXTUAL_INVERSION, sd_scripts_arguments

START, END = "<!-- option table: start (python -m lib_trainer options --markdown) -->", "<!-- option table: end -->"


def kohya_equivalent(spec: dataclasses.Field) -> str:
    """sd-scripts' name for the option, with the script when only textual inversion has it; "—": ours only."""
    if spec.name in NETWORK_ARGS_FIELDS:
        return f"`network_args` {spec.name}="
    argument = sd_scripts_arguments().get(kohya_name(spec))
    if argument is None:
        return "—"
    if argument.for_networks:
        return f"`{kohya_name(spec)}`"
    if TEXTUAL_INVERSION in argument.scripts:
        return f"`{kohya_name(spec)}` ({SCRIPT_NAMES[TEXTUAL_INVERSION]})"
    return "—"


def _default_text(spec: dataclasses.Field) -> str:
    default = spec.default_factory() if spec.default_factory is not dataclasses.MISSING else spec.default
    if default is None:
        return "(not set)"
    if default == "" or default == []:
        return "(empty)"
    return f"`{default}`"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def option_rows() -> list[tuple[str, str, str, str, str]]:
    rows = []
    for spec in fields(TrainConfig):
        if spec.metadata["group"] == "meta":
            continue
        differs = spec.metadata.get("differs") or ""
        rows.append((f"`{spec.name}`", spec.metadata["group"], _cell(spec.metadata["help"]), _default_text(spec),
                     kohya_equivalent(spec), _cell(differs)))
    return rows


def markdown_table() -> str:
    lines = ["| option | group | meaning | default | sd-scripts | ours differs |", "|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in option_rows()]
    lines += ["", f"Out of scope: {OUT_OF_SCOPE_WHY} (and the kohya_ss GUI's switches for them). An imported "
              "file that sets one is told so.", "",
              "| sd-scripts option | why it is not here |", "|---|---|"]
    lines += [f"| `{name}` | {_cell(why)} |" for name, why in OUT_OF_SCOPE.items()]
    return "\n".join(lines) + "\n"


def plain_table() -> str:
    width = max(len(spec.name) for spec in fields(TrainConfig))
    return "\n".join(f"{row[0].strip('`'):<{width}}  {row[3].strip('`'):<14}  {row[4].replace('`', '')}"
                     for row in option_rows()) + "\n"


def readme_block(readme: str) -> str:
    """The generated part of a README's text (between the markers), as it stands."""
    start, end = readme.index(START) + len(START), readme.index(END)
    return readme[start:end].strip("\n") + "\n"


def with_table(readme: str) -> str:
    """The README's text with the generated block replaced by the current table."""
    start, end = readme.index(START) + len(START), readme.index(END)
    return readme[:start] + "\n" + markdown_table() + readme[end:]
