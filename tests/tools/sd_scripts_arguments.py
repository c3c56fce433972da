"""Regenerate lib_trainer/sd_scripts_args.txt from a checkout of kohya-ss/sd-scripts.

    python tests/tools/sd_scripts_arguments.py /path/to/sd-scripts <commit> > lib_trainer/sd_scripts_args.txt

It builds the argument parsers of train_network.py, sdxl_train_network.py and
train_textual_inversion.py and writes each argument's name, kind and scripts. Only the
parsers are built; packages sd-scripts imports that are not installed here are replaced by
empty stand-ins, since building a parser never calls them.
"""
from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from unittest import mock

SCRIPTS = {"N": "train_network", "X": "sdxl_train_network", "T": "train_textual_inversion"}


# What sd-scripts imports at the top of its modules that this project's venv does not have.
MISSING = {"torchvision", "voluptuous", "imagesize", "bitsandbytes", "wandb", "prodigyopt", "lion_pytorch",
           "dadaptation", "schedulefree", "timm", "sentencepiece", "ftfy", "rich", "easygui", "altair"}


class _StandIns(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """The MISSING packages as empty mocks."""

    def find_spec(self, name, path, target=None):
        if name.split(".")[0] not in MISSING:
            return None
        return importlib.machinery.ModuleSpec(name, self, is_package=True)

    def create_module(self, spec):
        module = mock.MagicMock(name=spec.name)
        module.__path__, module.__spec__, module.__name__ = [], spec, spec.name
        return module

    def exec_module(self, module):
        pass


def kind(action) -> str:
    if action.nargs == 0:
        return "flag"
    name = getattr(action.type, "__name__", "str") if action.type else "str"
    name = {"Path": "str"}.get(name, name)
    return f"{name}*" if action.nargs in ("*", "+") else name


def main(folder: str, commit: str) -> None:
    import diffusers.loaders.single_file_model  # noqa: F401 - before the stand-ins, which it would find
    import transformers

    # Removed in transformers 5; sd-scripts still imports it.
    setattr(sys.modules["transformers"], "CLIPFeatureExtractor", transformers.CLIPImageProcessor)
    sys.meta_path.insert(0, _StandIns())
    sys.path.insert(0, folder)
    os.chdir(folder)
    found: dict[str, tuple[str, set[str]]] = {}
    for letter, script in SCRIPTS.items():
        parser = __import__(script).setup_parser()
        for action in parser._actions:
            if action.dest == "help":
                continue
            found.setdefault(action.dest, (kind(action), set()))[1].add(letter)
    print(f"# sd-scripts' command-line arguments, from kohya-ss/sd-scripts {commit}: name, kind (flag = store_true;")
    print("# a * = a list), scripts (N train_network.py, X sdxl_train_network.py, T train_textual_inversion.py).")
    print("# Regenerate: python tests/tools/sd_scripts_arguments.py /path/to/sd-scripts <commit> > this file")
    for name in sorted(found):
        print(name, found[name][0], "".join(sorted(found[name][1])))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
