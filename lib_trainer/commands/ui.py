"""`python -m lib_trainer ui`: the LoRA Train page in the browser, without the WebUI.

Serves the same Gradio UI as the WebUI tab. Training runs in a background thread of
this process, one queued run after another; the queue is kept in
<state-dir>/queue.json, so it survives a restart (it then waits for "Run queue").

Ctrl-C, SIGTERM or SIGHUP stops the running run after its step (it saves name-stepN and its
state, and Resume continues it), waits for that, closes the server and exits with 0; a second
Ctrl-C or SIGTERM exits at once (see `serve_until_signal`).
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import warnings

from ..jobs.queue import RUNNING
from ..stop_signals import StopOnSignals, exit_status, say, signal_name

DEFAULT_STATE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "lib_trainer", "ui")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 opens it to "
                             "the network, without any login unless --auth is given)")
    parser.add_argument("--auth", default=os.environ.get("LIB_TRAINER_UI_AUTH"), metavar="USER:PASSWORD",
                        type=user_and_password,
                        help="ask for this user name and password (gradio's login page); other users of this "
                             "machine can see it in the process list: $LIB_TRAINER_UI_AUTH works too")
    parser.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                        help="another name the server is reached by (a DNS name, a proxy); requests for names "
                             "it does not know are refused, against DNS rebinding (repeatable)")
    parser.add_argument("--port", type=int, default=7870, help="port (default 7870)")
    parser.add_argument("--model", default="tiny:sd1",
                        help="base model the form starts with: a checkpoint file, a diffusers folder or tiny:sd1")
    parser.add_argument("--output-dir", default="output", help="output folder the form starts with")
    parser.add_argument("--state-dir", default=os.environ.get("LIB_TRAINER_UI_STATE", DEFAULT_STATE_DIR),
                        help=f"where the queue is kept (default {DEFAULT_STATE_DIR}, or $LIB_TRAINER_UI_STATE)")
    parser.add_argument("--config", default=None, help="a config file (TOML/JSON) to fill the form with")
    parser.add_argument("--run-queue", action="store_true",
                        help="start training the waiting runs at once, as the Run queue button does (after a restart "
                             "the queue otherwise waits for it)")


def user_and_password(text: str) -> tuple[str, str]:
    user, _, password = text.partition(":")
    if not user or not password:
        raise argparse.ArgumentTypeError("give --auth as USER:PASSWORD")
    return user, password


def exposure_warning(host: str, auth) -> str:
    """What to say when the page is served beyond this machine without a login."""
    from ..ui.same_origin import is_loopback

    return "" if is_loopback(host) or auth else NO_LOGIN_WARNING.format(host=host)


NO_LOGIN_WARNING = (
    "warning: --host {host} opens this page to every machine that can reach this one, and there is no "
    "login: anyone there can start training and read and write files wherever this user can. Add --auth "
    "USER:PASSWORD for a login, and use it only on a network you trust (it is plain HTTP).")


def make_service(state_dir: str):
    from ..jobs import LocalTrainService, TrainQueue
    from ..terminal import TerminalSink

    class ServerService(LocalTrainService):
        def _host_sinks(self, commands):
            return [TerminalSink()]  # the run's progress bar in the server's terminal too

    os.makedirs(state_dir, exist_ok=True)
    return ServerService(TrainQueue(os.path.join(state_dir, "queue.json")))


def run(args: argparse.Namespace) -> int:
    from ..config import TrainConfig
    from ..ui import launch_standalone
    from ..config_import import read_config_file

    defaults = TrainConfig().replace(pretrained_model_name_or_path=args.model, output_dir=args.output_dir)
    if args.config:
        defaults, notes = read_config_file(args.config, defaults)
        for note in notes:
            print(f"note: {args.config}: {note}", file=sys.stderr)
    service = make_service(args.state_dir)
    if service.queue.load_notice:
        print(f"warning: {service.queue.load_notice}", file=sys.stderr)
    if args.model and not args.model.startswith("tiny:") and not os.path.exists(args.model):
        print(f"warning: --model {args.model} does not exist; choose the model in the form", file=sys.stderr)
    # gradio 3.41 builds an empty altair chart for every no-op update of the loss plot.
    warnings.filterwarnings("ignore", message="I don't know how to infer vegalite type")
    print(f"LoRA Train: http://{args.host}:{args.port}/  (queue in {args.state_dir}; Ctrl-C to quit)", flush=True)
    if exposure_warning(args.host, args.auth):
        print(exposure_warning(args.host, args.auth), file=sys.stderr)
    blocks = launch_standalone(service, defaults, args.host, args.port, block=False, auth=args.auth,
                               allow_hosts=tuple(args.allow_host))
    return serve_until_signal(service, blocks, start_queue=args.run_queue)


def serve_until_signal(service, blocks, start_queue: bool = False) -> int:
    """Serve until Ctrl-C, SIGTERM or SIGHUP, then shut down in order: stop the run after its
    step and let it save, close the server, return 0. Waiting for the worker matters: an
    interpreter that exits while the worker thread is inside torch aborts the whole process
    ("terminate called without an active exception", status 134) before anything is saved."""
    quit_requested = threading.Event()
    with StopOnSignals(quit_requested.set, "closing the server (a run going stops after its step and is saved first)",
                       abort=_exit_now):
        if start_queue:
            service.start_queue()
        while not quit_requested.wait(0.5):  # a timeout: on Windows a bare wait() ignores Ctrl-C
            pass
        running = [item.id for item in service.snapshot().items if item.status == RUNNING]
        if service.stop():
            say("waiting for the run to finish its step and save...")
        service.wait()
        for item in (service.queue.get(item_id) for item_id in running):
            say(f"#{item.id} {item.name}: {item.status}" + (f", saved {item.result}" if item.result else "")
                + ("; Resume in the queue continues it" if item.resumable() else ""))
        blocks.close()
    say("server closed")
    return 0


def _exit_now(signum: int) -> None:
    """A second signal: leave now, without waiting for the step. os._exit, because a normal
    exit with the worker inside torch aborts the process (see `serve_until_signal`); the
    queue file already has the run as "running" with its newest state, so the next start
    puts it back first in line, to continue from there."""
    say(f"aborted ({signal_name(signum)}) without waiting for the run: its last steps are not saved; it stays "
        "first in the queue for the next start")
    sys.stdout.flush()
    os._exit(exit_status(signum))
