"""Telemetry of a live run: job timings, the state the status server shows, alerts, drills, logs.

``run_live`` wraps every live session in one :class:`Telemetry` (a context manager: JSON log
lines and the status server for the duration of the run). The session calls it back:

- ``attach(session)`` before ``cerebro.run()``: it taps the run's recorder (every journaled
  event, signal, order and fill passes by it), wraps the broker's ``next`` and the market-data
  job's ``pump`` to time the execution job, and starts the watcher thread that evaluates the
  alert rules (:mod:`harness.alerts`) and counts skipped runs (:mod:`harness.jobs`);
- ``on_job`` for each market-data-refresh run; ``on_request`` for each HTTP request;
- ``detach()`` when ``cerebro.run()`` returns, before the journal is closed.

**execution-rebalance** is one pass of the broker and the strategy over a new closed bar
(``broker.next`` → ``strategy.next`` → orders routed), timed from the broker's pass to the next
market-data pump; when ``live.execution_seconds`` (``QUANTUM_TRADER_EXECUTION_SECONDS``) is set
it also runs on that cadence without a bar (order polls, position syncs). Its exchange calls
carry the run's request id. Its interval is ``execution_seconds``, else one bar on the
exchange's clock; the market-data job's is ``refresh_seconds`` or one bar, whichever is shorter;
neither is taken as shorter than :data:`MIN_INTERVAL_S` (a paper exchange at a high ``--speed``
would otherwise turn scheduling jitter into skipped runs), and a bar is stale only once it is
also that many real intervals old.

The status server never touches the session: it reads :meth:`Telemetry.state`, a copy of
snapshots the trading thread leaves after each job run (under a lock held for microseconds).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from typing import Any

from harness.alerts import AlertManager, AlertRules, Condition, RuleInputs, Webhook
from harness.jobs import EXECUTION, MARKET_DATA, JobBook, JobRun
from harness.logs import LogContext, iso_from_epoch, structured_logging
from harness.model import Event, timeframe_ms

log = logging.getLogger("harness.telemetry")

OWN_KINDS = frozenset({"job", "skipped_run", "alert", "exchange_stats", "drill"})
LEVELS = {"exchange_error": logging.WARNING, "order_rejected": logging.WARNING, "data_gap": logging.WARNING,
          "kill_switch": logging.ERROR, "position_mismatch": logging.ERROR, "error": logging.ERROR,
          "risk_denied": logging.WARNING}
STATS_SECONDS = 300.0          # exchange_stats journaled this often (the last row wins)
MIN_INTERVAL_S = 0.5           # job intervals are never taken as shorter (a fast paper exchange's jitter)
SIGNALS_KEPT = 1000


class Telemetry(contextlib.AbstractContextManager):
    """Job telemetry, alerts, structured logs, status server and drill of one live run."""

    def __init__(self, config, *, status_port: int | None = None, log_file: str | None = None,
                 alert_webhook: str | None = None, drill: str | None = None, secrets: tuple[str, ...] = (),
                 structured_logs: bool = True, watch_interval_s: float = 0.25):
        self.config = config
        self.rules = AlertRules.from_config(config.alerts)
        self.context = LogContext(profile=config.profile)
        self.status_port, self.log_file, self.drill_name = status_port, log_file, drill
        self._secrets = tuple(s for s in secrets if s)
        self._structured = structured_logs
        self._watch_interval = watch_interval_s
        self.webhook = Webhook(alert_webhook) if alert_webhook else None
        self.alerts = AlertManager(self._journal_alert, self.webhook, self.identity, self._active_drill)
        self.refresh_s = float(config.live.refresh_seconds)
        self.execution_s = None if config.live.execution_seconds is None else float(config.live.execution_seconds)
        self.tf_ms = timeframe_ms(config.run.timeframe)
        self.jobs = JobBook({MARKET_DATA: self.market_data_interval, EXECUTION: self.execution_interval})
        self.session = None
        self.server = None
        self.drill = None
        self.started = time.time()
        self.finished = False
        self._lock = threading.Lock()
        self._snapshot: dict[str, Any] = {}
        self._window: deque[tuple[float, bool]] = deque()
        self._totals = [0, 0]
        self._signals: deque[dict[str, Any]] = deque(maxlen=SIGNALS_KEPT)
        self._confidence: dict[str, deque[tuple[float, bool]]] = {}
        self._confidence_drill = False
        self._halted: str | None = None
        self._mismatch: dict[str, str] = {}
        self._mismatch_fresh = False
        self._exec: dict[str, Any] | None = None
        self._exec_last = 0.0
        self._lens: list[int] = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stack = contextlib.ExitStack()
        self._restore: list[tuple[object, str]] = []
        self._last_stats = time.monotonic()

    @classmethod
    def from_options(cls, config, options) -> Telemetry:
        """The telemetry the ``live`` options ask for (refuses an impossible drill first)."""
        from harness.drills import check_drill
        from harness.live import check_keys

        hooks = options.hooks
        check_drill(hooks.get("drill"), config, options)
        return cls(config, status_port=options.status_port, log_file=hooks.get("log_file"),
                   alert_webhook=hooks.get("alert_webhook"), drill=hooks.get("drill"),
                   secrets=check_keys(config, options))

    # -- lifecycle ------------------------------------------------------------------------------

    def __enter__(self) -> Telemetry:
        if self._structured:
            self._stack.enter_context(structured_logging(self.context, self._secrets, path=self.log_file))
        if self.status_port is not None:
            from harness.status_server import StatusServer

            self.server = StatusServer(self, port=self.status_port).start()
            self._stack.callback(self.server.stop)
            log.info("status server on %s", self.server.url, extra={"event": "status_server",
                                                                    "data": {"url": self.server.url}})
        return self

    def __exit__(self, *exc) -> None:
        if self.session is not None and not self.finished:
            self.detach()
        if self.webhook is not None:
            self.webhook.close()
        self._stack.close()

    def attach(self, session) -> None:
        """Start watching ``session`` (called right before its event loop starts)."""
        self.session = session
        self.context.run_id, self.context.mode = session.run_id, session.mode
        self._tap(session.recorder, "event", self._seen_event)
        self._tap(session.recorder, "signal", self._seen_signal)
        self._tap(session.recorder, "order", self._seen_order)
        self._tap(session.recorder, "fill", self._seen_fill)
        self._wrap(session.broker, "next", self._broker_next)
        self._wrap(session.market, "pump", self._pump)
        self._lens = [len(f) for f in session.feeds]
        self._refresh_snapshot()
        self.jobs.start_watch()
        self._thread = threading.Thread(target=self._watch, name="telemetry-watch", daemon=True)
        self._thread.start()
        log.info("%s run %s watching %s %s", session.mode, session.run_id, ", ".join(session.symbols),
                 session.timeframe, extra={"event": "run_watch", "data": {"strategy": session.strategy,
                                                                          "drill": self.drill_name}})
        if self.drill_name:
            from harness.drills import DrillRunner

            self.drill = DrillRunner(self.drill_name, self)
            self.drill.start()

    def detach(self) -> None:
        """Stop watching (the loop has ended; the journal is still open): last rows, threads joined."""
        if self.session is None or self.finished:
            return
        try:
            if self._exec is not None:
                self._close_execution()
            if self.drill is not None:
                self.drill.stop()
            self._stop.set()
            self._wake.set()
            if self._thread is not None:
                self._thread.join(10)
            self._watch_once(final=True)
            for row in self.jobs.due_summaries(force=True):
                self._journal_job(row)
        except Exception:                   # telemetry must never cost the run its journal
            log.exception("telemetry detach failed")
        finally:
            self.finished = True
            for obj, name in self._restore:
                obj.__dict__.pop(name, None)
            self._restore.clear()
            log.info("run %s: telemetry stopped", self.session.run_id, extra={"event": "run_unwatch"})

    def _tap(self, obj, name: str, observer) -> None:
        inner = getattr(obj, name)

        def tapped(*args, **kwargs):
            result = inner(*args, **kwargs)
            try:
                observer(*args, **kwargs)
            except Exception:               # an observer must never break the recorder
                log.exception("telemetry observer %s failed", name)
            return result

        setattr(obj, name, tapped)
        self._restore.append((obj, name))

    def _wrap(self, obj, name: str, wrapper) -> None:
        inner = getattr(obj, name)
        setattr(obj, name, lambda: wrapper(inner))
        self._restore.append((obj, name))

    # -- session callbacks ----------------------------------------------------------------------

    def on_event(self, kind: str, symbol: str, detail: str, data: dict) -> None:
        """Session events arrive through the recorder tap (with the broker's); nothing to do here."""

    def on_job(self, name: str, duration_ms: float, error: str | None, request_id: str, info: dict) -> None:
        """One market-data-refresh run (from the trading thread)."""
        self._record(JobRun(name, time.time() - duration_ms / 1000, duration_ms, error, request_id, dict(info)), None)

    def on_request(self, event) -> None:
        """One HTTP request to the exchange (a :class:`harness.exchange.RequestEvent`)."""
        with self._lock:
            self._window.append((time.monotonic(), event.ok))
            self._totals[0] += 1
            self._totals[1] += 0 if event.ok else 1
        fields = {"endpoint": event.endpoint, "duration_ms": round(event.duration_ms, 3), "ok": event.ok}
        if event.ok:
            log.debug("%s %.1fms", event.endpoint, event.duration_ms,
                      extra={"event": "exchange_request", "request_id": event.request_id, "data": fields})
        else:
            log.warning("%s failed (%s): %s", event.endpoint, event.error_kind, event.error,
                        extra={"event": "exchange_request", "request_id": event.request_id,
                               "data": {**fields, "error_kind": event.error_kind, "error": event.error}})

    # -- the execution job ----------------------------------------------------------------------

    def _broker_next(self, inner) -> None:
        feeds = self.session.feeds
        lens = [len(f) for f in feeds]
        new_bar, self._lens = lens != self._lens, lens
        warming = any(getattr(f, "warming", False) for f in feeds)
        now = time.monotonic()
        timed = self.execution_s is not None and now - self._exec_last >= self.execution_s
        if self._exec is None and ((new_bar and not warming) or timed):
            from harness.exchange import request_id_var

            self._exec_last = now
            request_id = self.session.new_request_id("ex")
            request_id_var.set(request_id)
            self._exec = {"started": time.time(), "t0": now, "request_id": request_id, "error": None,
                          "bar": new_bar and not warming, "signals": 0}
        inner()

    def _pump(self, inner) -> None:
        if self._exec is not None:
            self._close_execution()
        inner()

    def _close_execution(self) -> None:
        from harness.exchange import request_id_var

        run, self._exec = self._exec, None
        request_id_var.set(None)
        duration = (time.monotonic() - run["t0"]) * 1000
        if run["bar"] and self._confidence_drill and not run["signals"]:
            for symbol in self.session.symbols:          # a strategy without a model: readings of its own
                self._observe_confidence(symbol, self.drill_confidence(), True)
        self._record(JobRun(EXECUTION, run["started"], duration, run["error"], run["request_id"],
                            {"bar": run["bar"]}), run["started"] + self.execution_interval())

    def _record(self, run: JobRun, next_due: float | None) -> None:
        rows = self.jobs.record(run, next_due)
        level = logging.WARNING if run.error else logging.INFO
        log.log(level, "%s %s in %.1fms%s", run.job, run.outcome, run.duration_ms,
                f": {run.error}" if run.error else "",
                extra={"event": "job", "request_id": run.request_id,
                       "data": {"job": run.job, "duration_ms": round(run.duration_ms, 3), "outcome": run.outcome,
                                **run.info}})
        for row in rows:
            self._journal_job(row, run.request_id if row.get("outcome") == "error" else "")
        self._refresh_snapshot()

    # -- recorder taps (trading thread, or the watcher for this module's own kinds) -------------

    def _seen_event(self, event: Event) -> None:
        kind = event.kind
        if kind in OWN_KINDS:
            return
        log.log(LEVELS.get(kind, logging.INFO), "%s: %s", kind, event.detail,
                extra={"event": kind, "symbol": event.symbol, "request_id": event.request_id or None,
                       "data": {"fields": event.data} if event.data else {}})
        if kind == "exchange_error" and self._exec is not None and not self._exec["error"]:
            self._exec["error"] = event.detail
        with self._lock:
            if kind == "kill_switch":
                self._halted = event.detail or "fired"
            elif kind == "position_mismatch":
                self._mismatch[event.symbol] = event.detail
                self._mismatch_fresh = True
            elif kind == "positions_synced":
                if self._mismatch_fresh:
                    self._mismatch_fresh = False
                else:
                    self._mismatch.clear()
        if kind in ("kill_switch", "position_mismatch", "positions_synced"):
            self._refresh_snapshot()
            self._wake.set()

    def _seen_signal(self, ts, symbol, signal, confidence, model_version, acted) -> None:
        row = {"ts": int(ts), "symbol": symbol, "signal": float(signal), "confidence": float(confidence),
               "model_version": model_version, "acted": bool(acted)}
        with self._lock:
            self._signals.append(row)
            drill = self._confidence_drill
        if self._exec is not None:
            self._exec["signals"] += 1
        self._observe_confidence(symbol, self.drill_confidence() if drill else float(confidence), drill)

    def _observe_confidence(self, symbol: str, value: float, drill: bool) -> None:
        with self._lock:
            self._confidence.setdefault(symbol, deque(maxlen=64)).append((value, drill))

    def _seen_order(self, order, ts) -> None:
        log.info("order %s %s %s %g %s", order.order_id, order.side.value, order.type.value, order.qty,
                 order.status.value, extra={"event": "order", "symbol": order.symbol,
                                            "data": {"order_id": order.order_id, "status": order.status.value,
                                                     "side": order.side.value, "qty": order.qty,
                                                     "price": order.price, "filled_qty": order.filled_qty}})

    def _seen_fill(self, fill, exchange_trade_id: str = "") -> None:
        log.info("fill %s %s %g @ %g", fill.order_id, fill.side.value, fill.qty, fill.price,
                 extra={"event": "fill", "symbol": fill.symbol,
                        "data": {"fill_id": fill.fill_id, "order_id": fill.order_id, "qty": fill.qty,
                                 "price": fill.price, "fee": fill.fee, "fee_asset": fill.fee_asset}})

    # -- snapshots ------------------------------------------------------------------------------

    def _refresh_snapshot(self) -> None:
        """What the status server shows of the account and data (trading thread only)."""
        s = self.session
        broker, market = s.broker, s.market
        p = broker.portfolio
        equity = p.equity()
        latest = dict(market.latest)
        for feed in s.feeds:                            # before the first live bar: the last warm-up bar
            if feed.symbol not in latest and len(feed):
                latest[feed.symbol] = (0, float(feed.close[0]))
        snap = {
            "equity": equity, "cash": p.cash,
            "gross_exposure": p.gross_exposure() / equity if equity > 0 else 0.0,
            "positions": {sym: pos.qty for sym, pos in p.positions.items() if pos.qty},
            "open_orders": len(broker.open_orders), "positions_synced": bool(broker.positions_synced),
            "last_sync": broker.last_sync_ts, "halted": bool(broker.halted),
            "last_open": dict(market.last_open),
            "prices": {sym: latest[sym][1] if sym in latest else p.prices.get(sym) for sym in s.symbols},
            "taken_at": time.time(),
        }
        with self._lock:
            self._snapshot = snap

    def state(self) -> dict[str, Any]:
        """A consistent copy of everything the status endpoints show (any thread)."""
        s = self.session
        clock = getattr(s, "clock", None)
        with self._lock:
            snap = dict(self._snapshot)
            signals = list(self._signals)
            totals = tuple(self._totals)
        requests, errors = self.request_window()
        return {
            "identity": self.identity(), "attached": s is not None, "finished": self.finished,
            "started": self.started, "now": time.time(),
            "exchange_now": clock.now() if clock is not None and s is not None else None,
            "clock_rate": clock.rate if clock is not None else 1.0,
            "time_offset": s.options.time_offset if s is not None else 0, "timeframe_ms": self.tf_ms,
            "snapshot": snap, "jobs": self.jobs.view(), "alerts": self.alerts.active(), "fired": dict(self.alerts.fired),
            "signals": signals, "requests": {"total": totals[0], "errors": totals[1], "window_requests": requests,
                                             "window_errors": errors, "window_seconds": self.rules.error_window_seconds},
            "drill": {"name": self.drill_name, "outcome": self.drill.outcome if self.drill else None}
            if self.drill_name else None,
        }

    def identity(self) -> dict[str, Any]:
        """Who this run is: run id, mode, profile, strategy, symbols, timeframe."""
        s = self.session
        return {"run_id": self.context.run_id, "mode": self.context.mode, "profile": self.context.profile,
                "strategy": getattr(s, "strategy", None), "symbols": list(getattr(s, "symbols", ()) or ()),
                "timeframe": self.config.run.timeframe}

    # -- intervals and windows ------------------------------------------------------------------

    def _rate(self) -> float:
        clock = getattr(self.session, "clock", None)
        return max(float(getattr(clock, "rate", 1.0) or 1.0), 1e-6)

    def market_data_interval(self) -> float:
        """Seconds (real) within which the market-data job must run: a bar or the refresh interval."""
        return max(MIN_INTERVAL_S, min(self.refresh_s, self.tf_ms / 1000 / self._rate()))

    def execution_interval(self) -> float:
        """Seconds (real) within which the execution job must run."""
        interval = self.execution_s if self.execution_s is not None else self.tf_ms / 1000 / self._rate()
        return max(MIN_INTERVAL_S, interval)

    def request_window(self) -> tuple[int, int]:
        """(requests, errors) over the last ``error_window_seconds``."""
        cutoff = time.monotonic() - self.rules.error_window_seconds
        with self._lock:
            while self._window and self._window[0][0] < cutoff:
                self._window.popleft()
            return len(self._window), sum(1 for _, ok in self._window if not ok)

    def execution_runs(self) -> int:
        """Execution-rebalance runs so far."""
        return self.jobs.jobs[EXECUTION].runs

    def wait_execution_runs(self, n: int, stop: threading.Event, timeout: float | None = None) -> bool:
        """Wait until ``n`` execution runs have happened (False if ``stop`` or ``timeout`` came first)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.execution_runs() < n:
            if stop.wait(0.05) or self._stop.is_set() or (deadline is not None and time.monotonic() > deadline):
                return False
        return True

    # -- drills ---------------------------------------------------------------------------------

    def drill_confidence(self) -> float:
        """The confidence a low-confidence drill reports: half the alert threshold."""
        return self.rules.min_confidence / 2

    def set_confidence_drill(self, on: bool) -> None:
        """While on, the confidence rule reads :meth:`drill_confidence`; off drops those readings."""
        with self._lock:
            self._confidence_drill = on
            if not on:
                for symbol, values in self._confidence.items():
                    self._confidence[symbol] = deque((v for v in values if not v[1]), maxlen=values.maxlen)
        self._wake.set()

    def request_position_sync(self) -> None:
        """Ask the broker to re-read balances on its next pass (a drill's debit is seen at once)."""
        self.session.broker._last_sync = float("-inf")

    def _active_drill(self) -> str | None:
        return self.drill_name if self.drill is not None and self.drill.outcome == "injected" else None

    # -- the watcher ----------------------------------------------------------------------------

    def _watch(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._watch_interval)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self._watch_once()
            except Exception:
                log.exception("telemetry watcher failed")

    def _watch_once(self, final: bool = False) -> None:
        if not final:
            for job, due_at in self.jobs.missed():
                log.warning("%s skipped a run due at %s", job, iso_from_epoch(due_at),
                            extra={"event": "skipped_run", "data": {"job": job}})
                self.journal_event("skipped_run", f"{job} run due at {iso_from_epoch(due_at)} did not complete",
                                   {"job": job, "due_at": iso_from_epoch(due_at)})
            for row in self.jobs.due_summaries():
                self._journal_job(row)
            if time.monotonic() - self._last_stats >= STATS_SECONDS:
                self._last_stats = time.monotonic()
                self._journal_stats()
        # once the loop has ended, a stalled job is the shutdown: fire what is new, resolve nothing
        self.alerts.update(self.rules.evaluate(self._rule_inputs(final)), resolve=not final)

    def _rule_inputs(self, final: bool) -> RuleInputs:
        requests, errors = self.request_window()
        with self._lock:
            confidences = {sym: [v for v, _ in values] for sym, values in self._confidence.items()}
            halted, mismatches = self._halted, dict(self._mismatch)
            last_open = dict(self._snapshot.get("last_open") or {})
        ages = {}
        if not final and last_open:
            now = self.session.clock.now()
            ages = {sym: now - (ts + self.tf_ms) for sym, ts in last_open.items()}
        return RuleInputs(overdue={} if final else self.jobs.overdue(),
                          intervals={MARKET_DATA: self.market_data_interval(), EXECUTION: self.execution_interval()},
                          requests=requests, errors=errors, confidences=confidences, bar_age_ms=ages,
                          timeframe_ms=self.tf_ms, kill_switch=halted, mismatches=mismatches,
                          stale_floor_ms=self.rules.stale_data_factor * MIN_INTERVAL_S * 1000 * self._rate())

    # -- journal --------------------------------------------------------------------------------

    def journal_event(self, kind: str, detail: str, data: dict[str, Any], symbol: str = "",
                      request_id: str = "") -> None:
        """One row in the run's ``events`` (any thread)."""
        self.session.event(kind, symbol, detail, data, request_id)

    def _journal_alert(self, condition: Condition, data: dict[str, Any]) -> None:
        self.journal_event("alert", data["message"], data, condition.symbol)

    def _journal_job(self, row: dict[str, Any], request_id: str = "") -> None:
        detail = f"{row['job']} {row['outcome']}" + (f" ({row['runs']} runs)" if row.get("runs") else "")
        data = {k: v for k, v in row.items() if k != "request_id"}
        self.journal_event("job", detail, data, request_id=request_id or row.get("request_id", ""))

    def _journal_stats(self) -> None:
        stats = self.session.client.stats()
        requests = sum(v["requests"] for v in stats.values())
        errors = sum(v["errors"] for v in stats.values())
        self.journal_event("exchange_stats", f"{requests} requests, {errors} errors",
                           {"requests": requests, "errors": errors})


def live_telemetry(config, options) -> Telemetry:
    """The run's telemetry: the one in ``options.hooks["telemetry"]``, else one made from the options."""
    existing = options.hooks.get("telemetry")
    if existing is not None:
        return existing
    telemetry = Telemetry.from_options(config, options)
    options.hooks["telemetry"] = telemetry
    return telemetry
