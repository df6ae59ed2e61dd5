"""What the benchmarks share: where things are, a free port, question sets, percentiles, and readings
of the machine, a process's CPU time and its memory.

Only the standard library at import time (numpy is imported by `percentile` when it runs), so
importing a benchmark costs what the benchmark itself imports.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DEV_SET = SHARED / "eval" / "seeds_qa_dev.jsonl"
# numpy's name for the nearest-rank percentile: the smallest value with at least q % of the values
# at or below it, always one of the values (no interpolation).
NEAREST_RANK = "inverted_cdf"


def log(message: str) -> None:
    """A time-stamped progress line on stderr, so stdout keeps only the report."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def load_questions(path: Path) -> list[dict]:
    """The rows of a question set (JSON lines), blank lines skipped."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def percentile(values: Sequence[float], q: float, method: str = "linear") -> float:
    """The q-th percentile (0-100) by numpy's `method` (NEAREST_RANK for nearest-rank); NaN for no values."""
    from rag.evaluation.metrics import percentile as numpy_percentile

    value = numpy_percentile(values, q, method=method)
    return float("nan") if value is None else value


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far (0.0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (psutil if installed, else /proc)."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0
        total = 0
        for proc in procs:
            try:
                total += proc.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    family, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [p for p, pp in parents.items() if pp == parent and p not in family]
        family.update(children)
        frontier += children
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for member in family:
        try:
            total += int(Path(f"/proc/{member}/statm").read_text().split()[1]) * page
        except (OSError, IndexError, ValueError):
            pass
    return total


def _status_bytes(pid: int, field: str) -> int:
    """A kB field of /proc/<pid>/status in bytes (0 once the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def anon_rss(pid: int) -> int:
    """Resident anonymous bytes of one process (its heaps; mapped model files excluded)."""
    return _status_bytes(pid, "RssAnon")


def vm_rss(pid: int) -> int:
    """Resident bytes of one process (VmRSS: heaps and the mapped model files it touched)."""
    return _status_bytes(pid, "VmRSS")


def rss_mb() -> float:
    """This process's resident memory now (VmRSS), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (a child process's figure is its own)."""
    # ru_maxrss is in kilobytes on Linux, bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine() -> dict:
    """CPU model, cores, RAM and Python version: the machine a report's figures were measured on."""
    ram_gb = None
    try:
        ram_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "ram_gb": ram_gb, "python": platform.python_version()}


def child_env() -> dict[str, str]:
    """This environment with the repository first on PYTHONPATH, so a child `python -m benchmarks.x`
    imports this checkout's code from any working folder."""
    paths = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def write_fit(section: str, values: dict, *, fitted_on: str, argv: list[str] | None) -> Path:
    """Record a fit in the file the answerability stage loads (rag/data/answerability.json): its
    values, the data it was fitted on and the command that reproduces it."""
    from rag.answerability import FIT_FILE

    fit = json.loads(FIT_FILE.read_text(encoding="utf-8"))
    name = section.replace("features", "answerability")
    fit[section] = {**values, "fitted_on": fitted_on,
                    "command": " ".join(["rag bench tune-" + name, *(argv if argv is not None else sys.argv[1:])])}
    FIT_FILE.write_text(json.dumps(fit, indent=2) + "\n", encoding="utf-8")
    return FIT_FILE
