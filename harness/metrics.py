"""Run metrics: pure functions over the journal's frames (no I/O, no wall clock).

:func:`compute` turns a :class:`~harness.journal.RunRecord` into a flat ``{name: value}`` dict
that gates and reports read; ``None`` means "not computable for this run" (no trades, no
signals, a flat equity curve ...), never zero by default. The building blocks are public and
take plain frames or arrays, so each one can be tested against a hand-computed case.

Conventions:

- Percentages are in percent (``max_drawdown_pct = 12.5`` is 12.5 %) and positive for losses
  where the name says so (drawdown); ratios (Sharpe, profit factor, turnover) are plain numbers.
- Returns are simple returns between consecutive equity points. Annualisation uses the run's
  bar timeframe (equity is recorded once per bar) and a 365-day year: crypto trades every day.
  Sharpe is ``mean / std(ddof=1) * sqrt(periods per year)`` with a zero risk-free rate; Sortino
  uses the downside deviation ``sqrt(mean(min(r, 0)^2))`` over all periods (target 0).
- ``equity`` rows are stamped with bar close times; ``equity.gross_exposure`` is
  Σ |position value| / equity (a fraction, as the engine writes it).
- Model metrics need prices: :func:`compute` takes an optional ``prices`` frame (``ts, symbol,
  close``, ``ts`` the bar open time as in the dataset store; the caller reads the run's window
  plus one bar). A signal is stamped when it was made: the close time of the bar it was computed
  from (``HarnessStrategy.emit_signal``), or a little later live. Its outcome is the first full
  close-to-close return after it: from the last close at or before ``ts`` to the next close, so
  nothing the signal could not have known is credited to it. Without prices the hit rate, the
  IC and the calibration are ``None``; the mean confidence needs only the signals.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd

from harness.model import DAY_MS, parse_time, timeframe_ms

YEAR_MS = 365 * DAY_MS
REPLAY_MODES = ("replay",)
CONFIDENCE_EDGES = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)

Value = float | int | None

# name: (label, format) — the format is what format_value uses; order is the report's order.
METRICS: dict[str, tuple[str, str]] = {
    "start_equity": ("Starting equity", "money"),
    "final_equity": ("Final equity", "money"),
    "total_return_pct": ("Total return", "pct"),
    "annualised_return_pct": ("Annualised return", "pct"),
    "volatility_pct": ("Volatility (annualised)", "pct"),
    "sharpe": ("Sharpe ratio", "ratio"),
    "sortino": ("Sortino ratio", "ratio"),
    "calmar": ("Calmar ratio", "ratio"),
    "max_drawdown_pct": ("Max drawdown", "pct"),
    "max_drawdown_duration_days": ("Longest drawdown", "days"),
    "trade_count": ("Closed trades", "int"),
    "open_trades": ("Open trades at end", "int"),
    "win_rate_pct": ("Win rate", "pct"),
    "profit_factor": ("Profit factor", "ratio"),
    "avg_win": ("Average win", "money"),
    "avg_loss": ("Average loss", "money"),
    "avg_trade_return_pct": ("Average trade return", "pct"),
    "expectancy": ("Expectancy per trade", "money"),
    "exposure_time_pct": ("Time in market", "pct"),
    "avg_gross_exposure_pct": ("Average gross exposure", "pct"),
    "max_gross_exposure_pct": ("Peak gross exposure", "pct"),
    "turnover": ("Turnover (× avg equity)", "ratio"),
    "fees_paid": ("Fees paid", "money"),
    "orders": ("Orders", "int"),
    "fills": ("Fills", "int"),
    "order_rejections": ("Orders rejected by the exchange", "int"),
    "risk_denials": ("Risk denials", "int"),
    "kill_switches": ("Kill switches", "int"),
    "exchange_errors": ("Exchange errors", "int"),
    "error_rate_pct": ("Exchange error rate", "pct"),
    "skipped_runs": ("Skipped scheduler runs", "int"),
    "alerts": ("Alerts fired", "int"),
    "data_coverage_pct": ("Data coverage", "pct"),
    "missing_bars": ("Missing bars", "int"),
    "days_run": ("Days run", "days"),
    "run_completed": ("Run completed (1 = yes)", "int"),
    "signals": ("Model signals", "int"),
    "hit_rate_pct": ("Hit rate (signal sign)", "pct"),
    "information_coefficient": ("Information coefficient", "ratio"),
    "calibration_error_pct": ("Calibration error", "pp"),
    "mean_confidence": ("Mean confidence", "ratio"),
}


# --------------------------------------------------------------------------------------------
# helpers


def ms(values: Any) -> np.ndarray:
    """Milliseconds since the epoch (int64) for a Series/array of datetimes or ints."""
    series = pd.Series(values)
    if series.empty:
        return np.empty(0, dtype=np.int64)
    if pd.api.types.is_datetime64_any_dtype(series):
        if series.dt.tz is None:
            series = series.dt.tz_localize("UTC")
        return ((series - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(1, "ms")).to_numpy(dtype=np.int64)
    return series.to_numpy(dtype=np.int64)


def time_ms(value: Any) -> int | None:
    """Milliseconds for an ISO text, a timestamp or an int (None and NaN stay None)."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, str):
        return parse_time(value)
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    return int(stamp.value // 1_000_000)


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def _events(events: pd.DataFrame, kind: str) -> pd.DataFrame:
    if events is None or events.empty:
        return pd.DataFrame(columns=["ts", "kind", "symbol", "detail", "data"])
    return events[events["kind"] == kind]


def event_data(raw: Any) -> dict[str, Any]:
    """The ``events.data`` JSON text as a dict ({} when empty or unreadable)."""
    if not raw or not isinstance(raw, str):
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def window_ms(run_json: dict[str, Any], run: dict[str, Any] | None = None) -> tuple[int | None, int | None]:
    """The run's window ``[start, end)`` in ms, from run.json (or the runs row)."""
    run = run or {}
    return time_ms(run_json.get("start") or run.get("start")), time_ms(run_json.get("end") or run.get("end"))


def bar_ms(run_json: dict[str, Any], equity: pd.DataFrame | None = None) -> int | None:
    """The run's bar length in ms: its timeframe, else the median spacing of its equity points."""
    tf = run_json.get("timeframe")
    if tf:
        return timeframe_ms(tf)
    if equity is not None and len(equity) > 1:
        return int(np.median(np.diff(ms(equity["ts"]))))
    return None


# --------------------------------------------------------------------------------------------
# returns and risk


def periods_per_year(bar_length_ms: int) -> float:
    """How many bars of this length fit in a 365-day year."""
    return YEAR_MS / bar_length_ms


def equity_returns(equity: np.ndarray) -> np.ndarray:
    """Simple returns between consecutive equity values."""
    values = np.asarray(equity, dtype=float)
    if len(values) < 2:
        return np.empty(0)
    return values[1:] / values[:-1] - 1.0


def sharpe_ratio(equity: np.ndarray, step_ms: int) -> float | None:
    """Annualised Sharpe of an equity curve sampled every ``step_ms`` (what the engine's summary uses)."""
    return sharpe(equity_returns(equity), periods_per_year(step_ms))


def total_return_pct(start_equity: float | None, final_equity: float | None) -> float | None:
    """``(final / start - 1) * 100``."""
    if not start_equity or final_equity is None:
        return None
    return _finite((final_equity / start_equity - 1.0) * 100.0)


def annualised_return_pct(total_pct: float | None, duration_ms: int | None) -> float | None:
    """Compound annual growth rate of ``total_pct`` earned over ``duration_ms``."""
    if total_pct is None or not duration_ms or duration_ms <= 0:
        return None
    growth = 1.0 + total_pct / 100.0
    if growth <= 0:
        return -100.0
    try:
        return _finite((growth ** (YEAR_MS / duration_ms) - 1.0) * 100.0)
    except OverflowError:
        return None


def volatility_pct(returns: np.ndarray, ppy: float) -> float | None:
    """Annualised standard deviation of returns (ddof=1), in percent."""
    r = np.asarray(returns, dtype=float)
    if len(r) < 2:
        return None
    return _finite(float(np.std(r, ddof=1)) * math.sqrt(ppy) * 100.0)


def sharpe(returns: np.ndarray, ppy: float) -> float | None:
    """Annualised Sharpe ratio, zero risk-free rate; None when returns do not vary."""
    r = np.asarray(returns, dtype=float)
    if len(r) < 2:
        return None
    sd = float(np.std(r, ddof=1))
    if sd <= 1e-15:
        return None
    return _finite(float(np.mean(r)) / sd * math.sqrt(ppy))


def sortino(returns: np.ndarray, ppy: float) -> float | None:
    """Annualised Sortino ratio (target 0); None when there is no downside."""
    r = np.asarray(returns, dtype=float)
    if len(r) < 2:
        return None
    downside = math.sqrt(float(np.mean(np.minimum(r, 0.0) ** 2)))
    if downside <= 1e-15:
        return None
    return _finite(float(np.mean(r)) / downside * math.sqrt(ppy))


def calmar(annual_pct: float | None, max_dd_pct: float | None) -> float | None:
    """Annualised return over max drawdown (both in percent); None without a drawdown."""
    if annual_pct is None or not max_dd_pct:
        return None
    return _finite(annual_pct / max_dd_pct)


def drawdown_pct(equity: np.ndarray) -> np.ndarray:
    """Drawdown from the running peak at each point, in percent (0 at a new high, positive below)."""
    values = np.asarray(equity, dtype=float)
    if len(values) == 0:
        return np.empty(0)
    peak = np.maximum.accumulate(values)
    return (1.0 - values / peak) * 100.0


def max_drawdown_pct(equity: np.ndarray) -> float | None:
    """The deepest drawdown from a running peak, in percent (0 for a curve that never falls)."""
    dd = drawdown_pct(equity)
    return float(dd.max()) if len(dd) else None


def max_drawdown_duration_days(ts_ms: np.ndarray, equity: np.ndarray) -> float | None:
    """The longest time from a peak until equity is back at it (or the end, if it never is), in days."""
    values = np.asarray(equity, dtype=float)
    ts = np.asarray(ts_ms, dtype=np.int64)
    if len(values) == 0:
        return None
    at_peak = values >= np.maximum.accumulate(values)
    peaks = np.flatnonzero(at_peak)
    longest = 0
    for here, nxt in zip(peaks, [*peaks[1:], None], strict=True):
        if nxt is None:
            if here < len(values) - 1:
                longest = max(longest, int(ts[-1] - ts[here]))
        elif nxt > here + 1:
            longest = max(longest, int(ts[nxt] - ts[here]))
    return longest / DAY_MS


def daily_returns_pct(equity: pd.DataFrame, start_equity: float | None = None) -> pd.Series:
    """Return of each UTC day (last equity point of the day vs the previous day's last), in percent.

    The first day is measured from ``start_equity`` when given, else from the first point."""
    if equity is None or equity.empty:
        return pd.Series(dtype=float)
    days = (ms(equity["ts"]) - 1) // DAY_MS          # a point stamped 00:00 closes the day before
    closes = pd.Series(equity["equity"].to_numpy(dtype=float)).groupby(days).last()
    base = start_equity if start_equity else float(equity["equity"].iloc[0])
    prev = np.concatenate(([base], closes.to_numpy()[:-1]))
    out = (closes.to_numpy() / prev - 1.0) * 100.0
    index = pd.to_datetime(closes.index.to_numpy() * DAY_MS, unit="ms", utc=True)
    return pd.Series(out, index=index)


# --------------------------------------------------------------------------------------------
# trades, exposure, costs


def closed_trades(trades: pd.DataFrame) -> pd.DataFrame:
    """Trades that were closed (``closed_at`` and ``pnl`` set)."""
    if trades is None or trades.empty:
        return pd.DataFrame(columns=["trade_id", "symbol", "opened_at", "closed_at", "pnl", "return_pct"])
    return trades[trades["closed_at"].notna() & trades["pnl"].notna()]


def trade_stats(trades: pd.DataFrame) -> dict[str, Value]:
    """Count, win rate, profit factor, average win / loss, average return and expectancy.

    A win is a closed trade with pnl > 0 (after fees). Profit factor is gross profit over gross
    loss: None without a losing trade (undefined rather than infinite: a run with no loser needs
    a reviewer's eye, not an automatic pass)."""
    closed = closed_trades(trades)
    pnl = closed["pnl"].to_numpy(dtype=float)
    wins, losses = pnl[pnl > 0], pnl[pnl < 0]
    n = len(pnl)
    open_count = 0 if trades is None or trades.empty else int(trades["closed_at"].isna().sum())
    return {
        "trade_count": n,
        "open_trades": open_count,
        "win_rate_pct": 100.0 * len(wins) / n if n else None,
        "profit_factor": float(wins.sum() / -losses.sum()) if len(losses) else None,
        "avg_win": float(wins.mean()) if len(wins) else None,
        "avg_loss": float(losses.mean()) if len(losses) else None,
        "avg_trade_return_pct": float(closed["return_pct"].astype(float).mean()) if n else None,
        "expectancy": float(pnl.mean()) if n else None,
    }


def exposure_stats(equity: pd.DataFrame) -> dict[str, Value]:
    """Time in market (share of equity points holding a position) and gross exposure (a fraction
    of equity in the journal) as percent: average and peak."""
    if equity is None or equity.empty:
        return {"exposure_time_pct": None, "avg_gross_exposure_pct": None, "max_gross_exposure_pct": None}
    eq = equity["equity"].to_numpy(dtype=float)
    frac = np.abs(equity["gross_exposure"].fillna(0.0).to_numpy(dtype=float)) * 100.0
    held = np.abs(equity["positions_value"].fillna(0.0).to_numpy(dtype=float)) > 1e-9 * np.abs(eq)
    return {"exposure_time_pct": float(held.mean() * 100.0), "avg_gross_exposure_pct": float(frac.mean()),
            "max_gross_exposure_pct": float(frac.max())}


def fill_fees(fills: pd.DataFrame) -> np.ndarray:
    """Each fill's fee in the quote asset (a fee charged in the base asset is valued at the fill price)."""
    if fills is None or fills.empty:
        return np.empty(0)
    base = fills["symbol"].astype(str).str.split("/").str[0]
    fee = fills["fee"].fillna(0.0).to_numpy(dtype=float)
    in_base = (fills["fee_asset"].astype(str) == base).to_numpy()
    return np.where(in_base, fee * fills["price"].to_numpy(dtype=float), fee)


def fees_paid(fills: pd.DataFrame) -> float:
    """Total fees in the quote asset."""
    return float(fill_fees(fills).sum())


def turnover(fills: pd.DataFrame, equity: pd.DataFrame) -> float | None:
    """Traded notional (buys and sells) over average equity."""
    if equity is None or equity.empty:
        return None
    mean_equity = float(equity["equity"].mean())
    if mean_equity <= 0:
        return None
    if fills is None or fills.empty:
        return 0.0
    notional = (fills["qty"].abs() * fills["price"]).sum()
    return float(notional / mean_equity)


# --------------------------------------------------------------------------------------------
# operations: denials, errors, scheduler, data


def event_counts(events: pd.DataFrame) -> dict[str, int]:
    """Risk denials, kill switches, exchange rejections and errors, alerts."""
    return {"order_rejections": len(_events(events, "order_rejected")),
            "risk_denials": len(_events(events, "risk_denied")),
            "kill_switches": len(_events(events, "kill_switch")),
            "exchange_errors": len(_events(events, "exchange_error")),
            "alerts": len(_events(events, "alert"))}


def error_rate_pct(events: pd.DataFrame, mode: str) -> float | None:
    """Exchange errors / requests in percent, from the last ``exchange_stats`` event.

    A replay talks to no exchange: 0. A live or paced run without ``exchange_stats`` cannot
    say how many requests it made: None."""
    stats = _events(events, "exchange_stats")
    if stats.empty:
        return 0.0 if mode in REPLAY_MODES else None
    data = event_data(stats["data"].iloc[-1])
    requests, errors = data.get("requests"), data.get("errors")
    if not requests or errors is None:
        return None
    return 100.0 * float(errors) / float(requests)


def skipped_runs(events: pd.DataFrame, mode: str) -> int | None:
    """Scheduler runs that were due and did not happen. A replay has no scheduler: 0. A live run
    whose journal holds no scheduler telemetry at all (no ``job`` events) cannot tell: None."""
    skipped = len(_events(events, "skipped_run"))
    if mode in REPLAY_MODES or skipped:
        return skipped
    return 0 if len(_events(events, "job")) else None


def data_coverage_pct(run_json: dict[str, Any]) -> float | None:
    """Bars present over bars expected in the window, across the run's symbols, in percent."""
    start, end = window_ms(run_json)
    symbols = run_json.get("symbols") or []
    bars = run_json.get("bars")
    if bars is None and run_json.get("data_quality"):
        bars = sum(int(q.get("bars", 0)) for q in run_json["data_quality"].values())
    step = bar_ms(run_json)
    if start is None or end is None or end <= start or not symbols or bars is None or not step:
        return None
    expected = len(symbols) * -(-(end - start) // step)
    return 100.0 * float(bars) / expected


def missing_bars(run_json: dict[str, Any], events: pd.DataFrame) -> int | None:
    """Missing bars in the window: from run.json's data quality, else from ``data_gap`` events."""
    quality = run_json.get("data_quality")
    if quality:
        return int(sum(int(q.get("missing_bars", 0)) for q in quality.values()))
    gaps = _events(events, "data_gap")
    if gaps.empty:
        return 0 if "data_quality" in run_json else None
    return int(sum(int(event_data(d).get("missing", 0)) for d in gaps["data"]))


def run_completed(run_json: dict[str, Any], run: dict[str, Any] | None = None) -> int | None:
    """1 when the run finished (``completed``, or ``halted`` by its kill switch), 0 when it failed,
    was interrupted or is still running; None when the journal does not say."""
    status = (run or {}).get("status") or run_json.get("status")
    if not status:
        return None
    return int(status in ("completed", "halted"))


def days_run(run_json: dict[str, Any], equity: pd.DataFrame, run: dict[str, Any] | None = None) -> float | None:
    """Length of the run's window in days (a live run's end is its last equity point when unset)."""
    start, end = window_ms(run_json, run)
    if end is None and equity is not None and not equity.empty:
        end = int(ms(equity["ts"])[-1])
    if start is None and equity is not None and not equity.empty:
        start = int(ms(equity["ts"])[0])
    if start is None or end is None:
        return None
    return max(end - start, 0) / DAY_MS


# --------------------------------------------------------------------------------------------
# model evaluation


def signal_outcomes(signals: pd.DataFrame, prices: pd.DataFrame | None, bar_length_ms: int) -> pd.DataFrame:
    """Signals joined to the first close-to-close return after them (column ``fwd_return``).

    ``prices.ts`` are bar open times; a bar closes at ``ts + bar_length_ms``. Rows whose
    closes are missing from ``prices`` get NaN."""
    cols = ["ts", "symbol", "signal", "confidence", "fwd_return"]
    if signals is None or signals.empty:
        return pd.DataFrame(columns=cols)
    out = signals[["ts", "symbol", "signal", "confidence"]].copy()
    out["bar"] = ms(out["ts"]) // bar_length_ms * bar_length_ms
    if prices is None or prices.empty:
        out["fwd_return"] = np.nan
        return out[cols]
    px = pd.DataFrame({"symbol": prices["symbol"].to_numpy(), "bar": ms(prices["ts"]) + bar_length_ms,
                       "close": prices["close"].to_numpy(dtype=float)}).sort_values(["symbol", "bar"])
    nxt_close = px.groupby("symbol")["close"].shift(-1)
    nxt_bar = px.groupby("symbol")["bar"].shift(-1)
    px["fwd_return"] = np.where(nxt_bar == px["bar"] + bar_length_ms, nxt_close / px["close"] - 1.0, np.nan)
    merged = out.merge(px[["symbol", "bar", "fwd_return"]], on=["symbol", "bar"], how="left")
    return merged[cols]


def hit_rate_pct(outcomes: pd.DataFrame) -> float | None:
    """Share of signals whose sign matches the next bar's return (zeros and unknowns left out)."""
    if outcomes.empty:
        return None
    s = np.sign(outcomes["signal"].to_numpy(dtype=float))
    r = np.sign(outcomes["fwd_return"].to_numpy(dtype=float))
    valid = (s != 0) & (r != 0) & np.isfinite(r)
    if not valid.any():
        return None
    return float((s[valid] == r[valid]).mean() * 100.0)


def spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman rank correlation (average ranks for ties); None for fewer than 3 points or no variation."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3:
        return None
    rx = pd.Series(x[ok]).rank().to_numpy()
    ry = pd.Series(y[ok]).rank().to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return None
    return _finite(float(np.corrcoef(rx, ry)[0, 1]))


def information_coefficient(outcomes: pd.DataFrame) -> float | None:
    """Spearman rank correlation of the signal with the next bar's return, over all signals."""
    if outcomes.empty:
        return None
    return spearman(outcomes["signal"].to_numpy(dtype=float), outcomes["fwd_return"].to_numpy(dtype=float))


def calibration(outcomes: pd.DataFrame, edges: tuple[float, ...] = CONFIDENCE_EDGES) -> list[dict[str, Any]]:
    """Hit rate per confidence bucket ``[lo, hi)`` (the last bucket includes 1.0); empty buckets left out."""
    if outcomes.empty:
        return []
    conf = outcomes["confidence"].to_numpy(dtype=float)
    s = np.sign(outcomes["signal"].to_numpy(dtype=float))
    r = np.sign(outcomes["fwd_return"].to_numpy(dtype=float))
    valid = (s != 0) & (r != 0) & np.isfinite(r) & np.isfinite(conf)
    rows = []
    for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        last = i == len(edges) - 2
        inside = valid & (conf >= lo) & ((conf <= hi) if last else (conf < hi))
        n = int(inside.sum())
        if n:
            rows.append({"lo": lo, "hi": hi, "count": n, "mean_confidence": float(conf[inside].mean()),
                         "hit_rate_pct": float((s[inside] == r[inside]).mean() * 100.0)})
    return rows


def calibration_error_pct(buckets: list[dict[str, Any]]) -> float | None:
    """Count-weighted mean |hit rate - mean confidence| over the buckets, in percentage points."""
    total = sum(b["count"] for b in buckets)
    if not total:
        return None
    return sum(b["count"] * abs(b["hit_rate_pct"] - 100.0 * b["mean_confidence"]) for b in buckets) / total


def mean_confidence(signals: pd.DataFrame) -> float | None:
    """Average model confidence over all signals."""
    if signals is None or signals.empty or signals["confidence"].notna().sum() == 0:
        return None
    return float(signals["confidence"].mean())


# --------------------------------------------------------------------------------------------
# the whole run


def compute(record: Any, prices: pd.DataFrame | None = None) -> dict[str, Value]:
    """Every metric of one run, in :data:`METRICS` order; None where not computable.

    ``record`` is a :class:`~harness.journal.RunRecord`; ``prices`` (optional) is a long frame
    ``ts, symbol, close`` of the run's bars, needed for the hit rate, IC and calibration."""
    rj, run = record.run_json or {}, record.run or {}
    mode = rj.get("mode") or run.get("mode") or "replay"
    eq = record.equity if record.equity is not None else pd.DataFrame(columns=["ts", "equity"])
    eq = eq[eq["equity"].notna()] if not eq.empty else eq
    values = eq["equity"].to_numpy(dtype=float) if not eq.empty else np.empty(0)
    ts = ms(eq["ts"]) if not eq.empty else np.empty(0, dtype=np.int64)
    cash = rj.get("cash", run.get("cash"))
    start_eq = float(cash) if cash else (float(values[0]) if len(values) else None)
    final_eq = float(values[-1]) if len(values) else None
    step = bar_ms(rj, eq)
    rets = equity_returns(values)
    ppy = periods_per_year(step) if step else None
    start, end = window_ms(rj, run)
    duration = (end - start) if start is not None and end is not None else (
        int(ts[-1] - ts[0]) + (step or 0) if len(ts) else None)
    total = total_return_pct(start_eq, final_eq)
    annual = annualised_return_pct(total, duration)
    mdd = max_drawdown_pct(values)
    out: dict[str, Value] = {
        "start_equity": start_eq, "final_equity": final_eq,
        "total_return_pct": total, "annualised_return_pct": annual,
        "volatility_pct": volatility_pct(rets, ppy) if ppy else None,
        "sharpe": sharpe(rets, ppy) if ppy else None,
        "sortino": sortino(rets, ppy) if ppy else None,
        "calmar": calmar(annual, mdd),
        "max_drawdown_pct": mdd,
        "max_drawdown_duration_days": max_drawdown_duration_days(ts, values),
    }
    out.update(trade_stats(record.trades))
    out.update(exposure_stats(eq))
    out["turnover"] = turnover(record.fills, eq)
    out["fees_paid"] = fees_paid(record.fills)
    out["orders"] = 0 if record.orders is None or record.orders.empty else int(record.orders["order_id"].nunique())
    out["fills"] = 0 if record.fills is None else len(record.fills)
    out.update(event_counts(record.events))
    out["error_rate_pct"] = error_rate_pct(record.events, mode)
    out["skipped_runs"] = skipped_runs(record.events, mode)
    out["data_coverage_pct"] = data_coverage_pct(rj)
    out["missing_bars"] = missing_bars(rj, record.events)
    out["days_run"] = days_run(rj, eq, run)
    out["run_completed"] = run_completed(rj, run)
    sig = record.signals
    out["signals"] = 0 if sig is None else len(sig)
    outcomes = signal_outcomes(sig, prices, step or 60_000)
    out["hit_rate_pct"] = hit_rate_pct(outcomes)
    out["information_coefficient"] = information_coefficient(outcomes)
    out["calibration_error_pct"] = calibration_error_pct(calibration(outcomes))
    out["mean_confidence"] = mean_confidence(sig)
    return {name: out.get(name) for name in METRICS}


_FORMATS = {"int": "{:,.0f}", "pct": "{:,.2f}%", "pp": "{:,.2f} pp", "money": "{:,.2f}", "days": "{:,.2f} d",
            "ratio": "{:,.3f}"}


def format_value(name: str, value: Value) -> str:
    """A metric value as text for tables and the ``gate`` command (``n/a`` for None)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    kind = METRICS.get(name, ("", "number"))[1]
    if kind in _FORMATS:
        return _FORMATS[kind].format(value)
    return f"{value:,.4g}" if isinstance(value, float) else str(value)
