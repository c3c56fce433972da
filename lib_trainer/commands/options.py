"""`python -m lib_trainer options`: every training option, its default and sd-scripts' name."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--markdown", action="store_true",
                        help="the full table in Markdown (meaning, default, sd-scripts' name, where ours differs), "
                             "as the README's 'Every option' section holds it")


def run(args: argparse.Namespace) -> int:
    from ..option_table import markdown_table, plain_table

    print(markdown_table() if args.markdown else plain_table(), end="")
    return 0
