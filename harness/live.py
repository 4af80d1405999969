"""Live staging: the same strategy and guard as replay, on bars from an exchange, with orders
to the Binance spot testnet or a loopback paper exchange (DESIGN 3.8).

One :class:`LiveSession` per run: it checks the target and keys, connects, registers (or
resumes) the run, and runs backtrader in next mode on the feeds of :mod:`harness.market_data`
with the exchange broker behind the guard; on a signal, the end of the duration or window, or
a kill switch it cancels open orders and closes the journal. "Now" is the exchange's clock,
so the same loop runs against the testnet and against a paper exchange replaying at N× speed.

Nothing here reaches a mainnet endpoint: the exchange adapter refuses any host that is neither
the testnet nor loopback, and :func:`check_target` refuses to start without one of them.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import backtrader as bt

from harness.config import Config
from harness.datasets import Store
from harness.errors import ConfigError, DatasetError, ExchangeError, HarnessError, SafetyError, UserError
from harness.fills import FillConfig
from harness.journal import Journal, code_version, new_run_id, now_ms
from harness.market_data import ExchangeClock, MarketData, PumpedFeed
from harness.model import Event, ms_to_iso, normalize_symbol, timeframe_ms
from harness.recorder import DurableRecorder
from harness.risk import RiskLimits
from harness.strategy import StrategyContext, load_strategy, resolve_params, strategy_name

log = logging.getLogger("harness.live")


@dataclass
class LiveOptions:
    """How a live session runs (the ``live`` command's options, or paced replay's)."""

    testnet: bool = False
    url: str | None = None
    mode: str | None = None                 # default: live-testnet / live-paper from the target
    duration_ms: int | None = None          # exchange time
    resume: str | None = None
    warmup_bars: int | None = None          # default: live.warmup_bars
    time_offset: int = 0                    # exchange time - data time (paced replay)
    stop_at: int | None = None              # data time: the window's end (paced replay)
    first_bar: int | None = None            # data time of the first bar to deliver (paced replay)
    clock_rate: float | None = None         # known exchange-clock speed (paced replay); else measured
    tap: bool = True                        # write polled bars to datasets/
    api_key: str | None = None
    api_secret: str | None = None
    status_port: int | None = None
    install_signals: bool = True
    hooks: dict[str, Any] = field(default_factory=dict)


def check_target(options: LiveOptions) -> None:
    """Refuse to start without ``--testnet`` or a loopback ``--exchange-url`` (nothing is sent)."""
    from harness.exchange import check_endpoint

    if options.testnet and options.url:
        raise SafetyError("choose one target: --testnet or --exchange-url, not both")
    if not options.testnet and not options.url:
        raise SafetyError("refusing to start: pass --testnet (Binance spot testnet) or --exchange-url "
                          "http://127.0.0.1:PORT (a paper exchange); mainnet is never traded")
    if options.url:
        check_endpoint(options.url, testnet=False)


def check_live_environment(config: Config, options: LiveOptions) -> None:
    """Everything a live start needs, checked before anything is sent (exit 2 on each)."""
    check_target(options)
    execution = config.execution
    if options.testnet and not execution.binance_testnet:
        raise SafetyError("QT_EXECUTION_BINANCE_TESTNET / execution.binance_testnet is false, but the harness "
                          "trades only the testnet or a paper exchange; set it to true")
    if execution.exchange.lower() != "binance":
        raise ConfigError(f"execution.exchange (QT_EXECUTION_EXCHANGE) is {execution.exchange!r}; "
                          "the harness trades binance spot only")
    for symbol in config.run.symbols:
        if normalize_symbol(symbol).split("/")[1] != execution.quote_asset.upper():
            raise ConfigError(f"{normalize_symbol(symbol)} is not quoted in {execution.quote_asset} "
                              "(execution.quote_asset / QT_EXECUTION_QUOTE_ASSET)")
    check_keys(config, options)


def check_keys(config: Config, options: LiveOptions) -> tuple[str, str]:
    key = options.api_key or (config.execution.api_key.reveal() if config.execution.api_key else "")
    secret = options.api_secret or (config.execution.api_secret.reveal() if config.execution.api_secret else "")
    if not key or not secret:
        raise ConfigError("missing API keys: set QT_EXECUTION_BINANCE_API_KEY and QT_EXECUTION_BINANCE_API_SECRET "
                          "(or execution.api_key / api_secret in the config file)")
    return key, secret


class LiveSession:
    """One live (or paced) run from start to clean stop."""

    def __init__(self, config: Config, store: Store, journal: Journal, options: LiveOptions):
        check_target(options)
        self.config, self.store, self.journal, self.options = config, store, journal, options
        self.key, self.secret = check_keys(config, options)
        self.symbols = tuple(normalize_symbol(s) for s in config.run.symbols)
        self.timeframe = config.run.timeframe
        timeframe_ms(self.timeframe)
        self.cls = load_strategy(config.run.strategy)
        self.strategy = strategy_name(config.run.strategy, self.cls)
        self.params = resolve_params(self.cls, self.strategy, dict(config.strategy.params))
        quotes = {s.split("/")[1] for s in self.symbols}
        if len(quotes) != 1:
            raise UserError(f"symbols {', '.join(self.symbols)} have different quote assets")
        self.quote = quotes.pop()
        self.mode = options.mode or ("live-testnet" if options.testnet else "live-paper")
        self.refresh_s = float(config.live.refresh_seconds)
        self.stop_requested = threading.Event()
        self.visible_at: dict[int, float] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self._tap_thread: threading.Thread | None = None
        self.run_id: str | None = None
        self._request_seq = 0
        self.telemetry = options.hooks.get("telemetry")

    # -- helpers used by the jobs -------------------------------------------------------------

    def new_request_id(self, prefix: str) -> str:
        self._request_seq += 1
        return f"{prefix}-{self.run_id[-6:] if self.run_id else 'x'}-{self._request_seq:06d}"

    def event(self, kind: str, symbol: str, detail: str, data: dict | None = None, request_id: str = "") -> None:
        ts = self.data_now()
        self.recorder.event(Event(ts, kind, symbol, detail, request_id, data or {}))
        if self.telemetry is not None:
            self.telemetry.on_event(kind, symbol, detail, data or {})

    def job(self, name: str, started: float, error: str | None, request_id: str, info: dict) -> None:
        duration = (time.monotonic() - started) * 1000
        state = self.jobs.setdefault(name, {"runs": 0, "failures": 0, "consecutive_failures": 0})
        state["runs"] += 1
        state["last_duration_ms"] = round(duration, 3)
        state["last_start"] = now_ms() - int(duration)
        if error:
            state["failures"] += 1
            state["consecutive_failures"] += 1
            state["last_error"] = error
        else:
            state["consecutive_failures"] = 0
            state["last_completion"] = now_ms()
        if self.telemetry is not None:
            self.telemetry.on_job(name, duration, error, request_id, info)

    def data_now(self) -> int:
        return self.clock.now() - self.options.time_offset

    def tap(self, bars) -> None:
        """Queue polled bars for ``datasets/`` (written on a thread, off the path from bar to order)."""
        if not self.options.tap or len(bars) == 0:
            return
        if self._tap_thread is None:
            import queue

            self._tap_queue = queue.Queue()
            self._tap_thread = threading.Thread(target=self._tap_writer, name="tap", daemon=True)
            self._tap_thread.start()
        self._tap_queue.put(bars)

    def _tap_writer(self) -> None:
        while True:
            bars = self._tap_queue.get()
            if bars is None:
                return
            try:
                self.store.write(self.client.dataset_id, bars, what=f"tapped {bars.symbol}")
            except (DatasetError, OSError) as exc:
                self.event("error", bars.symbol, f"could not write tapped bars: {exc}")

    def _close_tap(self) -> None:
        if self._tap_thread is not None:
            self._tap_queue.put(None)
            self._tap_thread.join(timeout=60)
            self._tap_thread = None

    def _observe(self, event) -> None:
        """Every failed exchange request (retried or not) is journaled; telemetry sees them all."""
        if not event.ok and getattr(self, "recorder", None) is not None:
            self.event("exchange_error", "", f"{event.endpoint}: {event.error}",
                       {"error": event.error, "kind": event.error_kind, "retried": event.error_kind == "temporary",
                        "endpoint": event.endpoint}, event.request_id)
        if self.telemetry is not None:
            self.telemetry.on_request(event)

    # -- the run ----------------------------------------------------------------------------

    def connect(self) -> None:
        from harness.exchange import ExchangeClient

        self.client = ExchangeClient(self.config, url=self.options.url, testnet=self.options.testnet,
                                     api_key=self.key, api_secret=self.secret, observer=self._observe)
        self.clock = ExchangeClock(self.client.server_time, rate=self.options.clock_rate)
        self.rules = self.client.load_rules(self.symbols)
        if self.options.tap:
            self.store.save_rules(self.client.dataset_id, self.rules, self.clock.now(), f"{self.mode} exchangeInfo")

    def run(self):
        """Run until the duration, the window's end, a signal or a kill switch; returns a RunResult."""
        from harness.brokers.testnet import TestnetBroker
        from harness.engine import RunResult, bind_strategy, finalize

        self.connect()
        resume = self.options.resume
        started = now_ms()
        self.started_exchange = self.clock.now()
        last_seq = 0
        if resume:
            from harness.journal import read_wal

            self.run_id = self.journal.run_row(resume)["run_id"]
            self.journal.apply_wal(self.run_id)             # what the crash kept out of the catalog
            wal = read_wal(self.journal.wal_path(self.run_id))
            last_seq = wal[-1][0] if wal else 0
        else:
            self.run_id = new_run_id(self.strategy, started)
        self.recorder = DurableRecorder(self.journal, self.run_id, start_seq=last_seq,
                                        dust={s: r.lot_step for s, r in self.rules.items()})
        prefix = f"{self.run_id[-6:]}-"
        self.broker = TestnetBroker(self.client, dict(self.rules), FillConfig.from_config(self.config),
                                    limits=RiskLimits.from_config(self.config.risk), recorder=self.recorder,
                                    quote_asset=self.quote, id_prefix=prefix, time_offset=self.options.time_offset,
                                    poll_seconds=float(self.config.live.execution_seconds or 1.0),
                                    sync_seconds=float(self.config.live.position_sync_seconds))
        self.broker.visible_at = self.visible_at
        self.market = MarketData(self)
        self.feeds = [PumpedFeed(s, self.timeframe, self.market) for s in self.symbols]
        self.broker.attach(self.feeds)
        if resume:
            from harness.resume import reconcile

            self.recorder.open()
            reconcile(self)
        else:
            self._register(started)
            self.recorder.open()
            self.event("run_started", "", f"{self.mode} run started", {})
        warmup = self.config.live.warmup_bars if self.options.warmup_bars is None else self.options.warmup_bars
        self.market.warm_up(warmup)
        self.broker.sync_positions(self.data_now(), initial=not resume)
        self.broker.window_end = self.options.stop_at
        self.recorder.flush(force=True)
        cerebro = bt.Cerebro(stdstats=False, preload=False, runonce=False, live=True, quicknotify=False,
                             exactbars=False)
        for feed in self.feeds:
            cerebro.adddata(feed, name=feed.symbol)
        context = StrategyContext(self.config, self.mode, self.symbols, self.timeframe, self.rules, self.recorder)
        cerebro.addstrategy(bind_strategy(self.cls, context, skip_warmup=True), **self.params)
        cerebro.setbroker(self.broker)
        self.broker.on_halt = lambda ts, detail: self.market.finish(f"kill switch: {detail}")
        restore = self._install_signals() if self.options.install_signals else None
        if self.telemetry is not None:
            self.telemetry.attach(self)
        before = self.options.hooks.get("before_run")
        if before is not None:                 # paced replay: the exchange's replay clock starts now
            before()
            self.clock = ExchangeClock(self.client.server_time, rate=self.options.clock_rate)
        status = "completed"
        error: BaseException | None = None
        try:
            cerebro.run()
        except Exception as exc:               # the strategy or the exchange broke the run
            error = exc
            status = "failed"
        finally:
            if restore is not None:
                restore()
            if self.telemetry is not None:      # its last rows (alerts, job summaries) before the journal closes
                self.telemetry.detach()
        status = self._stop(status, error)
        summary = self._summary(status)
        result = RunResult(self.run_id, summary)
        if error is not None:
            if isinstance(error, HarnessError):
                raise error
            raise HarnessError(f"live run {self.run_id} failed: {type(error).__name__}: {error}") from error
        finalize(self.journal, result, report=self.options.hooks.get("report", True),
                 gates_path=self.options.hooks.get("gates_path"), datasets_dir=self.store.root)
        return result

    def _register(self, started: int) -> None:
        config = self.config
        plan = getattr(self, "plan", None)        # paced replay: the window it replays
        row = {"run_id": self.run_id, "mode": self.mode, "strategy": self.strategy, "params": self.params,
               "symbols": list(self.symbols), "timeframe": self.timeframe,
               "start": plan.start if plan else self.data_now(), "end": plan.end if plan else None,
               "cash": config.run.cash if plan else None, "profile": config.profile,
               "config_digest": config.digest(), "data_fingerprint": plan.data_fingerprint if plan else None,
               "code_version": code_version(), "started_at": started, "status": "running",
               "exchange": plan.exchange if plan else self.client.dataset_id,
               "synthetic": bool(plan and plan.synthetic), "bars": plan.bar_count if plan else 0}
        info = {**row, "start": ms_to_iso(row["start"]), "end": ms_to_iso(row["end"]), "started_at": ms_to_iso(started),
                "config": config.to_dict(), "risk_limits": RiskLimits.from_config(config.risk).active(),
                "target": "testnet" if self.options.testnet else "loopback paper exchange",
                "data_quality": plan.quality if plan else {}, "notes": plan.notes if plan else []}
        self.run_info = info
        self.journal.start_run(row, info)

    def _install_signals(self):
        if threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum, frame):
            log.warning("signal %s: stopping cleanly", signum)
            self.stop_requested.set()

        old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        return lambda: [signal.signal(sig, h) for sig, h in old.items()]

    def _stop(self, status: str, error: BaseException | None) -> str:
        """Cancel open orders, take the last equity point, write everything, close the run."""
        self._close_tap()
        ts = self.data_now()
        try:
            self.broker.cancel_all(ts, "run stopped")
            for symbol in self.symbols:
                self.broker.pull_fills(symbol)
        except ExchangeError as exc:
            self.event("exchange_error", "", f"shutdown: {exc}", {"error": str(exc), "kind": "shutdown"})
        if self.broker.halted and status == "completed":
            status = "halted"
        if self.stop_requested.is_set() and status == "completed":
            self.event("run_stopped", "", "stopped by signal", {})
        plan = getattr(self, "plan", None)
        last = self.recorder.equity_rows[-1]["ts"] if self.recorder.equity_rows else None
        final_ts = plan.end if plan is not None else ts
        if last is None or final_ts > last:          # the closing equity point (a paced window has it)
            self.broker._mark(final_ts)
        stats = self.client.stats()
        requests = sum(v["requests"] for v in stats.values())
        errors = sum(v["errors"] for v in stats.values())
        self.event("exchange_stats", "", f"{requests} requests, {errors} errors", {"requests": requests, "errors": errors})
        if error is not None:
            self.event("error", "", f"{type(error).__name__}: {error}", {})
        self.recorder.close()
        finished = now_ms()
        tables = self.journal.read_tables(self.run_id)
        from harness.engine import tables_summary

        plan = getattr(self, "plan", None)
        start_equity = plan.config.run.cash if plan else (
            self.recorder.equity_rows[0]["equity"] if self.recorder.equity_rows else None)
        figures = tables_summary(tables, start_equity, self.timeframe)
        fields = {"status": status, "finished_at": finished, "end": plan.end if plan else ts,
                  "final_equity": figures["final_equity"], "return_pct": figures["return_pct"],
                  "cash": start_equity, "bars": self.bars_seen()}
        self.journal.finish_run(self.run_id, tables, fields)
        info = getattr(self, "run_info", None) or {}
        info.update(status=status, finished_at=ms_to_iso(finished), end=ms_to_iso(fields["end"]), cash=start_equity,
                    bars=fields["bars"])
        self.journal.write_run_json(self.run_id, info)
        self.final = {"status": status, "tables": tables, "figures": figures}
        return status

    def bars_seen(self) -> int:
        """Bars the run traded on (warm-up history not counted)."""
        return self.market.delivered

    def _summary(self, status: str) -> dict[str, Any]:
        row = self.journal.run_row(self.run_id)
        lat = sorted(self.broker.bar_latencies_ms)
        return {
            "run_id": self.run_id, "mode": self.mode, "status": status, "strategy": self.strategy,
            "params": self.params, "symbols": list(self.symbols), "timeframe": self.timeframe,
            "exchange": row.get("exchange"), "synthetic": bool(row.get("synthetic")),
            "start": _iso(row.get("start")), "end": _iso(row.get("end")), "bars": self.bars_seen(),
            **self.final["figures"],
            "kill_switch": self.broker.halted,
            "profile": self.config.profile, "verdict": None, "report": None,
            "latency_ms": {"p50": lat[len(lat) // 2] if lat else None,
                           "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else None, "n": len(lat)},
        }


def _iso(value) -> str | None:
    return None if value is None else ms_to_iso(int(value.timestamp() * 1000))


def run_live(config: Config, store: Store, journal: Journal, options: LiveOptions):
    """The ``live`` command: check the target and keys, then run a session watched by its
    telemetry (job timings, alerts, JSON logs, ``--status-port``, ``--drill``: harness.telemetry)."""
    from harness.telemetry import live_telemetry

    with live_telemetry(config, options):
        return LiveSession(config, store, journal, options).run()
