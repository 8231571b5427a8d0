"""Helpers shared by the benchmark scripts: peak memory and a wall-clock timer."""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager


def peak_rss_mb() -> dict[str, float]:
    """Peak resident memory of this process (decoding runs in its threads), in MB."""
    return {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def peak_rss_of(pid: int) -> float:
    """Peak resident memory of another process (a server a benchmark started), in MB, from /proc."""
    from pathlib import Path

    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


@contextmanager
def timed(results: dict[str, float], key: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    results[key] = round(time.perf_counter() - started, 2)
