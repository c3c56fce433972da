"""The "LoRA Train" page: four sub-tabs (Train, Dataset, Tags, Compare) over one `TrainService`.

`build_tab(service, defaults)` returns the `gr.Blocks` that both hosts show: the
standalone server (`launch_standalone`, `python -m lib_trainer ui`) and the
WebUI's `on_ui_tabs` (scripts/lora_train_tab.py). The WebUI loads `style.css` and `javascript/*.js` from the
extension folder by itself; the standalone server passes the same files to Gradio.
"""
from __future__ import annotations

import glob
import os
from typing import Callable

import gradio as gr

from ..config import TrainConfig
from ..jobs.service import TrainService
from ..train.memory import memory_summary
from .compare_tab import CompareTab
from .compat import js_event_kwargs, queue
from .dataset_tab import DatasetTab
from .live_view import LiveView
from .presets import beginner_start
from .tags_tab import TagsTab
from .train_tab import TrainTab

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TAB_ID = "lib_trainer_tab"


def build_tab(service: TrainService, defaults: TrainConfig | None = None, notice: str = "",
              memory: Callable[[TrainConfig], str] = memory_summary, **blocks_kwargs) -> gr.Blocks:
    """`notice`: what the host wants the user to know first (features unavailable there);
    `memory`: the host's memory estimate for a config, shown with the plan."""
    defaults = beginner_start(defaults or TrainConfig())
    with gr.Blocks(analytics_enabled=False, **blocks_kwargs) as blocks:
        with gr.Column(elem_id=TAB_ID):
            if notice:
                gr.Markdown(notice, elem_id="lt_notice")
            with gr.Tabs(elem_id="lt_tabs"):
                with gr.Tab("Train", elem_id="lt_tab_train"):
                    train = TrainTab(service, defaults, memory)
                    train.build()
                    live = LiveView(service)
                    live.build()
                with gr.Tab("Dataset", elem_id="lt_tab_dataset"):
                    dataset = DatasetTab()
                    dataset.build()
                with gr.Tab("Tags", elem_id="lt_tab_tags"):
                    tags = TagsTab()
                    tags.build()
                with gr.Tab("Compare", elem_id="lt_tab_compare") as compare_tab:
                    compare = CompareTab(service, defaults)
                    compare.build()
        train.wire()
        live.wire(blocks)
        dataset.wire(train.form.components)
        tags.wire()
        compare.wire(compare_tab)
    return blocks


def asset_files() -> tuple[str, list[str]]:
    """(style.css, javascript/*.js in name order): what the WebUI loads for an extension."""
    return os.path.join(ROOT, "style.css"), sorted(glob.glob(os.path.join(ROOT, "javascript", "*.js")))


def standalone_blocks(service: TrainService, defaults: TrainConfig | None = None) -> gr.Blocks:
    css_file, scripts = asset_files()
    with open(css_file, encoding="utf-8") as handle:
        css = handle.read()
    notice = f"**The queue was reset:** {service.queue.load_notice}" if service.queue.load_notice else ""
    blocks = build_tab(service, defaults, notice=notice, title="LoRA Train - lib_trainer", css=css)
    code = "\n".join(open(path, encoding="utf-8").read() for path in scripts)
    # The scripts are plain files for the WebUI's <script> tags; here they run once on load.
    with blocks:
        blocks.load(None, None, None, **js_event_kwargs(f"() => {{ {code}\n }}"))
    return queue(blocks, concurrency=4)


def launch_standalone(service: TrainService, defaults: TrainConfig, host: str, port: int,
                      block: bool = True, auth: tuple[str, str] | None = None,
                      allow_hosts: tuple[str, ...] = ()) -> gr.Blocks:
    """Serve the page on host:port. Only the page itself can use the server (same_origin.py);
    `auth`: gradio's login with one (user, password); `allow_hosts`: more names the server is
    reached by, besides those of `host`."""
    from starlette.middleware import Middleware

    from .same_origin import SameOriginOnly, served_hosts

    blocks = standalone_blocks(service, defaults)
    # app_kwargs go to the FastAPI app gradio makes (3.41 and 4.x): a middleware given there is
    # part of the app before it serves its first request.
    guard = Middleware(SameOriginOnly, allowed=served_hosts(host, port, allow_hosts))
    blocks.launch(server_name=host, server_port=port, prevent_thread_lock=not block, show_api=False,
                  inbrowser=False, share=False, quiet=True, auth=auth, app_kwargs={"middleware": [guard]})
    return blocks
