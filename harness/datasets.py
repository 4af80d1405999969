"""The Parquet store of recorded bars under ``datasets/``.

Layout (hive-partitioned, so DuckDB reads any window with
``read_parquet('datasets/**/*.parquet', hive_partitioning = true)``)::

    datasets/exchange=<id>/symbol=<BASE-QUOTE>/timeframe=<tf>/date=<YYYY-MM-DD>/bars.parquet
    datasets/exchange=<id>/_rules/<YYYYMMDDTHHMMSSZ>.json      market-rules snapshots

Columns: ``ts`` (bar open time, ``timestamp[ms, UTC]``), ``open, high, low, close, volume``
(float64), optional ``quote_volume`` (float64) and ``trades`` (int64; both null where unknown).
A partition holds one UTC day of bars finer than 1h (1,440 bars of 1m), one month of hourly
bars, one year of daily or coarser bars; ``date`` names the partition's first day. Small files
keep a live tap's rewrite cheap and let a window read touch only what it needs, without
thousands of 24-row files for hourly history.

Writes merge with what is stored (the same bar twice leaves one copy; a newer copy of a bar
replaces the older) and commit all the files they touch as one :class:`harness.atomic.Transaction`:
an exception or a crash mid-write leaves the store exactly as it was (a crashed commit is undone
the next time the store is opened). Writers hold an exclusive lock on ``datasets/.lock``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from harness import atomic
from harness.bars import (
    IDENTICAL_CLOSE_RUN,
    OHLCV,
    OPTIONAL,
    OPTIONAL_FIELDS,
    PRICE_COLUMNS,
    SCHEMA,
    Bars,
    arrow_to_numpy,
    bucket_start,
    count_gaps,
    fingerprint,
    infer_timeframe,
    ohlc_inconsistent,
    quality_report,
    resample,
    validate_bars,
)
from harness.errors import DatasetError, UserError
from harness.model import (
    DAY_MS,
    MarketRules,
    ms_to_iso,
    normalize_symbol,
    parse_time,
    path_symbol,
    timeframe_ms,
    timeframe_name,
)

# The bar functions live in harness.bars; they are re-exported here as part of the store's API.
__all__ = [
    "FILE_NAME", "IDENTICAL_CLOSE_RUN", "OHLCV", "OPTIONAL", "OPTIONAL_FIELDS", "PRICE_COLUMNS", "SCHEMA",
    "Bars", "SeriesInfo", "Store", "WriteResult", "bucket_start", "count_gaps", "fingerprint",
    "infer_timeframe", "ohlc_inconsistent", "quality_report", "resample", "validate_bars",
]

FILE_NAME = "bars.parquet"
HOUR_MS = 3_600_000


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
    """What one write did to the store."""

    added: int          # bars that were not stored before
    replaced: int       # bars stored before whose values changed
    unchanged: int      # bars already stored exactly
    days: int           # partition files written


# --------------------------------------------------------------------------------------------
# the store


class Store:
    """Bars under one ``datasets/`` root."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    # -- paths ------------------------------------------------------------------------------

    def _series_dir(self, exchange: str, symbol: str, timeframe: str) -> Path:
        return self.root / f"exchange={exchange}" / f"symbol={path_symbol(symbol)}" / f"timeframe={timeframe}"

    def _day_files(self, exchange: str, symbol: str, timeframe: str, first_only: bool = False) -> list[tuple[str, Path]]:
        """(partition date, file) of a series, oldest first (only one, any, with ``first_only``)."""
        self._recover()
        base = str(self._series_dir(exchange, symbol, timeframe))
        try:
            entries = os.scandir(base)
        except (FileNotFoundError, NotADirectoryError):
            return []
        found = []
        with entries:
            for entry in entries:
                if entry.name.startswith("date="):
                    path = os.path.join(entry.path, FILE_NAME)
                    if os.path.exists(path):
                        found.append((entry.name[5:], path))
                        if first_only:
                            break
        found.sort()
        return [(day, Path(path)) for day, path in found]

    def _recover(self) -> None:
        """Undo a commit that a crashed writer left half done (unless a writer is busy now)."""
        if atomic.needs_recovery(self.root):
            with atomic.locked(self.root, blocking=False) as acquired:
                if acquired:
                    atomic.recover(self.root)

    # -- writing ----------------------------------------------------------------------------

    def write(self, exchange: str, bars: Bars, what: str = "input") -> WriteResult:
        """Validate and merge ``bars`` into the store; see the module docstring for guarantees."""
        return self.write_many([(exchange, bars)], [what])[0]

    def write_many(self, items: Sequence[tuple[str, Bars]], what: Sequence[str] | None = None) -> list[WriteResult]:
        """Validate every ``(exchange, bars)`` item, then merge them all in one transaction:
        either every item is stored or (on any error) nothing changes."""
        labels = list(what) if what is not None else ["input"] * len(items)
        for (exchange, bars), label in zip(items, labels, strict=True):
            _check_exchange_id(exchange)
            normalize_symbol(bars.symbol)
            validate_bars(bars, label)
        with atomic.locked(self.root):
            atomic.recover(self.root)
            pending: dict[Path, Bars] = {}
            results = [self._plan(exchange, bars, pending) for exchange, bars in items]
            if pending:
                txn = atomic.Transaction(self.root)
                try:
                    txn.stage_many([(path, merged.to_table()) for path, merged in pending.items()])
                    txn.commit()
                except BaseException:
                    txn.abort()
                    raise
        return results

    def _plan(self, exchange: str, bars: Bars, pending: dict[Path, Bars]) -> WriteResult:
        symbol, timeframe = normalize_symbol(bars.symbol), _canonical(bars.timeframe)
        bars = Bars(symbol, timeframe, np.asarray(bars.ts, np.int64),
                    *(np.asarray(getattr(bars, c), np.float64) for c in OHLCV),
                    extra={k: np.asarray(v, np.float64) for k, v in bars.extra.items() if k in OPTIONAL})
        keys = _partition_keys(bars.ts, bars.timeframe)
        bounds = np.concatenate(([0], np.flatnonzero(np.diff(keys)) + 1, [len(keys)]))
        base = self._series_dir(exchange, symbol, bars.timeframe)
        added = replaced = unchanged = files = 0
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            part = bars.slice(int(lo), int(hi))
            path = base / f"date={ms_to_iso(int(keys[lo]))[:10]}" / FILE_NAME
            old = pending.get(path)
            if old is None and path.exists():
                old = _read_files([path], symbol, bars.timeframe)
            if old is None:
                merged, a, r, u = part, len(part), 0, 0
            else:
                merged, a, r, u = _merge(old, part)
            added, replaced, unchanged = added + a, replaced + r, unchanged + u
            if a or r:
                files += path not in pending
                pending[path] = merged
        return WriteResult(added, replaced, unchanged, files)

    # -- reading ----------------------------------------------------------------------------

    def stored_timeframes(self, exchange: str, symbol: str) -> list[str]:
        """Timeframes with at least one stored partition for the symbol, finest first."""
        base = self.root / f"exchange={exchange}" / f"symbol={path_symbol(symbol)}"
        if not base.is_dir():
            return []
        names = []
        for p in base.iterdir():
            if p.name.startswith("timeframe=") and _valid_timeframe(p.name[10:]):
                if self._day_files(exchange, symbol, p.name[10:], first_only=True):
                    names.append(p.name[10:])
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
             start: int | None = None, end: int | None = None, *, missing_ok: bool = False) -> Bars:
        """Bars with open time in ``[start, end)``, resampled from a finer stored timeframe if needed.

        A window that lies wholly outside what is recorded is a :class:`DatasetError` that says
        what is recorded (``missing_ok=True``: an empty result instead). A window that overlaps
        the recording returns the bars it holds, which may be none inside a gap.
        """
        symbol, timeframe = normalize_symbol(symbol), _canonical(timeframe)
        if start is not None and end is not None and start >= end:
            raise DatasetError(f"empty window: start {ms_to_iso(start)} is not before end {ms_to_iso(end)}")
        source = self.source_timeframe(exchange, symbol, timeframe)
        files = self._day_files(exchange, symbol, source)
        step = timeframe_ms(timeframe)
        lo = None if start is None else int(bucket_start(start, step))
        hi = None if end is None else int(bucket_start(end - 1, step)) + step
        first_key = None if lo is None else ms_to_iso(int(_partition_keys(np.array([lo]), source)[0]))[:10]
        last_key = None if hi is None else ms_to_iso(int(_partition_keys(np.array([hi - 1]), source)[0]))[:10]
        chosen = [p for d, p in files if (first_key is None or d >= first_key) and (last_key is None or d <= last_key)]
        bars = _read_files(chosen, symbol, source).window(lo, hi)
        if source != timeframe:
            first, last_close = self._span(files, source)
            bars = resample(bars, timeframe, complete_until=last_close, complete_from=first)
        bars = bars.window(start, end)
        if len(bars) == 0 and not missing_ok:
            first, last_close = self._span(files, source)
            if (start is not None and start >= last_close) or (end is not None and end <= first):
                asked = (f"from {ms_to_iso(start)}" if end is None else f"before {ms_to_iso(end)}" if start is None
                         else f"between {ms_to_iso(start)} and {ms_to_iso(end)}")
                raise DatasetError(f"no {symbol} {timeframe} bars on {exchange} {asked}: recorded from "
                                   f"{ms_to_iso(first)} to {ms_to_iso(last_close)} (see python cli.py data list)")
        return bars

    def _span(self, files: list[tuple[str, Path]], timeframe: str) -> tuple[int, int]:
        first = _read_ts([files[0][1]])
        last = _read_ts([files[-1][1]])
        return int(first[0]), int(last[-1]) + timeframe_ms(timeframe)

    def read_many(self, exchange: str, symbols: Sequence[str], timeframe: str,
                  start: int | None = None, end: int | None = None, *, missing_ok: bool = False) -> dict[str, Bars]:
        """:meth:`read` for several symbols: ``{symbol: Bars}`` in the order given."""
        return {normalize_symbol(s): self.read(exchange, s, timeframe, start, end, missing_ok=missing_ok)
                for s in symbols}

    def read_frame(self, exchange: str, symbols: Sequence[str], timeframe: str,
                   start: int | None = None, end: int | None = None, *, missing_ok: bool = False):
        """A long DataFrame (``ts, symbol, open, high, low, close, volume``, optional columns)
        of the window, sorted by time then symbol."""
        import pandas as pd

        frames = []
        for symbol, bars in self.read_many(exchange, symbols, timeframe, start, end, missing_ok=missing_ok).items():
            frame = bars.to_frame()
            frame.insert(1, "symbol", symbol)
            frames.append(frame)
        if not frames:
            return pd.DataFrame(columns=["ts", "symbol", *OHLCV])
        return pd.concat(frames, ignore_index=True).sort_values(["ts", "symbol"], kind="stable", ignore_index=True)

    def read_aligned(self, exchange: str, symbols: Sequence[str], timeframe: str,
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
        """Every (exchange, symbol, timeframe) with at least one stored partition."""
        out = []
        if not self.root.is_dir():
            return out
        for ex in self.root.glob("exchange=*"):
            for sym in ex.glob("symbol=*"):
                try:
                    symbol = normalize_symbol(sym.name[7:])
                except UserError:
                    continue
                for tf in self.stored_timeframes(ex.name[9:], symbol):
                    out.append((ex.name[9:], symbol, tf))
        out.sort(key=lambda k: (k[0], k[1], timeframe_ms(k[2])))
        return out

    def info(self, exchange: str, symbol: str, timeframe: str) -> SeriesInfo:
        """First and last bar, bar count and gaps of one stored series."""
        files = self._day_files(exchange, symbol, timeframe)
        if not files:
            raise DatasetError(f"nothing recorded for {normalize_symbol(symbol)} {timeframe} on {exchange}")
        ts = _read_ts([p for _, p in files])
        gaps, missing, _ = count_gaps(ts, timeframe_ms(timeframe))
        return SeriesInfo(exchange, normalize_symbol(symbol), timeframe, int(ts[0]), int(ts[-1]), len(ts), gaps, missing)

    def list(self, exchange: str | None = None, symbols: Sequence[str] | None = None) -> list[SeriesInfo]:
        """:meth:`info` of every stored series, optionally only one exchange's or some symbols'."""
        wanted = None if symbols is None else {normalize_symbol(s) for s in symbols}
        return [self.info(ex, sym, tf) for ex, sym, tf in self.series()
                if (exchange is None or ex == exchange) and (wanted is None or sym in wanted)]

    def exchanges(self) -> list[str]:
        """Exchange ids with recorded bars."""
        return sorted({ex for ex, _, _ in self.series()})

    def coverage(self, exchange: str, symbol: str, timeframe: str) -> tuple[int, int]:
        """(first open time, last close time) recorded that can serve ``timeframe``."""
        source = self.source_timeframe(exchange, symbol, timeframe)
        return self._span(self._day_files(exchange, symbol, source), source)

    # -- quality ----------------------------------------------------------------------------

    def check(self, exchange: str, symbol: str, timeframe: str) -> dict:
        """Quality report of one stored series: gaps, duplicates, OHLC, prices, flat runs."""
        files = self._day_files(exchange, symbol, timeframe)
        if not files:
            raise DatasetError(f"nothing recorded for {normalize_symbol(symbol)} {timeframe} on {exchange}")
        bars = _read_files([p for _, p in files], normalize_symbol(symbol), timeframe)
        return quality_report(bars, exchange)

    # -- fingerprints -----------------------------------------------------------------------

    def fingerprint(self, exchange: str, symbols: Sequence[str], timeframe: str,
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
            old = _read_json(path)
            payload["symbols"] = dict(sorted({**old.get("symbols", {}), **payload["symbols"]}.items()))
        atomic.write_text(path, json.dumps(payload, indent=1, sort_keys=True))
        return path

    def rules_snapshots(self, exchange: str) -> list[Path]:
        """An exchange's market-rules snapshot files, oldest first."""
        folder = self.root / f"exchange={exchange}" / "_rules"
        return sorted(folder.glob("*.json")) if folder.is_dir() else []

    def rules(self, exchange: str, symbol: str, at: int | None = None) -> MarketRules | None:
        """The rules for ``symbol`` from the latest snapshot taken at or before ``at``
        (or the earliest one after it, if none is older); None when no snapshot has it."""
        symbol = normalize_symbol(symbol)
        snapshots = []
        for path in self.rules_snapshots(exchange):
            data = _read_json(path)
            if symbol in data.get("symbols", {}):
                snapshots.append((parse_time(data["taken_at"]), data["symbols"][symbol]))
        if not snapshots:
            return None
        snapshots.sort(key=lambda s: s[0])
        chosen = snapshots[0][1]
        for taken, rules in snapshots:
            if at is None or taken <= at:
                chosen = rules
        return MarketRules.from_dict(chosen)


# --------------------------------------------------------------------------------------------
# helpers


_EXCHANGE_RE = re.compile(r"^[a-z0-9_.-]+$")


def _check_exchange_id(exchange: str) -> None:
    if not _EXCHANGE_RE.match(exchange or ""):
        raise DatasetError(f"exchange id {exchange!r} must be lower-case letters, digits, '.', '_' or '-'")


def _canonical(timeframe: str) -> str:
    """The one name of a timeframe (``60m`` → ``1h``), so one series has one folder."""
    return timeframe_name(timeframe_ms(timeframe))


def _valid_timeframe(name: str) -> bool:
    try:
        timeframe_ms(name)
    except UserError:
        return False
    return True


def _partition_keys(ts: np.ndarray, timeframe: str) -> np.ndarray:
    """The open time (ms) of the partition holding each bar: its UTC day, month or year."""
    step = timeframe_ms(timeframe)
    if step < HOUR_MS:
        return ts - ts % DAY_MS
    unit = "M" if step < DAY_MS else "Y"
    return ts.astype("datetime64[ms]").astype(f"datetime64[{unit}]").astype("datetime64[ms]").astype(np.int64)


def _same(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a == b) | (np.isnan(a) & np.isnan(b))


def _merge(old: Bars, new: Bars) -> tuple[Bars, int, int, int]:
    """Union of two sorted bar sets, ``new`` winning on equal times; counts added/replaced/unchanged.

    An optional column that ``new`` lacks keeps the stored values of the bars it replaces."""
    in_new = np.isin(old.ts, new.ts, assume_unique=True)
    in_old = np.isin(new.ts, old.ts, assume_unique=True)
    nan_old, nan_new = np.full(len(old), np.nan), np.full(len(new), np.nan)
    extra = {}
    for name in sorted(set(old.extra) | set(new.extra)):
        b = np.array(new.extra.get(name, nan_new), dtype=np.float64)
        if name not in new.extra:
            b[in_old] = old.extra[name][in_new]
        extra[name] = (old.extra.get(name, nan_old), b)
    same = np.ones(int(in_old.sum()), dtype=bool)
    for c in OHLCV:
        same &= getattr(old, c)[in_new] == getattr(new, c)[in_old]
    for a, b in extra.values():
        same &= _same(a[in_new], b[in_old])
    unchanged = int(same.sum())
    added, replaced = int((~in_old).sum()), int(in_old.sum()) - unchanged
    if not added and not replaced:
        return old, 0, 0, unchanged
    keep = ~in_new
    ts = np.concatenate((old.ts[keep], new.ts))
    order = np.argsort(ts, kind="stable")
    cols = [np.concatenate((getattr(old, c)[keep], getattr(new, c)))[order] for c in OHLCV]
    merged_extra = {name: np.concatenate((a[keep], b))[order] for name, (a, b) in extra.items()}
    return Bars(new.symbol, new.timeframe, ts[order], *cols, extra=merged_extra), added, replaced, unchanged


def _read_files(paths: list[Path], symbol: str, timeframe: str) -> Bars:
    """The bars of stored partition files, concatenated in the order given."""
    if not paths:
        return Bars.empty(symbol, timeframe)
    parts = list(_READERS.map(_read_columns, paths)) if len(paths) > 2 else [_read_columns(p) for p in paths]
    names = [n for n in OPTIONAL if any(n in p for p in parts)]
    if len(parts) == 1:
        p = parts[0]
        return Bars(symbol, timeframe, p["ts"], *(p[c] for c in OHLCV), extra={n: p[n] for n in names})
    joined = {c: np.concatenate([p[c] for p in parts]) for c in ("ts", *OHLCV)}
    extra = {n: np.concatenate([p.get(n, np.full(len(p["ts"]), np.nan)) for p in parts]) for n in names}
    return Bars(symbol, timeframe, joined["ts"], *(joined[c] for c in OHLCV), extra=extra)


# Parquet decoding releases the GIL: a few threads read a month of day files about twice as fast.
_READERS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="datasets-read")


def _read_columns(path: Path) -> dict[str, np.ndarray]:
    try:
        table = pq.ParquetFile(path).read(use_threads=False)
    except (OSError, pa.ArrowException) as exc:
        raise DatasetError(f"stored file {path} is unreadable ({exc}); delete it and import again") from None
    cols = {c: arrow_to_numpy(table.column(c)) for c in ("ts", *OHLCV)}
    for name in OPTIONAL:
        if name in table.column_names:
            cols[name] = arrow_to_numpy(table.column(name)).astype(np.float64)
    return cols


def _read_ts(paths: list[Path]) -> np.ndarray:
    try:
        return np.concatenate([arrow_to_numpy(pq.ParquetFile(p).read(columns=["ts"]).column("ts")) for p in paths])
    except (OSError, pa.ArrowException) as exc:
        raise DatasetError(f"a stored file under {paths[0].parent.parent} is unreadable ({exc}); "
                           "delete it and import again") from None


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"market-rules snapshot {path} is unreadable ({exc}); delete it and fetch again") from None
