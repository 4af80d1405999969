"""Alerts of a live run (DESIGN 3.8): rules, the active set, and delivery.

Rules (thresholds from ``[alerts]``), evaluated continuously by the telemetry's watcher:

===================  ==========  =============================================================
rule                 severity    fires while
===================  ==========  =============================================================
skipped_run          critical    a job has not completed within twice its interval
error_rate           critical    exchange errors / requests over the last ``error_window_seconds``
                                 exceed ``max_error_rate_pct`` (with at least :data:`MIN_REQUESTS`
                                 requests and :data:`MIN_ERRORS` errors in the window)
low_confidence       critical    the mean confidence of a symbol's last :data:`CONFIDENCE_WINDOW`
                                 model signals (at least :data:`MIN_SIGNALS`) is under ``min_confidence``
kill_switch          critical    the kill switch has fired (for the rest of the run)
position_mismatch    critical    the journal and the exchange disagreed on a holding, until a
                                 later position sync agrees
stale_data           warning     a symbol's last closed bar is older than ``stale_data_factor`` bars
===================  ==========  =============================================================

:class:`AlertManager` turns conditions into alerts: when one starts it is journaled (``events``
row, kind ``alert``, data ``{rule, severity, message}``), logged at warning level and POSTed to
the webhook; while it lasts ``/health`` is degraded; when it ends an info line is logged (and
the webhook told, ``state: resolved``). :class:`Webhook` posts from its own thread with a
bounded timeout, so a slow receiver never holds up trading.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from harness.errors import UserError
from harness.logs import iso_from_epoch

log = logging.getLogger("harness.alerts")

SEVERITY = {"skipped_run": "critical", "error_rate": "critical", "low_confidence": "critical",
            "kill_switch": "critical", "position_mismatch": "critical", "stale_data": "warning"}
MIN_REQUESTS = 10            # an error rate needs this many requests in the window ...
MIN_ERRORS = 2               # ... and this many errors (one retried hiccup is not a burst)
CONFIDENCE_WINDOW = 20       # signals averaged per symbol
MIN_SIGNALS = 5              # fewer signals than this say nothing yet


@dataclass(frozen=True)
class Condition:
    """Something wrong right now; ``key`` tells apart the same rule on different subjects."""

    rule: str
    key: str
    message: str
    symbol: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)

    @property
    def severity(self) -> str:
        return SEVERITY.get(self.rule, "warning")


@dataclass(frozen=True)
class RuleInputs:
    """What the rules look at, gathered by the telemetry in one consistent read."""

    overdue: Mapping[str, float] = field(default_factory=dict)          # job → seconds since completion
    intervals: Mapping[str, float] = field(default_factory=dict)        # job → interval seconds
    requests: int = 0                                                   # in the error window
    errors: int = 0
    confidences: Mapping[str, Sequence[float]] = field(default_factory=dict)   # symbol → recent, oldest first
    bar_age_ms: Mapping[str, int] = field(default_factory=dict)         # symbol → exchange ms since last close
    timeframe_ms: int = 60_000
    stale_floor_ms: float = 0.0                                         # bar ages under this are never stale
    kill_switch: str | None = None                                      # its detail, once fired
    mismatches: Mapping[str, str] = field(default_factory=dict)         # symbol → detail


class AlertRules:
    """The rules with their thresholds (``[alerts]`` config section)."""

    def __init__(self, min_confidence: float = 0.55, max_error_rate_pct: float = 5.0,
                 error_window_seconds: float = 300.0, stale_data_factor: float = 2.0):
        self.min_confidence = float(min_confidence)
        self.max_error_rate_pct = float(max_error_rate_pct)
        self.error_window_seconds = float(error_window_seconds)
        self.stale_data_factor = float(stale_data_factor)

    @classmethod
    def from_config(cls, alerts) -> AlertRules:
        """The rules with the thresholds of a config's ``[alerts]`` section."""
        return cls(alerts.min_confidence, alerts.max_error_rate_pct, alerts.error_window_seconds,
                   alerts.stale_data_factor)

    def evaluate(self, x: RuleInputs) -> list[Condition]:
        """Every condition that holds for ``x`` (pure)."""
        out = []
        for job, since in sorted(x.overdue.items()):
            interval = x.intervals.get(job, 0.0)
            out.append(Condition("skipped_run", f"skipped_run:{job}",
                                 f"{job} has not completed for {since:.1f}s (interval {interval:.3g}s): runs skipped",
                                 data={"job": job, "seconds_since_completion": round(since, 3)}))
        if x.requests >= MIN_REQUESTS and x.errors >= MIN_ERRORS:
            rate = 100.0 * x.errors / x.requests
            if rate > self.max_error_rate_pct:
                out.append(Condition("error_rate", "error_rate",
                                     f"exchange error rate {rate:.1f}% ({x.errors} of {x.requests} requests in the "
                                     f"last {self.error_window_seconds:g}s) > {self.max_error_rate_pct:g}%",
                                     data={"error_rate_pct": round(rate, 3), "requests": x.requests,
                                           "errors": x.errors}))
        for symbol, values in sorted(x.confidences.items()):
            recent = list(values)[-CONFIDENCE_WINDOW:]
            if len(recent) >= MIN_SIGNALS:
                mean = sum(recent) / len(recent)
                if mean < self.min_confidence:
                    out.append(Condition("low_confidence", f"low_confidence:{symbol}",
                                         f"{symbol} model confidence {mean:.3f} (mean of the last {len(recent)} "
                                         f"signals) < {self.min_confidence:g}", symbol,
                                         {"mean_confidence": round(mean, 4), "signals": len(recent)}))
        if x.kill_switch is not None:
            out.append(Condition("kill_switch", "kill_switch", f"kill switch fired: {x.kill_switch}"))
        for symbol, detail in sorted(x.mismatches.items()):
            out.append(Condition("position_mismatch", f"position_mismatch:{symbol}",
                                 f"{symbol} position mismatch with the exchange: {detail}", symbol))
        limit = max(self.stale_data_factor * x.timeframe_ms, x.stale_floor_ms)
        for symbol, age in sorted(x.bar_age_ms.items()):
            if age > limit:
                out.append(Condition("stale_data", f"stale_data:{symbol}",
                                     f"{symbol} last bar closed {age / x.timeframe_ms:.1f} bars ago "
                                     f"(> {self.stale_data_factor:g})", symbol, {"bars_behind": round(age / x.timeframe_ms, 2)}))
        return out


@dataclass
class ActiveAlert:
    """An alert that has fired and not yet ended."""

    condition: Condition
    since: float                          # wall clock, epoch seconds
    drill: str | None = None

    def to_dict(self) -> dict[str, Any]:
        c = self.condition
        return {"rule": c.rule, "severity": c.severity, "message": c.message, "symbol": c.symbol,
                "since": iso_from_epoch(self.since), **({"drill": self.drill} if self.drill else {})}


class AlertManager:
    """The active alerts; fires and resolves them as conditions come and go (thread-safe).

    ``journal(condition, data)`` writes the ``alert`` event; ``webhook`` (optional) receives
    each start and end; ``payload`` adds the run's identity to what the webhook gets;
    ``drill()`` names the drill in progress, if any, so its alerts say so.
    """

    def __init__(self, journal: Callable[[Condition, dict[str, Any]], None], webhook: Webhook | None = None,
                 payload: Callable[[], dict[str, Any]] = dict, drill: Callable[[], str | None] = lambda: None,
                 clock: Callable[[], float] = time.time):
        self._journal, self.webhook, self._payload, self._drill, self._clock = journal, webhook, payload, drill, clock
        self._lock = threading.Lock()
        self._active: dict[str, ActiveAlert] = {}
        self.fired: dict[str, int] = {}
        self._fired_event = threading.Condition(self._lock)

    def update(self, conditions: Sequence[Condition], resolve: bool = True) -> list[Condition]:
        """Fire what is new, resolve what is gone (unless ``resolve`` is false); returns the
        newly fired conditions."""
        now = self._clock()
        drill = self._drill()
        current = {c.key: c for c in conditions}
        with self._lock:
            started = [c for k, c in current.items() if k not in self._active]
            ended = [a for k, a in self._active.items() if k not in current] if resolve else []
            for c in started:
                self._active[c.key] = ActiveAlert(c, now, drill)
            for a in ended:
                del self._active[a.condition.key]
            for k, c in current.items():                   # keep the message current (rates move)
                if k in self._active:
                    self._active[k].condition = c
        for c in started:
            message = c.message + (f" [drill {drill}]" if drill else "")
            data = {"rule": c.rule, "severity": c.severity, "message": message, **dict(c.data)}
            if drill:
                data["drill"] = drill
            try:
                self._journal(c, data)
            except Exception:                 # the alert is still logged and posted
                log.exception("could not journal alert %s", c.rule)
            log.warning("alert %s (%s): %s", c.rule, c.severity, message,
                        extra={"event": "alert", "symbol": c.symbol, "data": {"rule": c.rule, "severity": c.severity,
                                                                             "drill": drill}})
            self._post(c, "firing", now, drill)
        if started:
            with self._lock:                  # counted once journaled: a waiter sees the row
                for c in started:
                    self.fired[c.rule] = self.fired.get(c.rule, 0) + 1
                self._fired_event.notify_all()
        for a in ended:
            c = a.condition
            log.info("alert %s resolved after %.1fs", c.rule, now - a.since,
                     extra={"event": "alert_resolved", "symbol": c.symbol, "data": {"rule": c.rule}})
            self._post(c, "resolved", now, a.drill)
        return started

    def _post(self, c: Condition, state: str, now: float, drill: str | None) -> None:
        if self.webhook is None:
            return
        body = {**self._payload(), "state": state, "rule": c.rule, "severity": c.severity, "message": c.message,
                "symbol": c.symbol, "ts": iso_from_epoch(now), "drill": drill}
        self.webhook.post(body)

    def active(self) -> list[dict[str, Any]]:
        """The alerts active now, oldest first (as ``/health`` lists them)."""
        with self._lock:
            return [a.to_dict() for a in sorted(self._active.values(), key=lambda a: (a.since, a.condition.key))]

    def wait_fired(self, rule: str, timeout: float, stop: threading.Event | None = None) -> bool:
        """Wait until ``rule`` has fired at least once (or ``timeout`` / ``stop``)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while not self.fired.get(rule):
                left = deadline - time.monotonic()
                if left <= 0 or (stop is not None and stop.is_set()):
                    return False
                self._fired_event.wait(min(left, 0.1))
            return True


class Webhook:
    """POSTs JSON documents to ``url`` from a background thread (queue of :data:`QUEUE` at most;
    each request bounded by ``timeout_s``). Failures are logged without the URL's query."""

    QUEUE = 1000

    def __init__(self, url: str, timeout_s: float = 3.0):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UserError(f"--alert-webhook must be an http(s) URL, not {url!r}")
        self.url, self.timeout_s = url, timeout_s
        self._label = f"{parts.scheme}://{parts.netloc}{parts.path}"
        loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")     # never through a proxy
        self._opener = urllib.request.build_opener(*([urllib.request.ProxyHandler({})] if loopback else []))
        self._queue: queue.Queue = queue.Queue(self.QUEUE)
        self.sent = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._worker, name="alert-webhook", daemon=True)
        self._thread.start()

    def post(self, body: dict[str, Any]) -> None:
        """Queue ``body``; never blocks (a full queue drops it, with a warning)."""
        try:
            self._queue.put_nowait(body)
        except queue.Full:
            self.failed += 1
            log.warning("alert webhook queue full: alert %s not posted", body.get("rule"),
                        extra={"event": "webhook_error"})

    def close(self, wait_s: float = 5.0) -> None:
        """Deliver what is queued (for at most ``wait_s``), then stop the thread."""
        try:
            self._queue.put(None, timeout=wait_s)
        except queue.Full:
            return
        self._thread.join(wait_s)

    def _worker(self) -> None:
        while True:
            body = self._queue.get()
            if body is None:
                return
            data = json.dumps(body, default=str).encode()
            request = urllib.request.Request(self.url, data=data, method="POST",
                                             headers={"Content-Type": "application/json",
                                                      "User-Agent": "quantum-trader-harness"})
            try:
                with self._opener.open(request, timeout=self.timeout_s) as reply:
                    reply.read(1024)
                self.sent += 1
            except Exception as exc:             # a receiver's trouble never reaches the run
                self.failed += 1
                log.warning("alert webhook %s failed: %s", self._label, type(exc).__name__,
                            extra={"event": "webhook_error", "data": {"rule": body.get("rule")}})
