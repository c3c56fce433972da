"""The step planner lands in the asked range as the trainer counts it, saves 6-10 files, and
renames folders only when told to; the doctor command's messages and exit codes."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from helpers_draw import draw_scene
from lib_trainer.dataset.doctor.planner import (apply_renames, files_saved, parse_step_range, propose)
from lib_trainer.dataset.plan import make_plan
from lib_trainer.errors import InvalidInput
from test_doctor import clean_folder, config_for, folder_hashes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def two_concepts(root: str) -> str:
    """20 square pictures of one concept, 5 wide ones of another with other repeats."""
    clean_folder(root, count=20)
    other = os.path.join(root, "3_sks style")
    os.makedirs(other)
    for index in range(5):
        draw_scene(200 + index, (192, 64)).save(os.path.join(other, f"wide{index}.png"))
        with open(os.path.join(other, f"wide{index}.txt"), "w") as handle:
            handle.write(f"sks, wide{index}")
    return root


@pytest.mark.parametrize("batch, accumulation, target", [(1, 1, (1500, 3000)), (2, 1, (1500, 3000)),
                                                         (3, 2, (400, 600)), (4, 1, (3000, 5000))])
def test_the_proposal_gives_the_range_with_the_trainers_own_count(tmp_path, batch, accumulation, target):
    root = two_concepts(str(tmp_path))
    config = config_for(root, train_batch_size=batch, gradient_accumulation_steps=accumulation)
    proposal = propose(config, target)
    assert proposal.in_range and target[0] <= proposal.total_steps <= target[1]
    assert 6 <= proposal.files <= 10 and proposal.files == files_saved(proposal.epochs, proposal.save_every_n_epochs)
    before = folder_hashes(root)
    apply_renames(proposal)
    # The folders now carry the repeats; the trainer's plan of the form it fills counts the same steps.
    trained = make_plan(config.replace(**proposal.config_changes()))
    assert trained.total_steps == proposal.total_steps and trained.epochs == proposal.epochs
    renamed = dict(proposal.renames())
    concepts = {os.path.basename(c.folder): c.repeats for c in trained.training_set.scan.concepts}
    assert concepts == {os.path.basename(renamed.get(f, f)): r for f, r in proposal.repeats.items()}
    assert all(name.startswith(f"{repeats}_") for name, repeats in concepts.items())
    # renaming moved folders, it changed no file
    assert sorted(before.values()) == sorted(folder_hashes(root).values())


def test_concepts_get_similar_shares_and_a_fixed_epoch_count_is_kept(tmp_path):
    root = two_concepts(str(tmp_path))
    proposal = propose(config_for(root), epochs=10)
    assert proposal.epochs == 10 and proposal.in_range
    counts = {os.path.basename(f): r for f, r in proposal.repeats.items()}
    assert counts["10_sks dog"] * 20 == counts["3_sks style"] * 5  # 20 x r == 5 x 4r


def test_proposing_changes_no_folder_and_an_unreachable_target_says_so(tmp_path):
    root = two_concepts(str(tmp_path))
    before = folder_hashes(root)
    proposal = propose(config_for(root), (10, 20))
    assert folder_hashes(root) == before and sorted(os.listdir(root)) == ["10_sks dog", "3_sks style"]
    assert not proposal.in_range and "closest" in proposal.summary()


def test_step_ranges_are_read_or_refused():
    assert parse_step_range("1500-3000") == (1500, 3000) and parse_step_range("2000") == (2000, 2000)
    for bad in ("3000-1500", "lots", "0-10"):
        with pytest.raises(InvalidInput, match="target steps"):
            parse_step_range(bad)


# --- the command ----------------------------------------------------------------------------
def doctor(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lib_trainer", "doctor", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


def test_the_command_exits_3_on_problems_and_0_on_a_clean_folder(tmp_path):
    clean = clean_folder(str(tmp_path / "clean"))
    done = doctor(os.path.dirname(clean), "--resolution", "128")
    assert done.returncode == 0, done.stderr
    assert "0 problems, 0 worth a look" in done.stdout and "--target-steps" in done.stdout
    bad = clean_folder(str(tmp_path / "bad"), count=4)
    done = doctor(os.path.dirname(bad), "--resolution", "256")
    assert done.returncode == 3
    assert "[problem] upscaled" in done.stdout and "[problem] few images" in done.stdout
    assert "-> use a source of at least 256x256" in done.stdout


def test_the_command_plans_renames_on_apply_only_and_reports_errors(tmp_path):
    root = two_concepts(str(tmp_path / "data"))
    done = doctor(root, "--resolution", "128", "--target-steps", "1500-3000", "--batch", "2")
    assert done.returncode == 3 and "[problem] few images: 3_sks style has 5 images" in done.stdout
    assert "Step plan:" in done.stdout and "run again with --apply" in done.stdout
    assert sorted(os.listdir(root)) == ["10_sks dog", "3_sks style"]
    done = doctor(root, "--resolution", "128", "--target-steps", "1500-3000", "--batch", "2", "--apply")
    assert done.returncode == 3 and "renamed" in done.stdout
    assert sorted(os.listdir(root)) != ["10_sks dog", "3_sks style"]
    missing = doctor(str(tmp_path / "nowhere"))
    assert missing.returncode == 1 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr
    wrong = doctor(root, "--target-steps", "many")
    assert wrong.returncode == 1 and "write a range like 1500-3000" in wrong.stderr


def test_the_command_saves_the_report_and_sets_duplicates_aside_when_asked(tmp_path):
    folder = clean_folder(str(tmp_path / "data"))
    draw_scene(3).save(os.path.join(folder, "again.png"))
    root = os.path.dirname(folder)
    out = str(tmp_path / "reports")
    os.makedirs(out)
    done = doctor(root, "--resolution", "128", "--save-report", out)
    assert done.returncode == 3 and os.path.isfile(os.path.join(out, "dataset_doctor.json"))
    assert os.path.isfile(os.path.join(folder, "again.png"))
    done = doctor(root, "--resolution", "128", "--set-aside")
    assert done.returncode == 0 and "set aside" in done.stdout
    assert os.path.isfile(os.path.join(folder, "_set_aside", "img03.png")) != os.path.isfile(
        os.path.join(folder, "_set_aside", "again.png"))


def test_the_doctor_benchmark_prints_its_throughput_against_decoding():
    done = subprocess.run([sys.executable, "-m", "lib_trainer", "bench", "--doctor", "12"], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "doctor on 12 drawn pictures" in done.stdout and "decode each picture (floor)" in done.stdout
    assert "images/s" in done.stdout and "x floor" in done.stdout
