"""An idle chat server sleeps: Gradio's queue polls for work every millisecond by default.

Gradio's queue loop checks for new events every `sleep_when_free` seconds (1 ms on Linux) and for
progress to send every 10 ms, even with no page open: about 5 % of a core on a laptop doing
nothing. Here both intervals are short only while there is work (an event queued, running or
pushed in the last few seconds) and long when idle. The cost is at most IDLE_POLL_SECONDS before
the first event after a quiet spell starts, which nobody notices next to an answer.
"""

from __future__ import annotations

import time

BUSY_POLL_SECONDS = 0.001
BUSY_PROGRESS_SECONDS = 0.01
IDLE_POLL_SECONDS = 0.2
IDLE_PROGRESS_SECONDS = 0.5
BUSY_GRACE_SECONDS = 5.0


def make_queue_sleep_when_idle(queue: object) -> None:
    """Turn a Gradio queue's fixed polling intervals into ones that lengthen when it is idle."""
    base = type(queue)
    if getattr(base, "_sleeps_when_idle", False):
        return

    def busy(self) -> bool:
        active = any(job is not None for job in getattr(self, "active_jobs", []))
        return active or len(self) > 0 or time.monotonic() - self.__dict__.get("_last_push", 0.0) < BUSY_GRACE_SECONDS

    async def push(self, *args, **kwargs):
        self.__dict__["_last_push"] = time.monotonic()
        return await base.push(self, *args, **kwargs)

    def sleep_when_free(self) -> float:
        return BUSY_POLL_SECONDS if busy(self) else IDLE_POLL_SECONDS

    def progress_sleep(self) -> float:
        return BUSY_PROGRESS_SECONDS if busy(self) else IDLE_PROGRESS_SECONDS

    def ignore(self, value: float) -> None:  # Gradio sets these in __init__; the properties decide
        pass

    queue.__class__ = type(
        f"Idle{base.__name__}",
        (base,),
        {
            "_sleeps_when_idle": True,
            "push": push,
            "sleep_when_free": property(sleep_when_free, ignore),
            "progress_update_sleep_when_free": property(progress_sleep, ignore),
        },
    )
