"""How many CPU cores this process may really use: the container's quota, not the host's count.

`os.cpu_count()` reports the host's cores; a container limited by a CFS quota (cgroup v2
`cpu.max`, v1 `cpu.cfs_quota_us`) or pinned to some cores (affinity) gets fewer, and more
threads than cores makes llama.cpp and torch slower, not faster.
"""

from __future__ import annotations

import math
import os
from functools import lru_cache
from pathlib import Path


def _quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        if quota != "max":
            return int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        if quota > 0 and period > 0:
            return quota / period
    except (OSError, ValueError):
        pass
    return None


@lru_cache(maxsize=1)
def usable_cpus() -> int:
    """Cores this process may use: min(affinity, cgroup quota rounded up), at least 1."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    quota = _quota()
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)
