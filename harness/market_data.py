"""The market-data side of a live run: the exchange's clock, the polling job, the feeds.

- :class:`ExchangeClock` follows the exchange's "now" (a paper exchange may run N× fast).
- :class:`MarketData` is the market-data-refresh job: right after each bar is due to close it
  polls closed bars, queues them for ``datasets/`` (the tap), journals gaps and hands the bars
  to the feeds, every symbol's bar of a minute before backtrader looks at any of them.
- :class:`PumpedFeed` is a live feed that runs the job from its ``_load`` on backtrader's thread.

The job reads its session (client, clock, feeds, options, journal hooks) from ``session``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from harness.errors import ExchangeError
from harness.feed import LiveFeed
from harness.model import ms_to_iso, timeframe_ms

log = logging.getLogger("harness.live")


class ExchangeClock:
    """The exchange's "now", read from its server time and extrapolated between reads.

    The rate (exchange ms per real ms) is measured between reads, so a paper exchange at
    ``--speed 60`` is followed as faithfully as the testnet at 1×; a rate within a factor of two
    of real time is taken as real time (network jitter, not a replay).
    """

    def __init__(self, server_time: Callable[[], int], real: Callable[[], float] = time.monotonic,
                 probe_s: float = 0.05, rate: float | None = None):
        self._server_time, self._real = server_time, real
        self._first = self._last = None
        self.fixed = rate is not None
        self.rate = 1.0 if rate is None else float(rate)
        self.resync()
        if not self.fixed:
            time.sleep(probe_s)
            self.resync(force_rate=True)

    def resync(self, force_rate: bool = False) -> int:
        real = self._real()
        server = int(self._server_time())
        if self._first is None:
            self._first = (real, server)
        elif not self.fixed and (force_rate or real - self._first[0] > 0.2):
            rate = (server - self._first[1]) / max((real - self._first[0]) * 1000, 1e-9)
            self.rate = 1.0 if 0.5 < rate < 2.0 else max(rate, 1e-6)
        self._last = (real, server)
        return server

    def now(self) -> int:
        real, server = self._last
        return server + int((self._real() - real) * 1000 * self.rate)

    def sleep_until(self, exchange_ms: int, cap_s: float) -> float:
        """Real seconds until ``exchange_ms`` on this clock (capped)."""
        return max(0.0, min(cap_s, (exchange_ms - self.now()) / 1000 / self.rate))


class MarketData:
    """The market-data-refresh job: poll closed bars, tap them, journal gaps, feed backtrader."""

    def __init__(self, session):
        self.s = session
        self.tf = timeframe_ms(session.timeframe)
        self.last_open: dict[str, int] = {}       # exchange time of the last bar delivered, per symbol
        self.next_due = 0.0                       # monotonic time of the next poll
        self.finished = False
        self.runs = 0
        self.delivered = 0                        # live bars delivered (warm-up not counted)
        self.latest: dict[str, tuple[int, float]] = {}  # symbol → (data time of last close, close)

    def warm_up(self, bars: int) -> None:
        """Backfill ``bars`` closed bars so indicators start warm (they are not traded on); the
        first bar delivered live is the one in progress now."""
        s = self.s
        now = s.clock.now()
        current = now - now % self.tf
        if s.options.first_bar is not None:      # paced replay: the window's first bar, whatever the clock
            current = s.options.first_bar + s.options.time_offset
        for feed in s.feeds:
            self.last_open[feed.symbol] = current - self.tf
            if bars <= 0:
                continue
            got = s.client.fetch_closed_bars(feed.symbol, s.timeframe, since=current - bars * self.tf,
                                             limit=min(bars, 1000), now=now)
            for i in range(len(got)):
                feed.push(int(got.ts[i]) - s.options.time_offset, got.open[i], got.high[i], got.low[i],
                          got.close[i], got.volume[i], warmup=True)
            if len(got):
                self.last_open[feed.symbol] = int(got.ts[-1])
                s.tap(got)

    def pump(self) -> None:
        """Poll when due; called from the feeds' ``_load`` on backtrader's thread."""
        s = self.s
        if self.finished:
            return
        if s.stop_requested.is_set():
            self.finish("stop requested")
            return
        if time.monotonic() < self.next_due:
            return
        started = time.monotonic()
        request_id = s.new_request_id("md")
        error = None
        delivered = 0
        try:
            with s.client.request_id(request_id):
                s.clock.resync()
                delivered = self.poll()
        except ExchangeError as exc:
            error = str(exc)
            s.event("exchange_error", "", f"market data poll failed: {exc}",
                    {"error": str(exc), "kind": type(exc).__name__, "retried": True, "endpoint": "GET /api/v3/klines"},
                    request_id)
        self.runs += 1
        s.job("market-data-refresh", started, error, request_id, {"bars": delivered})
        self.schedule()
        if s.options.duration_ms is not None and s.clock.now() >= s.started_exchange + s.options.duration_ms:
            self.finish("duration reached")

    def schedule(self) -> None:
        """Next poll: just after the next bar is due to close, and no later than the refresh interval."""
        s = self.s
        due = min(self.last_open.values()) + 2 * self.tf if self.last_open else s.clock.now()
        grace = int(min(0.01 * s.clock.rate * 1000, self.tf / 20))     # a hair after the close: 10 ms real at most
        wait = s.clock.sleep_until(due + grace, cap_s=s.refresh_s)
        self.next_due = time.monotonic() + max(wait, 0.005)

    def poll(self) -> int:
        s = self.s
        now = s.clock.now()
        fresh = {}
        for feed in s.feeds:
            since = self.last_open[feed.symbol] + self.tf
            if since + self.tf > now:
                continue
            got = s.client.fetch_closed_bars(feed.symbol, s.timeframe, since=since, limit=1000, now=now)
            got = got.window(since, None)
            if len(got):
                fresh[feed.symbol] = got
        stop_at = s.options.stop_at
        if not fresh:
            if stop_at is not None and now - s.options.time_offset >= stop_at + self.tf:
                self.finish("end of the window")      # its last bar has closed and been delivered
            return 0
        moments = sorted({int(t) for bars in fresh.values() for t in bars.ts})
        delivered = 0
        for ts in moments:
            data_ts = ts - s.options.time_offset
            if stop_at is not None and data_ts >= stop_at:
                self.finish("end of the window")
                break
            for feed in s.feeds:
                bars = fresh.get(feed.symbol)
                if bars is None:
                    continue
                i = int(bars.ts.searchsorted(ts))
                if i >= len(bars) or int(bars.ts[i]) != ts:
                    continue
                gap = ts - self.last_open[feed.symbol] - self.tf
                if gap > 0:
                    missing = gap // self.tf
                    s.event("data_gap", feed.symbol, f"{missing} bar(s) missing before {ms_to_iso(data_ts)}",
                            {"from": ms_to_iso(self.last_open[feed.symbol] + self.tf - s.options.time_offset),
                             "to": ms_to_iso(ts - self.tf - s.options.time_offset), "missing": int(missing)})
                feed.push(data_ts, bars.open[i], bars.high[i], bars.low[i], bars.close[i], bars.volume[i])
                self.last_open[feed.symbol] = ts
                self.latest[feed.symbol] = (data_ts + self.tf, float(bars.close[i]))
                s.visible_at[data_ts + self.tf] = time.perf_counter()
                delivered += 1
                self.delivered += 1
        for bars in fresh.values():
            s.tap(bars)
        if stop_at is not None and all(v - s.options.time_offset + self.tf >= stop_at for v in self.last_open.values()):
            self.finish("end of the window")
        return delivered

    def finish(self, why: str) -> None:
        if not self.finished:
            self.finished = True
            log.info("live session ending: %s", why)
            for feed in self.s.feeds:
                feed.finish()


class PumpedFeed(LiveFeed):
    """A live feed that runs the session's market-data job before looking at its queue."""

    def __init__(self, symbol: str, timeframe: str, market: MarketData):
        super().__init__(symbol, timeframe, poll_s=0.0)
        self.market = market

    def _load(self):
        self.market.pump()
        got = super()._load()
        if got is None:
            time.sleep(min(0.005, max(0.0, self.market.next_due - time.monotonic())))
        return got
