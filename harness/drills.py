"""Alert drills (``live --drill NAME``): inject a fault so a critical alert can be tested on demand.

Drills run only against a loopback paper exchange (``--exchange-url``), never the testnet. Once
the run has processed :data:`BASELINE_RUNS` live bars (a healthy baseline), the drill injects
its fault, waits for its alert, and journals a ``drill`` event
``{drill, rule, fault, outcome: injected | fired | not fired, seconds}`` at injection and at the
end. The alert itself is journaled, logged and POSTed like any other, with ``drill`` in its data.

===============  ==============  ==============================================================
drill            alert           fault
===============  ==============  ==============================================================
skipped-run      skipped_run     the exchange holds the next klines reply for three intervals of
                                 the market-data job (beyond the client's timeout: several held
                                 replies, each timed out and retried)
error-burst      error_rate      the next klines requests fail with 503, enough of them to take
                                 the error rate of the window over twice the threshold
low-confidence   low_confidence  at the model boundary, not the exchange (no exchange fault lowers
                                 a model's confidence): the alert rule reads each signal's
                                 confidence as ``min_confidence / 2`` (one reading per bar per
                                 symbol if the strategy emits none) until the alert has fired and
                                 two more bars have passed; the journal keeps the true signals
kill-switch      kill_switch     the exchange takes a share of every free balance (twice the
                                 drawdown limit), and the broker re-reads balances at once: the
                                 next bar's equity breaches ``risk.max_drawdown_pct``
===============  ==============  ==============================================================

Faults reach the exchange (another process) through its signed admin endpoint
``POST /_harness/faults`` (:class:`FaultClient`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import threading
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlencode

from harness.errors import ConfigError, ExchangeError, SafetyError, UserError

log = logging.getLogger("harness.drills")

DRILLS = {"skipped-run": "skipped_run", "error-burst": "error_rate", "low-confidence": "low_confidence",
          "kill-switch": "kill_switch"}
BASELINE_RUNS = 3            # live bars processed before the fault
CLIENT_TIMEOUT_S = 10.0      # the exchange adapter gives up on a reply after this long
HOLD_LIMIT_S = 8.0           # longest reply held back in one piece
ALERT_TIMEOUT_S = 600.0      # how long a drill waits for its alert (the run's end stops it sooner)


def check_drill(name: str | None, config, options) -> None:
    """Refuse a drill that cannot run (nothing has been sent yet): exit 2, one line."""
    if name is None:
        return
    if name not in DRILLS:
        raise UserError(f"unknown drill {name!r}: one of {', '.join(DRILLS)}")
    if options.testnet or not options.url:
        raise SafetyError(f"--drill {name} injects faults into a loopback paper exchange: it cannot run against "
                          "the testnet; use --exchange-url http://127.0.0.1:PORT (python cli.py exchange serve)")
    from harness.exchange import check_endpoint

    if check_endpoint(options.url, testnet=False) != "loopback":
        raise SafetyError(f"--drill {name} runs only against a loopback paper exchange")
    if name == "kill-switch" and config.risk.max_drawdown_pct is None:
        raise ConfigError("--drill kill-switch needs a drawdown limit to trip: use --profile staging or "
                          "--set risk.max_drawdown_pct=10")


class FaultClient:
    """Signed requests to a paper exchange's ``POST /_harness/faults`` (loopback, no proxy)."""

    def __init__(self, url: str, api_key: str, api_secret: str, timeout_s: float = 5.0):
        self.url = url.rstrip("/") + "/_harness/faults"
        self._key, self._secret = api_key, api_secret.encode()
        self.timeout_s = timeout_s
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def inject(self, kind: str, **params: Any) -> dict[str, Any]:
        """Arm ``kind`` (a fault kind, ``debit`` or ``clear``); returns the exchange's answer."""
        fields = {"kind": kind, **{k: str(v) for k, v in params.items() if v is not None},
                  "timestamp": str(int(time.time() * 1000)), "recvWindow": "10000"}
        query = urlencode(fields)
        signature = hmac.new(self._secret, query.encode(), hashlib.sha256).hexdigest()
        request = urllib.request.Request(self.url, data=f"{query}&signature={signature}".encode(), method="POST",
                                         headers={"X-MBX-APIKEY": self._key,
                                                  "Content-Type": "application/x-www-form-urlencoded"})
        try:
            with self._opener.open(request, timeout=self.timeout_s) as reply:
                return json.loads(reply.read() or b"{}")
        except urllib.error.HTTPError as exc:
            with exc:
                detail = exc.read(300).decode(errors="replace")
            raise ExchangeError(f"the paper exchange refused fault {kind!r}: HTTP {exc.code} {detail}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise ExchangeError(f"cannot reach the paper exchange to inject {kind!r}: {exc}") from None


class DrillRunner:
    """One drill on its own thread, driven by the run's :class:`~harness.telemetry.Telemetry`."""

    def __init__(self, name: str, telemetry, faults: FaultClient | None = None):
        self.name, self.rule = name, DRILLS[name]
        self.telemetry = telemetry
        self.faults = faults
        self.outcome: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Run the drill on its own thread (the session is attached and trading)."""
        session = self.telemetry.session
        if self.faults is None:
            self.faults = FaultClient(session.options.url, session.key, session.secret)
        self._thread = threading.Thread(target=self._run, name=f"drill-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, wait_s: float = 10.0) -> None:
        """End the drill (the run is stopping); its last ``drill`` event is written before this returns."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(wait_s)

    def _run(self) -> None:
        t = self.telemetry
        if not t.wait_execution_runs(BASELINE_RUNS, self._stop):
            log.warning("drill %s: the run ended before a baseline of %d bars", self.name, BASELINE_RUNS,
                        extra={"event": "drill"})
            return
        try:
            fault = self._inject()
        except Exception as exc:            # a drill must never break the run
            self.outcome = "failed"
            log.error("drill %s: could not inject the fault: %s", self.name, exc, extra={"event": "drill"})
            t.journal_event("drill", f"drill {self.name} failed: {exc}",
                            {"drill": self.name, "rule": self.rule, "outcome": "failed", "error": str(exc)})
            return
        started = time.monotonic()
        self.outcome = "injected"
        log.warning("drill %s: fault injected (%s); expecting alert %s", self.name, fault, self.rule,
                    extra={"event": "drill", "data": {"drill": self.name, "fault": fault}})
        t.journal_event("drill", f"drill {self.name}: fault injected, expecting {self.rule}",
                        {"drill": self.name, "rule": self.rule, "fault": fault, "outcome": "injected"})
        fired = t.alerts.wait_fired(self.rule, ALERT_TIMEOUT_S, self._stop)
        seconds = round(time.monotonic() - started, 3)
        if self.name == "low-confidence":
            if fired:
                t.wait_execution_runs(t.execution_runs() + 2, self._stop, timeout=30.0)
            t.set_confidence_drill(False)
        self.outcome = "fired" if fired else "not fired"
        level = logging.WARNING if fired else logging.ERROR
        log.log(level, "drill %s: alert %s %s after %.1fs", self.name, self.rule, self.outcome, seconds,
                extra={"event": "drill", "data": {"drill": self.name, "outcome": self.outcome}})
        t.journal_event("drill", f"drill {self.name}: alert {self.rule} {self.outcome} after {seconds:.1f}s",
                        {"drill": self.name, "rule": self.rule, "fault": fault, "outcome": self.outcome,
                         "seconds": seconds})

    def _inject(self) -> dict[str, Any]:
        t = self.telemetry
        if self.name == "skipped-run":
            hold = 3 * t.market_data_interval() + 1.0
            if hold <= HOLD_LIMIT_S:
                fault = {"kind": "timeout", "path": "klines", "count": 1, "delay_s": round(hold, 3)}
            else:                            # each held reply times out in the client and is retried
                fault = {"kind": "timeout", "path": "klines", "count": math.ceil(hold / CLIENT_TIMEOUT_S) + 1,
                         "delay_s": CLIENT_TIMEOUT_S + 2}
        elif self.name == "error-burst":
            requests, _ = t.request_window()
            share = 2 * t.rules.max_error_rate_pct / 100
            count = min(300, max(6, math.ceil(requests * share / max(1e-9, 1 - share)) + 2))
            fault = {"kind": "error", "path": "klines", "count": count, "status": 503}
        elif self.name == "kill-switch":
            limit = float(t.session.config.risk.max_drawdown_pct)
            fault = {"kind": "debit", "fraction": round(min(0.95, max(0.2, 2 * limit / 100)), 4)}
        else:
            t.set_confidence_drill(True)
            return {"kind": "confidence", "confidence": t.drill_confidence()}
        answer = self.faults.inject(**fault)
        if self.name == "kill-switch":
            t.request_position_sync()
            fault["debited"] = answer.get("debited")
        return fault
