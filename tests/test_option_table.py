"""The README's "Every option" table is the one `python -m lib_trainer options --markdown`
generates (regenerate it with `python -m lib_trainer options --update-readme README.md`), and
its sd-scripts column follows sd-scripts' own argument list."""
from __future__ import annotations

import os

from lib_trainer.__main__ import main
from lib_trainer.option_table import markdown_table, readme_block, with_table

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def test_the_readme_table_is_current():
    with open(README, encoding="utf-8") as handle:
        block = readme_block(handle.read())
    assert block == markdown_table(), ("README.md's option table is out of date: run "
                                       "python -m lib_trainer options --update-readme README.md")


def rows() -> dict[str, list[str]]:
    table = {}
    for line in markdown_table().splitlines():
        cells = [cell.strip() for cell in line.strip("|").split(" | ")]
        if line.startswith("| `"):
            table[cells[0].strip("`")] = cells
    return table


def test_the_sd_scripts_column_names_kohyas_equivalent_or_none():
    table = rows()
    assert table["network_dim"][4] == "`network_dim`"
    assert table["trigger_word"][4] == "—" and table["device"][4] == "—"  # ours only
    assert table["conv_dim"][4] == "`network_args` conv_dim="  # sd-scripts takes it in network_args
    assert table["token_string"][4] == "`token_string` (train_textual_inversion.py)"
    assert table["resume"][5].startswith("a state folder this trainer saved")  # where ours differs
    assert "| `blocks_to_swap` | swaps transformer blocks to the CPU" in markdown_table()  # out of scope, with why


def test_update_readme_rewrites_only_the_table(tmp_path, capsys):
    readme = tmp_path / "README.md"
    text = open(README, encoding="utf-8").read()
    start = text.index("<!-- option table: start")
    readme.write_text(text[:start] + text[start:].replace("| `vae` |", "| `vae_old` |", 1), encoding="utf-8")
    assert main(["options", "--update-readme", str(readme)]) == 0
    assert readme.read_text(encoding="utf-8") == with_table(text) == text
