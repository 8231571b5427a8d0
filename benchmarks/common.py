"""Helpers shared by the benchmark scripts: peak memory and a wall-clock timer."""

from __future__ import annotations

import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager


def peak_rss_mb() -> dict[str, float]:
    """Peak resident memory of this process (decoding runs in its threads), in MB."""
    return {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


@contextmanager
def timed(results: dict[str, float], key: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    results[key] = round(time.perf_counter() - started, 2)
