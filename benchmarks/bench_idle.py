"""CPU used by an idle `rag serve` (no page open), with and without the idle queue, same run.

    rag bench idle [--seconds 30]

Starts the chat server twice on a copy of the seeds with the extractive backend: once as shipped
(Gradio's queue sleeps when idle, ui/idle.py) and once with Gradio's default polling (1 ms), waits
for it to be ready and warmed up, then reads the process's CPU time from /proc over the window.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from benchmarks.common import ROOT, cpu_seconds, free_port

LAUNCH = """
import sys
import ui.serving
if sys.argv[1] == "gradio-default":
    ui.serving.make_queue_sleep_when_idle = lambda queue: None
from rag.cli import main
sys.argv = ["rag", "serve"]
main()
"""


def measure(variant: str, work: Path, seconds: float) -> dict:
    port = free_port()
    env = {**os.environ, "RAG_SEEDS_DIR": str(work / "seeds"), "RAG_INDEX_DIR": str(work / "index"),
           "RAG_GENERATOR": "extractive", "RAG_PORT": str(port)}
    proc = subprocess.Popen([sys.executable, "-c", LAUNCH, variant], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{variant}: the server did not start")
                time.sleep(1)
        time.sleep(20)  # warm-up done, nothing left to do
        start = cpu_seconds(proc.pid)
        time.sleep(seconds)
        used = cpu_seconds(proc.pid) - start
    finally:
        proc.terminate()
        proc.wait(30)
    return {"variant": variant, "cpu_seconds": round(used, 2), "window_s": seconds,
            "share_of_a_core": round(used / seconds, 4)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="rag-idle-"))
    shutil.copytree(ROOT / "seeds", work / "seeds")
    try:
        rows = [measure(v, work, args.seconds) for v in ("shipped", "gradio-default")]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"load_average": os.getloadavg(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
