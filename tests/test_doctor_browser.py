"""The "Check dataset" panel in a real browser (the fixtures of test_ui_browser.py): the
findings of a folder, the step planner's Apply filling the Train form without renaming the
folders, and the findings count in the Train sub-tab's plan."""
from __future__ import annotations

import os

from lib_trainer.config import TrainConfig
from lib_trainer.dataset.doctor.planner import propose
from test_ui_browser import browser, field, fill, page, server  # noqa: F401  (fixtures)


def test_check_a_dataset_plan_its_steps_and_apply_them_to_the_form(page, server):  # noqa: F811
    page.click("#lt_tabs button:has-text('Dataset')")
    fill(page, "lt_doc_folder", server["dataset"])
    fill(page, "lt_doc_resolution", 64)
    fill(page, "lt_doc_target", "100-200")
    page.click("#lt_doc_run")
    table = page.wait_for_selector("#lt_doc_findings .lt-doctor")
    assert table.get_attribute("data-problems") == "1"  # 4 images: too few
    assert "few images" in table.inner_text() and "10_ltdemo ball" in table.inner_text()
    page.wait_for_function("document.querySelector('#lt_doc_plan textarea').value.includes('steps per epoch')")
    page.click("#lt_doc_apply")
    page.wait_for_selector("#lt_doc_message:has-text('The Train form is filled in')")
    assert sorted(os.listdir(server["dataset"])) == ["10_ltdemo ball"]  # not renamed: the box was not ticked
    page.click("#lt_tabs button:has-text('Train')")
    expected = propose(TrainConfig().replace(train_data_dir=server["dataset"], resolution="64"), (100, 200))
    assert int(float(field(page, "lt_cfg_max_train_epochs").input_value())) == expected.epochs
    assert int(float(field(page, "lt_cfg_save_every_n_epochs").input_value())) == expected.save_every_n_epochs
    assert field(page, "lt_cfg_train_data_dir").input_value() == server["dataset"]
    fill(page, "lt_cfg_trigger_word", "ltdemo")
    page.click("#lt_check")
    page.wait_for_function("document.querySelector('#lt_plan textarea').value.includes('Dataset doctor: 1 problems')")
