"""``data synth``: seeded, realistic synthetic 1-minute bars.

The returns have volatility clustering (a GARCH(1,1) variance on Student-t innovations, times
a slow AR(1) regime of log-volatility), fat tails, and an intraday and weekly seasonality of
volatility and volume; volume rises with the absolute return. Prices sit on the symbol's tick,
volumes on its lot step, and every bar's OHLC is consistent (open = previous close).

Scenarios:

* ``calm``  — no drift, half the symbol's usual volatility.
* ``trend`` — a steady drift under the noise; the window's last close is 25–45% above its first open.
* ``crash`` — a fall of 15–30% within a few hours, then a recovery over a few days; the
  window's maximum drawdown of closes is within 15–30% by construction.
* ``halt``  — as calm, with a stretch of missing bars (2–6 hours, at least 3 bars of the
  requested timeframe) in the middle of the window, as when an exchange halts trading.

A coarser ``timeframe`` is resampled from the generated 1m bars. The same seed gives identical
bars; each symbol gets its own seeded path. Nothing here reads the clock except
:func:`default_end` (the documented default of ``--end``).
"""

from __future__ import annotations

import math
import time
import zlib

import numpy as np

from harness.bars import Bars, bucket_start, resample
from harness.datasets import Store
from harness.errors import DatasetError
from harness.model import DAY_MS, MINUTE_MS, base_quote, ms_to_iso, normalize_symbol, timeframe_ms
from harness.sources.market_rules import STABLE_QUOTES, known_binance_rules, make_rules

EXCHANGE = "synthetic"
SCENARIOS = ("calm", "trend", "crash", "halt")
START_PRICES = {"BTC": 60_000.0, "ETH": 3_000.0}
DEFAULT_START_PRICE = 100.0
ANNUAL_VOL = {"BTC": 0.55, "ETH": 0.70}
DEFAULT_ANNUAL_VOL = 0.85
NOTIONAL_PER_MINUTE = {"BTC": 600_000.0, "ETH": 300_000.0}      # average traded value, quote asset
DEFAULT_NOTIONAL_PER_MINUTE = 50_000.0
MINUTES_PER_YEAR = 525_600
T_DOF = 5.0                                 # Student-t degrees of freedom of the innovations
GARCH_ALPHA, GARCH_BETA = 0.05, 0.945       # persistence 0.995: shocks fade over a few hours
REGIME_DAYS, REGIME_SD = 3.0, 0.3           # slow log-volatility regime: memory and spread
HOUR_MS = 3_600_000


def default_end() -> int:
    """The start of the current UTC day, in ms (reads the wall clock)."""
    now = int(time.time() * 1000)
    return now - now % DAY_MS


def synth_to_store(store: Store, symbols, days: int = 30, timeframe: str = "1m", seed: int = 7,
                   scenario: str = "calm", end: int | None = None) -> list[dict]:
    """Generate bars for each symbol, store them under ``exchange=synthetic`` (one transaction)
    with a market-rules snapshot, and say what was written: one dict per symbol."""
    end = default_end() if end is None else end
    series = [synth_bars(s, days, timeframe=timeframe, seed=seed, scenario=scenario, end=end) for s in symbols]
    results = store.write_many([(EXCHANGE, bars) for bars in series], [f"synthetic {b.symbol}" for b in series])
    for bars in series:
        if store.rules(EXCHANGE, bars.symbol, at=int(bars.ts[0])) is None:
            store.save_rules(EXCHANGE, {bars.symbol: synthetic_rules(bars.symbol)}, taken_at=int(bars.ts[0]),
                             source="synthetic: Binance spot filters where known, else tick 0.01 and lot 0.001")
    return [{"exchange": EXCHANGE, "symbol": b.symbol, "timeframe": b.timeframe, "scenario": scenario, "seed": seed,
             "bars": len(b), "first": ms_to_iso(int(b.ts[0])), "last": ms_to_iso(int(b.ts[-1])),
             "added": r.added, "unchanged": r.unchanged}
            for b, r in zip(series, results, strict=True)]


def synthetic_rules(symbol: str):
    """The rules synthetic bars of ``symbol`` are rounded to (and stored with)."""
    _, quote = base_quote(symbol)
    return known_binance_rules(symbol) or make_rules(symbol, 0.01, 0.001, 5.0 if quote in STABLE_QUOTES else 0.0)


def synth_bars(symbol: str, days: int, timeframe: str = "1m", seed: int = 7, scenario: str = "calm",
               end: int | None = None) -> Bars:
    """``days`` of bars of ``timeframe`` ending at ``end`` (rounded down to the timeframe; default:
    the start of today, UTC). Deterministic in (symbol, days, timeframe, seed, scenario, end)."""
    symbol = normalize_symbol(symbol)
    if scenario not in SCENARIOS:
        raise DatasetError(f"unknown scenario {scenario!r}: choose one of {', '.join(SCENARIOS)}")
    if not days >= 1:
        raise DatasetError(f"--days must be at least 1, not {days}")
    step = timeframe_ms(timeframe)
    if step % MINUTE_MS:
        raise DatasetError(f"synthetic bars are made from 1m bars: --timeframe must be a whole number of minutes, "
                           f"not {timeframe}")
    end = default_end() if end is None else int(end)
    end = int(bucket_start(end, step))
    start = int(bucket_start(end - int(days) * DAY_MS + step - 1, step))
    if start >= end:
        raise DatasetError(f"{days} days hold no whole {timeframe} bar")
    bars = _minute_bars(symbol, start, end, seed, scenario, halt_min=3 * step // MINUTE_MS)
    if step != MINUTE_MS:
        bars = resample(bars, timeframe, complete_until=end, complete_from=start)
        bars.volume = _on_tick(bars.volume, synthetic_rules(symbol).lot_step)     # sums: drop float residue
    return bars


# --------------------------------------------------------------------------------------------
# the 1m path


def _minute_bars(symbol: str, start: int, end: int, seed: int, scenario: str, halt_min: int) -> Bars:
    base, _ = base_quote(symbol)
    rules = synthetic_rules(symbol)
    n = (end - start) // MINUTE_MS
    ts = start + MINUTE_MS * np.arange(n, dtype=np.int64)
    streams = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, zlib.crc32(symbol.encode())]).spawn(4)
    noise, regime, scen, extra = (np.random.default_rng(s) for s in streams)

    sigma = ANNUAL_VOL.get(base, DEFAULT_ANNUAL_VOL) / math.sqrt(MINUTES_PER_YEAR)
    sigma *= {"calm": 0.5, "halt": 0.5, "trend": 0.7, "crash": 1.0}[scenario]
    season = _seasonality(ts)
    z = noise.standard_t(T_DOF, n) / math.sqrt(T_DOF / (T_DOF - 2))
    scale = sigma * season * _regime(regime, n) * np.sqrt(_garch_variance(z))
    returns = scale * z
    price0 = START_PRICES.get(base, DEFAULT_START_PRICE) * math.exp(scen.uniform(-0.05, 0.05))
    boost = np.ones(n)
    if scenario == "trend":        # the drift that makes the whole window rise by the target
        returns += (math.log(1 + scen.uniform(0.25, 0.45)) - returns.sum()) / n
    elif scenario == "crash":
        returns, boost = _add_crash(returns, scen)

    log_close = math.log(price0) + np.cumsum(returns)
    close = _on_tick(np.exp(log_close), rules.tick_size)
    open_ = np.concatenate(([_on_tick(np.array([price0]), rules.tick_size)[0]], close[:-1]))
    reach = np.abs(scale) * boost * 0.6
    high = _on_tick(np.maximum(open_, close) * np.exp(reach * np.abs(extra.standard_normal(n))),
                    rules.tick_size, "up")
    low = _on_tick(np.minimum(open_, close) * np.exp(-reach * np.abs(extra.standard_normal(n))),
                   rules.tick_size, "down")
    low = np.maximum(low, rules.tick_size)

    activity = (0.35 + np.abs(returns) / (sigma * np.mean(season))) * season * boost
    activity *= np.exp(0.35 * extra.standard_normal(n))
    notional = NOTIONAL_PER_MINUTE.get(base, DEFAULT_NOTIONAL_PER_MINUTE) * activity / activity.mean()
    volume = _on_tick(notional / close, rules.lot_step, "down")

    bars = Bars(symbol, "1m", ts, open_, high, low, close, volume)
    if scenario == "halt":
        length = min(max(int(scen.uniform(120, 360)), halt_min), n // 4)
        first = int(n * scen.uniform(0.4, 0.6))
        keep = np.ones(n, dtype=bool)
        keep[first:first + length] = False
        bars = bars.take(keep)
    return bars


def _seasonality(ts: np.ndarray) -> np.ndarray:
    """Activity by time of day (peak around 14-16 UTC, trough around 3 UTC) and weekday
    (weekends quieter), with mean 1."""
    hour = (ts % DAY_MS) / HOUR_MS
    weekday = (ts // DAY_MS + 3) % 7                      # 1970-01-01 was a Thursday (3)
    daily = 1.0 + 0.25 * np.cos(2 * np.pi * (hour - 15.0) / 24.0)
    weekly = np.where(weekday >= 5, 0.75, 1.0)
    season = daily * weekly
    return season / season.mean()


def _regime(rng: np.random.Generator, n: int) -> np.ndarray:
    """A slow AR(1) log-volatility factor, stepped hourly, with mean 1."""
    hours = n // 60 + 2
    phi = math.exp(-1.0 / (REGIME_DAYS * 24))
    shocks = (rng.standard_normal(hours) * REGIME_SD * math.sqrt(1 - phi * phi)).tolist()
    x, path = rng.standard_normal() * REGIME_SD, []
    for e in shocks:
        x = phi * x + e
        path.append(x)
    factor = np.exp(np.repeat(np.array(path), 60)[:n])
    return factor / factor.mean()


def _garch_variance(z: np.ndarray) -> np.ndarray:
    """GARCH(1,1) variance with unit mean driven by standardised innovations ``z``."""
    omega = 1.0 - GARCH_ALPHA - GARCH_BETA
    h, out = 1.0, []
    append = out.append
    for x in (z * z).tolist():
        append(h)
        h = omega + (GARCH_ALPHA * min(x, 50.0) + GARCH_BETA) * h
    return np.array(out)


def _add_crash(returns: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Returns with a fast fall and a slower recovery added, tuned so that the maximum drawdown
    of the closes lands on a target drawn from 18–27%; and the activity boost around it."""
    n = len(returns)
    target = rng.uniform(0.18, 0.27)
    start = int(n * rng.uniform(0.45, 0.6))
    fall = max(2, min(int(rng.uniform(60, 240)), n // 8))
    recover = max(2, min(int(rng.uniform(1.5, 3.0) * 1440), n - start - fall))
    keep = rng.uniform(0.7, 1.0)
    noise = returns.copy()
    damp = _max_drawdown(noise)
    if damp > 0.5 * target:                           # a long, wild window: quieten the background
        noise *= 0.5 * target / damp

    def path(depth: float) -> np.ndarray:
        drop = -math.log(1 - depth)
        offset = np.zeros(n)
        i = np.arange(1, fall + 1)
        offset[start:start + fall] = -drop * (1 - np.cos(np.pi * i / fall)) / 2
        j = np.arange(1, recover + 1)
        offset[start + fall:start + fall + recover] = -drop + drop * keep * (1 - np.cos(np.pi * j / recover)) / 2
        offset[start + fall + recover:] = -drop * (1 - keep)
        return noise + np.diff(offset, prepend=0.0)

    lo, hi = 0.0, 0.6
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _max_drawdown(path(mid)) < target else (lo, mid)
    boost = np.ones(n)
    boost[start:start + fall] = 3.0
    tail = np.arange(n - start - fall)
    boost[start + fall:] = 1.0 + 2.0 * np.exp(-tail / max(1, recover / 4))
    return path((lo + hi) / 2), boost


def _max_drawdown(returns: np.ndarray) -> float:
    level = np.cumsum(returns)
    return float(1 - np.exp((level - np.maximum.accumulate(np.maximum(level, 0.0))).min()))


def _on_tick(values: np.ndarray, step: float, how: str = "nearest") -> np.ndarray:
    """Values rounded to a multiple of ``step`` (nearest, up or down), without float residue."""
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    units = values / step
    rounded = {"nearest": np.round, "up": np.ceil, "down": np.floor}[how](units + (1e-9 if how == "down" else
                                                                              -1e-9 if how == "up" else 0.0))
    return np.round(rounded * step, decimals)
