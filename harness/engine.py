"""Wiring: data → feed → strategy → risk guard → broker → journal, for a replay.

:func:`plan_replay` checks everything a user can get wrong (window, symbols, strategy,
parameters, data) without writing anything; :func:`run_replay` runs the plan through
backtrader on the preloaded, runonce path and writes the journal. :func:`replay` does both.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import backtrader as bt
import numpy as np

from harness.config import Config
from harness.datasets import Bars, Store, fingerprint, quality_report
from harness.errors import DatasetError, HarnessError
from harness.fills import FillConfig
from harness.journal import Journal, code_version, new_run_id, now_ms
from harness.model import DAY_MS, Event, MarketRules, ms_to_iso, normalize_symbol, parse_time, timeframe_ms
from harness.recorder import Recorder, trades_table
from harness.risk import RiskLimits
from harness.strategy import StrategyContext, load_strategy, resolve_params, strategy_name


@dataclass
class ReplayPlan:
    """A validated replay: what will run, on which bars, with which rules."""

    config: Config
    exchange: str
    symbols: tuple[str, ...]
    timeframe: str
    start: int
    end: int
    bars: dict[str, Bars]
    rules: dict[str, MarketRules]
    data_fingerprint: str
    quality: dict[str, dict]
    strategy_cls: type
    strategy: str
    params: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    datasets_dir: Any = None

    @property
    def synthetic(self) -> bool:
        return self.exchange == "synthetic"

    @property
    def bar_count(self) -> int:
        return sum(len(b) for b in self.bars.values())


@dataclass
class RunResult:
    run_id: str
    summary: dict[str, Any]
    report: str | None = None
    verdict: Any = None


def pick_exchange(store: Store, wanted: str, symbols: tuple[str, ...], timeframe: str, notes: list[str]) -> str:
    """The datasets exchange to replay: the configured one, else the only one holding the symbols."""
    def holds(exchange: str) -> bool:
        try:
            return all(store.source_timeframe(exchange, s, timeframe) for s in symbols)
        except DatasetError:
            return False

    if holds(wanted):
        return wanted
    others = [ex for ex in store.exchanges() if ex != wanted and holds(ex)]
    if len(others) == 1:
        notes.append(f"no {timeframe} data for {', '.join(symbols)} under exchange={wanted}; "
                     f"using exchange={others[0]} (set run.exchange to choose)")
        return others[0]
    listing = ", ".join(f"{i.exchange}:{i.symbol}:{i.timeframe}" for i in store.list()) or "nothing"
    raise DatasetError(f"no {timeframe} data for {', '.join(symbols)} under {store.root}/exchange={wanted} "
                       f"(recorded: {listing}); import, fetch or synthesise it first (python cli.py data --help)")


def plan_window(store: Store, exchange: str, symbols: tuple[str, ...], timeframe: str, days: float,
                end: int | None) -> tuple[int, int]:
    """``[start, end)`` of ``days`` ending at ``end`` (default: the last bar recorded for all symbols)."""
    step = timeframe_ms(timeframe)
    coverage = {s: store.coverage(exchange, s, timeframe) for s in symbols}
    last_common = min(c[1] for c in coverage.values())
    window_end = last_common if end is None else end
    window_end -= window_end % step
    start = window_end - int(round(days * DAY_MS))
    start += -start % step                      # the first whole bar of the window
    for symbol, (first, last) in coverage.items():
        if start < first or window_end > last:
            span = (last - first) / DAY_MS
            raise DatasetError(
                f"asked for {days:g} days ending {ms_to_iso(window_end)}, but {symbol} {timeframe} is recorded "
                f"from {ms_to_iso(first)} to {ms_to_iso(last)} ({span:.1f} days); ask for fewer days, "
                f"move --end, or record more (python cli.py data fetch/import)")
    return start, window_end


def plan_replay(config: Config, store: Store, days: float, end: int | None = None) -> ReplayPlan:
    """Validate a replay without writing anything; raises a UserError on bad input."""
    if not days > 0:
        raise DatasetError(f"--days must be positive, not {days}")
    symbols = tuple(normalize_symbol(s) for s in config.run.symbols)
    timeframe = config.run.timeframe
    timeframe_ms(timeframe)
    cls = load_strategy(config.run.strategy)
    name = strategy_name(config.run.strategy, cls)
    params = resolve_params(cls, name, dict(config.strategy.params))
    notes: list[str] = []
    _quote(symbols)
    exchange = pick_exchange(store, config.run.exchange, symbols, timeframe, notes)
    start, stop = plan_window(store, exchange, symbols, timeframe, days, end)
    bars = store.read_many(exchange, symbols, timeframe, start, stop)
    for symbol, b in bars.items():
        if len(b) == 0:
            raise DatasetError(f"no {symbol} bars between {ms_to_iso(start)} and {ms_to_iso(stop)}")
    rules = {}
    for symbol in symbols:
        found = store.rules(exchange, symbol, at=start)
        if found is None:
            found = MarketRules(symbol, lot_step=1e-8, tick_size=1e-8)
            notes.append(f"no market-rules snapshot for {symbol} on {exchange}: lot step and tick 1e-8, no min notional")
        rules[symbol] = found
    quality = {s: quality_report(b, exchange) for s, b in bars.items()}
    return ReplayPlan(config, exchange, symbols, timeframe, start, stop, bars, rules,
                      fingerprint(bars.values(), exchange), quality, cls, name, params, notes, store.root)


def build_cerebro(plan: ReplayPlan, broker, recorder: Recorder, mode: str) -> tuple[bt.Cerebro, list]:
    from harness.feed import ReplayFeed, install_fast_forward

    install_fast_forward()
    cerebro = bt.Cerebro(stdstats=False, preload=True, runonce=True, exactbars=False, quicknotify=False)
    feeds = []
    for symbol in plan.symbols:
        feed = ReplayFeed(plan.bars[symbol])
        cerebro.adddata(feed, name=symbol)
        feeds.append(feed)
    context = StrategyContext(plan.config, mode, plan.symbols, plan.timeframe, plan.rules, recorder)
    cerebro.addstrategy(bind_strategy(plan.strategy_cls, context), **plan.params)
    cerebro.setbroker(broker)
    return cerebro, feeds


def bind_strategy(cls: type, context: StrategyContext, skip_warmup: bool = False) -> type:
    """A subclass of the user's strategy that knows its run and introduces itself to the broker
    (the kill switch sends its flattening orders on the strategy's behalf). With
    ``skip_warmup`` its ``next`` does nothing on bars a live feed marks as warm-up history."""

    def start(self):
        self.broker.strategy = self
        super(bound, self).start()

    members: dict = {"harness": context, "start": start}
    if skip_warmup:
        def next(self):
            if any(getattr(d, "warming", False) for d in self.datas):
                return
            super(bound, self).next()

        members["next"] = next
    bound = type(cls.__name__, (cls,), members)
    return bound


def equity_table(plan: ReplayPlan, changes: list[tuple[int, float, dict[str, float]]], cash: float):
    """The equity curve on the run's clock, valued at each bar's close, from the fills' step changes."""
    step = timeframe_ms(plan.timeframe)
    axis = np.unique(np.concatenate([b.ts + step for b in plan.bars.values()]))
    n = len(axis)
    cash_arr = np.full(n, cash)
    holdings = {s: np.zeros(n) for s in plan.symbols}
    if changes:
        idx = np.array([c[0] - 1 for c in changes])          # broker steps are 1-based axis positions
        pos = np.searchsorted(idx, np.arange(n), side="right") - 1
        have = pos >= 0
        cash_arr[have] = np.array([c[1] for c in changes])[pos[have]]
        for s in plan.symbols:
            q = np.array([c[2].get(s, 0.0) for c in changes])
            holdings[s][have] = q[pos[have]]
    value = np.zeros(n)
    gross = np.zeros(n)
    for s, bars in plan.bars.items():
        close = np.full(n, np.nan)
        close[np.searchsorted(axis, bars.ts + step)] = bars.close
        close = _ffill(close)
        v = np.nan_to_num(holdings[s] * close)
        value += v
        gross += np.abs(v)
    equity = cash_arr + value
    peak = np.maximum.accumulate(equity)
    drawdown = np.where(peak > 0, (peak - equity) / peak * 100.0, 0.0)
    exposure = np.where(equity > 0, gross / equity, 0.0)
    import pyarrow as pa

    from harness.journal import SCHEMAS, TS

    columns = [pa.array(axis, pa.int64()).cast(TS), pa.array(cash_arr), pa.array(value), pa.array(equity),
               pa.array(exposure), pa.array(drawdown)]
    return pa.Table.from_arrays(columns, schema=SCHEMAS["equity"])


def _ffill(values: np.ndarray) -> np.ndarray:
    mask = np.isnan(values)
    if not mask.any():
        return values
    idx = np.where(~mask, np.arange(len(values)), 0)
    np.maximum.accumulate(idx, out=idx)
    return values[idx]            # leading NaNs stay NaN: their index points at the first (NaN) value


def run_info(plan: ReplayPlan, run_id: str, mode: str, started_at: int) -> tuple[dict, dict]:
    """The ``runs`` row and ``run.json`` of a run about to start."""
    config = plan.config
    row = {"run_id": run_id, "mode": mode, "strategy": plan.strategy, "params": plan.params,
           "symbols": list(plan.symbols), "timeframe": plan.timeframe, "start": plan.start, "end": plan.end,
           "cash": config.run.cash, "profile": config.profile, "config_digest": config.digest(),
           "data_fingerprint": plan.data_fingerprint, "code_version": code_version(), "started_at": started_at,
           "status": "running", "exchange": plan.exchange, "synthetic": plan.synthetic, "bars": plan.bar_count}
    info = {**row, "start": ms_to_iso(plan.start), "end": ms_to_iso(plan.end), "started_at": ms_to_iso(started_at),
            "config": config.to_dict(), "data_quality": plan.quality,
            "risk_limits": RiskLimits.from_config(config.risk).active(), "notes": plan.notes}
    return row, info


def run_replay(plan: ReplayPlan, journal: Journal, progress: Callable[[int, int], None] | None = None,
               report: bool = True, gates_path: str | None = None) -> RunResult:
    """Run a planned replay and journal it; returns the summary (and the report path)."""
    from harness.brokers.paper import PaperBroker

    mode = "replay"
    started_at = now_ms()
    run_id = new_run_id(plan.strategy, started_at)
    row, info = run_info(plan, run_id, mode, started_at)
    journal.start_run(row, info)
    recorder = Recorder()
    for symbol, quality in plan.quality.items():     # the window's holes, on the record before trading
        for first, last in quality.get("gap_spans", []):
            missing = (parse_time(last) - parse_time(first)) // timeframe_ms(plan.timeframe) + 1
            recorder.event(Event(parse_time(first), "data_gap", symbol, f"{missing} bar(s) missing from {first}",
                                 data={"from": first, "to": last, "missing": int(missing)}))
    config = plan.config
    broker = PaperBroker(config.run.cash, dict(plan.rules), FillConfig.from_config(config),
                         limits=RiskLimits.from_config(config.risk), recorder=recorder,
                         quote_asset=_quote(plan.symbols))
    total_steps = len(np.unique(np.concatenate([b.ts for b in plan.bars.values()])))
    if progress is not None:
        broker.progress = lambda step: progress(step, total_steps)
    cerebro, feeds = build_cerebro(plan, broker, recorder, mode)
    broker.attach(feeds)
    clock = time.perf_counter()
    try:
        cerebro.run()
    except Exception as exc:
        journal.update_run(run_id, status="failed", finished_at=now_ms())
        info.update(status="failed", error=f"{type(exc).__name__}: {exc}", finished_at=ms_to_iso(now_ms()))
        journal.write_run_json(run_id, info)
        if isinstance(exc, HarnessError):
            raise
        raise HarnessError(f"replay {run_id} failed in the strategy or engine: {type(exc).__name__}: {exc}") from exc
    elapsed = time.perf_counter() - clock
    tables = recorder.tables()
    tables["trades"] = trades_table(recorder.fills, {s: r.lot_step for s, r in plan.rules.items()})
    tables["equity"] = equity_table(plan, broker.changes, config.run.cash)
    status = "halted" if broker.halted else "completed"
    summary = summarize(plan, run_id, mode, tables, status, elapsed)
    finished = now_ms()
    journal.finish_run(run_id, tables, {"status": status, "finished_at": finished,
                                        "final_equity": summary["final_equity"], "return_pct": summary["return_pct"],
                                        "summary": summary})
    info.update(status=status, finished_at=ms_to_iso(finished), summary=summary)
    journal.write_run_json(run_id, info)
    result = RunResult(run_id, summary)
    finalize(journal, result, report, gates_path, plan.datasets_dir)
    return result


def finalize(journal: Journal, result: RunResult, report: bool, gates_path: str | None,
             datasets_dir=None) -> None:
    """Evaluate the gates (and write the report) for a finished run; records the verdict in the
    journal and in the run's summary."""
    if report:
        from harness.report import make_report

        path, verdict = make_report(journal, result.run_id, gates_path=gates_path, datasets_dir=datasets_dir)
        result.report = str(path)
        result.summary["report"] = str(path)
    else:
        from harness.gates import verdict_for_run

        verdict = verdict_for_run(journal, result.run_id, gates_path, datasets_dir=datasets_dir)
    result.verdict = verdict
    result.summary["verdict"] = verdict.status
    journal.update_run(result.run_id, summary=result.summary, verdict=verdict.status)


def summarize(plan: ReplayPlan, run_id: str, mode: str, tables: dict, status: str,
              elapsed: float) -> dict[str, Any]:
    return {
        "run_id": run_id, "mode": mode, "status": status, "strategy": plan.strategy, "params": plan.params,
        "symbols": list(plan.symbols), "timeframe": plan.timeframe, "exchange": plan.exchange,
        "synthetic": plan.synthetic, "start": ms_to_iso(plan.start), "end": ms_to_iso(plan.end),
        "bars": plan.bar_count, **tables_summary(tables, plan.config.run.cash, plan.timeframe),
        "data_fingerprint": plan.data_fingerprint, "config_digest": plan.config.digest(),
        "profile": plan.config.profile, "verdict": None, "report": None,
        "elapsed_s": round(elapsed, 3), "bars_per_s": round(plan.bar_count / elapsed) if elapsed > 0 else None,
        "notes": plan.notes,
    }


def tables_summary(tables: dict, start_equity: float | None, timeframe: str) -> dict[str, Any]:
    """The figures every run summary shows, from its journal tables (replay, paced and live alike)."""
    import json

    from harness.metrics import sharpe_ratio

    equity = tables["equity"].column("equity").to_numpy()
    drawdown = tables["equity"].column("drawdown_pct").to_numpy()
    start = start_equity if start_equity is not None else (float(equity[0]) if len(equity) else None)
    final = float(equity[-1]) if len(equity) else start
    closed = sum(1 for v in tables["trades"].column("closed_at").to_pylist() if v is not None)
    denials: dict[str, int] = {}
    kinds = tables["events"].column("kind").to_pylist()
    for kind, data in zip(kinds, tables["events"].column("data").to_pylist(), strict=True):
        if kind == "risk_denied":
            limit = json.loads(data or "{}").get("limit", "?")
            denials[limit] = denials.get(limit, 0) + 1
    sharpe = sharpe_ratio(equity, timeframe_ms(timeframe)) if len(equity) >= 3 else None
    return {
        "orders": tables["orders"].num_rows, "fills": tables["fills"].num_rows, "trades": closed,
        "open_trades": tables["trades"].num_rows - closed, "risk_denials": sum(denials.values()),
        "risk_denials_by_limit": dict(sorted(denials.items())), "kill_switch": "kill_switch" in kinds,
        "final_equity": None if final is None else round(final, 8),
        "return_pct": round((final / start - 1) * 100, 6) if final and start else None,
        "max_drawdown_pct": round(float(drawdown.max()), 6) if len(drawdown) else 0.0,
        "sharpe": None if sharpe is None else round(float(sharpe), 6),
        "fees": quote_fees(tables["fills"]),
    }


def quote_fees(fills) -> float:
    """Fees of a fills table in the quote asset (a fee in the base asset valued at its fill price)."""
    total = 0.0
    for symbol, fee, asset, price in zip(*(fills.column(c).to_pylist() for c in ("symbol", "fee", "fee_asset", "price")),
                                         strict=True):
        total += fee * price if asset == symbol.split("/")[0] else fee
    return round(total, 8)


def _quote(symbols: tuple[str, ...]) -> str:
    quotes = {s.split("/")[1] for s in symbols}
    if len(quotes) != 1:
        raise DatasetError(f"symbols {', '.join(symbols)} have different quote assets; one run trades one quote asset")
    return quotes.pop()


def replay(config: Config, store: Store, journal: Journal, days: float, end: int | None = None,
           progress=None, report: bool = True, gates_path: str | None = None) -> RunResult:
    """Plan and run a replay (the ``replay`` command)."""
    plan = plan_replay(config, store, days, end)
    for note in plan.notes:
        print(f"note: {note}", file=sys.stderr)
    return run_replay(plan, journal, progress=progress, report=report, gates_path=gates_path)
