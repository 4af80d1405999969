"""Job telemetry of a live run: every run of ``market-data-refresh`` and ``execution-rebalance``.

:class:`JobBook` keeps, per job, the last start and completion (wall clock), the last duration,
outcome and error, run and failure counts, consecutive failures, the interval the job must keep
and when it is next due, and the last :data:`HISTORY` runs. It also says which runs were
skipped: a job whose last completion (or, before its first, the start of the watch) is older
than twice its interval has missed a run, and every further interval without a completion is
one more (``skipped_run`` events).

What goes into the journal (``job`` events): a failed run is journaled on its own; successful
runs are summarised, one row per job for the first run and then every :data:`SUMMARY_RUNS` runs
or :data:`SUMMARY_SECONDS` seconds, whichever comes first (and at the end of the run). A 10-day
run on 1m bars would otherwise write ~29,000 rows that say "ok"; summarised it writes ~500.
A summary row's ``started_at`` is its first run's start, ``duration_ms`` the mean, with ``runs``
and ``max_duration_ms`` added. Thread-safe: runs are recorded on the trading thread, views and
skipped runs are read from the watcher and the status server.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.logs import iso_from_epoch

MARKET_DATA = "market-data-refresh"
EXECUTION = "execution-rebalance"
HISTORY = 50                 # runs kept per job for the status endpoint
SUMMARY_RUNS = 60            # successful runs per journaled summary row ...
SUMMARY_SECONDS = 300.0      # ... or this long, whichever comes first


@dataclass
class JobRun:
    """One run of a job (wall-clock epoch seconds, milliseconds of duration)."""

    job: str
    started: float
    duration_ms: float
    error: str | None = None
    request_id: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def outcome(self) -> str:
        return "error" if self.error else "ok"

    def to_dict(self) -> dict[str, Any]:
        return {"started_at": iso_from_epoch(self.started), "duration_ms": round(self.duration_ms, 3),
                "outcome": self.outcome, "error": self.error, "request_id": self.request_id, **self.info}


@dataclass
class _Summary:
    first_start: float | None = None
    runs: int = 0
    total_ms: float = 0.0
    max_ms: float = 0.0
    since: float = 0.0

    def row(self, job: str) -> dict[str, Any]:
        return {"job": job, "started_at": iso_from_epoch(self.first_start),
                "duration_ms": round(self.total_ms / self.runs, 3), "outcome": "ok", "error": None,
                "runs": self.runs, "max_duration_ms": round(self.max_ms, 3)}


@dataclass
class JobState:
    """What the status endpoint shows of one job."""

    name: str
    interval: Callable[[], float]               # seconds (real) the job must keep
    runs: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    skipped: int = 0
    last_start: float | None = None
    last_completion: float | None = None
    last_duration_ms: float | None = None
    last_outcome: str | None = None
    last_error: str | None = None
    last_request_id: str = ""
    next_due: float | None = None
    history: deque = field(default_factory=lambda: deque(maxlen=HISTORY))
    summary: _Summary = field(default_factory=_Summary)
    journaled_first: bool = False
    skip_anchor: float | None = None
    skip_counted: int = 0


class JobBook:
    """The runs of a live session's jobs; see the module docstring."""

    def __init__(self, intervals: dict[str, Callable[[], float]], clock: Callable[[], float] = time.time):
        self._clock = clock
        self._lock = threading.Lock()
        self.jobs = {name: JobState(name, fn) for name, fn in intervals.items()}
        self.watch_started: float | None = None

    def start_watch(self) -> None:
        """From now on a job that does not complete in time counts as skipping runs."""
        with self._lock:
            self.watch_started = self._clock()

    def record(self, run: JobRun, next_due: float | None = None) -> list[dict[str, Any]]:
        """Book one run; returns the ``job`` event rows due for the journal now."""
        rows: list[dict[str, Any]] = []
        with self._lock:
            job = self.jobs[run.job]
            job.runs += 1
            job.last_start = run.started
            job.last_duration_ms = run.duration_ms
            job.last_outcome = run.outcome
            job.last_request_id = run.request_id
            job.history.append(run)
            end = run.started + run.duration_ms / 1000
            job.next_due = next_due if next_due is not None else end + job.interval()
            if run.error:
                job.failures += 1
                job.consecutive_failures += 1
                job.last_error = run.error
                rows.extend(self._flush(job))
                rows.append({"job": run.job, "started_at": iso_from_epoch(run.started),
                             "duration_ms": round(run.duration_ms, 3), "outcome": "error", "error": run.error,
                             "request_id": run.request_id})
                return rows
            job.consecutive_failures = 0
            job.last_completion = end
            s = job.summary
            if s.runs == 0:
                s.first_start, s.since = run.started, end
            s.runs += 1
            s.total_ms += run.duration_ms
            s.max_ms = max(s.max_ms, run.duration_ms)
            if not job.journaled_first or s.runs >= SUMMARY_RUNS or end - s.since >= SUMMARY_SECONDS:
                job.journaled_first = True
                rows.extend(self._flush(job))
        return rows

    def due_summaries(self, force: bool = False) -> list[dict[str, Any]]:
        """Summary rows whose time has come (all pending ones with ``force``)."""
        now = self._clock()
        rows: list[dict[str, Any]] = []
        with self._lock:
            for job in self.jobs.values():
                if force or (job.summary.runs and now - job.summary.since >= SUMMARY_SECONDS):
                    rows.extend(self._flush(job))
        return rows

    @staticmethod
    def _flush(job: JobState) -> list[dict[str, Any]]:
        if not job.summary.runs:
            return []
        row = job.summary.row(job.name)
        job.summary = _Summary()
        return [row]

    def missed(self) -> list[tuple[str, float]]:
        """Runs newly skipped since the last call: ``(job, due_at)`` each (epoch seconds)."""
        now = self._clock()
        out: list[tuple[str, float]] = []
        with self._lock:
            if self.watch_started is None:
                return out
            for job in self.jobs.values():
                interval = job.interval()
                if not interval > 0 or not math.isfinite(interval):
                    continue
                since = max(job.last_completion or 0.0, self.watch_started)
                if job.skip_anchor != since:              # a completion since: count afresh
                    job.skip_anchor, job.skip_counted = since, 0
                behind = int((now - since) / interval) - 1          # 2 intervals without completion: 1 skipped
                while behind > job.skip_counted:
                    job.skip_counted += 1
                    job.skipped += 1
                    out.append((job.name, since + job.skip_counted * interval))
        return out

    def overdue(self) -> dict[str, float]:
        """Jobs with no completion within twice their interval: ``{job: seconds since}``."""
        now = self._clock()
        out = {}
        with self._lock:
            if self.watch_started is None:
                return out
            for job in self.jobs.values():
                interval = job.interval()
                since = max(job.last_completion or 0.0, self.watch_started)
                if interval > 0 and now - since > 2 * interval:
                    out[job.name] = now - since
        return out

    def view(self) -> dict[str, dict[str, Any]]:
        """Every job as the status endpoint shows it (ISO-8601 UTC times)."""
        now = self._clock()
        with self._lock:
            out = {}
            for job in self.jobs.values():
                interval = job.interval()
                since = max(job.last_completion or 0.0, self.watch_started or now)
                out[job.name] = {
                    "job": job.name, "interval_seconds": round(interval, 3),
                    "last_start": iso_from_epoch(job.last_start), "last_completion": iso_from_epoch(job.last_completion),
                    "last_duration_ms": None if job.last_duration_ms is None else round(job.last_duration_ms, 3),
                    "last_outcome": job.last_outcome, "last_error": job.last_error,
                    "last_request_id": job.last_request_id, "runs": job.runs, "failures": job.failures,
                    "consecutive_failures": job.consecutive_failures, "skipped_runs": job.skipped,
                    "next_due": iso_from_epoch(job.next_due), "overdue": now - since > 2 * interval,
                    "recent": [r.to_dict() for r in list(job.history)[-5:]],
                }
            return out
