"""The orderly shutdown, with fakes, in a fresh process (shutdown is once per process)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import threading, time
    from rag import lifecycle

    order = []
    stop_reading = threading.Event()

    class Owner:
        def close(self):
            order.append("owner closed")

    def read():  # a background reader: stops only when told
        stop_reading.wait(30)
        time.sleep(0.2)
        order.append("worker ended")

    owner = Owner()
    lifecycle.track(owner)
    lifecycle.on_release(lambda: order.append("contexts freed"))
    lifecycle.on_release(lambda: order.append("models freed"))  # registered last, runs first
    lifecycle.on_stop(lambda: (order.append("told to stop"), stop_reading.set()))
    lifecycle.start_worker(read, name="reader")
    lifecycle.shutdown()
    lifecycle.shutdown()  # idempotent
    print(" | ".join(order))
""")


def test_shutdown_stops_closes_joins_then_frees_in_order():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "told to stop | owner closed | worker ended | models freed | contexts freed"


def test_a_worker_that_outlives_its_bound_keeps_what_it_uses():
    script = textwrap.dedent("""
        import time
        from rag import lifecycle

        lifecycle.JOIN_SECONDS = 0.2
        lifecycle.on_release(lambda: print("freed"))
        lifecycle.start_worker(lambda: time.sleep(3), name="stuck")
        lifecycle.shutdown()
        print("done")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["done"]  # nothing freed under a running worker
    assert "stuck did not stop" in done.stderr
