"""The Parquet store of recorded bars under ``datasets/``.

Layout (hive-partitioned, so DuckDB reads any window with
``read_parquet('datasets/**/*.parquet', hive_partitioning = true)``)::

    datasets/exchange=<id>/symbol=<BASE-QUOTE>/timeframe=<tf>/date=<YYYY-MM-DD>/bars.parquet
    datasets/exchange=<id>/_rules/<YYYYMMDDTHHMMSSZ>.json      market-rules snapshots

Columns: ``ts`` (bar open time, ``timestamp[ms, UTC]``), ``open, high, low, close, volume``
(float64), optional ``quote_volume`` (float64) and ``trades`` (int64). One file per UTC day
keeps a live tap's rewrite small and lets a window read touch only its days.

Writes merge with what is stored (the same bar twice leaves one copy; a newer copy of a bar
replaces the older) and replace each day's file atomically (write to a temporary file, then
rename): an interrupted write leaves every day either as it was or fully updated.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from harness import atomic
from harness.errors import DatasetError
from harness.model import (
    DAY_MS,
    MarketRules,
    ms_to_iso,
    normalize_symbol,
    path_symbol,
    timeframe_ms,
    timeframe_name,
)

PRICE_COLUMNS = ("open", "high", "low", "close")
OHLCV = ("open", "high", "low", "close", "volume")
OPTIONAL = ("quote_volume", "trades")
FILE_NAME = "bars.parquet"
IDENTICAL_CLOSE_RUN = 60        # a quality warning: this many equal closes in a row

SCHEMA = pa.schema(
    [pa.field("ts", pa.timestamp("ms", tz="UTC"), nullable=False)]
    + [pa.field(name, pa.float64(), nullable=False) for name in OHLCV]
)
OPTIONAL_FIELDS = {"quote_volume": pa.field("quote_volume", pa.float64()), "trades": pa.field("trades", pa.int64())}


@dataclass
class Bars:
    """A run of bars for one symbol as numpy arrays; ``ts`` holds open times in ms."""

    symbol: str
    timeframe: str
    ts: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ts)

    @classmethod
    def empty(cls, symbol: str, timeframe: str) -> Bars:
        z = np.empty(0)
        return cls(symbol, timeframe, np.empty(0, dtype=np.int64), z, z, z, z, z)

    def slice(self, start: int, stop: int) -> Bars:
        return Bars(self.symbol, self.timeframe, self.ts[start:stop],
                    *(getattr(self, c)[start:stop] for c in OHLCV),
                    extra={k: v[start:stop] for k, v in self.extra.items()})

    def window(self, start: int | None, end: int | None) -> Bars:
        """Bars whose open time is in ``[start, end)``."""
        lo = 0 if start is None else int(np.searchsorted(self.ts, start, "left"))
        hi = len(self.ts) if end is None else int(np.searchsorted(self.ts, end, "left"))
        return self.slice(lo, hi)

    def to_frame(self):
        import pandas as pd

        frame = pd.DataFrame({"ts": pd.to_datetime(self.ts, unit="ms", utc=True),
                              **{c: getattr(self, c) for c in OHLCV}, **self.extra})
        return frame

    def to_table(self) -> pa.Table:
        columns = [pa.array(self.ts, pa.int64()).cast(pa.timestamp("ms", tz="UTC"))]
        columns += [pa.array(getattr(self, c), pa.float64()) for c in OHLCV]
        fields = list(SCHEMA)
        for name in OPTIONAL:
            if name in self.extra:
                fields.append(OPTIONAL_FIELDS[name])
                columns.append(pa.array(self.extra[name], OPTIONAL_FIELDS[name].type))
        return pa.Table.from_arrays(columns, schema=pa.schema(fields))


@dataclass(frozen=True)
class SeriesInfo:
    """What is recorded for one exchange, symbol and timeframe."""

    exchange: str
    symbol: str
    timeframe: str
    first: int
    last: int
    bars: int
    gaps: int
    missing_bars: int

    def to_dict(self) -> dict:
        return {"exchange": self.exchange, "symbol": self.symbol, "timeframe": self.timeframe,
                "first": ms_to_iso(self.first), "last": ms_to_iso(self.last), "bars": self.bars,
                "gaps": self.gaps, "missing_bars": self.missing_bars}


@dataclass(frozen=True)
class WriteResult:
    added: int          # bars that were not stored before
    replaced: int       # bars stored before whose values changed
    unchanged: int      # bars already stored exactly
    days: int           # day files written


# --------------------------------------------------------------------------------------------
# validation of incoming bars (shared by importers, fetchers, the synthesiser and the live tap)


def validate_bars(bars: Bars, what: str = "input") -> None:
    """Reject bars a replay must not trust: unsorted or duplicate times, NaN, non-positive
    prices, OHLC that contradict themselves, negative volume, times off the timeframe grid."""
    n = len(bars)
    if n == 0:
        raise DatasetError(f"{what}: no bars")
    ts = bars.ts
    diffs = np.diff(ts)
    if n > 1 and (diffs < 0).any():
        i = int(np.flatnonzero(diffs < 0)[0])
        raise DatasetError(f"{what}: timestamps are not sorted (at {ms_to_iso(int(ts[i + 1]))}); sort the file by time")
    if n > 1 and (diffs == 0).any():
        i = int(np.flatnonzero(diffs == 0)[0])
        raise DatasetError(f"{what}: duplicate timestamp {ms_to_iso(int(ts[i]))}; remove the duplicate rows")
    step = timeframe_ms(bars.timeframe)
    off = ts % step != 0
    if step <= DAY_MS and off.any():
        raise DatasetError(f"{what}: bar time {ms_to_iso(int(ts[np.flatnonzero(off)[0]]))} is not on the "
                           f"{bars.timeframe} grid")
    for name in OHLCV:
        col = getattr(bars, name)
        bad = ~np.isfinite(col)
        if bad.any():
            raise DatasetError(f"{what}: {name} is NaN or infinite at {ms_to_iso(int(ts[np.flatnonzero(bad)[0]]))}")
    for name in PRICE_COLUMNS:
        col = getattr(bars, name)
        if (col <= 0).any():
            i = int(np.flatnonzero(col <= 0)[0])
            raise DatasetError(f"{what}: {name} is not positive ({col[i]}) at {ms_to_iso(int(ts[i]))}")
    if (bars.volume < 0).any():
        i = int(np.flatnonzero(bars.volume < 0)[0])
        raise DatasetError(f"{what}: negative volume at {ms_to_iso(int(ts[i]))}")
    bad = ohlc_inconsistent(bars)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DatasetError(f"{what}: high/low contradict open/close at {ms_to_iso(int(ts[i]))} "
                           f"(o={bars.open[i]} h={bars.high[i]} l={bars.low[i]} c={bars.close[i]})")


def ohlc_inconsistent(bars: Bars) -> np.ndarray:
    hi = np.maximum(bars.open, bars.close)
    lo = np.minimum(bars.open, bars.close)
    return (bars.high < hi) | (bars.low > lo) | (bars.high < bars.low)


def infer_timeframe(ts: np.ndarray, what: str = "input") -> str:
    """The bar spacing of sorted open times: the smallest step, which every step must be a multiple of."""
    if len(ts) < 2:
        raise DatasetError(f"{what}: need at least two bars to tell the timeframe; pass it explicitly")
    diffs = np.diff(ts)
    positive = diffs[diffs > 0]
    if len(positive) == 0:
        raise DatasetError(f"{what}: all timestamps are equal")
    step = int(positive.min())
    if (diffs[diffs > 0] % step != 0).any():
        i = int(np.flatnonzero((diffs > 0) & (diffs % step != 0))[0])
        raise DatasetError(f"{what}: mixed bar spacing ({step // 1000}s and {int(diffs[i]) // 1000}s at "
                           f"{ms_to_iso(int(ts[i + 1]))}); one file must hold one timeframe")
    return timeframe_name(step)


def count_gaps(ts: np.ndarray, step: int) -> tuple[int, int, list[tuple[int, int]]]:
    """(gap stretches, missing bars, [(first missing, last missing)...]) in sorted open times."""
    if len(ts) < 2:
        return 0, 0, []
    diffs = np.diff(ts)
    where = np.flatnonzero(diffs > step)
    missing = int(((diffs[where] // step) - 1).sum())
    spans = [(int(ts[i] + step), int(ts[i + 1] - step)) for i in where]
    return len(where), missing, spans


def resample(bars: Bars, timeframe: str, complete_until: int | None = None) -> Bars:
    """Aggregate bars to a coarser timeframe (open first, high max, low min, close last, sums).

    A bucket still open at ``complete_until`` (the close time of the last recorded source bar)
    is dropped: its bar has not closed yet.
    """
    src, dst = timeframe_ms(bars.timeframe), timeframe_ms(timeframe)
    if dst == src:
        return bars
    if dst < src or dst % src:
        raise DatasetError(f"cannot make {timeframe} bars from {bars.timeframe} bars: "
                           f"the target must be a multiple of {bars.timeframe}")
    if len(bars) == 0:
        return Bars.empty(bars.symbol, timeframe)
    keys = bars.ts - bars.ts % dst
    starts = np.concatenate(([0], np.flatnonzero(np.diff(keys)) + 1))
    ends = np.concatenate((starts[1:], [len(keys)])) - 1
    out = Bars(bars.symbol, timeframe, keys[starts], bars.open[starts],
               np.maximum.reduceat(bars.high, starts), np.minimum.reduceat(bars.low, starts),
               bars.close[ends], np.add.reduceat(bars.volume, starts),
               extra={k: np.add.reduceat(v, starts) for k, v in bars.extra.items()})
    if complete_until is not None and len(out) and out.ts[-1] + dst > complete_until:
        out = out.slice(0, len(out) - 1)
    return out


# --------------------------------------------------------------------------------------------
# the store


class Store:
    """Bars under one ``datasets/`` root."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    # -- paths ------------------------------------------------------------------------------

    def _series_dir(self, exchange: str, symbol: str, timeframe: str) -> Path:
        return self.root / f"exchange={exchange}" / f"symbol={path_symbol(symbol)}" / f"timeframe={timeframe}"

    def _day_files(self, exchange: str, symbol: str, timeframe: str) -> list[tuple[str, Path]]:
        base = self._series_dir(exchange, symbol, timeframe)
        if not base.is_dir():
            return []
        out = []
        for entry in os.scandir(base):
            if entry.name.startswith("date=") and entry.is_dir():
                path = Path(entry.path) / FILE_NAME
                if path.exists():
                    out.append((entry.name[5:], path))
        out.sort()
        return out

    # -- writing ----------------------------------------------------------------------------

    def write(self, exchange: str, bars: Bars, what: str = "input") -> WriteResult:
        """Validate and merge ``bars`` into the store; see the module docstring for guarantees."""
        _check_exchange_id(exchange)
        symbol = normalize_symbol(bars.symbol)
        timeframe_ms(bars.timeframe)
        validate_bars(bars, what)
        days = bars.ts // DAY_MS
        bounds = np.concatenate(([0], np.flatnonzero(np.diff(days)) + 1, [len(days)]))
        base = self._series_dir(exchange, symbol, bars.timeframe)
        pending: list[tuple[Path, pa.Table]] = []
        added = replaced = unchanged = 0
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=False):
            part = bars.slice(int(lo), int(hi))
            day = ms_to_iso(int(days[lo]) * DAY_MS)[:10]
            path = base / f"date={day}" / FILE_NAME
            if path.exists():
                old = _read_file(path, symbol, bars.timeframe)
                merged, a, r, u = _merge(old, part)
                if a == 0 and r == 0 and set(old.extra) >= set(part.extra):
                    unchanged += u
                    continue
            else:
                merged, a, r, u = part, len(part), 0, 0
            added, replaced, unchanged = added + a, replaced + r, unchanged + u
            pending.append((path, merged.to_table()))
        for path, table in pending:
            atomic.write_parquet(path, table)
        return WriteResult(added, replaced, unchanged, len(pending))

    # -- reading ----------------------------------------------------------------------------

    def stored_timeframes(self, exchange: str, symbol: str) -> list[str]:
        base = self.root / f"exchange={exchange}" / f"symbol={path_symbol(symbol)}"
        if not base.is_dir():
            return []
        names = [p.name[10:] for p in base.iterdir() if p.name.startswith("timeframe=")]
        return sorted(names, key=timeframe_ms)

    def source_timeframe(self, exchange: str, symbol: str, timeframe: str) -> str:
        """The stored timeframe a read of ``timeframe`` comes from (itself, or the finest divisor)."""
        want = timeframe_ms(timeframe)
        stored = self.stored_timeframes(exchange, symbol)
        if timeframe in stored:
            return timeframe
        for tf in stored:
            if want % timeframe_ms(tf) == 0:
                return tf
        recorded = ", ".join(stored) or "nothing"
        raise DatasetError(f"no {timeframe} bars for {normalize_symbol(symbol)} on {exchange} "
                           f"(recorded: {recorded}); import or fetch them first (python cli.py data list)")

    def read(self, exchange: str, symbol: str, timeframe: str,
             start: int | None = None, end: int | None = None) -> Bars:
        """Bars with open time in ``[start, end)``, resampled from a finer stored timeframe if needed."""
        symbol = normalize_symbol(symbol)
        source = self.source_timeframe(exchange, symbol, timeframe)
        step = timeframe_ms(timeframe)
        lo = None if start is None else start - start % step
        files = self._day_files(exchange, symbol, source)
        first_day = None if lo is None else ms_to_iso(lo - lo % DAY_MS)[:10]
        last_day = None if end is None else ms_to_iso(end - 1 - (end - 1) % DAY_MS)[:10]
        chosen = [p for d, p in files if (first_day is None or d >= first_day) and (last_day is None or d <= last_day)]
        bars = _read_files(chosen, symbol, source)
        bars = bars.window(lo, end)
        if source != timeframe:
            last_close = None
            if files:
                tail = _read_file(files[-1][1], symbol, source)
                last_close = int(tail.ts[-1]) + timeframe_ms(source) if len(tail) else None
            bars = resample(bars, timeframe, complete_until=last_close)
            bars = bars.window(start, end)
        return bars

    def read_many(self, exchange: str, symbols: list[str] | tuple[str, ...], timeframe: str,
                  start: int | None = None, end: int | None = None) -> dict[str, Bars]:
        return {normalize_symbol(s): self.read(exchange, s, timeframe, start, end) for s in symbols}

    def read_frame(self, exchange: str, symbols: list[str] | tuple[str, ...], timeframe: str,
                   start: int | None = None, end: int | None = None):
        """A long DataFrame (``ts, symbol, open, high, low, close, volume``) of the window."""
        import pandas as pd

        frames = []
        for symbol, bars in self.read_many(exchange, symbols, timeframe, start, end).items():
            frame = bars.to_frame()
            frame.insert(1, "symbol", symbol)
            frames.append(frame)
        return pd.concat(frames, ignore_index=True).sort_values(["ts", "symbol"], kind="stable", ignore_index=True)

    def read_aligned(self, exchange: str, symbols: list[str] | tuple[str, ...], timeframe: str,
                     start: int | None = None, end: int | None = None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Bars of several symbols on one time axis: (ts, {column: array[len(ts), n_symbols]}).

        The axis is the union of the symbols' bar times; a symbol without a bar at a time has NaN.
        """
        series = list(self.read_many(exchange, symbols, timeframe, start, end).values())
        axis = np.unique(np.concatenate([b.ts for b in series])) if series else np.empty(0, np.int64)
        out = {c: np.full((len(axis), len(series)), np.nan) for c in OHLCV}
        for j, bars in enumerate(series):
            idx = np.searchsorted(axis, bars.ts)
            for c in OHLCV:
                out[c][idx, j] = getattr(bars, c)
        return axis, out

    # -- what is recorded -------------------------------------------------------------------

    def series(self) -> list[tuple[str, str, str]]:
        """Every (exchange, symbol, timeframe) with at least one day file."""
        out = []
        if not self.root.is_dir():
            return out
        for ex in sorted(self.root.glob("exchange=*")):
            for sym in sorted(ex.glob("symbol=*")):
                for tf in sym.glob("timeframe=*"):
                    symbol = normalize_symbol(sym.name[7:])
                    if self._day_files(ex.name[9:], symbol, tf.name[10:]):
                        out.append((ex.name[9:], symbol, tf.name[10:]))
        out.sort(key=lambda k: (k[0], k[1], timeframe_ms(k[2])))
        return out

    def info(self, exchange: str, symbol: str, timeframe: str) -> SeriesInfo:
        files = self._day_files(exchange, symbol, timeframe)
        if not files:
            raise DatasetError(f"nothing recorded for {symbol} {timeframe} on {exchange}")
        ts = _read_ts([p for _, p in files])
        gaps, missing, _ = count_gaps(ts, timeframe_ms(timeframe))
        return SeriesInfo(exchange, normalize_symbol(symbol), timeframe, int(ts[0]), int(ts[-1]), len(ts), gaps, missing)

    def list(self, exchange: str | None = None, symbols: tuple[str, ...] | None = None) -> list[SeriesInfo]:
        wanted = None if symbols is None else {normalize_symbol(s) for s in symbols}
        return [self.info(ex, sym, tf) for ex, sym, tf in self.series()
                if (exchange is None or ex == exchange) and (wanted is None or sym in wanted)]

    def exchanges(self) -> list[str]:
        return sorted({ex for ex, _, _ in self.series()})

    def coverage(self, exchange: str, symbol: str, timeframe: str) -> tuple[int, int]:
        """(first open time, last close time) recorded that can serve ``timeframe``."""
        source = self.source_timeframe(exchange, symbol, timeframe)
        files = self._day_files(exchange, symbol, source)
        first = _read_ts([files[0][1]])
        last = _read_ts([files[-1][1]])
        return int(first[0]), int(last[-1]) + timeframe_ms(source)

    # -- quality ----------------------------------------------------------------------------

    def check(self, exchange: str, symbol: str, timeframe: str) -> dict:
        """Quality report of one stored series: gaps, duplicates, OHLC, prices, flat runs."""
        files = self._day_files(exchange, symbol, timeframe)
        if not files:
            raise DatasetError(f"nothing recorded for {symbol} {timeframe} on {exchange}")
        bars = _read_files([p for _, p in files], normalize_symbol(symbol), timeframe, sort=False)
        return quality_report(bars, exchange)

    # -- fingerprints -----------------------------------------------------------------------

    def fingerprint(self, exchange: str, symbols: list[str] | tuple[str, ...], timeframe: str,
                    start: int | None = None, end: int | None = None) -> str:
        """A content hash of exactly the bars a window holds (independent of file layout)."""
        return fingerprint(self.read_many(exchange, symbols, timeframe, start, end).values(), exchange)

    # -- market rules -----------------------------------------------------------------------

    def save_rules(self, exchange: str, rules: dict[str, MarketRules], taken_at: int, source: str) -> Path:
        """Store a snapshot of an exchange's market rules taken at ``taken_at`` (ms)."""
        _check_exchange_id(exchange)
        folder = self.root / f"exchange={exchange}" / "_rules"
        stamp = ms_to_iso(taken_at - taken_at % 1000).replace("-", "").replace(":", "")
        path = folder / f"{stamp}.json"
        payload = {"exchange": exchange, "taken_at": ms_to_iso(taken_at), "source": source,
                   "symbols": {normalize_symbol(s): r.to_dict() for s, r in sorted(rules.items())}}
        if path.exists():
            old = json.loads(path.read_text())
            payload["symbols"] = {**old.get("symbols", {}), **payload["symbols"]}
        atomic.write_text(path, json.dumps(payload, indent=1, sort_keys=True))
        return path

    def rules_snapshots(self, exchange: str) -> list[Path]:
        folder = self.root / f"exchange={exchange}" / "_rules"
        return sorted(folder.glob("*.json")) if folder.is_dir() else []

    def rules(self, exchange: str, symbol: str, at: int | None = None) -> MarketRules | None:
        """The rules for ``symbol`` from the latest snapshot taken at or before ``at``
        (or the earliest one after it, if none is older); None when no snapshot has it."""
        symbol = normalize_symbol(symbol)
        snapshots = []
        for path in self.rules_snapshots(exchange):
            data = json.loads(path.read_text())
            if symbol in data.get("symbols", {}):
                from harness.model import parse_time

                snapshots.append((parse_time(data["taken_at"]), data["symbols"][symbol]))
        if not snapshots:
            return None
        snapshots.sort(key=lambda s: s[0])
        chosen = snapshots[0][1]
        for taken, rules in snapshots:
            if at is None or taken <= at:
                chosen = rules
        return MarketRules.from_dict(chosen)


def quality_report(bars: Bars, exchange: str = "") -> dict:
    """Gaps, duplicates, OHLC inconsistencies, non-positive prices and long flat runs."""
    step = timeframe_ms(bars.timeframe)
    order = np.argsort(bars.ts, kind="stable")
    ts = bars.ts[order]
    duplicates = int((np.diff(ts) == 0).sum()) if len(ts) > 1 else 0
    unique_ts = np.unique(ts)
    gaps, missing, spans = count_gaps(unique_ts, step)
    inconsistent = int(ohlc_inconsistent(bars).sum())
    non_positive = int(sum(((getattr(bars, c) <= 0) | ~np.isfinite(getattr(bars, c))).sum() for c in PRICE_COLUMNS))
    close = bars.close[order]
    runs = _flat_runs(close, IDENTICAL_CLOSE_RUN)
    issues = []
    if gaps:
        issues.append(f"{gaps} gaps ({missing} missing bars)")
    if duplicates:
        issues.append(f"{duplicates} duplicate timestamps")
    if inconsistent:
        issues.append(f"{inconsistent} bars with inconsistent OHLC")
    if non_positive:
        issues.append(f"{non_positive} non-positive or NaN prices")
    if runs:
        issues.append(f"{len(runs)} runs of {IDENTICAL_CLOSE_RUN}+ identical closes")
    return {
        "exchange": exchange, "symbol": bars.symbol, "timeframe": bars.timeframe,
        "first": ms_to_iso(int(ts[0])) if len(ts) else None,
        "last": ms_to_iso(int(ts[-1])) if len(ts) else None,
        "bars": int(len(ts)), "gaps": gaps, "missing_bars": missing,
        "gap_spans": [[ms_to_iso(a), ms_to_iso(b)] for a, b in spans[:50]],
        "duplicates": duplicates, "ohlc_inconsistent": inconsistent, "non_positive_prices": non_positive,
        "identical_close_runs": [[ms_to_iso(int(ts[a])), int(n)] for a, n in runs[:50]],
        "ok": not issues, "issues": issues,
    }


def fingerprint(series, exchange: str = "") -> str:
    """SHA-256 (first 16 hex) over symbol, timeframe and the raw bytes of each series' bars."""
    digest = hashlib.sha256(exchange.encode())
    for bars in sorted(series, key=lambda b: b.symbol):
        digest.update(f"|{bars.symbol}|{bars.timeframe}|{len(bars)}|".encode())
        digest.update(np.ascontiguousarray(bars.ts, dtype="<i8").tobytes())
        for c in OHLCV:
            digest.update(np.ascontiguousarray(getattr(bars, c), dtype="<f8").tobytes())
    return digest.hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# helpers


_EXCHANGE_RE = re.compile(r"^[a-z0-9_.-]+$")


def _check_exchange_id(exchange: str) -> None:
    if not _EXCHANGE_RE.match(exchange or ""):
        raise DatasetError(f"exchange id {exchange!r} must be lower-case letters, digits, '.', '_' or '-'")


def _flat_runs(close: np.ndarray, length: int) -> list[tuple[int, int]]:
    if len(close) < length:
        return []
    change = np.concatenate(([True], close[1:] != close[:-1], [True]))
    starts = np.flatnonzero(change)
    sizes = np.diff(starts)
    return [(int(s), int(n)) for s, n in zip(starts[:-1], sizes, strict=False) if n >= length]


def _merge(old: Bars, new: Bars) -> tuple[Bars, int, int, int]:
    """Union of two bar sets, ``new`` winning on equal times; counts added/replaced/unchanged."""
    common_old = np.isin(old.ts, new.ts)
    common_new = np.isin(new.ts, old.ts)
    added = int((~common_new).sum())
    same = 0
    if common_new.any():
        o = old.slice(0, len(old))
        eq = np.ones(int(common_old.sum()), dtype=bool)
        for c in OHLCV:
            eq &= getattr(o, c)[common_old] == getattr(new, c)[common_new]
        same = int(eq.sum())
    replaced = int(common_new.sum()) - same
    keep = ~common_old
    ts = np.concatenate((old.ts[keep], new.ts))
    order = np.argsort(ts, kind="stable")
    cols = [np.concatenate((getattr(old, c)[keep], getattr(new, c)))[order] for c in OHLCV]
    extra = {}
    for name in set(old.extra) | set(new.extra):
        dtype = np.int64 if name == "trades" else np.float64
        a = old.extra.get(name, np.zeros(len(old), dtype))[keep]
        b = new.extra.get(name, np.zeros(len(new), dtype))
        extra[name] = np.concatenate((a, b))[order]
    return Bars(new.symbol, new.timeframe, ts[order], *cols, extra=extra), added, replaced, same


def _table_to_bars(table: pa.Table, symbol: str, timeframe: str) -> Bars:
    ts = table.column("ts").cast(pa.int64()).to_numpy()
    cols = [table.column(c).to_numpy() for c in OHLCV]
    extra = {name: table.column(name).to_numpy() for name in OPTIONAL if name in table.column_names}
    return Bars(symbol, timeframe, ts, *cols, extra=extra)


def _read_file(path: Path, symbol: str, timeframe: str) -> Bars:
    try:
        return _table_to_bars(pq.ParquetFile(path).read(), symbol, timeframe)
    except (OSError, pa.ArrowException) as exc:
        raise DatasetError(f"stored file {path} is unreadable ({exc}); delete it and import again") from None


def _read_files(paths: list[Path], symbol: str, timeframe: str, sort: bool = True) -> Bars:
    if not paths:
        return Bars.empty(symbol, timeframe)
    try:
        tables = [pq.ParquetFile(p).read() for p in paths]
    except (OSError, pa.ArrowException) as exc:
        raise DatasetError(f"a stored file under {paths[0].parent.parent} is unreadable ({exc}); "
                           "delete it and import again") from None
    names = set.intersection(*(set(t.column_names) for t in tables))
    columns = [c for c in tables[0].column_names if c in names]
    table = pa.concat_tables([t.select(columns) for t in tables])
    return _table_to_bars(table, symbol, timeframe)


def _read_ts(paths: list[Path]) -> np.ndarray:
    return np.concatenate([pq.ParquetFile(p).read(columns=["ts"]).column("ts").cast(pa.int64()).to_numpy() for p in paths])
