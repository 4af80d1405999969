"""Metrics against hand-computed cases, through the journal, and cross-checked on real data."""

from __future__ import annotations

import json
import math
import statistics

import numpy as np
import pandas as pd
import pytest

from harness import metrics as m
from harness.journal import Journal, RunRecord, table_from_rows
from harness.model import DAY_MS, parse_time

H = 3_600_000
T0 = parse_time("2025-01-01T00:00:00Z")


def frame(name: str, rows: list[dict]) -> pd.DataFrame:
    return table_from_rows(name, rows).to_pandas()


def equity_rows(values, positions=None, step=H):
    positions = positions or [0.0] * len(values)
    return [{"ts": T0 + i * step, "cash": v - p, "positions_value": p, "equity": v, "gross_exposure": p / v,
             "drawdown_pct": 0.0} for i, (v, p) in enumerate(zip(values, positions, strict=True))]


def record(mode="replay", equity=(), trades=(), fills=(), events=(), signals=(), orders=(), **run_json):
    rj = {"run_id": "r1", "mode": mode, "timeframe": "1h", "symbols": ["BTC/USDT"], "cash": 100.0,
          "start": "2025-01-01T00:00:00Z", "end": "2025-01-01T04:00:00Z", **run_json}
    return RunRecord(run={"run_id": "r1", "mode": mode}, run_json=rj, orders=frame("orders", list(orders)),
                     fills=frame("fills", list(fills)), trades=frame("trades", list(trades)),
                     equity=frame("equity", list(equity)), events=frame("events", list(events)),
                     signals=frame("signals", list(signals)))


def event(kind, i=0, **data):
    return {"ts": T0 + i * H, "kind": kind, "symbol": "BTC/USDT", "detail": "", "request_id": "",
            "data": json.dumps(data) if data else ""}


# --------------------------------------------------------------------------------------------
# returns and risk, by hand
#
# equity 100 -> 110 -> 99 -> 121 on 1h bars: returns +10 %, -10 %, +22.2222 %
# mean 0.0740741, sample sd 0.1626681, sqrt(8760 bars a year) = 93.59487
# Sharpe = 0.0740741 / 0.1626681 * 93.59487 = 42.6202
# downside deviation = sqrt((0 + 0.01 + 0) / 3) = 0.0577350 -> Sortino = 120.0823
# drawdown: peak 110, trough 99 -> 10 %; from the 110 peak (01:00) to 121 (03:00): 2 h


def test_return_and_risk_by_hand():
    values = np.array([100.0, 110.0, 99.0, 121.0])
    ts = np.array([T0 + i * H for i in range(4)])
    r = m.equity_returns(values)
    assert r == pytest.approx([0.1, -0.1, 0.2222222222])
    ppy = m.periods_per_year(H)
    assert ppy == 8760
    assert m.sharpe(r, ppy) == pytest.approx(42.6202443, rel=1e-7)
    assert m.sharpe_ratio(values, H) == pytest.approx(42.6202443, rel=1e-7)
    assert m.sortino(r, ppy) == pytest.approx(120.0822763, rel=1e-7)
    assert m.volatility_pct(r, ppy) == pytest.approx(1522.489839, rel=1e-7)
    assert m.max_drawdown_pct(values) == pytest.approx(10.0)
    assert m.drawdown_pct(values) == pytest.approx([0.0, 0.0, 10.0, 0.0])
    assert m.max_drawdown_duration_days(ts, values) == pytest.approx(2 / 24)


def test_drawdown_duration_unrecovered_and_flat():
    ts = np.array([T0 + i * DAY_MS for i in range(6)])
    # peak 120 on day 1, never regained: duration to the last point = 4 days
    assert m.max_drawdown_duration_days(ts, np.array([100, 120, 90, 110, 119, 100.0])) == pytest.approx(4.0)
    # an earlier 1-day dip is shorter than the open one
    assert m.max_drawdown_duration_days(ts, np.array([100, 90, 100, 95, 95, 95.0])) == pytest.approx(3.0)
    assert m.max_drawdown_duration_days(ts, np.full(6, 100.0)) == 0.0
    assert m.max_drawdown_pct(np.full(6, 100.0)) == 0.0


def test_degenerate_returns_are_not_computable():
    assert m.sharpe(np.array([0.01, 0.01, 0.01]), 365) is None      # no variation
    assert m.sharpe(np.array([0.01]), 365) is None                     # one return
    assert m.sortino(np.array([0.01, 0.02]), 365) is None              # no downside
    assert m.calmar(50.0, 0.0) is None
    assert m.calmar(30.0, 10.0) == pytest.approx(3.0)


def test_total_and_annualised_return():
    assert m.total_return_pct(100.0, 121.0) == pytest.approx(21.0)
    # 10 % in half a year compounds to 21 % a year
    assert m.annualised_return_pct(10.0, 365 * DAY_MS // 2) == pytest.approx(21.0)
    assert m.annualised_return_pct(-100.0, DAY_MS) == -100.0
    assert m.annualised_return_pct(10.0, 0) is None


def test_daily_returns():
    rows = [{"ts": T0 + h * H, "equity": v} for h, v in ((1, 100), (24, 110), (25, 105), (48, 99), (49, 99))]
    daily = m.daily_returns_pct(pd.DataFrame(rows), start_equity=100.0)
    assert list(daily.index.strftime("%Y-%m-%d")) == ["2025-01-01", "2025-01-02", "2025-01-03"]
    assert daily.to_numpy() == pytest.approx([10.0, -10.0, 0.0])


# --------------------------------------------------------------------------------------------
# trades, exposure, costs


def trade(i, pnl, ret, closed=True):
    return {"trade_id": f"T{i}", "symbol": "BTC/USDT", "opened_at": T0 + i * H,
            "closed_at": T0 + i * H + 1000 if closed else None, "qty": 1.0, "entry_price": 100.0,
            "exit_price": 100.0 + pnl if closed else None, "pnl": pnl if closed else None,
            "return_pct": ret if closed else None, "fees": 0.1}


def test_trade_stats_by_hand():
    # pnl 10, -5, 20, -10, 0 (0 is not a win): 2 wins of 5 = 40 %; PF 30 / 15 = 2;
    # avg win 15, avg loss -7.5, expectancy 15 / 5 = 3; avg return (1 - 2 + 4 - 3 + 0) / 5 = 0
    trades = frame("trades", [trade(0, 10, 1.0), trade(1, -5, -2.0), trade(2, 20, 4.0), trade(3, -10, -3.0),
                              trade(4, 0.0, 0.0), trade(5, 0, 0, closed=False)])
    s = m.trade_stats(trades)
    assert s == {"trade_count": 5, "open_trades": 1, "win_rate_pct": pytest.approx(40.0),
                 "profit_factor": pytest.approx(2.0), "avg_win": pytest.approx(15.0),
                 "avg_loss": pytest.approx(-7.5), "avg_trade_return_pct": pytest.approx(0.0),
                 "expectancy": pytest.approx(3.0)}


def test_trade_stats_without_losers_or_trades():
    only_wins = m.trade_stats(frame("trades", [trade(0, 10, 1.0), trade(1, 5, 0.5)]))
    assert only_wins["profit_factor"] is None and only_wins["win_rate_pct"] == 100.0
    none = m.trade_stats(frame("trades", []))
    assert none["trade_count"] == 0 and none["win_rate_pct"] is None and none["expectancy"] is None


def test_exposure_turnover_fees_by_hand():
    eq = frame("equity", equity_rows([100, 100, 100, 100], [0, 50, 50, 0]))
    e = m.exposure_stats(eq)
    assert e == {"exposure_time_pct": 50.0, "avg_gross_exposure_pct": 25.0, "max_gross_exposure_pct": 50.0}
    fills = frame("fills", [
        {"fill_id": "f1", "order_id": "o1", "ts": T0 + H, "symbol": "BTC/USDT", "side": "buy", "qty": 1.0,
         "price": 50.0, "fee": 0.05, "fee_asset": "USDT", "liquidity": "taker"},
        {"fill_id": "f2", "order_id": "o2", "ts": T0 + 3 * H, "symbol": "BTC/USDT", "side": "sell", "qty": 1.0,
         "price": 60.0, "fee": 0.001, "fee_asset": "BTC", "liquidity": "taker"}])
    # (50 + 60) notional over 100 average equity; fees 0.05 USDT + 0.001 BTC x 60
    assert m.turnover(fills, eq) == pytest.approx(1.1)
    assert m.fees_paid(fills) == pytest.approx(0.11)


# --------------------------------------------------------------------------------------------
# operations


def test_error_rate_and_skipped_runs():
    stats = [event("exchange_stats", 1, requests=10, errors=1), event("exchange_stats", 2, requests=200, errors=4)]
    assert m.error_rate_pct(frame("events", stats), "live-testnet") == pytest.approx(2.0)   # the last row wins
    assert m.error_rate_pct(frame("events", []), "replay") == 0.0
    assert m.error_rate_pct(frame("events", []), "live-testnet") is None
    skipped = frame("events", [event("skipped_run", 1, job="market-data-refresh"), event("skipped_run", 2),
                               event("job", 3, job="execution-rebalance", outcome="ok")])
    assert m.skipped_runs(skipped, "live-testnet") == 2
    assert m.skipped_runs(frame("events", [event("job", 1)]), "live-paper") == 0
    assert m.skipped_runs(frame("events", []), "live-testnet") is None
    assert m.skipped_runs(frame("events", []), "replay") == 0


def test_event_counts():
    evs = frame("events", [event("risk_denied", 0, limit="max_order_notional"), event("risk_denied", 1),
                           event("kill_switch", 2), event("alert", 3, rule="kill_switch"),
                           event("order_rejected", 3), event("exchange_error", 3)])
    assert m.event_counts(evs) == {"order_rejections": 1, "risk_denials": 2, "kill_switches": 1,
                                   "exchange_errors": 1, "alerts": 1}


def test_coverage_missing_bars_and_days():
    rj = {"start": "2025-01-01T00:00:00Z", "end": "2025-01-02T00:00:00Z", "timeframe": "1h",
          "symbols": ["BTC/USDT", "ETH/USDT"], "bars": 46,
          "data_quality": {"BTC/USDT": {"bars": 24, "missing_bars": 0}, "ETH/USDT": {"bars": 22, "missing_bars": 2}}}
    assert m.data_coverage_pct(rj) == pytest.approx(100 * 46 / 48)
    assert m.missing_bars(rj, frame("events", [])) == 2
    assert m.missing_bars({}, frame("events", [event("data_gap", 1, missing=3), event("data_gap", 2, missing=4)])) == 7
    assert m.days_run(rj, frame("equity", [])) == pytest.approx(1.0)
    # a live run still going: its end is the last equity point + one bar
    live = {"start": "2025-01-01T00:00:00Z", "timeframe": "1h"}
    assert m.days_run(live, frame("equity", equity_rows([1.0] * 37))) == pytest.approx(1.5)
    assert m.data_coverage_pct({"timeframe": "1h"}) is None


# --------------------------------------------------------------------------------------------
# model evaluation
#
# closes 100, 101, 100, 102, 102 -> next-bar returns +1 %, -0.99 %, +2 %, 0, (none);
# a signal made at the close of bar i is judged on bar i+1 (close i -> close i+1)
# signals +0.5 (c .55) hit, +0.2 (c .65) miss, -0.3 (c .95) miss, +0.4 (c .75, return 0: left out),
# +0.1 (c .50, no next bar: left out) -> hit rate 1/3
# IC: ranks of signal 4 2 1 3 vs return 3 1 4 2 -> 1 - 6 * 12 / (4 * 15) = -0.2
# calibration: (|100 - 55| + |0 - 65| + |0 - 95|) / 3 = 68.33 pp; mean confidence 3.4 / 5 = 0.68


def model_inputs(offset_ms=0):
    prices = pd.DataFrame({"ts": pd.to_datetime([T0 + i * H for i in range(5)], unit="ms", utc=True),
                           "symbol": "BTC/USDT", "close": [100.0, 101.0, 100.0, 102.0, 102.0]})
    # signal i is made when bar i closes, at T0 + (i + 1) h (live: up to a bar later)
    sig = [(0.5, 0.55), (0.2, 0.65), (-0.3, 0.95), (0.4, 0.75), (0.1, 0.50)]
    signals = frame("signals", [{"ts": T0 + (i + 1) * H + offset_ms, "symbol": "BTC/USDT", "signal": s, "confidence": c,
                                 "model_version": "v1", "acted": True} for i, (s, c) in enumerate(sig)])
    return signals, prices


@pytest.mark.parametrize("offset_ms", [0, 30 * 60_000])   # stamped at the bar's close, or some time after
def test_model_metrics_by_hand(offset_ms):
    signals, prices = model_inputs(offset_ms)
    out = m.signal_outcomes(signals, prices, H)
    assert out["fwd_return"].to_numpy()[:4] == pytest.approx([0.01, -1 / 101, 0.02, 0.0])
    assert math.isnan(out["fwd_return"].iloc[4])
    assert m.hit_rate_pct(out) == pytest.approx(100 / 3)
    assert m.information_coefficient(out) == pytest.approx(-0.2)
    buckets = m.calibration(out)
    assert [(b["lo"], b["count"], b["hit_rate_pct"]) for b in buckets] == [(0.5, 1, 100.0), (0.6, 1, 0.0),
                                                                           (0.9, 1, 0.0)]
    assert m.calibration_error_pct(buckets) == pytest.approx(205 / 3)
    assert m.mean_confidence(signals) == pytest.approx(0.68)


def test_model_metrics_without_prices_or_signals():
    signals, _ = model_inputs()
    rec = record(equity=equity_rows([100, 101, 102, 103]))
    rec.signals = signals
    without_prices = m.compute(rec)
    assert without_prices["hit_rate_pct"] is None and without_prices["information_coefficient"] is None
    assert without_prices["mean_confidence"] == pytest.approx(0.68) and without_prices["signals"] == 5
    plain = m.compute(record(equity=equity_rows([100, 101, 102, 103])))
    assert plain["signals"] == 0 and plain["mean_confidence"] is None and plain["calibration_error_pct"] is None


def test_spearman_ties_and_degenerate():
    assert m.spearman([1, 2, 2, 3], [1, 2, 2, 3]) == pytest.approx(1.0)
    assert m.spearman([1, 1, 1], [1, 2, 3]) is None
    assert m.spearman([1, 2], [2, 1]) is None


# --------------------------------------------------------------------------------------------
# the whole run, through the journal


def test_compute_through_the_journal(tmp_path):
    journal = Journal(tmp_path / "reports")
    run = {"run_id": "hand-1", "mode": "live-testnet", "strategy": "sma_cross", "symbols": ["BTC/USDT"],
           "timeframe": "1h", "cash": 100.0, "status": "running"}
    rj = {**run, "start": "2025-01-01T00:00:00Z", "end": "2025-01-01T04:00:00Z", "bars": 4, "exchange": "binance"}
    journal.start_run(run, rj)
    tables = {"equity": table_from_rows("equity", equity_rows([100, 110, 99, 121], [0, 110, 99, 0])),
              "trades": table_from_rows("trades", [trade(0, 21.0, 21.0)]),
              "events": table_from_rows("events", [event("exchange_stats", 3, requests=50, errors=1),
                                                   event("job", 3, job="market-data-refresh", outcome="ok"),
                                                   event("risk_denied", 2, limit="max_order_notional")])}
    order = {"order_id": "O1", "client_order_id": "c1", "ts": T0, "symbol": "BTC/USDT", "side": "buy",
             "type": "market", "qty": 1.0, "status": "new"}
    tables["orders"] = table_from_rows("orders", [order, dict(order, status="filled")])   # a live order's two states
    journal.finish_run("hand-1", tables, {"status": "completed"})
    out = m.compute(journal.load("hand-1"))
    assert list(out) == list(m.METRICS)
    assert out["start_equity"] == 100.0 and out["final_equity"] == 121.0
    assert out["total_return_pct"] == pytest.approx(21.0)
    assert out["sharpe"] == pytest.approx(42.6202443, rel=1e-7)
    assert out["max_drawdown_pct"] == pytest.approx(10.0)
    assert out["max_drawdown_duration_days"] == pytest.approx(2 / 24)
    assert out["calmar"] == pytest.approx(out["annualised_return_pct"] / 10.0)
    assert out["exposure_time_pct"] == 50.0
    assert out["avg_gross_exposure_pct"] == pytest.approx(50.0)      # (0 + 100 + 100 + 0) / 4
    assert out["trade_count"] == 1 and out["win_rate_pct"] == 100.0 and out["profit_factor"] is None
    assert out["error_rate_pct"] == pytest.approx(2.0) and out["skipped_runs"] == 0
    assert out["risk_denials"] == 1 and out["kill_switches"] == 0
    assert out["data_coverage_pct"] == pytest.approx(100.0) and out["days_run"] == pytest.approx(4 / 24)
    assert out["run_completed"] == 1 and out["orders"] == 1
    assert out["signals"] == 0 and out["information_coefficient"] is None


def test_clip_and_match_trades():
    trades = [trade(0, 1.0, 1.0), trade(2, -1.0, -1.0), trade(5, 2.0, 2.0)]
    rec = record(equity=equity_rows([100, 101, 102, 103, 104, 105, 106]), trades=trades)
    from harness.report import clip, match_trades

    cut = clip(rec, T0 + H, T0 + 4 * H)
    assert len(cut.equity) == 3 and list(cut.trades["trade_id"]) == ["T2"]
    assert cut.run_json["cash"] == 101.0
    a = frame("trades", trades)
    other = [dict(trade(0, 1.0, 1.0), opened_at=T0 + 60_000, entry_price=100.05),      # 1 min later: match
             dict(trade(2, -1.0, -1.0), symbol="ETH/USDT"),                                 # other symbol
             dict(trade(9, 1.0, 1.0))]                                                      # far away
    matched, only_a, only_b = match_trades(a, frame("trades", other), tolerance_ms=H)
    assert len(matched) == 1 and matched["entry_diff_bps"].iloc[0] == pytest.approx(5.0)
    assert sorted(only_a["trade_id"]) == ["T2", "T5"] and sorted(only_b["trade_id"]) == ["T2", "T9"]


def test_run_completed():
    assert m.run_completed({}, {"status": "completed"}) == 1 and m.run_completed({"status": "halted"}) == 1
    assert m.run_completed({"status": "failed"}) == 0 and m.run_completed({}, {"status": "running"}) == 0
    assert m.run_completed({}) is None


def test_time_ms():
    assert m.time_ms("2025-01-01T01:00:00Z") == T0 + H
    assert m.time_ms(pd.Timestamp(T0, unit="ms", tz="UTC")) == T0 and m.time_ms(T0) == T0
    assert m.time_ms(pd.NaT) is None and m.time_ms(None) is None and m.time_ms(float("nan")) is None


def test_format_value():
    assert m.format_value("max_drawdown_pct", 12.345) == "12.35%"
    assert m.format_value("trade_count", 1234) == "1,234"
    assert m.format_value("sharpe", None) == "n/a"
    assert m.format_value("sharpe", 1.23456) == "1.235"


# --------------------------------------------------------------------------------------------
# real data: Sharpe and max drawdown against an independent, plain-Python formula


def test_sharpe_and_drawdown_cross_checked_on_real_data(shared_data):
    bars = pd.read_parquet(shared_data / "klines_1m" / "BTCUSDT_20250520_20250818.parquet").iloc[:20_000]
    close = bars["close"].to_numpy()
    equity = 10_000.0 * close / close[0]                    # buy and hold, 1m bars
    rows = [{"ts": int(t.value // 1_000_000), "cash": 0.0, "positions_value": e, "equity": e, "gross_exposure": e,
             "drawdown_pct": 0.0} for t, e in zip(bars["open_time"], equity, strict=True)]
    start = rows[0]["ts"]
    rec = record(equity=rows, timeframe="1m", cash=10_000.0, start=pd.Timestamp(start, unit="ms", tz="UTC").isoformat(),
                 end=pd.Timestamp(start + len(rows) * 60_000, unit="ms", tz="UTC").isoformat())
    out = m.compute(rec)

    eq = [float(x) for x in equity]
    rets = [b / a - 1 for a, b in zip(eq, eq[1:], strict=False)]
    expected_sharpe = statistics.fmean(rets) / statistics.stdev(rets) * math.sqrt(365 * 24 * 60)
    peak, worst = eq[0], 0.0
    for x in eq:
        peak = max(peak, x)
        worst = max(worst, (peak - x) / peak)
    assert out["sharpe"] == pytest.approx(expected_sharpe, rel=1e-9)
    assert out["max_drawdown_pct"] == pytest.approx(100 * worst, rel=1e-12)
    assert out["total_return_pct"] == pytest.approx(100 * (close[-1] / close[0] - 1), rel=1e-9)
    assert 0 < out["max_drawdown_pct"] < 50 and out["exposure_time_pct"] == 100.0
