"""Helpers for the exchange tests: deterministic bars, a paper exchange on a manual clock,
and a plain ccxt binance client pointed at it (sandbox mode, every API URL rewritten)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import ccxt
import numpy as np

from harness.bars import Bars
from harness.datasets import Store
from harness.fills import FillConfig
from harness.model import DAY_MS, Bar, MarketRules, parse_time
from harness.paper_exchange import PaperExchange
from harness.paper_market import ManualClock

KEY = "test-api-key-0123456789"
SECRET = "test-api-secret-9876543210"
T0 = parse_time("2025-06-01")              # first recorded bar
START = T0 + DAY_MS                        # the bar in progress when the clock starts
MINUTE = 60_000
BTC_RULES = MarketRules("BTC/USDT", lot_step=0.00001, tick_size=0.01, min_qty=0.00001, min_notional=5.0)
ETH_RULES = MarketRules("ETH/USDT", lot_step=0.0001, tick_size=0.01, min_qty=0.0001, min_notional=5.0)
GAP = (START + 120 * MINUTE, START + 130 * MINUTE)     # BTC/USDT has no bars here: a halt


def make_bars(symbol: str, days: int = 2, price: float = 60_000.0, seed: int = 1,
              gap: tuple[int, int] | None = None) -> Bars:
    """A seeded random walk of 1m bars from :data:`T0`, prices on a 0.01 tick."""
    n = days * 1440
    rng = np.random.default_rng(seed)
    close = np.round(price * np.exp(np.cumsum(rng.normal(0, 5e-4, n))), 2)
    open_ = np.concatenate(([price], close[:-1]))
    wiggle = np.abs(rng.normal(0, 4e-4, n))
    high = np.round(np.maximum(open_, close) * (1 + wiggle), 2)
    low = np.round(np.minimum(open_, close) * (1 - wiggle), 2)
    volume = np.round(rng.uniform(5, 20, n), 5)
    ts = T0 + np.arange(n, dtype=np.int64) * MINUTE
    bars = Bars(symbol, "1m", ts, open_, high, low, close, volume)
    if gap is not None:
        bars = bars.take((ts < gap[0]) | (ts >= gap[1]))
    return bars


def make_store(root: Path) -> Store:
    """BTC/USDT (with a 10-minute halt at :data:`GAP`) and ETH/USDT under ``binance``, with rules."""
    store = Store(root)
    store.write("binance", make_bars("BTC/USDT", gap=GAP))
    store.write("binance", make_bars("ETH/USDT", price=3_000.0, seed=2))
    store.save_rules("binance", {"BTC/USDT": BTC_RULES, "ETH/USDT": ETH_RULES}, taken_at=T0, source="tests")
    return store


def make_exchange(store: Store, *, at: int = START + 5_000, balances: dict | None = None,
                  fill_config: FillConfig | None = None, **options) -> PaperExchange:
    """A started paper exchange whose manual clock reads ``at`` (exchange time = recorded time)."""
    start = options.pop("start", at - at % MINUTE)
    return PaperExchange(store, ["BTC/USDT", "ETH/USDT"], start=start, clock=ManualClock(at), api_key=KEY,
                         api_secret=SECRET, balances={"USDT": 10_000.0, "BTC": 0.5} if balances is None else balances,
                         fill_config=fill_config or FillConfig(slippage_bps=2.0, max_bar_volume_pct=10.0),
                         **options).start()


def ccxt_client(url: str, key: str = KEY, secret: str = SECRET, **options) -> ccxt.binance:
    """A plain ccxt binance client on ``url``: sandbox mode, every urls['api'] entry rewritten."""
    client = ccxt.binance({"apiKey": key, "secret": secret, "enableRateLimit": False, "timeout": 5_000,
                           "options": {"fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False,
                                       "fetchMargins": False, **options}})
    client.set_sandbox_mode(True)
    client.urls["api"] = {name: url + urlsplit(value).path for name, value in client.urls["api"].items()}
    return client


def bar_at(store: Store, symbol: str, ts: int) -> Bar:
    """The recorded bar opening at ``ts`` (plain floats)."""
    bars = store.read("binance", symbol, "1m", ts, ts + MINUTE)
    assert len(bars) == 1, f"no bar at {ts}"
    return Bar(ts, *(float(getattr(bars, c)[0]) for c in ("open", "high", "low", "close", "volume")))
