"""The training queue and the local job service: order, persistence, stop, failures."""
from __future__ import annotations

import json
import os
import time

import pytest

from lib_trainer.config import TrainConfig
from lib_trainer.formats.lora_file import load_lora
from lib_trainer.jobs import LocalTrainService, TrainQueue
from lib_trainer.jobs.queue import QueueError
from lib_trainer.progress import ProgressEvent
from tests.conftest import quick_config


def names(queue: TrainQueue) -> list[str]:
    return [item.name for item in queue.snapshot()]


def config(name: str) -> TrainConfig:
    return TrainConfig().replace(output_name=name, train_data_dir="/nowhere")


def test_queue_moves_only_waiting_items_and_keeps_the_order_on_disk(tmp_path):
    path = str(tmp_path / "queue.json")
    queue = TrainQueue(path)
    a, b, c = (queue.add(config(n)).id for n in "abc")
    queue.move(c, -1)
    assert names(queue) == ["a", "c", "b"]
    queue.move(a, -1)  # already first: no change
    queue.move(a, +5)  # clamped to the end
    assert names(queue) == ["c", "b", "a"]
    queue.remove(b)
    assert names(TrainQueue(path)) == ["c", "a"]  # what a reload or a restart sees
    with pytest.raises(QueueError, match="no queue item"):
        queue.move(b, 1)


def test_running_items_cannot_move_or_be_removed(tmp_path):
    queue = TrainQueue(str(tmp_path / "queue.json"))
    first = queue.add(config("a"))
    queue.add(config("b"))
    queue.set_paused(False)
    assert queue.take_next().id == first.id
    with pytest.raises(QueueError, match="running: stop it first"):
        queue.remove(first.id)
    with pytest.raises(QueueError, match="only waiting runs"):
        queue.move(first.id, 1)


def test_a_restart_puts_the_interrupted_run_back_first_and_waits(tmp_path):
    path = str(tmp_path / "queue.json")
    queue = TrainQueue(path)
    queue.add(config("a"))
    queue.add(config("b"))
    queue.set_paused(False)
    queue.take_next()  # "a" was running when the server died
    reloaded = TrainQueue(path)
    items = reloaded.snapshot()
    assert [(i.name, i.status) for i in items] == [("a", "waiting"), ("b", "waiting")]
    assert "restart" in items[0].note
    assert reloaded.paused and reloaded.take_next() is None  # nothing trains by itself
    assert reloaded.add(config("c")).id == 3  # ids are never reused
    assert json.load(open(path))["items"][0]["config"]["output_name"] == "a"


class FakeTrainer:
    """Emits training events like train() and stops when asked."""

    def __init__(self, steps=5, fail_on=None, delay=0.0):
        self.steps, self.fail_on, self.delay, self.order = steps, fail_on, delay, []

    def __call__(self, config, progress):
        self.order.append(config.output_name)
        if config.output_name == self.fail_on:
            raise ValueError("train_data_dir /nowhere does not exist")
        progress.start("training", self.steps)
        done = 0
        for done in range(1, self.steps + 1):
            time.sleep(self.delay)
            progress.step(done, loss=1.0 / done, avg_loss=1.0, lr=1e-4, it_per_s=10.0, eta_s=1.0, epoch=1)
            if progress.stop_requested:
                break
        stopped = done < self.steps
        path = f"/out/{config.output_name}" + (f"-step{done}" if stopped else "") + ".safetensors"
        progress.saved(path)
        progress.end("done")
        return type("Result", (), {"final_path": path, "stopped_early": stopped})()


def test_service_runs_the_queue_in_order_and_records_results_and_errors(tmp_path):
    trainer = FakeTrainer(fail_on="b")
    service = LocalTrainService(TrainQueue(str(tmp_path / "q.json")), trainer)
    for name in "abc":
        service.queue.add(config(name))
    service.start_queue()
    assert service.wait(10)
    assert trainer.order == ["a", "b", "c"]
    items = service.queue.snapshot()
    assert [i.status for i in items] == ["done", "failed", "done"]
    assert items[0].result == "/out/a.safetensors"
    assert "does not exist" in items[1].error
    run = service.snapshot().run
    assert run.name == "c" and run.phase == "done" and run.step == 5 and len(run.losses) == 5


def test_stop_ends_the_run_with_its_step_file_and_pauses_the_queue(tmp_path):
    trainer = FakeTrainer(steps=1000, delay=0.01)
    service = LocalTrainService(TrainQueue(str(tmp_path / "q.json")), trainer)
    service.queue.add(config("a"))
    service.queue.add(config("b"))
    service.start_queue()
    deadline = time.monotonic() + 10
    while service.snapshot().run.step < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert service.stop()
    assert service.wait(10)
    first, second = service.queue.snapshot()
    assert first.status == "stopped" and "-step" in first.result
    assert second.status == "waiting" and service.queue.paused  # the next run waits for the user
    assert trainer.order == ["a"]


def test_run_state_follows_progress_events():
    from lib_trainer.jobs.state import RunState

    state = RunState()
    state.begin(1, "x")
    state(ProgressEvent("start", label="training", total=4))
    state(ProgressEvent("step", label="training", done=2, total=4,
                        info={"loss": 0.5, "avg_loss": 0.6, "it_per_s": 2.0, "eta_s": 1.0, "epoch": 1}))
    state(ProgressEvent("saved", label="training", text="/o/x.safetensors"))
    view = state.view()
    assert (view.step, view.total, view.losses) == (2, 4, [(2, 0.5, 0.6)])
    assert "step 2/4" in view.progress_text() and "ETA 0:01" in view.progress_text()
    assert view.saved == ["/o/x.safetensors"]


def test_local_service_trains_a_real_lora(small_root, tmp_path):
    service = LocalTrainService(TrainQueue(str(tmp_path / "q.json")))
    item = service.enqueue(quick_config(small_root, str(tmp_path / "out"), output_name="svc"), start=True)
    assert item.total_steps == 4
    assert service.wait(300)
    done = service.queue.get(item.id)
    assert done.status == "done", done.error
    assert done.result.endswith("svc.safetensors") and load_lora(done.result)
    assert service.snapshot().run.step == 4


def test_a_stopped_queue_item_resumes_from_its_state_and_ends_like_an_unstopped_run(small_root, tmp_path):
    """Stop at step 2 of 10, Resume: the item goes on from the state its stop saved, and its
    file equals that of a run that was never stopped."""
    import torch
    from lib_trainer.train.loop import train

    settings = dict(max_train_steps=0, max_train_epochs=1, train_batch_size=4, output_name="svc", lr_scheduler="cosine")
    whole = train(quick_config(small_root, str(tmp_path / "whole"), **settings))
    service = LocalTrainService(TrainQueue(str(tmp_path / "q.json")))

    class StopAtStep2:
        def __call__(self, event):
            if event.kind == "step" and event.label == "training" and event.done == 2 and not resumed:
                service.stop()

    resumed = False
    service._host_sinks = lambda commands: [StopAtStep2()]
    item = service.enqueue(quick_config(small_root, str(tmp_path / "out"), **settings), start=True)
    assert service.wait(300)
    stopped = service.queue.get(item.id)
    assert stopped.status == "stopped" and stopped.resume_state.endswith("svc-step00000002-state")
    assert stopped.resumable()
    resumed = True
    service.resume(item.id)
    assert service.wait(300)
    done = service.queue.get(item.id)
    assert done.status == "done", done.error
    assert done.config["resume"] == stopped.resume_state
    assert any("resumed from" in message for message in service.snapshot().run.messages)
    expected, got = load_lora(whole.final_path), load_lora(done.result)
    assert all(torch.equal(expected[key], got[key]) for key in expected)


def test_a_restart_resumes_an_interrupted_run_from_its_last_state(tmp_path):
    path = str(tmp_path / "queue.json")
    state = tmp_path / "a-step00000010-state"
    state.mkdir()
    queue = TrainQueue(path)
    queue.add(config("a"))
    queue.set_paused(False)
    item = queue.take_next()
    queue.update(item.id, resume_state=str(state))  # written while it ran, then the server died
    reloaded = TrainQueue(path).get(item.id)
    assert reloaded.status == "waiting" and reloaded.config["resume"] == str(state)
    assert "resumes from a-step00000010-state" in reloaded.note
    with pytest.raises(QueueError, match="not stopped or failed"):
        TrainQueue(path).resume(item.id)


@pytest.mark.parametrize("content, reason", [
    ("[]", "a JSON list instead of an object"),
    ('{"items": {}}', '"items" is a dict, not a list'),
    ('{"items": [["a"]]}', "item 1 is a list, not an object"),
    ('{"items": [{"id": "1", "name": "a", "config": {}}]}', "item 1: id is '1', not of type int"),
    ('{"items": [{"id": 1, "name": "a", "config": []}]}', "item 1: config is [], not of type dict"),
    ('{"items": [{"id": 1, "name": "a", "config": {}, "started": "noon"}]}', "started is 'noon', not of type float | None"),
    ('{"items": [{"id": 1, "name": "a"}]}', "item 1 has no config"),
    ('{"items": [{"id": 1, "name": "a", "config": {}, "status": "dancing"}]}', "unknown status 'dancing'"),
    ('{"items": [], "next_id": true}', '"next_id" is True'),
    ("{not json", "not valid JSON"),
])
def test_an_unreadable_queue_file_is_moved_aside_and_the_queue_starts_empty(tmp_path, content, reason):
    path = tmp_path / "queue.json"
    path.write_text(content)
    queue = TrainQueue(str(path))
    assert queue.snapshot() == [] and queue.paused
    kept = [name for name in os.listdir(tmp_path) if name.startswith("queue.json.broken-")]
    assert len(kept) == 1 and (tmp_path / kept[0]).read_text() == content  # nothing of the user's is lost
    assert reason in queue.load_notice and kept[0] in queue.load_notice
    queue.add(config("a"))  # and it works as a new queue
    assert names(TrainQueue(str(path))) == ["a"] and TrainQueue(str(path)).load_notice == ""


def test_a_queue_file_with_unknown_keys_from_a_newer_version_still_loads(tmp_path):
    path = tmp_path / "queue.json"
    path.write_text('{"items": [{"id": 4, "name": "a", "config": {}, "colour": "red"}], "next_id": 5}')
    queue = TrainQueue(str(path))
    assert names(queue) == ["a"] and queue.load_notice == "" and queue.add(config("b")).id == 5


def test_the_ui_page_starts_over_a_broken_queue_file_and_says_so(tmp_path):
    from lib_trainer.commands.ui import make_service
    from lib_trainer.ui.app import standalone_blocks

    (tmp_path / "queue.json").write_text("[]")
    service = make_service(str(tmp_path))
    assert service.snapshot().items == []
    page = standalone_blocks(service)
    shown = [c["props"].get("value") for c in page.config["components"] if c["props"].get("elem_id") == "lt_notice"]
    assert len(shown) == 1 and "moved aside to" in shown[0] and "queue.json.broken-" in shown[0]
