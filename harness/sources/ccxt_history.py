"""``data fetch``: bar history through the exchange adapter (ccxt ``fetch_ohlcv``).

Fetches the ``days`` before ``end`` (default: the exchange's clock) page by page (ccxt asks for
500 bars a page), starting after the last bar already stored so an interrupted fetch resumes
where it stopped, keeps only bars that have **closed**, and writes them through
:meth:`Store.write` every few thousand bars. The exchange's market rules are stored beside the
bars (a snapshot taken now, by the exchange's clock).

Where the bars come from and go: by default Binance's mainnet public market data (a read-only,
keyless client that can only GET market data), stored under ``binance`` beside imported
files; with ``testnet=True`` the spot testnet (``binance-testnet``), with a loopback ``url`` a
paper exchange (``binance-paper``), so testnet or shifted bars never mix with real ones.
"""

from __future__ import annotations

import logging

import numpy as np

from harness.bars import Bars
from harness.datasets import Store
from harness.errors import DatasetError
from harness.exchange import ExchangeClient
from harness.model import DAY_MS, ms_to_iso, normalize_symbol, timeframe_ms

log = logging.getLogger("harness.sources.ccxt_history")

WRITE_EVERY = 5_000         # bars buffered between writes (a crash loses at most this much work)
MAX_PAGES = 100_000         # a safety stop for a misbehaving server


def fetch_to_store(store: Store, config, symbols, days: int, timeframe: str = "1m", exchange: str = "binance",
                   end: int | None = None, url: str | None = None, *, testnet: bool = False,
                   client: ExchangeClient | None = None) -> list[dict]:
    """Fetch ``days`` of closed ``timeframe`` bars before ``end`` for each symbol into ``store``.

    Returns one dict per symbol: ``exchange`` (the datasets id written), ``symbol``,
    ``timeframe``, ``added`` (new bars stored), ``fetched``, and ``first`` / ``last`` (ISO times of
    what is now stored). ``url`` points at a loopback paper exchange, ``testnet`` at the spot
    testnet; with neither, mainnet public market data is read. ``client`` replaces the adapter (tests).
    """
    if days < 1:
        raise DatasetError("--days must be at least 1")
    step = timeframe_ms(timeframe)
    symbols = [normalize_symbol(s) for s in symbols]
    client = client or ExchangeClient(config, url=url, exchange=exchange, testnet=testnet,
                                      public=url is None and not testnet)
    store_id = client.dataset_id
    now = client.server_time()
    end = now if end is None else min(int(end), now)
    end -= end % step                       # bars must have closed by ``end``: open + step <= end
    start = end - days * DAY_MS
    rules = client.load_rules(symbols)
    results = []
    for symbol in symbols:
        results.append(_fetch_symbol(store, client, store_id, symbol, timeframe, step, start, end))
    store.save_rules(store_id, rules, taken_at=now,
                     source=f"{client.exchange_id} exchangeInfo ({client.mode}: {client.url or client.mode})")
    return results


def _fetch_symbol(store: Store, client: ExchangeClient, store_id: str, symbol: str, timeframe: str, step: int,
                  start: int, end: int) -> dict:
    since = start
    last = _last_stored(store, store_id, symbol, timeframe)
    if last is not None and last + step > since:
        since = last + step                 # resume after what is stored
    pending: list[Bars] = []
    added = fetched = 0
    for _ in range(MAX_PAGES):
        if since + step > end:
            break
        page = client.fetch_bars(symbol, timeframe, since=since)
        page = page.take((page.ts >= since) & (page.ts + step <= end))
        if len(page) == 0:
            break
        pending.append(page)
        fetched += len(page)
        since = int(page.ts[-1]) + step
        if sum(len(p) for p in pending) >= WRITE_EVERY:
            added += _write(store, store_id, pending)
            pending = []
    added += _write(store, store_id, pending)
    info = store.info(store_id, symbol, timeframe) if _last_stored(store, store_id, symbol, timeframe) else None
    log.info("fetched %s %s: %d bars, %d new", symbol, timeframe, fetched, added)
    return {"exchange": store_id, "symbol": symbol, "timeframe": timeframe, "added": added, "fetched": fetched,
            "first": ms_to_iso(info.first) if info else None, "last": ms_to_iso(info.last) if info else None}


def _write(store: Store, store_id: str, pages: list[Bars]) -> int:
    if not pages:
        return 0
    first = pages[0]
    bars = Bars(first.symbol, first.timeframe, np.concatenate([p.ts for p in pages]),
                *(np.concatenate([getattr(p, c) for p in pages]) for c in ("open", "high", "low", "close", "volume")))
    return store.write(store_id, bars, what=f"fetched {first.symbol} {first.timeframe}").added


def _last_stored(store: Store, store_id: str, symbol: str, timeframe: str) -> int | None:
    if timeframe not in store.stored_timeframes(store_id, symbol):
        return None
    return store.info(store_id, symbol, timeframe).last
