"""The live path, paced: latency from a bar's close to its order reaching the exchange, and how
fast paced replay (``replay --speed N``) can run 1m bars before it stops being a faithful replay.

Two latencies, over paced runs of real BTCUSDT 1m bars (synthetic when ../shared is absent),
SMA 3/8 so that orders are frequent:

- *seen → sent*: the session's ``broker.bar_latencies_ms`` (the summary's ``latency_ms``), from
  the poll that saw the bar to the start of its order's request;
- *close → at the exchange*: the exchange's execution time of a market order minus the close of
  the bar that caused it (exchange ms / N): the poll schedule, the klines request, the strategy,
  the guard and the order request together — what decides whether the order lands in the bar
  after the signal, as in replay.

Speed-up: the day (1440 bars) paced at 1440× must take under a minute; then a 360-bar window
at rising N shows where paced replay breaks: bars dropped at the start (the startup takes
exchange time), orders landing a bar late (close → exchange over one bar), fills unlike the
plain replay's.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from harness.bars import Bars
from harness.config import load_config
from harness.datasets import Store
from harness.engine import replay
from harness.journal import Journal
from harness.model import MINUTE_MS, MarketRules, parse_time
from harness.paced import paced_replay
from tests.bench.common import line
from tests.conftest import BTC_1M, ROOT
from tests.helpers.market import random_walk

WINDOW_END = parse_time("2025-06-03T00:00Z")        # data runs on past it (a window at the last bar never ends)
OVERRIDES = ("slippage.bps=0", "fills.max_bar_volume_pct=0", "run.strategy=sma_cross")
PARAMS = {"fast": 3, "slow": 8}
SPEEDS = (1440, 2880, 5760, 11520, 23040)


def _store(root: Path) -> tuple[Store, str]:
    store = Store(root / "datasets")
    rules = {"BTC/USDT": MarketRules("BTC/USDT", 0.00001, 0.01, 0.00001, 9000.0, 5.0)}
    start = parse_time("2025-06-01")
    if BTC_1M.exists():
        table = pq.read_table(BTC_1M)
        ts = table.column("open_time").cast(pa.int64()).to_numpy()
        bars = Bars("BTC/USDT", "1m", ts, *(table.column(c).to_numpy() for c in ("open", "high", "low", "close", "volume")))
        bars, source = bars.window(start, parse_time("2025-06-04")), "real BTCUSDT"
    else:
        bars, source = random_walk("BTC/USDT", 3 * 1440, seed=3, start=start, price=60_000.0, volume=500.0), "synthetic"
    store.write("binance", bars)
    store.save_rules("binance", rules, start, "bench")
    return store, source


def _config():
    config = load_config(ROOT / "config" / "config.toml", env={}, overrides=OVERRIDES)
    return config.replace(strategy=type(config.strategy)(params=PARAMS))


def _ms(ts) -> int:
    return int(ts.value // 10**6)


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def _paced(store: Store, journal: Journal, days: float, speed: float) -> dict:
    started = time.perf_counter()
    result = paced_replay(_config(), store, journal, days=days, end=WINDOW_END, speed=speed, report=False)
    wall = time.perf_counter() - started
    record = journal.load(result.run_id)
    orders = record.orders.sort_values("updated_at", kind="stable").drop_duplicates("order_id", keep="last")
    first_fill = record.fills.groupby("order_id")["ts"].min()
    close_to_exchange = [(_ms(first_fill[o.order_id]) - _ms(o.ts)) / speed for o in orders.itertuples()
                         if o.order_id in first_fill.index]
    return {"summary": result.summary, "record": record, "wall": wall, "close_to_exchange": close_to_exchange}


def _unlike(plain, paced, end: int) -> tuple[int, int]:
    """Fills (bar, side) of one run that the other lacks, within the window: (plain only, paced only)."""
    from collections import Counter

    a = Counter((_ms(t), s) for t, s in zip(plain["ts"], plain["side"], strict=True))
    b = Counter((_ms(t) - _ms(t) % MINUTE_MS, s) for t, s in zip(paced["ts"], paced["side"], strict=True)
                if _ms(t) < end)
    return sum((a - b).values()), sum((b - a).values())


def _live_paper(root: Path, store: Store, tap: bool, bars: int = 150, speed: float = 1440) -> dict:
    """A live-paper session in-process against a paper exchange at ``speed``: its latency summary."""
    from harness.fills import FillConfig
    from harness.live import LiveOptions, run_live
    from harness.paper_exchange import PaperExchange

    exchange = PaperExchange(store, ["BTC/USDT"], start=WINDOW_END - bars * MINUTE_MS, speed=speed,
                             balances={"USDT": 10_000.0}, api_key="bench-key", api_secret="bench-secret",
                             fill_config=FillConfig.from_config(_config())).start()
    try:
        options = LiveOptions(url=exchange.url, duration_ms=bars * MINUTE_MS, warmup_bars=10, tap=tap,
                              api_key="bench-key", api_secret="bench-secret", install_signals=False,
                              hooks={"report": False, "log_file": str(root / f"live-{tap}.log")})
        return run_live(_config(), store, Journal(root / f"reports-live-{tap}"), options).summary
    finally:
        exchange.stop()


def run() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store, source = _store(root)
        journal = Journal(root / "reports")
        print(f"   data: {source}, SMA {PARAMS['fast']}/{PARAMS['slow']}, zero slippage, no volume cap")

        if os.environ.get("QT_BENCH_LIVE_DAY", "1") != "0":
            day = _paced(store, journal, 1.0, 1440)
            s = day["summary"]
            line("one day of 1m bars paced at 1440x: wall time", day["wall"], "s",
                 f"target < 60; {s['bars']} of 1440 bars, {len(day['record'].fills)} fills")
            line("  sustained speed-up (window / wall time, startup included)", 86_400 / day["wall"], "x")
            line("  seen -> sent p50", s["latency_ms"]["p50"], "ms", f"n={s['latency_ms']['n']}")
            line("  seen -> sent p99", s["latency_ms"]["p99"], "ms", "target < 50")
            line("  close -> at the exchange p50", _pct(day["close_to_exchange"], 50), "ms")
            line("  close -> at the exchange p99", _pct(day["close_to_exchange"], 99), "ms",
                 f"a bar is {60_000 / 1440:.0f} ms at 1440x")
            plain = replay(_config(), store, journal, days=1.0, end=WINDOW_END, report=False)
            only_plain, only_paced = _unlike(journal.load(plain.run_id).fills, day["record"].fills, WINDOW_END)
            line("  fills of the plain replay the paced run lacks", only_plain, "fills",
                 f"{only_paced} paced fills the plain run lacks (same bar and side)")

        for tap in (True, False):
            s = _live_paper(root, store, tap)["latency_ms"]
            line(f"live-paper at 1440x, tap {'on ' if tap else 'off'}: seen -> sent p50", s["p50"], "ms",
                 f"p99 {s['p99']:.1f} ms, n={s['n']}" + ("  (the tap's Parquet write sits between)" if tap else ""))

        days = 360 / 1440
        plain = replay(_config(), store, journal, days=days, end=WINDOW_END, report=False)
        plain_fills = journal.load(plain.run_id).fills
        print(f"   360 bars at rising speed (plain replay: {len(plain_fills)} fills):")
        for speed in SPEEDS:
            got = _paced(store, journal, days, speed)
            s = got["summary"]
            bar_ms = 60_000 / speed
            p99 = _pct(got["close_to_exchange"], 99)
            only_plain, only_paced = _unlike(plain_fills, got["record"].fills, WINDOW_END)
            verdict = "faithful" if only_plain == only_paced == 0 and p99 < bar_ms else "BROKEN"
            line(f"  {speed:>6}x: wall time for 360 bars", got["wall"], "s",
                 f"{360 * 60 / got['wall']:,.0f}x achieved; {360 - s['bars']} bars dropped at start")
            line(f"  {speed:>6}x: close -> at the exchange p50 / p99", _pct(got["close_to_exchange"], 50), "ms",
                 f"p99 {p99:.1f} ms vs a {bar_ms:.1f} ms bar; seen->sent p99 {s['latency_ms']['p99'] or 0:.1f} ms")
            line(f"  {speed:>6}x: plain-replay fills the paced run lacks", only_plain, "fills",
                 f"{only_paced} it has that replay lacks; {verdict}")
