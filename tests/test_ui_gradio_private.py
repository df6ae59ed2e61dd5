"""The Gradio parts ui/gradio_private.py relies on still have the shape it expects.

Gradio does not promise to keep private parts: these tests fail on an upgrade that changes one, so
the upgrade breaks a test, not the page. The public parts the page relies on are checked too.
"""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path

import pytest

gr = pytest.importorskip("gradio")

from gradio.queueing import Queue  # noqa: E402

from ui.gradio_private import QueueLoad, event_queue, pace_queue, queue_load, upload_folder  # noqa: E402
from ui.layout import sent  # noqa: E402


def _demo() -> gr.Blocks:
    with gr.Blocks() as demo:
        gr.Markdown("hi")
    return demo


def test_a_blocks_has_its_queue_as_a_private_attribute():
    queue = event_queue(_demo())
    assert isinstance(queue, Queue)


def test_the_queue_sets_its_polling_intervals_in_its_constructor_and_reads_them_in_its_loops():
    queue = event_queue(_demo())
    # Plain float attributes, set per instance (a property on a subclass can take them over).
    assert isinstance(queue.__dict__.get("sleep_when_free"), float)
    assert isinstance(queue.__dict__.get("progress_update_sleep_when_free"), float)
    assert "self.sleep_when_free" in inspect.getsource(Queue.start_processing)
    assert "self.progress_update_sleep_when_free" in inspect.getsource(Queue.start_progress_updates)


def test_the_queue_has_the_load_fields_and_the_push_that_pacing_reads():
    queue = event_queue(_demo())
    assert isinstance(queue.active_jobs, list)
    assert len(queue) == 0
    assert inspect.iscoroutinefunction(Queue.push)
    assert list(inspect.signature(Queue.push).parameters)[:2] == ["self", "body"]


def test_a_paced_queue_asks_its_pace_and_keeps_gradios_behaviour(monkeypatch):
    queue = event_queue(_demo())
    seen: list[QueueLoad] = []

    def pace(load: QueueLoad) -> tuple[float, float]:
        seen.append(load)
        return 0.3, 0.7

    pace_queue(queue, pace)
    queue.sleep_when_free = 0.001  # what Gradio's constructor does: the pace still decides
    assert (queue.sleep_when_free, queue.progress_update_sleep_when_free) == (0.3, 0.7)
    assert seen[-1] == QueueLoad(waiting=0, running=0, since_push=float("inf"))
    queue.active_jobs = [None, ["an event"]]
    assert queue_load(queue).running == 1
    pace_queue(queue, lambda load: (0.05, 0.05))  # again: only the pace changes
    assert queue.sleep_when_free == 0.05
    assert type(queue).__mro__[1] is Queue

    async def push(self, *args, **kwargs):
        return True, "ok", "success"

    monkeypatch.setattr(Queue, "push", push)
    assert asyncio.run(queue.push("body")) == (True, "ok", "success")
    assert queue_load(queue).since_push < 5


def test_the_upload_folder_follows_gradio_temp_dir(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))
    assert upload_folder() == tmp_path
    monkeypatch.delenv("GRADIO_TEMP_DIR")
    assert upload_folder().is_absolute()


def test_data_sent_with_an_event_is_read_through_event_datas_public_attributes():
    # gr.HTML's `trigger('click', {cite: ...})`: Gradio documents reading it as `evt.cite`.
    assert sent(gr.EventData(None, {"cite": "0:1"}), "cite") == "0:1"
    assert sent(gr.EventData(None, {"remove": "a.txt"}), "cite") is None
    assert sent(gr.EventData(None, None), "cite") is None
    assert sent(gr.SelectData(None, {"index": [3, 0], "value": "x"}), "index") == [3, 0]
