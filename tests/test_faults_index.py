"""The fault suite: one case (or more) per item of the hostile-user issue, each asserting the
message, the exit status where there is one, and that no user file changed. The index below is
kept true by the test at the end: every test it names exists.

item -> tests (file::test)
1  same-origin / DNS rebinding / --auth: test_same_origin.py::test_requests_from_another_site_are_refused,
   test_same_origin.py::test_another_host_name_is_refused_against_dns_rebinding, test_same_origin.py::
   test_auth_asks_for_gradios_login; in the browser: test_ui_browser.py::
   test_another_site_cannot_use_the_server_while_the_page_can
   install.py keeps the installed packages: test_optional_packages.py::
   test_install_py_installs_only_missing_packages_with_the_webui_packages_pinned (also bitsandbytes only with CUDA)
2  captions in other encodings: test_faults_encodings.py (all of it)
3  one backup per edit, restore: test_faults_captions.py::test_two_edits_in_the_same_instant_keep_two_backups,
   test_faults_captions.py::test_restore_puts_a_backup_back_and_backs_up_what_it_replaces
4  output folder checked, rescue folder: test_faults_output.py (all of it)
5  an interrupted run's config beside its own file: test_resume.py::test_a_stopped_run_says_how_to_resume
6  one run per output name: test_output_guard.py::
   test_a_second_run_with_the_same_output_is_refused_and_a_dead_ones_lock_is_taken_over,
   test_output_guard.py::test_the_queue_refuses_two_runs_writing_the_same_files
7  SIGTERM/SIGHUP/Ctrl-C, second signal: test_signals.py::test_a_signal_stops_the_cli_run_after_its_step_and_saves,
   test_signals.py::test_a_signal_stops_the_servers_run_saves_it_and_closes_the_server,
   test_signals.py::test_a_second_signal_closes_the_server_at_once_and_the_run_stays_first_in_the_queue
8  stale .tmp files: test_output_guard.py::test_stale_partial_files_of_this_name_are_removed_and_said
9-13 pictures: test_faults_images.py (all of it)
14 messages: test_faults_messages.py (all of it); checkpoints: test_broken_checkpoints.py::
   test_random_and_empty_files_are_checkpoint_errors_as_model_and_as_vae; a JSON list: test_config_import.py::
   test_config_files_that_are_not_a_table_or_not_json_say_so
15-17 options and config files: test_faults_config.py (all of it)
WebUI tab (emphasis NaN, the NaN message, base-model field and Check, resolution, WD14 download hint):
   test_faults_webui.py (all of it)
"""
from __future__ import annotations

import ast
import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))


def test_every_test_the_index_names_exists():
    named = re.findall(r"(test_\w+\.py)::\s*(test_\w+)", " ".join(__doc__.split()))
    whole = set(re.findall(r"(test_faults_\w+\.py) \(all of it\)", __doc__))
    assert len(named) >= 15 and len(whole) >= 6
    for file_name in {name for name, _ in named} | whole:
        assert os.path.isfile(os.path.join(HERE, file_name)), file_name
    for file_name, test_name in named:
        with open(os.path.join(HERE, file_name), encoding="utf-8") as handle:
            tree = ast.parse(handle.read())
        defined = {node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
        assert test_name in defined, f"{file_name}::{test_name}"
