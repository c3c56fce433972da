"""`python -m lib_trainer options`: every training option, its default and sd-scripts' name."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--markdown", action="store_true",
                        help="the full table in Markdown (meaning, default, sd-scripts' name, where ours differs), "
                             "as the README's 'Every option' section holds it")
    parser.add_argument("--update-readme", metavar="README", default=None,
                        help="replace the table between the README's option-table markers with the current one")


def run(args: argparse.Namespace) -> int:
    from ..fileio import write_text_atomic
    from ..option_table import markdown_table, plain_table, with_table

    if args.update_readme:
        with open(args.update_readme, encoding="utf-8") as handle:
            write_text_atomic(args.update_readme, with_table(handle.read()))
        print(f"option table updated in {args.update_readme}")
        return 0
    print(markdown_table() if args.markdown else plain_table(), end="")
    return 0
