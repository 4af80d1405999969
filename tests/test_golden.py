"""The pinned golden run: SMA 10/30 on real BTCUSDT 1m bars, 2025-06-01 .. 2025-06-15.

Fixed fees (10 bps), zero slippage, no volume cap. The expected trade count and final equity
are pinned, and reproduced here by an independent plain-numpy implementation of the fill
rules (DESIGN 3.5) and of backtrader's SMA / CrossOver semantics — not by copying the
harness's own output.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness.bars import Bars
from harness.config import load_config
from harness.datasets import Store
from harness.engine import plan_replay, run_replay
from harness.journal import Journal
from harness.model import MarketRules, parse_time
from tests.conftest import BTC_1M, ROOT, need_shared

FEE = 0.001
STEP = 0.00001
CASH = 10_000.0
PINNED_TRADES = 400
PINNED_FINAL_EQUITY = 4695.9786


def reference(opens: np.ndarray, closes: np.ndarray, fast: int = 10, slow: int = 30,
              fraction: float = 0.95) -> tuple[int, float, list[tuple[int, str, float, float]]]:
    """Plain-python/numpy SMA cross with next-open fills; returns (round trips, final equity, fills)."""
    n = len(closes)
    sma_f = np.full(n, np.nan)
    sma_s = np.full(n, np.nan)
    for i in range(fast - 1, n):
        sma_f[i] = math.fsum(closes[i - fast + 1:i + 1]) / fast
    for i in range(slow - 1, n):
        sma_s[i] = math.fsum(closes[i - slow + 1:i + 1]) / slow
    # last non-zero difference (backtrader's NonZeroDifference), seeded at the first common bar
    nzd = np.full(n, np.nan)
    nzd[slow - 1] = sma_f[slow - 1] - sma_s[slow - 1]
    for i in range(slow, n):
        d = sma_f[i] - sma_s[i]
        nzd[i] = d if d else nzd[i - 1]
    cross = np.zeros(n)
    for i in range(slow, n):
        up = nzd[i - 1] < 0 and sma_f[i] > sma_s[i]
        down = nzd[i - 1] > 0 and sma_f[i] < sma_s[i]
        cross[i] = float(up) - float(down)

    cash, qty, pending, fills = CASH, 0.0, None, []
    for i in range(n):
        if pending is not None:                     # sent at the previous close, fills at this open
            side, q = pending
            price = opens[i]
            if side == "buy":
                cash -= q * price + q * price * FEE
                qty += q
            else:
                cash += q * price - q * price * FEE
                qty -= q
            fills.append((i, side, q, price))
            pending = None
        if i < slow:
            continue
        if cross[i] > 0 and qty <= 0:
            equity = cash + qty * closes[i]
            q = math.floor(round(fraction * equity / (closes[i] * (1 + FEE)) / STEP, 6)) * STEP
            if q > 0:
                pending = ("buy", q)
        elif cross[i] < 0 and qty > 0:
            pending = ("sell", qty)
    sells = sum(1 for f in fills if f[1] == "sell")
    return sells, cash + qty * closes[-1], fills


@pytest.fixture(scope="module")
def golden(tmp_path_factory):
    need_shared()
    root = tmp_path_factory.mktemp("golden")
    table = pq.read_table(BTC_1M)
    ts = table.column("open_time").cast(pa.int64()).to_numpy()
    bars = Bars("BTC/USDT", "1m", ts, *(table.column(c).to_numpy() for c in ("open", "high", "low", "close", "volume")))
    store = Store(root / "datasets")
    store.write("binance", bars)
    store.save_rules("binance", {"BTC/USDT": MarketRules("BTC/USDT", STEP, 0.01, STEP, 9000.0, 5.0)}, int(ts[0]), "test")
    config = load_config(ROOT / "config" / "config.toml", env={}, overrides=(
        "fees.taker_bps=10", "fees.maker_bps=10", "slippage.bps=0", "fills.max_bar_volume_pct=0"))
    plan = plan_replay(config, store, days=14, end=parse_time("2025-06-15T00:00Z"))
    journal = Journal(root / "reports")
    result = run_replay(plan, journal, report=False)
    window = bars.window(parse_time("2025-06-01"), parse_time("2025-06-15"))
    return result, journal.load(result.run_id), window


def test_golden_window_is_the_asked_one(golden):
    result, _, window = golden
    assert result.summary["start"] == "2025-06-01T00:00:00Z"
    assert result.summary["end"] == "2025-06-15T00:00:00Z"
    assert result.summary["bars"] == len(window) == 14 * 1440


def test_golden_matches_pinned_numbers(golden):
    result, _, _ = golden
    assert result.summary["trades"] == PINNED_TRADES
    assert result.summary["final_equity"] == pytest.approx(PINNED_FINAL_EQUITY, abs=1e-4)


def test_golden_matches_independent_implementation(golden):
    result, record, window = golden
    trades, final_equity, fills = reference(window.open, window.close)
    assert result.summary["trades"] == trades
    assert result.summary["final_equity"] == pytest.approx(final_equity, rel=1e-9)
    assert len(record.fills) == len(fills)
    got = record.fills
    open_times = window.ts
    for k, (i, side, q, price) in enumerate(fills):
        assert got["side"].iloc[k] == side
        assert got["qty"].iloc[k] == pytest.approx(q, abs=1e-12)
        assert got["price"].iloc[k] == price
        assert int(got["ts"].iloc[k].value // 10**6) == int(open_times[i])
