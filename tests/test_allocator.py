"""The command line restarts its training commands once with tcmalloc preloaded."""
from __future__ import annotations

from lib_trainer.allocator import SKIP_VARIABLE, restart_command

LIBRARY = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"


def has_library(path: str) -> bool:
    return path == LIBRARY


def test_a_training_command_restarts_with_tcmalloc_once():
    argv, environ = restart_command(["--debug", "train", "--config", "a.toml"], {"PATH": "/bin"}, "linux",
                                    has_library)
    assert argv[1:] == ["-m", "lib_trainer", "--debug", "train", "--config", "a.toml"]
    assert environ["LD_PRELOAD"] == LIBRARY and environ[SKIP_VARIABLE] == "1" and environ["PATH"] == "/bin"
    assert restart_command(["train"], environ, "linux", has_library) is None  # the restarted process goes on


def test_an_existing_preload_is_kept_and_tcmalloc_added():
    _, environ = restart_command(["bench"], {"LD_PRELOAD": "/opt/libother.so"}, "linux", has_library)
    assert environ["LD_PRELOAD"] == f"/opt/libother.so {LIBRARY}"


def test_no_restart_where_it_cannot_or_need_not_help():
    assert restart_command(["tags", "folder"], {}, "linux", has_library) is None  # no training
    assert restart_command(["train"], {}, "win32", has_library) is None
    assert restart_command(["train"], {}, "linux", lambda path: False) is None  # not installed
    assert restart_command(["train"], {"LD_PRELOAD": LIBRARY}, "linux", has_library) is None
    assert restart_command(["train"], {SKIP_VARIABLE: "1"}, "linux", has_library) is None

