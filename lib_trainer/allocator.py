"""tcmalloc for the command line's training processes, as the WebUI's launcher does.

glibc's malloc hands large freed blocks back to the kernel and faults them in again on the
next step; on a CPU that costs a large share of every training step (measured in the
closing figures of issue 16). tcmalloc keeps them. It must be loaded before anything else, so
`python -m lib_trainer train|bench|demo|ui` starts itself again once with LD_PRELOAD naming it,
where Linux has it (Debian/Ubuntu: `apt install libtcmalloc-minimal4`).
LIB_TRAINER_NO_TCMALLOC=1 turns this off; the restarted process has it set, so it never loops.
"""
from __future__ import annotations

import os
import sys
from typing import Callable, Mapping

SKIP_VARIABLE = "LIB_TRAINER_NO_TCMALLOC"
COMMANDS = ("train", "bench", "demo", "ui")
LIBRARY_FOLDERS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib")
LIBRARY_NAMES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")


def find_tcmalloc(exists: Callable[[str], bool] = os.path.exists) -> str | None:
    for folder in LIBRARY_FOLDERS:
        for name in LIBRARY_NAMES:
            if exists(os.path.join(folder, name)):
                return os.path.join(folder, name)
    return None


def restart_command(argv: list[str], environ: Mapping[str, str], platform: str = sys.platform,
                    exists: Callable[[str], bool] = os.path.exists) -> tuple[list[str], dict[str, str]] | None:
    """(argv, environment) to start this command again with tcmalloc preloaded, or None to go on."""
    command = next((word for word in argv if not word.startswith("-")), "")
    if (not platform.startswith("linux") or command not in COMMANDS or environ.get(SKIP_VARIABLE)
            or "tcmalloc" in environ.get("LD_PRELOAD", "")):
        return None
    library = find_tcmalloc(exists)
    if library is None:
        return None
    preload = " ".join(part for part in (environ.get("LD_PRELOAD", ""), library) if part)
    return [sys.executable, "-m", "lib_trainer", *argv], {**environ, "LD_PRELOAD": preload, SKIP_VARIABLE: "1"}


def restart_with_tcmalloc(argv: list[str]) -> None:
    """Replace this process by the same command with tcmalloc, when `restart_command` says so."""
    restart = restart_command(argv, os.environ)
    if restart is not None:
        sys.stdout.flush()
        os.execve(restart[0][0], restart[0], restart[1])


def allocator_in_use() -> str:
    return "tcmalloc" if "tcmalloc" in os.environ.get("LD_PRELOAD", "") else "default (glibc)"
