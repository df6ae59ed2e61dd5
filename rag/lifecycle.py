"""One orderly shutdown for the process: background work stops before what it uses is freed.

Native libraries (llama.cpp) keep threads and memory of their own; freed in the wrong order, or
during the interpreter's own teardown, they crash the process after its work is done. Here, once
per process (at exit, and when the server stops), in this order:

1. the stop hooks run: native work in progress is told to stop (every llama.cpp decode aborts
   within a step);
2. every open owner (the context planner, the corpus cache, the backends) is closed: its
   background readers are stopped and joined;
3. any other worker started through `start_worker` is joined, each within a bound;
4. the release hooks run, last registered first (the local model's contexts, then its weights).

A worker still running after its bound is left alone, and so is what it uses: leaking memory at
exit is harmless, freeing it under a running thread is not.
"""

from __future__ import annotations

import atexit
import logging
import signal
import threading
import weakref
from collections.abc import Callable

log = logging.getLogger(__name__)
JOIN_SECONDS = 20.0

_lock = threading.Lock()
_owners: "weakref.WeakSet" = weakref.WeakSet()
_workers: set[threading.Thread] = set()
_releases: list[Callable[[], None]] = []
_stops: list[Callable[[], None]] = []
_stopping = threading.Event()
_registered = False


def _register_once() -> None:
    global _registered
    if not _registered:
        atexit.register(shutdown)
        _registered = True


def track(owner: object) -> None:
    """Close `owner` (anything with `close()`) at shutdown unless it is gone by then."""
    with _lock:
        _register_once()
        _owners.add(owner)


def on_release(hook: Callable[[], None]) -> None:
    """Run `hook` at shutdown, after every owner is closed and every worker joined."""
    with _lock:
        _register_once()
        _releases.append(hook)


def on_stop(hook: Callable[[], None]) -> None:
    """Run `hook` first at shutdown, to tell native work in progress to stop (it must not block)."""
    with _lock:
        _register_once()
        _stops.append(hook)


def start_worker(target: Callable[..., object], *args: object, name: str) -> threading.Thread:
    """Start a background thread that shutdown joins before anything is freed."""
    def run() -> None:
        try:
            target(*args)
        finally:
            with _lock:
                _workers.discard(threading.current_thread())

    thread = threading.Thread(target=run, name=name, daemon=True)
    with _lock:
        _register_once()
        _workers.add(thread)
    thread.start()
    return thread


def stopping() -> bool:
    """Whether the process is shutting down (long loops check it and stop)."""
    return _stopping.is_set()


def join(thread: threading.Thread, timeout: float | None = None) -> bool:
    """Wait for `thread` within `timeout` (JOIN_SECONDS); False (and a log line) when it still runs."""
    if thread is threading.current_thread():
        return True
    timeout = JOIN_SECONDS if timeout is None else timeout
    thread.join(timeout)
    if thread.is_alive():
        log.warning("%s did not stop within %.0f s; leaving it and what it uses", thread.name, timeout)
        return False
    return True


def shutdown() -> None:
    """Stop and free everything in order (once: later calls, like atexit's after the server's,
    do nothing)."""
    with _lock:
        if _stopping.is_set():
            return
        _stopping.set()
        owners, workers, stops = list(_owners), list(_workers), list(_stops)
        releases = list(reversed(_releases))
    # A second Ctrl+C while stopping must not cut the shutdown short with a traceback: it is bounded.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    _stop_in_order(stops, owners, workers, releases)


def _stop_in_order(stops: list, owners: list, workers: list[threading.Thread], releases: list) -> None:
    """Tell native work to stop, close the owners, join the workers, then free (see above)."""
    _each(stops, "stopping")
    _each([owner.close for owner in owners], "closing")
    if not all([join(t) for t in workers]):
        return  # a worker still runs: freeing what it may use would crash the process
    _each(releases, "releasing")


def _each(calls: list[Callable[[], object]], doing: str) -> None:
    """Call each; one that fails is logged and the rest still run (all must be freed)."""
    for call in calls:
        try:
            call()
        except Exception:  # noqa: BLE001 (shutdown goes on)
            log.exception("%s at shutdown failed (%r)", doing, call)
