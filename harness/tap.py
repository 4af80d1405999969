"""``data record``: tap live closed bars into ``datasets/`` without trading.

By default it reads Binance's mainnet public market data (keyless, read-only: see
:mod:`harness.exchange`); ``--testnet`` taps the spot testnet, ``--exchange-url`` a paper exchange.

Polls the exchange right after each bar is due to close (on the exchange's clock, so it follows
a paper exchange at N× speed as well as the testnet), keeps only closed bars, writes them to
the store as they come and says which bars were missing. Stops after ``duration`` or on
SIGINT/SIGTERM; whatever was polled is already stored.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

from harness.datasets import Store
from harness.errors import ExchangeError
from harness.model import ms_to_iso, normalize_symbol, timeframe_ms


def record_bars(store: Store, config, symbols, timeframe: str = "1m", duration_ms: int | None = None,
                url: str | None = None, testnet: bool = False, say: Callable[[str], None] = print,
                stop: threading.Event | None = None) -> list[dict]:
    """Record closed bars of ``symbols`` until ``duration_ms`` (exchange time) has passed."""
    from harness.exchange import ExchangeClient
    from harness.live import LiveOptions, check_target
    from harness.market_data import ExchangeClock

    if url and testnet:
        check_target(LiveOptions(testnet=testnet, url=url))          # refuses both at once
    symbols = [normalize_symbol(s) for s in symbols]
    step = timeframe_ms(timeframe)
    client = ExchangeClient(config, url=url, testnet=testnet, public=url is None and not testnet)
    clock = ExchangeClock(client.server_time)
    rules = client.load_rules(symbols)
    store.save_rules(client.dataset_id, rules, clock.now(), f"{client.exchange_id} exchangeInfo ({client.mode})")
    stop = stop or threading.Event()
    restore = _on_signals(stop)
    started = clock.now()
    last = {s: started - started % step - step for s in symbols}    # the bar in progress is the first recorded
    counts = {s: {"added": 0, "missing": 0, "errors": 0} for s in symbols}     # added: bars stored
    try:
        while not stop.is_set():
            now = clock.resync()
            if duration_ms is not None and now >= started + duration_ms:
                break
            for symbol in symbols:
                try:
                    bars = client.fetch_closed_bars(symbol, timeframe, since=last[symbol] + step, now=now)
                except ExchangeError as exc:
                    counts[symbol]["errors"] += 1
                    say(f"{symbol}: poll failed ({exc}); retrying")
                    continue
                bars = bars.window(last[symbol] + step, None)
                if not len(bars):
                    continue
                missing = int((bars.ts[0] - last[symbol] - step) // step)
                if missing > 0:
                    counts[symbol]["missing"] += missing
                    say(f"{symbol}: {missing} bar(s) missing before {ms_to_iso(int(bars.ts[0]))}")
                result = store.write(client.dataset_id, bars, what=f"tapped {symbol}")
                counts[symbol]["added"] += result.added + result.replaced
                last[symbol] = int(bars.ts[-1])
            due = min(last.values()) + 2 * step
            grace = int(min(0.05 * clock.rate * 1000, step / 10))       # a hair after the close
            stop.wait(clock.sleep_until(due + grace, cap_s=float(config.live.refresh_seconds)))
    finally:
        if restore is not None:
            restore()
    return [{"exchange": client.dataset_id, "symbol": s, "timeframe": timeframe, **counts[s],
             "last": ms_to_iso(last[s]) if counts[s]["added"] else None} for s in symbols]


def _on_signals(stop: threading.Event):
    if threading.current_thread() is not threading.main_thread():
        return None
    old = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    return lambda: [signal.signal(sig, handler) for sig, handler in old.items()]

