"""The LoRA Train page on whichever gradio is installed: the main suite runs it on gradio 3.41.2
(the WebUI 1.10's), and .ci/run runs this file again in a second environment with Forge's
gradio 4.40 (requirements-gradio4.txt), where only the UI's own dependencies are installed.
So it uses no training: the page loads without script errors, reads a dataset folder, plans a
run with its memory estimate, shows an error in the page, and switches sub-tabs."""
from __future__ import annotations

import gradio

from test_ui_browser import browser, field, fill, page, server  # noqa: F401  (fixtures)


def test_the_page_loads_without_script_errors(browser, server):  # noqa: F811
    tab = browser.new_page()
    errors = []
    tab.on("pageerror", lambda error: errors.append(str(error)))
    tab.goto(server["url"])
    tab.wait_for_selector("#lt_cfg_train_data_dir")
    tab.wait_for_timeout(1000)
    tab.close()
    assert errors == [], f"gradio {gradio.__version__}"


def test_a_dataset_folder_is_read_and_a_run_planned(page, server):  # noqa: F811
    fill(page, "lt_cfg_train_data_dir", server["dataset"])
    page.wait_for_selector("#lt_dataset_info:has-text('10 repeats')")
    page.click("#lt_check")
    page.wait_for_function("document.querySelector('#lt_plan textarea').value.includes('Memory estimate')")
    plan = field(page, "lt_plan").input_value()
    assert "10_ltdemo ball" in plan and "steps" in plan


def test_an_error_is_shown_in_the_page(page, server):  # noqa: F811
    fill(page, "lt_cfg_train_data_dir", str(server["root"] / "no such folder"))
    page.click("#lt_check")
    error = page.wait_for_selector("#lt_train_message .lt-error")
    assert "does not exist" in error.inner_text()


def test_the_dataset_and_tags_sub_tabs_open(page, server):  # noqa: F811
    page.click("#lt_tabs button:has-text('Tags')")
    page.wait_for_selector("#lt_tags_folder", state="visible")
    fill(page, "lt_tags_folder", server["dataset"] + "/10_ltdemo ball")
    page.click("#lt_tags_load")
    page.wait_for_selector("#lt_tags_frequency:has-text('ltdemo')")
    page.click("#lt_tabs button:has-text('Dataset')")
    page.wait_for_selector("#lt_tab_dataset", state="visible")
