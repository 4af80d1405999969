"""Paced replay (``replay --speed N``): the window runs through the live code path — an in-process
paper exchange replaying it at N× real time, the live feed polling it, the exchange broker
trading on it (DESIGN 1, 3.8; issue 7).

At zero slippage and no volume cap a paced replay and a plain replay of the same window make the
same trades: the same sides, quantities and prices, filled on the same bars. Real BTCUSDT 1m
bars from ../shared when present, else a synthetic series. N = 1000 puts a bar at 60 ms of real
time, about twice the p99 from a bar's close to its order reaching the exchange (~30 ms, see
tests/bench/bench_live.py), so no order slips into the next bar; at 2880x it does.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness.bars import Bars
from harness.datasets import Store
from harness.journal import Journal, RunRecord
from harness.model import MINUTE_MS, MarketRules, parse_time
from tests.conftest import BTC_1M
from tests.helpers.live_support import cli, live_env
from tests.helpers.market import random_walk

SPEED = 1000
ZERO_SLIPPAGE = ("--set", "slippage.bps=0", "--set", "fills.max_bar_volume_pct=0")
STRATEGY = ("--strategy", "sma_cross", "--param", "fast=5", "--param", "slow=20")
REAL_WINDOW = ("--end", "2025-06-02T10:54:00Z", "--days", "0.1")      # 144 bars of real BTCUSDT


@dataclass
class Pair:
    root: Path
    source: str
    plain: dict
    paced: dict
    plain_record: RunRecord
    paced_record: RunRecord


def _write_data(root: Path) -> tuple[str, tuple[str, ...]]:
    store = Store(root / "datasets")
    rules = {"BTC/USDT": MarketRules("BTC/USDT", 0.00001, 0.01, 0.00001, 9000.0, 5.0)}
    if BTC_1M.exists():
        table = pq.read_table(BTC_1M)
        ts = table.column("open_time").cast(pa.int64()).to_numpy()
        bars = Bars("BTC/USDT", "1m", ts, *(table.column(c).to_numpy() for c in ("open", "high", "low", "close", "volume")))
        bars = bars.window(parse_time("2025-06-01"), parse_time("2025-06-03"))
        store.write("binance", bars)
        store.save_rules("binance", rules, int(bars.ts[0]), "test")
        return "real BTCUSDT", REAL_WINDOW
    start = parse_time("2025-06-01")
    walk = random_walk("BTC/USDT", 2 * 1440, seed=5, start=start, price=60_000.0, volume=500.0)
    store.write("binance", walk)
    store.save_rules("binance", rules, start, "test")
    return "synthetic", ("--end", "2025-06-02T12:00:00Z", "--days", "0.25")


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> Pair:
    root = tmp_path_factory.mktemp("paced")
    source, window = _write_data(root)
    env = live_env(root, key=None, secret=None)
    args = ("replay", *window, *STRATEGY, *ZERO_SLIPPAGE, "--no-report", "--json")
    plain = cli(env, *args, timeout=60)
    assert plain.returncode == 0, plain.stderr
    paced = cli(env, *args, "--speed", str(SPEED), timeout=120)
    assert paced.returncode == 0, paced.stderr
    plain_summary, paced_summary = json.loads(plain.stdout), json.loads(paced.stdout)
    journal = Journal(root / "reports")
    return Pair(root, source, plain_summary, paced_summary, journal.load(plain_summary["run_id"]),
                journal.load(paced_summary["run_id"]))


def _ms(ts) -> int:
    return int(pd.Timestamp(ts).value // 10**6)


def _window_end(pair: Pair) -> int:
    return _ms(pair.plain_record.run["end"])


def test_paced_replay_runs_the_window_through_the_live_path(pair):
    s = pair.paced
    assert s["mode"] == "paced" and s["status"] == "completed"
    assert (s["start"], s["end"], s["symbols"]) == (pair.plain["start"], pair.plain["end"], pair.plain["symbols"])
    assert pair.paced_record.run["mode"] == "paced"
    assert s["latency_ms"]["n"] == len(pair.paced_record.fills) > 0
    fills = pair.paced_record.fills
    assert set(fills["exchange_trade_id"]) and all(fills["exchange_trade_id"] != ""), "fills come from the exchange"
    assert set(fills["fee_asset"]) == {"USDT"}, "paced replay pays fees in the quote asset, like the paper broker"


def test_the_window_has_enough_trades_to_compare(pair):
    assert len(pair.plain_record.fills) >= 8, f"too few trades to compare ({pair.source})"


def test_paced_and_plain_replays_send_the_same_orders(pair):
    plain = pair.plain_record.orders.drop_duplicates("order_id", keep="last")
    paced = pair.paced_record.orders.sort_values("updated_at", kind="stable").drop_duplicates("order_id", keep="last")
    assert len(paced) == len(plain)
    for a, b in zip(plain.itertuples(index=False), paced.sort_values("ts").itertuples(index=False), strict=True):
        assert (b.ts, b.side, b.type, b.qty) == (a.ts, a.side, a.type, a.qty)


def test_paced_and_plain_replays_make_the_same_trades(pair):
    """Fills inside the window: same sides, quantities, prices and fees, on the same bars; the
    same closed round trips. (An order sent at the window's last close: see the test below.)"""
    end = _window_end(pair)
    plain = pair.plain_record.fills
    paced = pair.paced_record.fills[[_ms(t) < end for t in pair.paced_record.fills["ts"]]]
    assert len(paced) == len(plain)
    for a, b in zip(plain.itertuples(index=False), paced.itertuples(index=False), strict=True):
        assert (b.side, b.qty, b.price) == (a.side, a.qty, a.price)
        assert b.fee == pytest.approx(a.fee, rel=1e-9, abs=1e-8)
        bar_of_fill = _ms(b.ts) - _ms(b.ts) % MINUTE_MS
        assert bar_of_fill == _ms(a.ts), "filled on the same bar (the paced fill lands inside it)"
    closed = [t.dropna(subset=["closed_at"]) for t in (pair.plain_record.trades, pair.paced_record.trades)]
    assert len(closed[0]) == len(closed[1]) >= 3
    for a, b in zip(closed[0].itertuples(index=False), closed[1].itertuples(index=False), strict=True):
        assert (b.qty, b.entry_price, b.exit_price) == (a.qty, a.entry_price, a.exit_price)
        assert b.pnl == pytest.approx(a.pnl, abs=1e-6)


def test_paced_replay_fills_nothing_after_its_window(pair):
    """The real window (what CI runs) ends with an order sent at its last close: the plain replay
    never fills it, and neither may the paced one, though its exchange has the next bar."""
    end = _window_end(pair)
    last = pair.plain_record.orders["ts"].map(_ms).max()
    if pair.source == "real BTCUSDT":
        assert last == end, "the real window no longer ends with an order: pick one that does"
    assert all(_ms(t) < end for t in pair.paced_record.fills["ts"])
    assert pair.paced["final_equity"] == pytest.approx(pair.plain["final_equity"], abs=1e-6)


def test_paced_replay_delivers_every_bar_of_the_window(pair):
    assert pair.paced["bars"] == pair.plain["bars"]
    assert len(pair.paced_record.equity) == len(pair.plain_record.equity)


def test_a_paced_replay_to_the_last_recorded_bar_finishes(pair):
    env = live_env(pair.root, key=None, secret=None)
    try:
        proc = cli(env, "replay", "--days", "0.025", *STRATEGY, *ZERO_SLIPPAGE, "--speed", "6000", "--no-report",
                   "--json", timeout=6)
    except subprocess.TimeoutExpired:
        pytest.fail("36 bars at 6000x (0.4 s of exchange time) did not finish in 6 s")
    assert proc.returncode == 0, proc.stderr
