"""An idle chat server sleeps: Gradio's queue polls slowly with nothing to do, fast with work."""

from __future__ import annotations

import asyncio

import gradio as gr

from ui.gradio_private import event_queue
from ui.idle import BUSY_POLL_SECONDS, IDLE_POLL_SECONDS, IDLE_PROGRESS_SECONDS, make_queue_sleep_when_idle


def test_the_queue_polls_fast_only_while_there_is_work():
    with gr.Blocks() as demo:
        gr.Markdown("hi")
    queue = event_queue(demo)
    assert queue.sleep_when_free < 0.01  # Gradio's own: about a thousand wake-ups a second
    make_queue_sleep_when_idle(queue)
    assert queue.sleep_when_free == IDLE_POLL_SECONDS
    assert queue.progress_update_sleep_when_free == IDLE_PROGRESS_SECONDS
    queue.active_jobs = [None, ["an event"]]  # something is being answered
    assert queue.sleep_when_free == BUSY_POLL_SECONDS
    queue.active_jobs = [None]
    assert queue.sleep_when_free == IDLE_POLL_SECONDS
    make_queue_sleep_when_idle(queue)  # twice is harmless
    assert type(queue).__mro__[1].__name__ == "Queue"


def test_a_pushed_event_wakes_the_queue_up(monkeypatch):
    with gr.Blocks() as demo:
        gr.Markdown("hi")
    queue = event_queue(demo)
    make_queue_sleep_when_idle(queue)
    seen = []

    async def push(self, *args, **kwargs):
        seen.append(args)
        return True, "ok"

    monkeypatch.setattr(type(queue).__mro__[1], "push", push)
    asyncio.run(queue.push("body"))
    assert seen and queue.sleep_when_free == BUSY_POLL_SECONDS
