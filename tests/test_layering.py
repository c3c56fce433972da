"""The layers of DESIGN.md, read from the imports of every library module (nothing is run):
only lib_trainer/webui/ imports the WebUI's `modules`; hosts/ does not import train/;
preprocess/ imports no host; train/ takes hosts only through their public entry points
(`hosts` itself: load_bundle, meta_bundle) and the bundle interface (hosts/bundle.py)."""
from __future__ import annotations

import ast
import fnmatch
import os

import pytest

ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib_trainer")


def imported_modules(path: str) -> set[str]:
    """Absolute names of what a module imports, at the top or inside functions."""
    package = os.path.relpath(os.path.dirname(path), os.path.dirname(ROOT)).replace(os.sep, ".")
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read(), path)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from ..hosts import a1111`
    return names


def library_modules(folder: str = "") -> list[str]:
    found = []
    for directory, _, files in os.walk(os.path.join(ROOT, folder)):
        found += [os.path.join(directory, name) for name in files if name.endswith(".py")]
    return sorted(found)


def where(path: str) -> str:
    return os.path.relpath(path, ROOT).split(os.sep)[0]


def test_only_the_webui_package_imports_the_webuis_modules():
    offenders = [os.path.relpath(path, ROOT) for path in library_modules() if where(path) != "webui"
                 and any(name == "modules" or name.startswith("modules.") for name in imported_modules(path))]
    assert offenders == []


@pytest.mark.parametrize("layer, forbidden, allowed", [
    ("hosts", ("lib_trainer.train", "lib_trainer.webui", "lib_trainer.jobs", "lib_trainer.ui"), ()),
    ("preprocess", ("lib_trainer.hosts", "lib_trainer.webui", "lib_trainer.train"), ()),
    ("train", ("lib_trainer.hosts", "lib_trainer.webui"),
     ("lib_trainer.hosts", "lib_trainer.hosts.load_bundle", "lib_trainer.hosts.meta_bundle",
      "lib_trainer.hosts.bundle", "lib_trainer.hosts.bundle.*")),
])
def test_layers_import_only_what_lies_below_them(layer, forbidden, allowed):
    offenders = {}
    for path in library_modules(layer):
        bad = sorted(name for name in imported_modules(path) if name.startswith(forbidden)
                     and not any(fnmatch.fnmatchcase(name, pattern) for pattern in allowed))
        if bad:
            offenders[os.path.relpath(path, ROOT)] = bad
    assert offenders == {}
