"""Report generation time for a 90-day 1m replay (issue 5 aims at under 3 s).

With the shared Binance data, a real 90-day BTC/USDT 1m replay is journaled first; without it,
:func:`build_run` journals a made-up run of the same size (130k equity points). ``build_run``
is also the tests' source of hand-made runs with every kind of evidence in them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from tests.bench.common import best_of, line, peak_rss_mb

ROOT = Path(__file__).resolve().parents[2]
MINUTE = 60_000
T0 = 1_747_699_200_000          # 2025-05-20T00:00:00Z


def build_run(reports: Path, run_id: str = "hand-made", days: float = 1.0, trades: int = 40, signals: bool = False,
              synthetic: bool = False, mode: str = "replay", events: bool = True, seed: int = 7,
              datasets: Path | None = None, symbol: str = "BTC/USDT") -> Any:
    """Journal a made-up run of ``days`` of 1m bars: a seeded random walk, ``trades`` round trips
    held for a quarter of their slot each, optional model signals, and (``events``) one of each
    risk event and alert. With ``datasets``, the bars are written to that store too."""
    from harness.datasets import Bars, Store
    from harness.journal import Journal, table_from_rows

    rng = np.random.default_rng(seed)
    n = int(days * 1440)
    ts = T0 + np.arange(n, dtype=np.int64) * MINUTE
    close = 100_000.0 * np.exp(np.cumsum(rng.normal(0, 8e-4, n)))
    opens = np.concatenate(([close[0]], close[:-1]))
    exchange = "synthetic" if synthetic else "binance"
    if datasets is not None:
        bars = Bars(symbol, "1m", ts, opens, np.maximum(opens, close) * 1.0002, np.minimum(opens, close) * 0.9998,
                    close, rng.uniform(1, 20, n))
        Store(datasets).write(exchange, bars)
    slot = max(n // max(trades, 1), 4)
    held = np.zeros(n)
    trade_rows, fill_rows = [], []
    for k in range(trades):
        i, j = k * slot + 1, min(k * slot + 1 + slot // 4, n - 1)
        if i >= n - 1:
            break
        held[i:j] = 1.0
        pnl = 0.09 * (close[j] - close[i]) - 0.002 * 0.09 * close[i]
        trade_rows.append({"trade_id": f"T{k + 1:06d}", "symbol": symbol, "opened_at": int(ts[i]),
                           "closed_at": int(ts[j]), "qty": 0.09, "entry_price": float(close[i]),
                           "exit_price": float(close[j]), "pnl": float(pnl),
                           "return_pct": float(100 * pnl / (0.09 * close[i])), "fees": float(0.002 * 0.09 * close[i])})
        for side, at in (("buy", i), ("sell", j)):
            fill_rows.append({"fill_id": f"F{len(fill_rows) + 1:06d}", "order_id": f"O{len(fill_rows) + 1:06d}",
                              "ts": int(ts[at]), "symbol": symbol, "side": side, "qty": 0.09, "price": float(close[at]),
                              "fee": float(0.001 * 0.09 * close[at]), "fee_asset": "USDT", "liquidity": "taker"})
    rets = np.concatenate(([0.0], np.diff(close) / close[:-1]))
    fee = np.ones(n)
    for row in fill_rows:                      # 10 bps of the position at each entry and exit
        fee[(row["ts"] - T0) // MINUTE] -= 0.9 * 0.001
    equity = 10_000.0 * np.cumprod((1 + 0.9 * held * rets) * fee)
    gross = 0.9 * held
    peak = np.maximum.accumulate(equity)
    eq_rows = {"ts": ts + MINUTE, "cash": equity * (1 - gross), "positions_value": equity * gross, "equity": equity,
               "gross_exposure": gross, "drawdown_pct": (peak - equity) / peak * 100}
    import pyarrow as pa

    from harness.journal import SCHEMAS, TS

    equity_table = pa.Table.from_arrays(
        [pa.array(eq_rows["ts"], pa.int64()).cast(TS)] + [pa.array(eq_rows[c]) for c in
                                                           ("cash", "positions_value", "equity", "gross_exposure",
                                                            "drawdown_pct")], schema=SCHEMAS["equity"])
    event_rows = []
    if events:
        def ev(event_kind: str, minute: int, detail: str = "", **data: Any) -> dict:
            return {"ts": int(T0 + minute * MINUTE), "kind": event_kind, "symbol": symbol, "detail": detail,
                    "request_id": f"req-{minute}", "data": json.dumps(data, sort_keys=True)}
        event_rows = [ev("risk_denied", 30, "max_order_notional 12,500 > 10,000", limit="max_order_notional",
                         observed=12500.0, threshold=10000.0, order_id="O9", side="buy", qty=0.12),
                      ev("order_rejected", 31, reason="MIN_NOTIONAL", code=-1013, order_id="O10"),
                      ev("exchange_error", 32, error="timeout", kind="temporary", retried=True, endpoint="/api/v3/order"),
                      ev("data_gap", 33, **{"from": "2025-05-20T00:33:00Z", "to": "2025-05-20T00:35:00Z", "missing": 3}),
                      ev("alert", 40, rule="error_rate", severity="critical", message="error rate 7% over 5 minutes"),
                      ev("alert", 50, rule="low_confidence", severity="warning", message="confidence 0.41 < 0.55"),
                      ev("exchange_stats", 60, requests=400, errors=3)]
    signal_rows = []
    if signals:
        for i in range(0, n - 1, 5):
            s = float(np.tanh(rng.normal(0, 1)))
            signal_rows.append({"ts": int(ts[i] + MINUTE), "symbol": symbol, "signal": s,
                                "confidence": float(0.5 + 0.5 * abs(s)), "model_version": "logit-v1", "acted": s > 0})
    journal = Journal(reports)
    start, end = int(ts[0]), int(ts[-1] + MINUTE)
    iso = lambda ms: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))  # noqa: E731
    run = {"run_id": run_id, "mode": mode, "strategy": "hand_made", "params": {"fast": 10, "slow": 30},
           "symbols": [symbol], "timeframe": "1m", "start": start, "end": end, "cash": 10_000.0,
           "config_digest": "0123456789abcdef", "data_fingerprint": "fedcba9876543210", "code_version": "test",
           "status": "running", "exchange": exchange, "synthetic": synthetic, "bars": n}
    run_json = {**run, "start": iso(start), "end": iso(end), "started_at": "2026-01-01T00:00:00Z",
                "config": {"run": {"strategy": "hand_made", "symbols": [symbol], "cash": 10_000.0},
                           "fees": {"taker_bps": 10.0, "maker_bps": 10.0},
                           "execution": {"api_key": "***", "api_secret": "***"}},
                "risk_limits": {"max_order_notional": 10_000.0, "max_drawdown_pct": 10.0},
                "data_quality": {symbol: {"bars": n, "first": iso(start), "last": iso(end - MINUTE), "gaps": 0,
                                          "missing_bars": 0, "duplicates": 0, "ohlc_inconsistent": 0,
                                          "identical_close_runs": [], "ok": True, "issues": []}}}
    journal.start_run(run, run_json)
    journal.finish_run(run_id, {"equity": equity_table, "trades": table_from_rows("trades", trade_rows),
                                "fills": table_from_rows("fills", fill_rows), "events": table_from_rows("events", event_rows),
                                "signals": table_from_rows("signals", signal_rows)},
                       {"status": "completed", "final_equity": float(equity[-1])})
    run_json.update(status="completed", finished_at="2026-01-01T00:01:00Z")
    journal.write_run_json(run_id, run_json)
    return journal


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=900)


def _real_replay(work: Path, env: dict[str, str]) -> str | None:
    from tests.conftest import BTC_1M

    if not BTC_1M.exists():
        return None
    imported = _cli("data", "import", str(BTC_1M), env=env)
    replayed = _cli("replay", "--days", "90", "--symbols", "BTC/USDT", "--strategy", "sma_cross", "--no-report",
                    "--json", env=env)
    if imported.returncode or replayed.returncode:
        print(f"   real replay unavailable ({(imported.stderr or replayed.stderr).strip()[-200:]}); made-up run instead")
        return None
    return json.loads(replayed.stdout)["run_id"]


def _phases(journal: Any, run_id: str, datasets: Path) -> None:
    """Where a warm report's time goes."""
    from harness import gates, metrics, report

    clock = time.perf_counter()
    record = journal.load(run_id)
    t_load = time.perf_counter()
    prices = gates.run_prices(record, datasets)
    t_prices = time.perf_counter()
    values = metrics.compute(record, prices)
    verdict = gates.verdict_from(record, values, gates.load_gates())
    t_metrics = time.perf_counter()
    charts = report.run_charts(record, prices, values)
    report.price_charts(record, prices, metrics.bar_ms(record.run_json) or MINUTE)
    t_charts = time.perf_counter()
    report.render_report(record, prices, values, verdict)
    t_render = time.perf_counter()
    print(f"   phases: journal load {t_load - clock:.2f} s, bars {t_prices - t_load:.2f} s, metrics+gates "
          f"{t_metrics - t_prices:.2f} s, charts {t_charts - t_metrics:.2f} s ({len(charts) + 1} charts), "
          f"whole render {t_render - t_charts:.2f} s", flush=True)


def run() -> None:
    """Print report generation times for a 90-day 1m run; never asserts."""
    with tempfile.TemporaryDirectory(prefix="qt-bench-report-") as tmp:
        work = Path(tmp)
        env = {"QT_DATASETS_DIR": str(work / "datasets"), "QT_REPORTS_DIR": str(work / "reports"),
               "QT_CONFIG": str(ROOT / "config" / "config.toml")}
        run_id = _real_replay(work, env)
        source = "real BTC/USDT 1m replay, sma_cross"
        if run_id is None:
            run_id, source = "bench-90d", "made-up run"
            build_run(work / "reports", run_id, days=90, trades=2500, signals=True, datasets=work / "datasets")
        from harness.journal import Journal
        from harness.report import write_report

        journal = Journal(work / "reports")
        record = journal.load(run_id)
        print(f"   {source}: {len(record.equity):,} equity points, {len(record.trades):,} trades, "
              f"{len(record.signals):,} signals")
        datasets = work / "datasets"
        started, cpu = time.perf_counter(), time.process_time()
        path = write_report(journal, run_id, datasets_dir=datasets)
        line("report, first call in process (lazy imports)", time.perf_counter() - started, "s",
             f"cpu {time.process_time() - cpu:.2f} s")
        cpu = time.process_time()
        wall = best_of(3, lambda: write_report(journal, run_id, datasets_dir=datasets))
        line("report, warm (best of 3)", wall, "s", f"aim < 3 s; cpu {(time.process_time() - cpu) / 3:.2f} s per call")
        line("report size", path.stat().st_size / 1e6, "MB")
        _phases(journal, run_id, datasets)
        import resource

        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        proc = _cli("report", run_id, env=env)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        child_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        line("python cli.py report (new process, end to end)", time.perf_counter() - started, "s",
             f"cpu {child_cpu:.2f} s" if proc.returncode == 0 else f"exit {proc.returncode}")
        print(f"   machine load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
        line("peak RSS of the bench process", peak_rss_mb(), "MB")
