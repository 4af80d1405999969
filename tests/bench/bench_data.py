"""The dataset store on the 90-day BTCUSDT 1m file: import time, a 30-day window read back, bytes on
disk per bar, and the same window read from CSV with pandas for comparison (issue 2 aims: import
under 1 s, window under 50 ms, at least 10× faster than CSV)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from harness.datasets import Store
from harness.model import parse_time
from harness.sources.binance_files import import_paths
from harness.sources.synthetic import synth_to_store
from tests.bench.common import best_of, line, shared_or_exit

WINDOW = (parse_time("2025-06-15"), parse_time("2025-07-15"))        # 30 days inside the file


def run() -> None:
    path = shared_or_exit()
    if path is None:
        return
    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = Store(root / "datasets")
        started = time.perf_counter()
        result = import_paths(store, [path])
        imported = time.perf_counter() - started
        bars = result[0]["bars"]
        line("import 130,708 bars (fresh datasets/)", imported * 1000, "ms", f"{bars / imported:,.0f} bars/s")
        started = time.perf_counter()
        import_paths(store, [path])
        line("import the same file again (nothing changes)", (time.perf_counter() - started) * 1000, "ms")

        files = [p for p in store.root.rglob("*.parquet")]
        size = sum(p.stat().st_size for p in files)
        line("bytes on disk per bar", size / bars, "B", f"{size / 2**20:.2f} MiB in {len(files)} day files")

        read = lambda: store.read("binance", "BTC/USDT", "1m", *WINDOW)  # noqa: E731
        n = len(read())
        store_s = best_of(7, read)
        line(f"read a 30-day 1m window ({n:,} bars, warm, best of 7)", store_s * 1000, "ms")
        line("read it resampled to 1h", best_of(5, lambda: store.read("binance", "BTC/USDT", "1h", *WINDOW)) * 1000,
             "ms")
        line("read it as a DataFrame", best_of(5, lambda: store.read_frame("binance", ["BTC/USDT"], "1m", *WINDOW))
             * 1000, "ms")

        frame = store.read("binance", "BTC/USDT", "1m").to_frame()
        whole_csv, window_csv = root / "btc_90d.csv", root / "btc_30d.csv"
        frame.to_csv(whole_csv, index=False)
        frame[(frame.ts >= pd.Timestamp(WINDOW[0], unit="ms", tz="UTC"))
              & (frame.ts < pd.Timestamp(WINDOW[1], unit="ms", tz="UTC"))].to_csv(window_csv, index=False)

        def from_csv(csv: Path):
            data = pd.read_csv(csv, parse_dates=["ts"])
            return data[(data.ts >= pd.Timestamp(WINDOW[0], unit="ms", tz="UTC"))
                        & (data.ts < pd.Timestamp(WINDOW[1], unit="ms", tz="UTC"))]

        whole_s = best_of(3, lambda: from_csv(whole_csv))
        window_s = best_of(3, lambda: from_csv(window_csv))
        line("same window from the 90-day CSV with pandas", whole_s * 1000, "ms", f"store is {whole_s / store_s:.0f}× faster")
        line("same window from a CSV holding only it", window_s * 1000, "ms", f"store is {window_s / store_s:.0f}× faster")

        started = time.perf_counter()
        synth_to_store(Store(root / "synth"), ["BTC/USDT"], days=30, end=parse_time("2025-01-01"), scenario="crash")
        line("data synth: 30 days of 1m bars, crash scenario", (time.perf_counter() - started) * 1000, "ms")
