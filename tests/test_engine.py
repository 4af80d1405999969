"""End-to-end properties of a replay (harness.engine): determinism, accounting, no look-ahead,
several symbols, resampled timeframes, gaps in the data, and concurrent runs into one journal.

Every run here goes through the real store, feed, strategy, guard, paper broker and journal
(DuckDB file and Parquet); the checks rebuild what they compare from the fills and the bars
with plain arithmetic, not with the harness's own code (``build_trades`` excepted, which is
what the ``trades`` table promises to equal).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

from harness.accounting import build_trades
from harness.datasets import Store
from harness.errors import HarnessError
from harness.feed import LookAheadError
from harness.journal import TABLES, Journal
from harness.model import DAY_MS, MINUTE_MS, Fill, Liquidity, MarketRules, Side
from tests.helpers.market import (
    CONFIG,
    HELPERS,
    ROOT,
    RULES,
    T0,
    bars_from_rows,
    config_for,
    parquet_bytes,
    random_walk,
    replay,
    scripted_replay,
    write_market,
)

START_CASH = 10_000.0
ETH_RULES = MarketRules("ETH/USDT", lot_step=0.0001, tick_size=0.01, min_qty=0.0001, min_notional=5.0)


# -- a busy scripted run: every order type, partial fills, rejections, risk denials, signals ----


def busy_script(bars, seed: int = 11) -> list[dict]:
    """Orders placed around the market every few bars (prices from the bars at that moment)."""
    rng = np.random.default_rng(seed)
    steps: list[dict] = []
    resting: list[str] = []            # limits placed well away from the market: cancel candidates
    for bar in range(3, len(bars) - 5, 7):
        close = float(bars.close[bar - 1])
        kind = rng.integers(0, 8)
        qty = float(rng.integers(1, 30))
        tag = f"o{bar}"
        if kind == 0:
            steps.append({"bar": bar, "side": "buy", "type": "market", "qty": qty, "tag": tag})
        elif kind == 1:
            steps.append({"bar": bar, "side": "sell", "type": "market", "qty": qty / 2, "tag": tag})
        elif kind == 2:
            steps.append({"bar": bar, "side": "buy", "type": "limit", "qty": qty, "price": close * 0.996, "tag": tag})
            resting.append(tag)
        elif kind == 3:
            steps.append({"bar": bar, "side": "sell", "type": "limit", "qty": qty / 3, "price": close * 1.002,
                          "tag": tag})
        elif kind == 4:
            steps.append({"bar": bar, "side": "buy", "type": "stop", "qty": qty / 3, "price": close * 1.001,
                          "tag": tag})
        elif kind == 5:
            steps.append({"bar": bar, "side": "sell", "type": "stop", "qty": qty / 4, "price": close * 0.999,
                          "tag": tag})
        elif kind == 6 and resting:
            steps.append({"bar": bar, "cancel": resting.pop()})
        else:
            steps.append({"bar": bar, "signal": float(rng.normal()), "confidence": float(rng.random())})
    for bar in range(60, len(bars) - 5, 60):
        steps.append({"bar": bar, "flatten": True})                                 # closes a round trip
    steps.append({"bar": 4, "side": "buy", "type": "market", "qty": 0.01})          # under the min notional
    steps.append({"bar": 5, "side": "buy", "type": "market", "qty": 40.0})          # over max_order_notional
    return steps


BUSY_SET = ("risk.max_order_notional=3000", "slippage.bps=2", "fills.max_bar_volume_pct=10", "fees.maker_bps=2")


@pytest.fixture(scope="module")
def busy(tmp_path_factory):
    """The same busy replay run twice into one journal."""
    tmp = tmp_path_factory.mktemp("busy")
    bars = random_walk("BTC/USDT", 720, seed=3, volume=60.0)
    store = write_market(tmp / "datasets", [bars], {"BTC/USDT": RULES})
    params = {"script": json.dumps(busy_script(bars)), "log": ""}
    config = config_for(params=params, overrides=BUSY_SET)
    runs = [replay(store, tmp / "reports", config, days=0.5) for _ in range(2)]
    return bars, runs


def fills_of(run) -> list[Fill]:
    return [Fill(r["fill_id"], r["order_id"], int(r["ts"].timestamp() * 1000), r["symbol"], Side(r["side"]),
                 r["qty"], r["price"], r["fee"], r["fee_asset"], Liquidity(r["liquidity"])) for r in run.rows("fills")]


def test_busy_run_exercises_what_it_claims_to(busy):
    _, (run, _) = busy
    orders = run.table("orders")
    assert set(orders["type"]) == {"market", "limit", "stop"}
    assert {"filled", "canceled", "rejected"} <= set(orders["status"])
    assert orders.groupby("order_id").size().max() == 1
    fills = run.table("fills")
    assert (fills.groupby("order_id").size() > 1).any(), "no partial fills"
    assert set(fills["liquidity"]) == {"maker", "taker"}
    kinds = set(run.table("events")["kind"])
    assert {"risk_denied", "order_rejected"} <= kinds
    assert len(run.table("signals")) > 10 and len(run.table("trades")) > 3


def test_the_same_replay_twice_gives_byte_identical_parquet(busy):
    _, (a, b) = busy
    assert a.run_id != b.run_id
    names = sorted(p.name for p in a.folder.glob("*.parquet"))
    assert names == sorted(f"{t}.parquet" for t in TABLES) == sorted(p.name for p in b.folder.glob("*.parquet"))
    first, second = parquet_bytes(a.folder), parquet_bytes(b.folder)
    assert [t for t in TABLES if first[t] != second[t]] == []
    assert all(pq.read_table(a.folder / f"{t}.parquet").num_rows for t in TABLES)   # none trivially empty
    assert "run_id" not in pq.read_schema(a.folder / "fills.parquet").names

    def stable(run):
        info = {k: v for k, v in run.run_json.items() if k not in ("run_id", "started_at", "finished_at")}
        info["summary"] = {k: v for k, v in info["summary"].items() if k not in ("run_id", "elapsed_s", "bars_per_s")}
        return info

    assert stable(a) == stable(b)


def test_every_equity_row_is_cash_plus_holdings_at_the_close(busy):
    bars, (run, _) = busy
    fills = run.rows("fills")
    equity = run.table("equity")
    close_at = {int(t) + MINUTE_MS: float(c) for t, c in zip(bars.ts, bars.close, strict=True)}
    assert len(equity) == 720
    for row in equity.itertuples():
        ts = int(row.ts.timestamp() * 1000)
        before = [f for f in fills if int(f["ts"].timestamp() * 1000) < ts]     # a fill at a bar's open counts at its close
        qty = sum(f["qty"] if f["side"] == "buy" else -f["qty"] for f in before)
        cash = START_CASH + sum((f["qty"] * f["price"]) * (1 if f["side"] == "sell" else -1) - f["fee"] for f in before)
        assert row.cash == pytest.approx(cash, rel=1e-9), ts
        assert row.positions_value == pytest.approx(qty * close_at[ts], rel=1e-9, abs=1e-9), ts
        assert row.equity == pytest.approx(row.cash + qty * close_at[ts], rel=1e-12), ts
        assert row.gross_exposure == pytest.approx(abs(qty * close_at[ts]) / row.equity, rel=1e-9, abs=1e-12)
    peak = np.maximum.accumulate(equity["equity"].to_numpy())
    assert equity["drawdown_pct"].to_numpy() == pytest.approx((peak - equity["equity"].to_numpy()) / peak * 100)
    assert run.summary["final_equity"] == pytest.approx(float(equity["equity"].iloc[-1]), abs=1e-8)


def test_fees_in_fills_add_up_to_the_cash_difference(busy):
    _, (run, _) = busy
    fills = run.table("fills")
    buys, sells = fills[fills.side == "buy"], fills[fills.side == "sell"]
    final_cash = float(run.table("equity")["cash"].iloc[-1])
    expected = START_CASH + (sells.qty * sells.price).sum() - (buys.qty * buys.price).sum() - fills.fee.sum()
    assert final_cash == pytest.approx(expected, rel=1e-12)
    assert (fills.fee_asset == "USDT").all()
    rate = np.where(fills.liquidity == "maker", 2, 10) / 10_000
    assert fills.fee.to_numpy() == pytest.approx((fills.qty * fills.price).to_numpy() * rate, rel=1e-12)
    assert run.summary["fees"] == pytest.approx(fills.fee.sum(), abs=1e-8)


def test_trades_table_is_rebuilt_from_the_fills(busy):
    _, (run, _) = busy
    rebuilt = build_trades(fills_of(run))
    rows = run.rows("trades")
    assert len(rows) == len(rebuilt) > 3
    for row, t in zip(rows, rebuilt, strict=True):
        closed = None if row["closed_at"] is None else int(row["closed_at"].timestamp() * 1000)
        assert (row["trade_id"], row["symbol"], int(row["opened_at"].timestamp() * 1000), closed) == \
            (t.trade_id, t.symbol, t.opened_at, t.closed_at)
        for name in ("qty", "entry_price", "exit_price", "pnl", "return_pct", "fees"):
            want = getattr(t, name)
            assert row[name] == (None if want is None else pytest.approx(want, rel=1e-12, abs=1e-12)), name
    closed = [r for r in rows if r["closed_at"] is not None]
    assert run.summary["trades"] == len(closed) > 0


def test_journal_catalog_matches_the_parquet_files(busy):
    _, (run, _) = busy
    from_db = run.journal.read_tables(run.run_id)
    for name in TABLES:
        assert from_db[name].equals(pq.read_table(run.folder / f"{name}.parquet")), name
    row = run.journal.run_row(run.run_id)
    assert row["status"] == "completed" and row["bars"] == 720
    assert row["final_equity"] == pytest.approx(run.summary["final_equity"])


# -- no look-ahead -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def walk_market(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("walk")
    write_market(tmp / "datasets", [random_walk("BTC/USDT", 1440, seed=5, volume=400.0)], {"BTC/USDT": RULES})
    return tmp


def test_a_strategy_reading_the_next_bar_fails_the_run_through_the_cli(walk_market, tmp_path):
    env = {**os.environ, "QT_DATASETS_DIR": str(walk_market / "datasets"), "QT_REPORTS_DIR": str(tmp_path / "reports"),
           "QT_CONFIG": str(CONFIG)}
    proc = subprocess.run([sys.executable, str(ROOT / "cli.py"), "replay", "--days", "1", "--set", "run.exchange=testex",
                           "--strategy", f"{HELPERS / 'peeking.py'}:PeekNext", "--no-report"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 1, proc
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error:") and "ahead" in lines[0], proc.stderr
    assert "closed" in lines[0]                      # says what a strategy may read
    journal = Journal(tmp_path / "reports")
    (run,) = journal.list_runs()
    assert run["status"] == "failed" and run["finished_at"] is not None
    info = json.loads((journal.run_dir(run["run_id"]) / "run.json").read_text())
    assert info["status"] == "failed" and "LookAheadError" in info["error"]
    assert not list(journal.run_dir(run["run_id"]).glob("*.parquet"))      # no half evidence


@pytest.mark.parametrize("strategy", ["PeekForwardLine", "PeekOperation"])
def test_lines_derived_from_the_future_are_caught(walk_market, tmp_path, strategy):
    config = config_for(strategy=f"{HELPERS / 'peeking.py'}:{strategy}")
    try:
        run = replay(Store(walk_market / "datasets"), tmp_path / "reports", config, days=1)
    except LookAheadError:
        return
    raise AssertionError(f"the run completed with {run.summary['fills']} fills: the strategy traded on the future")


# -- several symbols, coarser timeframes, gaps ---------------------------------------------


def test_two_symbols_aligned_both_trade(tmp_path):
    btc = random_walk("BTC/USDT", 1440, seed=21, volume=400.0)
    eth = random_walk("ETH/USDT", 1440, seed=22, price=2_000.0, volume=40.0)
    store = write_market(tmp_path / "datasets", [btc, eth], {"BTC/USDT": RULES, "ETH/USDT": ETH_RULES})
    config = config_for(strategy="sma_cross", symbols=("BTC/USDT", "ETH/USDT"),
                        params={"fast": 5, "slow": 20}, overrides=("slippage.bps=2",))
    run = replay(store, tmp_path / "reports", config, days=1)
    assert run.summary["symbols"] == ["BTC/USDT", "ETH/USDT"] and run.summary["bars"] == 2880
    fills = run.rows("fills")
    per = defaultdict(list)
    for f in fills:
        per[f["symbol"]].append(f)
    assert set(per) == {"BTC/USDT", "ETH/USDT"} and all(len(v) >= 4 for v in per.values())
    # each fill happens at the open of its own symbol's bar, moved by the slippage onto the tick
    for bars in (btc, eth):
        open_at = dict(zip(bars.ts.tolist(), bars.open.tolist(), strict=True))
        for f in per[bars.symbol]:
            o = open_at[int(f["ts"].timestamp() * 1000)]
            expected = (np.ceil(round(o * 1.0002 / 0.01, 6)) if f["side"] == "buy"
                        else np.floor(round(o * 0.9998 / 0.01, 6))) * 0.01
            assert f["price"] == pytest.approx(expected, abs=1e-9)
    # one equity row per common close, valued with both symbols' closes
    equity = run.table("equity")
    assert len(equity) == 1440
    closes = {b.symbol: dict(zip((b.ts + MINUTE_MS).tolist(), b.close.tolist(), strict=True)) for b in (btc, eth)}
    for row in equity.iloc[::37].itertuples():
        ts = int(row.ts.timestamp() * 1000)
        held = {s: sum(f["qty"] * (1 if f["side"] == "buy" else -1) for f in v
                       if int(f["ts"].timestamp() * 1000) < ts) for s, v in per.items()}
        assert row.positions_value == pytest.approx(sum(q * closes[s][ts] for s, q in held.items()), rel=1e-9, abs=1e-9)


def test_fifteen_minute_replay_from_stored_one_minute_bars(tmp_path):
    one = random_walk("BTC/USDT", 1440, seed=8, volume=50.0)
    store = write_market(tmp_path / "datasets", [one], {"BTC/USDT": RULES})
    # 20 units: four times what 10% of one 1m bar allows, well under 10% of a 15m bar
    script = [{"bar": 1, "side": "buy", "type": "market", "qty": 20.0}]
    config = config_for(timeframe="15m", params={"script": json.dumps(script), "log": ""},
                        overrides=("slippage.bps=0",))
    run = replay(store, tmp_path / "reports", config, days=1)
    assert run.summary["timeframe"] == "15m" and run.summary["bars"] == 96
    assert 20.0 > 0.1 * one.volume[15] and 20.0 < 0.1 * one.volume[15:30].sum()
    (fill,) = run.rows("fills")
    assert int(fill["ts"].timestamp() * 1000) == T0 + 15 * MINUTE_MS          # the second 15m bar's open
    assert (fill["qty"], fill["price"]) == (20.0, float(one.open[15]))        # its first minute's open
    equity = run.table("equity")
    assert len(equity) == 96
    assert int(equity["ts"].iloc[0].timestamp() * 1000) == T0 + 15 * MINUTE_MS
    last_close = float(one.close[-1])
    assert float(equity["positions_value"].iloc[-1]) == pytest.approx(20.0 * last_close, rel=1e-12)


@pytest.fixture(scope="module")
def gap_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gap")
    full = random_walk("BTC/USDT", 1440, seed=9, volume=400.0)
    keep = np.r_[0:600, 660:1440]                       # an hour's halt: bars 600..659 missing
    bars = full.take(keep)
    script = [{"bar": 600, "side": "buy", "type": "market", "qty": 5.0}]   # sent as the halt begins
    store = write_market(tmp / "datasets", [bars], {"BTC/USDT": RULES})
    config = config_for(params={"script": json.dumps(script), "log": ""}, overrides=("slippage.bps=0",))
    return full, replay(store, tmp / "reports", config, days=1)


def test_a_window_with_a_gap_replays_and_reports_the_gap(gap_run):
    full, run = gap_run
    assert run.summary["status"] == "completed" and run.summary["bars"] == 1380
    quality = run.run_json["data_quality"]["BTC/USDT"]
    assert (quality["gaps"], quality["missing_bars"]) == (1, 60)
    assert quality["gap_spans"] == [["2024-03-01T10:00:00Z", "2024-03-01T10:59:00Z"]]    # first, last missing
    assert quality["ok"] is False and any("gap" in i for i in quality["issues"])
    (fill,) = run.rows("fills")             # the order waits out the halt and fills at the first bar after it
    assert int(fill["ts"].timestamp() * 1000) == T0 + 660 * MINUTE_MS and fill["price"] == float(full.open[660])
    assert len(run.table("equity")) == 1380


def test_a_gap_in_the_window_is_journaled_as_a_data_gap_event(gap_run):
    _, run = gap_run
    gaps = [e for e in run.rows("events") if e["kind"] == "data_gap"]
    assert len(gaps) == 1 and json.loads(gaps[0]["data"])["missing"] == 60


# -- kill switch wiring ------------------------------------------------------------------------


def test_drawdown_kill_switch_flattens_and_halts_in_replay(tmp_path):
    crash = [(100.0, 100.5, 99.5, 100.0, 1000)] * 2 + [(100.0, 100.0, 80.0, 80.0, 1000)] + \
        [(80.0, 81.0, 79.0, 80.0, 1000)] * 3
    run, _ = scripted_replay(tmp_path, [bars_from_rows("BTC/USDT", crash)],
                             [{"bar": 1, "side": "buy", "type": "market", "qty": 50.0}], rules={"BTC/USDT": RULES},
                             overrides=("slippage.bps=0", "fills.max_bar_volume_pct=0", "risk.max_drawdown_pct=5"))
    assert run.summary["status"] == "halted" and run.summary["kill_switch"] is True
    guard = [o for o in run.rows("orders") if o["origin"] == "guard"]
    assert len(guard) == 1 and guard[0]["side"] == "sell" and guard[0]["status"] == "filled"
    assert guard[0]["qty"] == guard[0]["filled_qty"] == 50.0                   # the whole holding
    fills = run.rows("fills")
    assert [(f["side"], f["qty"]) for f in fills] == [("buy", 50.0), ("sell", 50.0)]      # flat
    assert run.table("equity")["positions_value"].iloc[-1] == 0.0


def test_engine_failure_outside_the_strategy_is_a_harness_error(tmp_path):
    # a run whose strategy raises an ordinary exception fails cleanly, marked failed
    bad = tmp_path / "bad.py"
    bad.write_text("from harness.strategy import HarnessStrategy\n\n\nclass Boom(HarnessStrategy):\n"
                   "    def next(self):\n        if len(self) == 3:\n            raise ZeroDivisionError('boom')\n")
    store = write_market(tmp_path / "datasets", [random_walk("BTC/USDT", 60, seed=1)], {"BTC/USDT": RULES})
    with pytest.raises(HarnessError, match=r"failed in the strategy or engine: ZeroDivisionError: boom"):
        replay(store, tmp_path / "reports", config_for(strategy=f"{bad}:Boom"), days=60 / 1440)
    (row,) = Journal(tmp_path / "reports").list_runs()
    assert row["status"] == "failed"


# -- concurrent replays ------------------------------------------------------------------------


def test_two_replays_at_once_land_intact_in_the_journal_and_agree_across_processes(walk_market, tmp_path):
    """Two replays of the same configuration started together (different hash seeds): both in the
    catalog with exactly their own rows, and byte-identical Parquet (determinism across processes)."""
    reports = tmp_path / "reports"
    env = {**os.environ, "QT_DATASETS_DIR": str(walk_market / "datasets"), "QT_REPORTS_DIR": str(reports),
           "QT_CONFIG": str(CONFIG)}
    cmd = [sys.executable, str(ROOT / "cli.py"), "replay", "--days", "1", "--set", "run.exchange=testex",
           "--strategy", "sma_cross", "--no-report", "--json", "--param", "fast=4", "--param", "slow=20"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**env, "PYTHONHASHSEED": seed}, cwd=tmp_path) for seed in ("1", "2")]
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    summaries = [json.loads(out) for out, _ in outs]
    ids = [s["run_id"] for s in summaries]
    assert len(set(ids)) == 2 and all(s["fills"] > 0 for s in summaries)
    con = duckdb.connect(str(reports / "journal.duckdb"), read_only=True)
    try:
        runs = dict(con.execute("select run_id, status from runs").fetchall())
        assert runs == {i: "completed" for i in ids}
        for run_id in ids:
            for name in ("orders", "fills", "equity"):
                n = con.execute(f"select count(*) from {name} where run_id = ?", [run_id]).fetchone()[0]
                assert n == pq.read_table(reports / run_id / f"{name}.parquet").num_rows > 0, (run_id, name)
    finally:
        con.close()
    assert parquet_bytes(reports / ids[0]) == parquet_bytes(reports / ids[1])


def test_days_window_is_half_open_on_bar_open_times(tmp_path):
    bars = random_walk("BTC/USDT", 2 * 1440, seed=4)
    store = write_market(tmp_path / "datasets", [bars], {"BTC/USDT": RULES})
    run = replay(store, tmp_path / "reports", config_for(strategy="sma_cross"), days=1, end=T0 + DAY_MS + 3600_000)
    assert (run.summary["start"], run.summary["end"]) == ("2024-03-01T01:00:00Z", "2024-03-02T01:00:00Z")
    assert run.summary["bars"] == 1440
    equity = run.table("equity")
    assert int(equity["ts"].iloc[0].timestamp() * 1000) == T0 + 3600_000 + MINUTE_MS   # close of the first bar
    assert int(equity["ts"].iloc[-1].timestamp() * 1000) == T0 + DAY_MS + 3600_000     # close of the last bar
