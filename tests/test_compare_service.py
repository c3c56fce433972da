"""Grids through the job services: LocalTrainService.compare on the tiny model, "Compare when
done" after a run (and not after a failure or a stop), the queue file's new fields, and the
WebUI service's grid as a WebUI job through a stand-in txt2img."""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import types

import numpy as np
import pytest
from PIL import Image

from conftest import quick_config
from lib_trainer.compare.grid import CompareStopped, GridRequest, read_grid_record
from lib_trainer.compare.runs import run_files
from lib_trainer.errors import InvalidInput
from lib_trainer.jobs import LocalTrainService, TrainQueue
from lib_trainer.progress import Progress
import test_webui_jobs

webui = test_webui_jobs.webui  # the fixture with stand-ins for the WebUI's modules


def request_for(files, **changes):
    settings = dict(files=files, prompts=["ltdemo, ball"], weights=[0.0, 1.0], steps=2, sampler="euler",
                    width=64, height=64, seed=5)
    settings.update(changes)
    return GridRequest(**settings)


def test_local_compare_draws_on_the_base_model_the_run_trained_on(compare_run):
    files = run_files(compare_run["folder"], "cmp")
    service = LocalTrainService(TrainQueue(None))
    messages = []
    grid = service.compare(request_for([None, files[-1]]), Progress([lambda e: messages.append(e.text)]))
    assert "loading tiny:sd1 for the grid" in messages  # from the config saved beside the files
    assert grid.columns == ["None (base model)", "cmp epoch 2 (final)"] and len(grid.cells) == 4
    base, zero, one = (np.asarray(grid.cell(row, column).image) for row, column in ((0, 0), (0, 1), (1, 1)))
    assert np.array_equal(base, zero)  # weight 0 is the base model, bit for bit
    assert not np.array_equal(base, one)  # the trained file changes the picture
    assert "<lora:cmp:1>" in grid.cell(1, 1).infotext
    with pytest.raises(InvalidInput, match="no such file"):
        service.compare(request_for([files[-1]]), Progress(), "/no/such/model.safetensors")


class CopyingTrainer:
    """Stands in for training: "saves" the session's trained run into the output folder (new
    files, so they count as this run's), or fails, or stops."""

    def __init__(self, compare_run, fail=False, stopped=False):
        self.source, self.fail, self.stopped = compare_run["folder"], fail, stopped

    def __call__(self, config, progress):
        if self.fail:
            raise InvalidInput("train_data_dir /nowhere does not exist")
        os.makedirs(config.output_dir, exist_ok=True)
        for name in ("cmp-000001.safetensors", "cmp.safetensors", "cmp.toml"):
            shutil.copyfile(os.path.join(self.source, name), os.path.join(config.output_dir, name))
            if name.endswith(".safetensors"):
                progress.saved(os.path.join(config.output_dir, name))
        final = os.path.join(config.output_dir, "cmp.safetensors")
        return types.SimpleNamespace(final_path=final, stopped_early=self.stopped)


def run_one(tmp_path, compare_run, name, **trainer):
    service = LocalTrainService(TrainQueue(str(tmp_path / f"{name}.json")), CopyingTrainer(compare_run, **trainer))
    service.compare_defaults = dict(steps=1, weights=(1.0,), sampler="euler")
    output = str(tmp_path / name)
    item = service.enqueue(quick_config("/nowhere", output, output_name="cmp"), start=True, compare_when_done=True)
    assert service.wait(300)
    return service, service.queue.get(item.id), output


def test_compare_when_done_makes_the_runs_grid_after_it_ends(tmp_path, compare_run):
    service, item, output = run_one(tmp_path, compare_run, "done")
    assert item.status == "done" and item.grid.startswith(os.path.join(output, "compare", "cmp-"))
    record = read_grid_record(item.grid)
    assert record["columns"] == ["None (base model)", "cmp epoch 1", "cmp epoch 2 (final)"]
    assert record["rows"] == ["weight 1"] and "ltdemo, ball, smile" in record["cells"][1]["prompt"]
    assert any(f"comparison grid saved to {item.grid}" in m for m in service.snapshot().run.messages)
    assert service.snapshot().run.phase == "done"
    assert TrainQueue(str(tmp_path / "done.json")).get(item.id).grid == item.grid  # kept in the queue file


def test_no_grid_after_a_failure_or_a_stop_and_a_failing_grid_leaves_the_run_done(tmp_path, compare_run):
    _, failed, output = run_one(tmp_path, compare_run, "failed", fail=True)
    assert failed.status == "failed" and failed.grid == "" and not os.path.exists(os.path.join(output, "compare"))
    _, stopped, output = run_one(tmp_path, compare_run, "stopped", stopped=True)
    assert stopped.status == "stopped" and stopped.grid == "" and not os.path.exists(os.path.join(output, "compare"))

    service = LocalTrainService(TrainQueue(None), CopyingTrainer(compare_run))
    item = service.enqueue(quick_config("/nowhere", str(tmp_path / "broken"), output_name="cmp",
                                        pretrained_model_name_or_path="/no/such/model.safetensors"),
                           start=True, compare_when_done=True)
    assert service.wait(300)
    done = service.queue.get(item.id)
    assert done.status == "done" and done.error == "" and done.grid == ""
    assert any("compare when done: no grid" in m and "no such file" in m for m in service.snapshot().run.messages)


def test_a_queue_file_from_before_compare_when_done_still_loads(tmp_path):
    path = tmp_path / "queue.json"
    path.write_text(json.dumps({"version": 1, "paused": True, "next_id": 3, "items": [
        {"id": 2, "name": "old", "config": {"output_name": "old"}, "status": "done", "added": 1.0,
         "result": "/o/old.safetensors", "total_steps": 10, "resume_state": ""}]}))
    queue = TrainQueue(str(path))
    old = queue.get(2)
    assert (old.name, old.compare_when_done, old.grid) == ("old", False, "")
    from lib_trainer.config import TrainConfig

    new = queue.add(TrainConfig(output_name="new"), compare_when_done=True)
    assert TrainQueue(str(path)).get(new.id).compare_when_done is True


# --- the WebUI's grid ----------------------------------------------------------------------------
@pytest.fixture
def txt2img(webui, monkeypatch):
    """A stand-in for the WebUI's txt2img: records each prompt and whether the job lock was held."""
    lock = sys.modules["modules.call_queue"].queue_lock
    calls = types.SimpleNamespace(prompts=[], locked=[], interrupt_after=None)

    class Txt2Img:
        def __init__(self, **values):
            self.__dict__.update(values)

        def close(self):
            pass

    def process_images(p):
        calls.prompts.append(p.prompt)
        calls.locked.append(lock.locked())
        if calls.interrupt_after is not None and len(calls.prompts) >= calls.interrupt_after:
            webui.fake.state.interrupted = True
        p.all_prompts, p.all_negative_prompts = [p.prompt], [p.negative_prompt]
        p.all_seeds, p.all_subseeds = [p.seed], [p.seed]
        # As the WebUI 1.10 without scripts: its own infotexts lose the <lora:> tags.
        stripped = re.sub(r"<lora:[^>]+>", "", p.prompt)
        return types.SimpleNamespace(images=[Image.new("RGB", (p.width, p.height), "gray")],
                                     infotexts=[f"{stripped}\nSteps: {p.steps}, Sampler: {p.sampler_name}"])

    def create_infotext(p, all_prompts, all_seeds, all_subseeds, index=None, all_negative_prompts=None, **_):
        return f"{all_prompts[index]}\nSteps: {p.steps}, Sampler: {p.sampler_name}, Seed: {all_seeds[index]}"

    processing = types.SimpleNamespace(StableDiffusionProcessingTxt2Img=Txt2Img, process_images=process_images,
                                       create_infotext=create_infotext)
    monkeypatch.setitem(sys.modules, "modules.processing", processing)
    monkeypatch.setattr(sys.modules["modules"], "processing", processing, raising=False)
    return calls


def test_webui_grid_is_a_webui_job_with_lora_tags(webui, txt2img, compare_run):
    files = run_files(compare_run["folder"], "cmp")
    service = webui.service.WebUITrainService(TrainQueue(None))
    assert service.compares_on_loaded_model
    grid = service.compare(request_for([None, files[-1]], weights=[0.5, 1.0]), Progress())
    assert txt2img.prompts == ["ltdemo, ball", "ltdemo, ball <lora:cmp:0.5>", "ltdemo, ball <lora:cmp:1>"]
    assert all(txt2img.locked)  # generation waits for the grid, as for training
    assert webui.fake.lora.listed >= 1  # the network list was read again first: new files are known
    assert webui.fake.state.begun == ["lib_trainer-compare"] and webui.fake.state.ended == 1
    assert "Sampler: Euler" in grid.cell(1, 1).infotext and grid.image is not None
    assert grid.cell(0, 1).infotext.startswith("ltdemo, ball <lora:cmp:0.5>\n")  # which file and weight
    assert grid.cell(1, 1).infotext.startswith("ltdemo, ball <lora:cmp:1>\n")
    assert not sys.modules["modules.call_queue"].queue_lock.locked()
    with pytest.raises(InvalidInput, match="loaded"):
        service.compare(request_for([files[-1]]), Progress(), "/some/other.safetensors")


def test_webui_interrupt_stops_the_grid_between_images(webui, txt2img, compare_run):
    files = run_files(compare_run["folder"], "cmp")
    service = webui.service.WebUITrainService(TrainQueue(None))
    txt2img.interrupt_after = 2
    with pytest.raises(CompareStopped, match="after 2 of 5"):
        service.compare(request_for([None, *files], weights=[0.5, 1.0]), Progress())
    assert len(txt2img.prompts) == 2 and not sys.modules["modules.call_queue"].queue_lock.locked()
