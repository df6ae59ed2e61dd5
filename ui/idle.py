"""An idle chat server sleeps: Gradio's queue polls for work every millisecond by default.

Gradio's queue loop checks for new events every `sleep_when_free` seconds (1 ms on Linux) and for
progress to send every 10 ms, even with no page open: about 5 % of a core on a laptop doing
nothing. Here both intervals are short only while there is work (an event queued, running or
pushed in the last few seconds) and long when idle. The cost is at most IDLE_POLL_SECONDS before
the first event after a quiet spell starts, which nobody notices next to an answer. Gradio has no
setting for these intervals: `ui.gradio_private.pace_queue` applies them.
"""

from __future__ import annotations

from ui.gradio_private import QueueLoad, pace_queue

BUSY_POLL_SECONDS = 0.001
BUSY_PROGRESS_SECONDS = 0.01
IDLE_POLL_SECONDS = 0.2
IDLE_PROGRESS_SECONDS = 0.5
BUSY_GRACE_SECONDS = 5.0


def idle_pace(load: QueueLoad) -> tuple[float, float]:
    """(poll, progress) intervals: Gradio's own while there is work, long ones when idle."""
    busy = load.running > 0 or load.waiting > 0 or load.since_push < BUSY_GRACE_SECONDS
    return (BUSY_POLL_SECONDS, BUSY_PROGRESS_SECONDS) if busy else (IDLE_POLL_SECONDS, IDLE_PROGRESS_SECONDS)


def make_queue_sleep_when_idle(queue: object) -> None:
    """Turn a Gradio queue's fixed polling intervals into ones that lengthen when it is idle."""
    pace_queue(queue, idle_pace)
