"""The Parquet store: idempotent, atomic writes; windows; resampling; listing; quality; fingerprints; rules."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness import atomic
from harness.datasets import (
    Bars,
    Store,
    count_gaps,
    fingerprint,
    infer_timeframe,
    quality_report,
    resample,
    validate_bars,
)
from harness.errors import DatasetError
from harness.model import DAY_MS, MINUTE_MS, MarketRules, ms_to_iso, parse_time

ROOT = Path(__file__).resolve().parent.parent
T0 = parse_time("2025-03-01")
HOUR = 3_600_000


def make_bars(n: int, start: int = T0, timeframe: str = "1m", symbol: str = "BTC/USDT", seed: int = 1,
              step: int = MINUTE_MS) -> Bars:
    """Valid random-walk bars on the grid."""
    rng = np.random.default_rng(seed)
    close = np.round(100 * np.exp(np.cumsum(rng.normal(0, 0.001, n))), 2)
    open_ = np.concatenate(([100.0], close[:-1]))
    high = np.round(np.maximum(open_, close) + rng.uniform(0, 0.05, n), 2)
    low = np.round(np.minimum(open_, close) - rng.uniform(0, 0.05, n), 2)
    volume = np.round(rng.uniform(1, 10, n), 3)
    ts = start + step * np.arange(n, dtype=np.int64)
    return Bars(symbol, timeframe, ts, open_, high, low, close, volume)


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` with a hash of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def same(a: Bars, b: Bars) -> bool:
    return len(a) == len(b) and all(np.array_equal(getattr(a, c), getattr(b, c))
                                    for c in ("ts", "open", "high", "low", "close", "volume"))


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(tmp_path / "datasets")


# -- writing ----------------------------------------------------------------------------------


def test_layout_is_hive_partitioned_by_day_and_readable_by_duckdb(store):
    bars = make_bars(3 * 1440)
    store.write("binance", bars)
    days = sorted(p.parent.name for p in store.root.rglob("bars.parquet"))
    assert days == ["date=2025-03-01", "date=2025-03-02", "date=2025-03-03"]
    table = pq.read_table(next(store.root.rglob("bars.parquet")))
    assert table.schema.field("ts").type == pa.timestamp("ms", tz="UTC")
    assert [table.schema.field(c).type for c in ("open", "high", "low", "close", "volume")] == [pa.float64()] * 5
    import duckdb

    glob = str(store.root / "**" / "*.parquet")
    count, symbol = duckdb.sql(f"SELECT count(*), any_value(symbol) FROM read_parquet('{glob}', "
                               "hive_partitioning = true) WHERE exchange = 'binance'").fetchall()[0]
    assert (count, symbol) == (3 * 1440, "BTC-USDT")


def test_hourly_bars_are_partitioned_by_month(store):
    store.write("binance", make_bars(24 * 70, timeframe="1h", step=HOUR))
    assert sorted(p.parent.name for p in store.root.rglob("bars.parquet")) == \
        ["date=2025-03-01", "date=2025-04-01", "date=2025-05-01"]
    assert len(store.read("binance", "BTC/USDT", "1h")) == 24 * 70


def test_writing_the_same_bars_twice_changes_nothing(store):
    bars = make_bars(2 * 1440 + 30)
    first = store.write("binance", bars)
    before = tree(store.root)
    again = store.write("binance", bars)
    assert (first.added, first.unchanged) == (len(bars), 0)
    assert (again.added, again.replaced, again.unchanged, again.days) == (0, 0, len(bars), 0)
    assert tree(store.root) == before
    assert same(store.read("binance", "BTC/USDT", "1m"), bars)


def test_overlapping_write_merges_and_the_newer_copy_wins(store):
    old = make_bars(100)
    store.write("binance", old)
    new = make_bars(100, start=T0 + 50 * MINUTE_MS, seed=2)
    result = store.write("binance", new)
    assert (result.added, result.replaced) == (50, 50)
    got = store.read("binance", "BTC/USDT", "1m")
    assert len(got) == 150
    assert np.array_equal(got.close[50:], new.close) and np.array_equal(got.close[:50], old.close[:50])


def test_optional_columns_are_kept_and_unknown_values_stay_unknown(store):
    bars = make_bars(15)
    first = bars.slice(0, 10)
    first.extra = {"quote_volume": first.volume * first.close, "trades": np.arange(10, dtype=float) + 5}
    store.write("binance", first)
    result = store.write("binance", bars.slice(5, 15))                      # no optional columns
    assert (result.added, result.replaced, result.unchanged) == (5, 0, 5)
    got = store.read("binance", "BTC/USDT", "1m")
    assert np.array_equal(got.extra["trades"][:10], np.arange(10) + 5.0)   # kept for re-sent bars
    assert np.isnan(got.extra["trades"][10:]).all()                        # never invented
    table = pq.read_table(next(store.root.rglob("bars.parquet")))
    assert table.schema.field("trades").type == pa.int64() and table.column("trades").null_count == 5


def test_bad_bars_are_rejected_before_anything_is_written(store):
    good, bad = make_bars(20), make_bars(20, symbol="ETH/USDT")
    bad.close[7] = np.nan
    with pytest.raises(DatasetError, match="close is missing, NaN or infinite at 2025-03-01T00:07"):
        store.write_many([("binance", good), ("binance", bad)])
    assert not store.root.exists()


def test_a_failing_rename_mid_commit_leaves_the_old_state(store, monkeypatch):
    store.write("binance", make_bars(3 * 1440))
    before = tree(store.root)
    real_replace, calls = os.replace, []

    def flaky(src, dst):
        calls.append(dst)
        if len(calls) == 3:          # the journal, the first day file, then this one fails
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", flaky)
    with pytest.raises(OSError, match="No space left"):
        store.write("binance", make_bars(4 * 1440, seed=9))
    monkeypatch.undo()
    assert len(calls) > 3                                   # renames happened, then were undone
    assert tree(store.root) == before                       # not one byte differs, no leftovers
    assert same(store.read("binance", "BTC/USDT", "1m"), make_bars(3 * 1440))


def test_a_failure_while_staging_leaves_no_files_or_folders(store, monkeypatch):
    store.write("binance", make_bars(1440))
    before = tree(store.root)
    dirs_before = sorted(p for p in store.root.rglob("*") if p.is_dir())
    real_write, calls = atomic.pq.write_table, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_write(*args, **kwargs)

    monkeypatch.setattr(atomic.pq, "write_table", failing)
    with pytest.raises(OSError, match="No space left"):
        store.write("binance", make_bars(3 * 1440, seed=4))
    assert tree(store.root) == before
    assert sorted(p for p in store.root.rglob("*") if p.is_dir()) == dirs_before


def test_a_crash_mid_commit_is_undone_when_the_store_is_next_opened(store):
    store.write("binance", make_bars(3 * 1440))
    before = tree(store.root)
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(Path(__file__).parent)!r})
        from harness import atomic
        from harness.datasets import Store
        from test_datasets import make_bars
        real, calls = os.replace, []
        def crash(src, dst):
            calls.append(dst)
            if len(calls) == 4:
                os._exit(9)                   # like kill -9: no cleanup runs
            return real(src, dst)
        atomic.os.replace = crash
        Store({str(store.root)!r}).write("binance", make_bars(4 * 1440, seed=9))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 9, proc.stderr
    assert atomic.needs_recovery(store.root)                 # two days were already replaced
    assert same(store.read("binance", "BTC/USDT", "1m"), make_bars(3 * 1440))
    assert not atomic.needs_recovery(store.root)
    leftovers = {k: v for k, v in tree(store.root).items() if not k.endswith(".tmp")}
    assert leftovers == before


# -- reading ----------------------------------------------------------------------------------


def test_read_returns_exactly_the_window(store):
    bars = make_bars(3 * 1440)
    store.write("binance", bars)
    start, end = T0 + DAY_MS - 90 * MINUTE_MS, T0 + 2 * DAY_MS + 30 * MINUTE_MS
    got = store.read("binance", "BTC/USDT", "1m", start, end)
    assert same(got, bars.window(start, end)) and len(got) == 1440 + 120
    assert got.ts[0] == start and got.ts[-1] == end - MINUTE_MS
    assert store.read("binance", "BTC/USDT", "1m", start + 1, end).ts[0] == start + MINUTE_MS


def test_a_window_outside_what_is_recorded_says_what_is_recorded(store):
    store.write("binance", make_bars(1440))
    later = parse_time("2025-06-01")
    with pytest.raises(DatasetError, match=r"no BTC/USDT 1m bars on binance from 2025-06-01T00:00:00Z: recorded "
                                           r"from 2025-03-01T00:00:00Z to 2025-03-02T00:00:00Z"):
        store.read("binance", "BTC/USDT", "1m", later)
    with pytest.raises(DatasetError, match="between 2025-01-01.* and 2025-02-01.*: recorded from 2025-03-01"):
        store.read("binance", "BTC/USDT", "1m", parse_time("2025-01-01"), parse_time("2025-02-01"))
    assert len(store.read("binance", "BTC/USDT", "1m", later, missing_ok=True)) == 0
    with pytest.raises(DatasetError, match=r"no 1m bars for ETH/USDT on binance \(recorded: nothing\)"):
        store.read("binance", "ETH/USDT", "1m")
    with pytest.raises(DatasetError, match="not before end"):
        store.read("binance", "BTC/USDT", "1m", T0 + HOUR, T0)


def test_a_window_inside_a_gap_is_empty_not_an_error(store):
    bars = make_bars(600)
    store.write("binance", bars.take(np.r_[0:100, 400:600]))
    assert len(store.read("binance", "BTC/USDT", "1m", T0 + 150 * MINUTE_MS, T0 + 300 * MINUTE_MS)) == 0


def test_resample_on_read_aggregates_and_drops_unfinished_buckets(store):
    bars = make_bars(2 * 1440 + 90, start=T0 + 30 * MINUTE_MS)     # starts and ends mid-hour
    store.write("binance", bars)
    hourly = store.read("binance", "BTC/USDT", "1h")
    frame = bars.to_frame().set_index("ts")
    expected = frame.resample("1h").agg({"open": "first", "high": "max", "low": "min", "close": "last",
                                         "volume": "sum"}).iloc[1:]        # the first hour is partial
    assert len(hourly) == len(expected) == 49
    assert np.array_equal(hourly.ts, expected.index.asi8 // 1_000_000)
    for c in ("open", "high", "low", "close"):
        assert np.array_equal(getattr(hourly, c), expected[c].to_numpy())
    np.testing.assert_allclose(hourly.volume, expected["volume"].to_numpy(), rtol=1e-12)
    # a window ending mid-hour holds the whole bar that opened in it, as a stored 1h read would
    mid = store.read("binance", "BTC/USDT", "1h", T0 + 2 * HOUR, T0 + 5 * HOUR + 30 * MINUTE_MS)
    assert len(mid) == 4 and same(mid, hourly.window(T0 + 2 * HOUR, T0 + 6 * HOUR))


def test_resample_weeks_open_on_monday_and_coarser_needs_a_multiple():
    daily = make_bars(21, start=parse_time("2025-03-03"), timeframe="1d", step=DAY_MS)   # a Monday
    weekly = resample(daily, "1w")
    assert [ts % (7 * DAY_MS) for ts in weekly.ts] == [4 * DAY_MS] * 3 and len(weekly) == 3
    with pytest.raises(DatasetError, match="multiple of 1d"):
        resample(daily, "1h")


def test_read_aligned_and_read_frame_put_symbols_on_one_axis(store):
    store.write("binance", make_bars(10))
    store.write("binance", make_bars(10, start=T0 + 5 * MINUTE_MS, symbol="ETH/USDT", seed=3))
    axis, cols = store.read_aligned("binance", ["BTC/USDT", "ETH/USDT"], "1m")
    assert len(axis) == 15 and cols["close"].shape == (15, 2)
    assert np.isnan(cols["close"][:5, 1]).all() and np.isnan(cols["close"][10:, 0]).all()
    assert not np.isnan(cols["close"][5:10]).any()
    frame = store.read_frame("binance", ["ETH/USDT", "BTC/USDT"], "1m")
    assert len(frame) == 20 and frame["ts"].is_monotonic_increasing
    assert list(frame.loc[frame["ts"] == frame["ts"].iloc[10], "symbol"]) == ["BTC/USDT", "ETH/USDT"]


# -- what is recorded, quality ----------------------------------------------------------------


def test_list_reports_first_last_bars_and_gaps(store):
    bars = make_bars(3000)
    store.write("binance", bars.take(np.r_[0:1000, 1010:2000, 2001:3000]))
    store.write("synthetic", make_bars(60, symbol="ETH/USDT"))
    infos = [i.to_dict() for i in store.list()]
    assert infos[0] == {"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1m",
                        "first": "2025-03-01T00:00:00Z", "last": "2025-03-03T01:59:00Z",
                        "bars": 2989, "gaps": 2, "missing_bars": 11}
    assert [i["exchange"] for i in infos] == ["binance", "synthetic"]
    assert [i.symbol for i in store.list(symbols=("ETHUSDT",))] == ["ETH/USDT"]
    assert store.coverage("binance", "BTC/USDT", "1h") == (T0, T0 + 3000 * MINUTE_MS)


def test_count_gaps_counts_stretches_and_missing_bars():
    ts = T0 + MINUTE_MS * np.array([0, 1, 2, 5, 6, 10])
    assert count_gaps(ts, MINUTE_MS) == (2, 5, [(T0 + 3 * MINUTE_MS, T0 + 4 * MINUTE_MS),
                                                 (T0 + 7 * MINUTE_MS, T0 + 9 * MINUTE_MS)])
    assert count_gaps(ts[:3], MINUTE_MS) == (0, 0, [])


def test_check_finds_gaps_duplicates_bad_ohlc_bad_prices_and_flat_runs(store):
    bars = make_bars(300)
    store.write("binance", bars)
    assert store.check("binance", "BTC/USDT", "1m")["ok"]
    # a file written by another tool, bypassing validation
    bad = make_bars(300).take(np.r_[0:5, 4, 5:100, 120:300])   # a duplicate, a gap
    bad.high[10] = bad.low[10] - 1                          # high under low
    bad.low[20] = -1.0                                      # a negative price
    bad.close[150:220] = bad.close[150]                     # 70 identical closes
    bad.open[151:220] = bad.close[150]
    path = next(store.root.rglob("bars.parquet"))
    pq.write_table(bad.to_table(), path)
    report = store.check("binance", "BTC/USDT", "1m")
    assert not report["ok"]
    assert (report["gaps"], report["missing_bars"], report["duplicates"]) == (1, 20, 1)
    assert report["ohlc_inconsistent"] >= 1 and report["non_positive_prices"] == 1
    assert report["identical_close_runs"] == [[ms_to_iso(int(bad.ts[150])), 70]]
    assert len(report["issues"]) == 5


def test_validate_bars_rejects_what_a_replay_must_not_trust():
    cases = {
        "not sorted": lambda b: b.ts.__setitem__(slice(3, 5), b.ts[[4, 3]]),
        "duplicate timestamp": lambda b: b.ts.__setitem__(4, b.ts[3]),
        "NaN": lambda b: b.volume.__setitem__(2, np.nan),
        "not positive": lambda b: b.low.__setitem__(2, 0.0),
        "negative volume": lambda b: b.volume.__setitem__(2, -1.0),
        "high/low contradict": lambda b: b.high.__setitem__(2, b.low[2] - 0.5),
        "not on the 1m grid": lambda b: b.ts.__iadd__(1000),
    }
    for message, spoil in cases.items():
        bars = make_bars(10)
        spoil(bars)
        with pytest.raises(DatasetError, match=message):
            validate_bars(bars, "file.csv")
    with pytest.raises(DatasetError, match="no bars"):
        validate_bars(Bars.empty("BTC/USDT", "1m"))


def test_infer_timeframe_uses_the_usual_spacing_and_rejects_mixed_spacing():
    ts = T0 + HOUR * np.array([0, 1, 2, 3, 5, 6, 9])
    assert infer_timeframe(ts) == "1h"                                       # gaps are fine
    assert infer_timeframe(T0 + 7 * DAY_MS * np.arange(3)) == "1w"
    with pytest.raises(DatasetError, match=r"mixed bar spacing \(mostly 1h, but 30m"):
        infer_timeframe(np.concatenate((ts[:4], [ts[3] + HOUR // 2], ts[4:] + 0)))
    with pytest.raises(DatasetError, match="mixed bar spacing"):
        infer_timeframe(T0 + 1000 * np.array([0, 60, 120, 180, 270, 330]))
    with pytest.raises(DatasetError, match="at least two bars"):
        infer_timeframe(ts[:1])


# -- fingerprints, rules --------------------------------------------------------------------


def test_fingerprint_is_stable_layout_independent_and_content_sensitive(tmp_path):
    bars = make_bars(3 * 1440)
    one, two = Store(tmp_path / "a"), Store(tmp_path / "b")
    one.write("binance", bars)
    two.write("binance", bars.slice(2000, 3 * 1440))
    two.write("binance", bars.slice(0, 2000))
    window = (T0 + 100 * MINUTE_MS, T0 + 2 * DAY_MS)
    fp = one.fingerprint("binance", ["BTC/USDT"], "1m", *window)
    assert fp == one.fingerprint("binance", ["BTC/USDT"], "1m", *window)
    assert fp == two.fingerprint("binance", ["BTC/USDT"], "1m", *window)
    assert fp == fingerprint([bars.window(*window)], "binance") and len(fp) == 16
    assert fp != one.fingerprint("binance", ["BTC/USDT"], "1m", window[0], window[1] - MINUTE_MS)
    assert fp != fingerprint([bars.window(*window)], "synthetic")
    changed = make_bars(3 * 1440)
    changed.close[500] += 0.01
    changed.high[500] += 0.01
    assert fp != fingerprint([changed.window(*window)], "binance")


def test_rules_snapshots_apply_to_their_own_period(store):
    early, late = parse_time("2024-01-01"), parse_time("2025-01-01")
    store.save_rules("binance", {"BTC/USDT": MarketRules("BTC/USDT", 0.001, 0.1)}, early, "first")
    store.save_rules("binance", {"BTC/USDT": MarketRules("BTC/USDT", 0.00001, 0.01)}, late, "second")
    store.save_rules("binance", {"ETH/USDT": MarketRules("ETH/USDT", 0.0001, 0.01, min_notional=5)}, late, "eth")
    rules = lambda at: store.rules("binance", "BTCUSDT", at=at).tick_size  # noqa: E731
    assert rules(parse_time("2023-06-01")) == 0.1          # before any snapshot: the earliest
    assert rules(early) == 0.1 and rules(parse_time("2024-12-31")) == 0.1
    assert rules(late) == 0.01 and rules(None) == 0.01
    assert store.rules("binance", "ETH/USDT").min_notional == 5                 # same second: merged
    assert store.rules("binance", "SOL/USDT") is None and store.rules("synthetic", "BTC/USDT") is None
    assert len(store.rules_snapshots("binance")) == 2
    store.rules_snapshots("binance")[0].write_text("{not json")
    with pytest.raises(DatasetError, match="unreadable"):
        store.rules("binance", "BTC/USDT")


def test_an_unreadable_stored_file_is_a_clear_error(store):
    store.write("binance", make_bars(100))
    next(store.root.rglob("bars.parquet")).write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="unreadable .* delete it and import again"):
        store.read("binance", "BTC/USDT", "1m")


def test_quality_report_of_clean_bars_is_ok():
    report = quality_report(make_bars(500), "binance")
    assert report["ok"] and report["bars"] == 500 and report["issues"] == []
