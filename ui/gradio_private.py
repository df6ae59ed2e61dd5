"""Every use of a Gradio part that is not public API, in one place (checked against Gradio 6.31).

Each is here because Gradio offers no public way to do it:

- `event_queue(demo)`: a Blocks' event queue (`Blocks._queue`). Gradio has no public accessor;
  `Blocks.queue()` builds a new one and takes no setting for how often it polls.
- `pace_queue(queue, pace)`: how long the queue's loops sleep when they find no work. Gradio's
  `Queue` sets `sleep_when_free` (1 ms on Linux) and `progress_update_sleep_when_free` (10 ms)
  as plain attributes in its constructor and reads them on every pass; no setting, environment
  variable or launch option changes them. The queue's class is swapped for a subclass whose
  properties ask `pace` instead, which reads `active_jobs`, `len(queue)` and the last `push`.
- `upload_folder()`: where Gradio stores uploaded files (`gradio.utils.get_upload_folder`, not in
  the documented API; documented only through the GRADIO_TEMP_DIR environment variable).

tests/test_ui_gradio_private.py asserts each of these parts on the installed Gradio, so an upgrade
that changes one fails a test rather than the page.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
from gradio.utils import get_upload_folder


@dataclass(frozen=True)
class QueueLoad:
    """What a queue is doing when it is about to sleep."""

    waiting: int  # events queued, not started
    running: int  # workers busy with an event
    since_push: float  # seconds since the last event was pushed (inf if none yet)


# (load) -> (seconds to sleep between checks for new events, between progress checks)
Pace = Callable[[QueueLoad], tuple[float, float]]


def event_queue(demo: gr.Blocks) -> object:
    """The event queue of a Blocks (created by `queue()` or `launch()`)."""
    return demo._queue


def upload_folder() -> Path:
    """The folder Gradio stores uploads in (GRADIO_TEMP_DIR, else its folder in the temp dir)."""
    return Path(get_upload_folder())


def queue_load(queue: object) -> QueueLoad:
    """What `queue` is doing now, from Gradio's private fields."""
    running = sum(job is not None for job in getattr(queue, "active_jobs", []))
    pushed = queue.__dict__.get("_rag_last_push")
    since = time.monotonic() - pushed if pushed is not None else float("inf")
    return QueueLoad(waiting=len(queue), running=running, since_push=since)  # type: ignore[arg-type]


def pace_queue(queue: object, pace: Pace) -> None:
    """Make a Gradio queue ask `pace` how long to sleep each time it finds no work (calling it
    again only replaces `pace`)."""
    queue.__dict__["_rag_pace"] = pace
    base = type(queue)
    if getattr(base, "_rag_paced", False):
        return

    async def push(self, *args, **kwargs):
        self.__dict__["_rag_last_push"] = time.monotonic()
        return await base.push(self, *args, **kwargs)

    def sleep_when_free(self) -> float:
        return self.__dict__["_rag_pace"](queue_load(self))[0]

    def progress_sleep(self) -> float:
        return self.__dict__["_rag_pace"](queue_load(self))[1]

    def ignore(self, value: float) -> None:  # Gradio sets these in __init__; the properties decide
        pass

    queue.__class__ = type(
        f"Paced{base.__name__}",
        (base,),
        {
            "_rag_paced": True,
            "push": push,
            "sleep_when_free": property(sleep_when_free, ignore),
            "progress_update_sleep_when_free": property(progress_sleep, ignore),
        },
    )
