"""The replayed market behind the paper exchange: its clock, its bars, prices, tickers and book.

Recorded bars are replayed on an *exchange clock*. Bar times are shifted by a whole number of
bars (``offset``) so the bar at the replay's start is the bar in progress when the clock
starts; with ``shift_to_now`` (the default of ``exchange serve``) that is the present minute.
At any exchange time ``now``:

- the bar **in progress** is the recorded bar whose open is ``floor(now)`` on the timeframe
  grid; its *open* is the current price (known at its start), the rest of it is the future;
- **closed** bars (``open + timeframe <= now``) are all a client can see in klines;
- a symbol whose bar in progress is missing from the data (a halt, or past the end of the
  recording) is **halted**: status ``BREAK``, and orders get ``-1013 Market is closed.``

The synthetic order book is a deterministic function of the seed, the symbol and the bar.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from harness.bars import Bars, resample
from harness.fills import round_step
from harness.model import MarketRules, base_quote, exchange_symbol, normalize_symbol, timeframe_ms

BINANCE_INTERVALS = ("1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d")
MAX_KLINES = 1000
DAY_MS = 86_400_000


class ApiError(Exception):
    """A Binance error reply: HTTP ``status`` with body ``{"code": code, "msg": msg}``."""

    def __init__(self, code: int, msg: str, status: int = 400):
        super().__init__(msg)
        self.code, self.msg, self.status = code, msg, status


class Clock(Protocol):
    """The exchange's clock: milliseconds since the epoch, exchange time."""

    def now_ms(self) -> int: ...


class ReplayClock:
    """Exchange time that reads ``origin_ms`` until :meth:`start`, then runs ``speed``× real time."""

    def __init__(self, origin_ms: int, speed: float = 1.0, real: Callable[[], float] = time.time):
        if not speed > 0:
            raise ValueError("speed must be positive")
        self.origin_ms, self.speed, self._real = int(origin_ms), float(speed), real
        self._anchor: float | None = None

    def start(self) -> None:
        self._anchor = self._real()

    def now_ms(self) -> int:
        if self._anchor is None:
            return self.origin_ms
        return self.origin_ms + int((self._real() - self._anchor) * 1000 * self.speed)


class ManualClock:
    """A clock that moves only when told to (tests, deterministic in-process runs)."""

    def __init__(self, now_ms: int):
        self._now = int(now_ms)
        self._lock = threading.Lock()

    def now_ms(self) -> int:
        return self._now

    def set(self, now_ms: int) -> None:
        with self._lock:
            if now_ms < self._now:
                raise ValueError("a clock does not run backwards")
            self._now = int(now_ms)

    def advance(self, ms: int) -> int:
        self.set(self._now + int(ms))
        return self._now


@dataclass(frozen=True, slots=True)
class BarView:
    """One replayed bar (exchange-time ``ts``) and its position in the series."""

    index: int
    ts: int
    open: float
    high: float
    low: float
    close: float
    volume: float


class ReplayedMarket:
    """Bars of several symbols on one exchange clock (see the module docstring)."""

    def __init__(self, series: dict[str, Bars], rules: dict[str, MarketRules], clock: Clock, offset: int = 0,
                 seed: int = 0):
        if not series:
            raise ValueError("no symbols to replay")
        timeframes = {b.timeframe for b in series.values()}
        if len(timeframes) != 1:
            raise ValueError(f"all symbols must share one timeframe, got {sorted(timeframes)}")
        self.timeframe = timeframes.pop()
        self.tf = timeframe_ms(self.timeframe)
        if offset % self.tf:
            raise ValueError("the time offset must be a whole number of bars")
        self.clock, self.offset, self.seed = clock, int(offset), int(seed)
        self.symbols = tuple(normalize_symbol(s) for s in series)
        self.bars: dict[str, Bars] = {}
        for symbol, bars in series.items():
            symbol = normalize_symbol(symbol)
            shifted = bars.slice(0, len(bars))
            shifted.ts = bars.ts.astype(np.int64) + self.offset
            self.bars[symbol] = shifted
        self.rules = {normalize_symbol(s): r for s, r in rules.items()}
        missing = [s for s in self.symbols if s not in self.rules]
        if missing:
            raise ValueError(f"no market rules for {', '.join(missing)}")
        self._wire = {exchange_symbol(s): s for s in self.symbols}

    # -- symbols and time ---------------------------------------------------------------------

    def now(self) -> int:
        return self.clock.now_ms()

    def symbol(self, wire: str | None) -> str:
        """Unified symbol for a wire id such as ``BTCUSDT``; ``-1121 Invalid symbol.`` otherwise."""
        if wire is None or wire == "":
            raise ApiError(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        symbol = self._wire.get(str(wire).upper()) if str(wire).isalnum() else None
        if symbol is None:
            raise ApiError(-1121, "Invalid symbol.")
        return symbol

    def wire(self, symbol: str) -> str:
        return exchange_symbol(symbol)

    def assets(self) -> list[str]:
        out: dict[str, None] = {}
        for s in self.symbols:
            for asset in base_quote(s):
                out[asset] = None
        return list(out)

    # -- bars -----------------------------------------------------------------------------------

    def _bar(self, symbol: str, i: int) -> BarView:
        b = self.bars[symbol]
        return BarView(i, int(b.ts[i]), float(b.open[i]), float(b.high[i]), float(b.low[i]),
                       float(b.close[i]), float(b.volume[i]))

    def current_bar(self, symbol: str, now: int) -> BarView | None:
        """The bar in progress at ``now``, or None when the symbol is halted."""
        ts = self.bars[symbol].ts
        start = now - now % self.tf
        i = int(np.searchsorted(ts, start, "left"))
        if i < len(ts) and ts[i] == start:
            return self._bar(symbol, i)
        return None

    def last_closed(self, symbol: str, now: int) -> BarView | None:
        i = int(np.searchsorted(self.bars[symbol].ts, now - self.tf, "right")) - 1
        return self._bar(symbol, i) if i >= 0 else None

    def closed_between(self, symbol: str, after: int, now: int) -> Iterator[BarView]:
        """Bars that closed in ``(after, now]`` in time order."""
        ts = self.bars[symbol].ts
        lo = int(np.searchsorted(ts, after - self.tf, "right"))
        hi = int(np.searchsorted(ts, now - self.tf, "right"))
        for i in range(lo, hi):
            yield self._bar(symbol, i)

    def is_trading(self, symbol: str, now: int) -> bool:
        return self.current_bar(symbol, now) is not None

    def price(self, symbol: str, now: int) -> float | None:
        """The current price: the open of the bar in progress, else the last close (halted)."""
        bar = self.current_bar(symbol, now)
        if bar is not None:
            return bar.open
        last = self.last_closed(symbol, now)
        return None if last is None else last.close

    # -- klines ---------------------------------------------------------------------------------

    def klines(self, symbol: str, interval: str, start: int | None, end: int | None, limit: int,
               now: int) -> list[list]:
        """Closed bars of ``interval`` as Binance's 12-value rows (open time ascending)."""
        if interval not in BINANCE_INTERVALS:
            raise ApiError(-1120, "Invalid interval.")
        step = timeframe_ms(interval)
        if step < self.tf or step % self.tf:
            raise ApiError(-1120, "Invalid interval.")
        if not 1 <= limit <= MAX_KLINES:
            raise ApiError(-1100, f"Illegal characters found in parameter 'limit'; legal range is '1..{MAX_KLINES}'.")
        bars = self.bars[symbol]
        upper = now if end is None else min(now, end + step)        # bars must have closed by now
        if start is not None:
            lo_t = start - start % step
            hi_t = min(upper, lo_t + step * (limit + 1))
        else:
            hi_t = upper
            lo_t = hi_t - hi_t % step - step * (limit + 1)
        lo = int(np.searchsorted(bars.ts, lo_t, "left"))
        hi = int(np.searchsorted(bars.ts, hi_t, "left"))
        window = bars.slice(lo, hi)
        if step != self.tf:
            window = resample(window, interval)
        keep = window.ts + step <= now
        if start is not None:
            keep &= window.ts >= start
        if end is not None:
            keep &= window.ts <= end
        idx = np.flatnonzero(keep)
        idx = idx[:limit] if start is not None else idx[-limit:]
        w = window.take(idx)
        qv = w.extra.get("quote_volume")
        quote = w.close * w.volume if qv is None else np.where(np.isfinite(qv), qv, w.close * w.volume)
        trades = w.extra.get("trades")
        counts = np.zeros(len(w), np.int64) if trades is None else np.nan_to_num(trades).astype(np.int64)
        columns = [[f"{x:.8f}" for x in col.tolist()] for col in (w.open, w.high, w.low, w.close, w.volume, quote)]
        return [[t, o, h, lo, c, v, t + step - 1, q, n, "0.00000000", "0.00000000", "0"]
                for t, o, h, lo, c, v, q, n in zip(w.ts.tolist(), *columns, counts.tolist(), strict=True)]

    # -- tickers and book -----------------------------------------------------------------------

    def ticker_24h(self, symbol: str, now: int) -> dict:
        bars = self.bars[symbol]
        lo = int(np.searchsorted(bars.ts, now - DAY_MS, "left"))
        hi = int(np.searchsorted(bars.ts, now - self.tf, "right"))
        last = self.price(symbol, now) or 0.0
        bid, ask = self.top_of_book(symbol, now)
        if hi > lo:
            o = float(bars.open[lo])
            high = max(float(bars.high[lo:hi].max()), last)
            low = min(float(bars.low[lo:hi].min()), last)
            volume = float(bars.volume[lo:hi].sum())
            quote = float((bars.close[lo:hi] * bars.volume[lo:hi]).sum())
        else:
            o = high = low = last
            volume = quote = 0.0
        prev = float(bars.close[lo - 1]) if lo > 0 else o
        change = last - o
        return {
            "symbol": self.wire(symbol), "priceChange": fmt(change),
            "priceChangePercent": f"{(100.0 * change / o if o else 0.0):.3f}",
            "weightedAvgPrice": fmt(quote / volume if volume else last), "prevClosePrice": fmt(prev),
            "lastPrice": fmt(last), "lastQty": "0.00000000",
            "bidPrice": fmt(bid[0]), "bidQty": fmt(bid[1]), "askPrice": fmt(ask[0]), "askQty": fmt(ask[1]),
            "openPrice": fmt(o), "highPrice": fmt(high), "lowPrice": fmt(low),
            "volume": fmt(volume), "quoteVolume": fmt(quote),
            "openTime": now - DAY_MS, "closeTime": now, "firstId": -1, "lastId": -1, "count": 0,
        }

    def book(self, symbol: str, now: int, limit: int = 100) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
        """A synthetic book around the current price: ``(bids, asks)`` of ``(price, qty)``, best first."""
        price = self.price(symbol, now)
        if price is None:
            return [], []
        rules = self.rules[symbol]
        tick = rules.tick_size if rules.tick_size > 0 else 10 ** (math.floor(math.log10(price)) - 6)
        half = max(tick, price * 0.5e-4)
        best_bid = round_step(price - half, tick, "down")
        best_ask = round_step(price + half, tick, "up")
        if best_ask <= best_bid:
            best_ask = round_step(best_bid + tick, tick, "nearest")
        gap = max(tick, round_step(price * 1e-4, tick, "up"))
        bar = self.current_bar(symbol, now) or self.last_closed(symbol, now)
        volume = bar.volume if bar is not None else 1.0
        key = bar.index if bar is not None else 0
        rng = np.random.default_rng([self.seed, self.symbols.index(symbol), key])
        sizes = rng.exponential(max(volume, 1e-6) / 50.0, size=(2, limit)) + rules.lot_step
        lot = rules.lot_step
        bids = [(round_step(best_bid - i * gap, tick, "nearest"), _lots(sizes[0, i], lot)) for i in range(limit)]
        asks = [(round_step(best_ask + i * gap, tick, "nearest"), _lots(sizes[1, i], lot)) for i in range(limit)]
        return [b for b in bids if b[0] > 0], asks

    def top_of_book(self, symbol: str, now: int) -> tuple[tuple[float, float], tuple[float, float]]:
        bids, asks = self.book(symbol, now, 1)
        return (bids[0] if bids else (0.0, 0.0)), (asks[0] if asks else (0.0, 0.0))

    def avg_price(self, symbol: str, now: int, minutes: int = 5) -> float:
        """Volume-weighted close over the last ``minutes`` of closed bars (Binance's avgPrice)."""
        bars = self.bars[symbol]
        hi = int(np.searchsorted(bars.ts, now - self.tf, "right"))
        lo = int(np.searchsorted(bars.ts, now - minutes * 60_000, "left"))
        if hi <= lo:
            return self.price(symbol, now) or 0.0
        vol = bars.volume[lo:hi]
        if vol.sum() > 0:
            return float((bars.close[lo:hi] * vol).sum() / vol.sum())
        return float(bars.close[lo:hi].mean())


def _lots(qty: float, lot: float) -> float:
    return max(round_step(float(qty), lot, "down"), lot) if lot > 0 else round(float(qty), 8)


def fmt(value: float) -> str:
    """Binance's number format: eight decimals, as a string."""
    return f"{float(value):.8f}"
