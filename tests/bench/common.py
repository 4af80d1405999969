"""Helpers shared by the benchmark sections."""

from __future__ import annotations

import resource
import time
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import BTC_1M, SHARED_DATA


def shared_or_exit() -> Path | None:
    if not BTC_1M.exists():
        print(f"   skipped: real Binance data not found at {SHARED_DATA}")
        return None
    return BTC_1M


def line(name: str, value: float, unit: str, note: str = "") -> None:
    print(f"   {name:<52} {value:>14,.3f} {unit:<8} {note}", flush=True)


@contextmanager
def timer():
    box = {}
    start = time.perf_counter()
    yield box
    box["s"] = time.perf_counter() - start


def best_of(n: int, fn) -> float:
    """Fastest of n timed calls (the least disturbed by a noisy shared machine)."""
    best = float("inf")
    for _ in range(n):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
