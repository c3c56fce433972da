"""The LoRA Train page in a real browser: Debian's chromium driven by Playwright, against
`python -m lib_trainer ui` on a free port with the tiny model.

Skipped, with the reason, only where chromium or playwright is missing; .ci/run installs
both, so CI runs these.
"""
from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from lib_trainer.demo_data import TRIGGER, make_demo_dataset
from lib_trainer.formats.lora_file import load_lora

CHROMIUM = os.environ.get("LIB_TRAINER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 300_000  # the machine may be shared: be patient, not flaky

if not os.path.exists(CHROMIUM) and not shutil.which("chromium"):
    pytest.skip(f"chromium is not installed at {CHROMIUM} (apt-get install chromium; .ci/run does)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed "
                               "(pip install -r requirements-dev.txt)")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("ui")
    port = free_port()
    log = open(root / "server.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "lib_trainer", "ui", "--port", str(port), "--model", "tiny:sd1",
         "--state-dir", str(root / "state"), "--output-dir", str(root / "out")],
        stdout=log, stderr=subprocess.STDOUT, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    while True:
        try:
            urllib.request.urlopen(url, timeout=5)
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail("the UI server did not start:\n" + (root / "server.log").read_text())
            time.sleep(0.5)
    yield {"url": url, "root": root, "dataset": make_demo_dataset(str(root / "dataset"), count=4, size=64)}
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        executable = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
        # CI preloads tcmalloc for training speed; the browser keeps its own allocator.
        env = {key: value for key, value in os.environ.items() if key != "LD_PRELOAD"}
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, env=env)
        yield launched
        launched.close()


@pytest.fixture
def page(browser, server):
    page = browser.new_page(viewport={"width": 1280, "height": 1800})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server["url"])
    page.wait_for_selector("#lt_start")
    yield page
    page.close()


# --- helpers: how a person uses the page ---------------------------------------------------
def field(page, elem_id):
    return page.locator(f"#{elem_id} :is(textarea, input)").first


def fill(page, elem_id, value) -> None:
    """Type a value and leave the field, as a person does (Gradio reads it on change/blur)."""
    box = field(page, elem_id)
    box.fill(str(value))
    box.press("Tab")


def open_accordion(page, elem_id) -> None:
    page.click(f"#{elem_id} .label-wrap")


def fill_beginner_form(page, server, name: str, epochs: int) -> None:
    fill(page, "lt_cfg_train_data_dir", server["dataset"])
    page.wait_for_selector("#lt_dataset_info:has-text('10 repeats')")  # repeats read from 10_ltdemo ball
    fill(page, "lt_cfg_trigger_word", TRIGGER)
    fill(page, "lt_cfg_output_name", name)
    fill(page, "lt_cfg_network_dim", 4)
    fill(page, "lt_cfg_network_alpha", 4)
    fill(page, "lt_cfg_max_train_epochs", epochs)
    # Small pictures and a high learning rate, so a run takes seconds on a CPU.
    open_accordion(page, "lt_expert")
    open_accordion(page, "lt_group_dataset")
    open_accordion(page, "lt_group_optimizer")
    open_accordion(page, "lt_group_training")
    fill(page, "lt_cfg_resolution", 64)
    fill(page, "lt_cfg_min_bucket_reso", 64)
    fill(page, "lt_cfg_max_bucket_reso", 128)
    fill(page, "lt_cfg_learning_rate", 0.001)
    fill(page, "lt_cfg_train_batch_size", 4)


def progress(page) -> dict:
    box = page.locator("#lt_progress .lt-progress")
    return {key: box.get_attribute(f"data-{key}") for key in ("phase", "step", "total")}


def wait_for(page, condition, what: str, timeout_s: float = TIMEOUT_MS / 1000):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        page.wait_for_timeout(250)
    pytest.fail(f"timed out waiting for {what}; progress: {progress(page)}; "
                f"message: {page.inner_text('#lt_train_message')}; log: {field(page, 'lt_log').input_value()}")


def chart_steps(page) -> int:
    label = page.locator("#lt_loss_plot").inner_text()
    match = re.search(r"Loss \((\d+) steps\)", label)
    return int(match.group(1)) if match else -1


# --- tests ---------------------------------------------------------------------------------
def test_a_bad_dataset_folder_shows_its_error_in_the_page(page, server):
    fill(page, "lt_cfg_train_data_dir", str(server["root"] / "no such folder"))
    page.click("#lt_start")
    error = page.wait_for_selector("#lt_train_message .lt-error")
    assert "does not exist" in error.inner_text()
    assert "Traceback" not in page.inner_text("#lib_trainer_tab")
    assert "queue is empty" in page.inner_text("#lt_queue_table")


def test_train_from_the_beginner_form(page, server):
    fill_beginner_form(page, server, "browser", epochs=1)
    page.click("#lt_check")
    page.wait_for_selector("#lt_train_message .lt-ok:has-text('10 steps')")
    assert "max_train_epochs=1 sets the length: 1 epochs x 10 steps = 10 steps" in field(page, "lt_plan").input_value()

    page.click("#lt_start")
    # Live progress: the step counter and the loss chart move while it trains.
    wait_for(page, lambda: progress(page)["phase"] in ("training", "done") and int(progress(page)["step"]) > 0,
             "the first steps")
    wait_for(page, lambda: chart_steps(page) > 0, "the loss chart")
    wait_for(page, lambda: progress(page)["phase"] == "done", "the end of training")
    assert progress(page)["step"] == progress(page)["total"] == "10"
    assert wait_for(page, lambda: chart_steps(page) == 10, "the chart's last point")
    text = page.inner_text("#lt_progress")
    assert "step 10/10" in text and "loss" in text and "it/s" in text
    path = page.inner_text("#lt_progress .lt-result").strip()
    assert path.endswith("browser.safetensors") and os.path.isfile(path)
    assert load_lora(path)
    assert path in field(page, "lt_files").input_value()


def test_stop_mid_run_leaves_a_loadable_step_file(page, server):
    fill_beginner_form(page, server, "stopped", epochs=100)
    page.click("#lt_start")
    wait_for(page, lambda: progress(page)["phase"] == "training" and int(progress(page)["step"]) >= 2,
             "a few steps")
    page.click("#lt_stop")
    page.wait_for_selector("#lt_train_message .lt-ok:has-text('Stopping')")
    wait_for(page, lambda: progress(page)["phase"] == "stopped", "the stop")
    path = page.inner_text("#lt_progress .lt-result").strip()
    assert re.search(r"stopped-step\d+\.safetensors$", path), path
    assert os.path.isfile(path) and load_lora(path)
    assert not os.path.exists(os.path.join(os.path.dirname(path), "stopped.safetensors"))

    # Resume: the same run goes on from the state its stop saved, not from step 0.
    stopped_at = int(re.search(r"step(\d+)\.safetensors$", path).group(1))
    wait_for(page, lambda: "Resume continues it" in page.inner_text("#lt_queue_table"), "the Resume hint")
    choose_run(page, "stopped")
    page.click("#lt_queue_resume")
    page.wait_for_selector(f"#lt_queue_message .lt-ok:has-text('resumes from stopped-step{stopped_at:08d}-state')")
    wait_for(page, lambda: "resumed from" in field(page, "lt_log").input_value(), "the resumption in the log")
    wait_for(page, lambda: progress(page)["phase"] == "training" and int(progress(page)["step"]) > stopped_at,
             "steps after the resumption")
    page.click("#lt_stop")
    wait_for(page, lambda: progress(page)["phase"] == "stopped", "the second stop")


def queue_names(page) -> list[str]:
    # Read in one go: counting the rows, then reading row i, fails when the poll redraws the
    # table in between (a row removed), and waits for a row that is gone.
    return page.eval_on_selector_all(
        "#lt_queue_table tbody tr", "rows => rows.map(row => (row.querySelectorAll('td')[1] || row).innerText.trim())")


def choose_run(page, label_start: str) -> None:
    field(page, "lt_queue_select").click()
    page.locator("#lt_queue_select li", has_text=label_start).first.click()


def test_queue_two_runs_reorder_and_remove(page, server):
    page.click("#lt_queue_clear")
    wait_for(page, lambda: "stopped" not in queue_names(page) and "browser" not in queue_names(page),
             "finished runs to clear")
    fill_beginner_form(page, server, "first", epochs=1)
    page.click("#lt_enqueue")
    page.wait_for_selector("#lt_train_message .lt-ok:has-text('added to the queue')")
    fill(page, "lt_cfg_output_name", "second")
    page.click("#lt_enqueue")
    page.wait_for_selector("#lt_train_message .lt-ok:has-text('second added')")
    wait_for(page, lambda: queue_names(page) == ["first", "second"], "both runs in the table")

    choose_run(page, "second")
    page.click("#lt_queue_up")
    wait_for(page, lambda: queue_names(page) == ["second", "first"], "second moved up")

    page.reload()  # the queue lives on the server (and on disk), not in the page
    page.wait_for_selector("#lt_start")
    wait_for(page, lambda: queue_names(page) == ["second", "first"], "the queue after a reload")

    choose_run(page, "first")
    page.click("#lt_queue_remove")
    wait_for(page, lambda: queue_names(page) == ["second"], "first removed")
    statuses = page.inner_text("#lt_queue_table")
    assert "waiting" in statuses  # Add to queue does not start training
    choose_run(page, "second")
    page.click("#lt_queue_remove")
    wait_for(page, lambda: "queue is empty" in page.inner_text("#lt_queue_table"), "an empty queue")


def test_compare_a_run_in_a_grid(page, server):
    """The Compare sub-tab: pick the run, make a 2 x 2 grid (base model and the final file, two
    weights) at 64 px in two steps, see it, and a cell's infotext."""
    if not (server["root"] / "out" / "browser.safetensors").is_file():  # run alone: train the run first
        fill_beginner_form(page, server, "browser", epochs=1)
        page.click("#lt_start")
        wait_for(page, lambda: progress(page)["phase"] == "done", "the end of training")
    page.click("#lt_tabs button:has-text('Compare')")
    page.wait_for_selector("#lt_compare_run", state="visible")
    wait_for(page, lambda: field(page, "lt_compare_run").input_value(), "the runs in the output folder")
    field(page, "lt_compare_run").click()
    page.locator("#lt_compare_run li", has_text="browser").first.click()
    # Its files, by epoch with step and loss; and what it trained for: trigger word and class,
    # its 64 px buckets and its base model.
    wait_for(page, lambda: "browser epoch 1 (final), step 10, avg loss" in page.inner_text("#lt_compare_files"),
             "the run's files")
    assert "None (base model)" in page.inner_text("#lt_compare_files")
    assert field(page, "lt_compare_prompts").input_value() == "ltdemo, ball, smile"
    assert field(page, "lt_compare_width").input_value() == "64"
    assert field(page, "lt_compare_model").input_value() == "tiny:sd1"
    fill(page, "lt_compare_weights", "0.5,1")
    fill(page, "lt_compare_steps", 2)
    page.click("#lt_compare_make")
    page.wait_for_selector("#lt_compare_message .lt-ok:has-text('Drawing 3 images')")
    # The page polls the grid's progress bar, then gets the grid.
    page.wait_for_selector("#lt_compare_progress .lt-compare-progress[data-total='3']")
    page.wait_for_selector("#lt_compare_message .lt-ok:has-text('2 files x 2 rows')")
    assert page.get_attribute("#lt_compare_progress .lt-compare-progress", "data-phase") == "done"
    page.wait_for_selector("#lt_compare_grid img")
    path = field(page, "lt_compare_path").input_value()
    assert os.path.isfile(path) and os.path.dirname(path) == str(server["root"] / "out" / "compare")
    assert "Traceback" not in page.inner_text("#lib_trainer_tab")

    cells = page.locator("#lt_compare_cells .thumbnail-item")
    wait_for(page, lambda: cells.count() == 4, "the four cells")
    cells.nth(3).click()  # weight 1, the trained file
    wait_for(page, lambda: "<lora:browser:1>" in field(page, "lt_compare_cell_info").input_value(),
             "the cell's infotext")
    assert "Seed: 1" in field(page, "lt_compare_cell_info").input_value()
    page.wait_for_selector("#lt_compare_cell_image img")


# --- another site cannot drive the page's server -------------------------------------------
@pytest.fixture
def other_site():
    """A page on a second origin (another port of this machine), as any site the user opens."""
    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"<html><body>another site</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    site = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Page)
    thread = threading.Thread(target=site.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{site.server_address[1]}/"
    site.shutdown()
    site.server_close()


def save_config_request(server, path: str) -> str:
    """The body of the POST that runs "Save config" with the form's defaults and `path`, built
    from the server's /config as another site's script would build it (gradio 3.41's API)."""
    config = json.load(urllib.request.urlopen(server["url"] + "config", timeout=60))
    components = {c["id"]: c for c in config["components"]}
    by_elem_id = {c["props"].get("elem_id"): c["id"] for c in config["components"]}
    button, path_box = by_elem_id["lt_save_config"], by_elem_id["lt_config_path"]
    index, event = next((i, d) for i, d in enumerate(config["dependencies"]) if button in d["targets"])
    data = [path if i == path_box else components[i]["props"].get("value") for i in event["inputs"]]
    return json.dumps({"fn_index": index, "data": data, "session_hash": "elsewhere"})


POST = """async ([url, body, type]) => {
    try { return (await fetch(url, {method: "POST", headers: {"Content-Type": type}, body})).status; }
    catch (error) { return "failed: " + error; } }"""
WEBSOCKET = """(url) => new Promise((done) => { const socket = new WebSocket(url);
    socket.onopen = () => { socket.close(); done("opened"); }; socket.onerror = () => done("refused"); })"""


def test_another_site_cannot_use_the_server_while_the_page_can(page, browser, server, other_site):
    api = server["url"] + "run/predict"
    own, foreign = server["root"] / "saved-by-the-page.toml", server["root"] / "saved-by-another-site.toml"
    # Control: the very request works from the page's own origin, so what is refused below is a real attack.
    assert page.evaluate(POST, [api, save_config_request(server, str(own)), "application/json"]) == 200
    assert own.is_file()

    elsewhere = browser.new_page()
    try:
        elsewhere.goto(other_site)
        for kind in ("application/json", "text/plain"):  # with a CORS preflight, and a "simple" request
            assert elsewhere.evaluate(POST, [api, save_config_request(server, str(foreign)), kind]) == 403, kind
        assert elsewhere.evaluate(WEBSOCKET, server["url"].replace("http", "ws") + "queue/join") == "refused"
        assert elsewhere.evaluate("async (url) => { try { return (await fetch(url)).status; } "
                                  "catch (error) { return 'failed'; } }", server["url"] + "config") == 403
    finally:
        elsewhere.close()
    assert not foreign.exists()

    # ...and the page itself still works over its websocket queue.
    path = server["root"] / "saved-by-clicking.toml"
    open_accordion(page, "lt_config_files")
    fill(page, "lt_config_path", str(path))
    page.click("#lt_save_config")
    page.wait_for_selector(f"#lt_train_message .lt-ok:has-text('Config saved to {path}')")
    assert path.is_file()
