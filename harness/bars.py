"""Bars as numpy arrays, and the pure functions over them that every source and the store share:
validation, timeframe inference, gap counting, resampling, the quality report and the fingerprint.

Times are open times in integer milliseconds (UTC). Buckets of a timeframe are aligned to the
epoch, except weeks, which open on Mondays as Binance's do.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from harness.errors import DatasetError
from harness.model import DAY_MS, ms_to_iso, timeframe_ms, timeframe_name

PRICE_COLUMNS = ("open", "high", "low", "close")
OHLCV = ("open", "high", "low", "close", "volume")
OPTIONAL = ("quote_volume", "trades")
IDENTICAL_CLOSE_RUN = 60        # a quality warning: this many equal closes in a row
WEEK_MS = 7 * DAY_MS
WEEK_ORIGIN_MS = 4 * DAY_MS     # weekly bars open on Mondays (1970-01-05), as Binance's do

SCHEMA = pa.schema(
    [pa.field("ts", pa.timestamp("ms", tz="UTC"), nullable=False)]
    + [pa.field(name, pa.float64(), nullable=False) for name in OHLCV]
)
OPTIONAL_FIELDS = {"quote_volume": pa.field("quote_volume", pa.float64()), "trades": pa.field("trades", pa.int64())}


@dataclass
class Bars:
    """A run of bars for one symbol as numpy arrays; ``ts`` holds open times in ms.

    ``extra`` holds the optional columns (``quote_volume``, ``trades``) as float64 arrays,
    NaN where a bar's value is unknown.
    """

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
        """No bars."""
        z = np.empty(0)
        return cls(symbol, timeframe, np.empty(0, dtype=np.int64), z, z, z, z, z)

    def slice(self, start: int, stop: int) -> Bars:
        """The bars at positions ``start:stop``."""
        return Bars(self.symbol, self.timeframe, self.ts[start:stop],
                    *(getattr(self, c)[start:stop] for c in OHLCV),
                    extra={k: v[start:stop] for k, v in self.extra.items()})

    def take(self, index: np.ndarray) -> Bars:
        """The bars at ``index`` (positions or a boolean mask)."""
        return Bars(self.symbol, self.timeframe, self.ts[index], *(getattr(self, c)[index] for c in OHLCV),
                    extra={k: v[index] for k, v in self.extra.items()})

    def window(self, start: int | None, end: int | None) -> Bars:
        """Bars whose open time is in ``[start, end)``."""
        lo = 0 if start is None else int(np.searchsorted(self.ts, start, "left"))
        hi = len(self.ts) if end is None else int(np.searchsorted(self.ts, end, "left"))
        return self.slice(lo, max(lo, hi))

    def to_frame(self):
        """A pandas DataFrame: ``ts`` (tz-aware UTC), OHLCV, and the optional columns."""
        import pandas as pd

        return pd.DataFrame({"ts": pd.to_datetime(self.ts, unit="ms", utc=True),
                             **{c: getattr(self, c) for c in OHLCV}, **self.extra})

    def to_table(self) -> pa.Table:
        """The stored form (:data:`SCHEMA` plus the optional columns present)."""
        columns = [numpy_to_arrow(self.ts, pa.int64()).view(pa.timestamp("ms", tz="UTC"))]
        columns += [numpy_to_arrow(getattr(self, c), pa.float64()) for c in OHLCV]
        fields = list(SCHEMA)
        for name in OPTIONAL:
            if name in self.extra:
                values = np.asarray(self.extra[name], np.float64)
                unknown = np.isnan(values)
                if name == "trades":
                    values = np.where(unknown, 0, values)
                fields.append(OPTIONAL_FIELDS[name])
                columns.append(numpy_to_arrow(values, OPTIONAL_FIELDS[name].type, missing=unknown))
        return pa.Table.from_arrays(columns, schema=pa.schema(fields))


# --------------------------------------------------------------------------------------------
# bars on the time grid (shared by importers, fetchers, the synthesiser and the live tap)


def bucket_start(ts, step: int):
    """The open time of the ``step``-long bar holding ``ts`` (an int or an array of ms).

    Buckets are aligned to the epoch, except weeks, which open on Mondays as Binance's do."""
    origin = WEEK_ORIGIN_MS if step == WEEK_MS else 0
    return ts - (ts - origin) % step


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
        raise DatasetError(f"{what}: timestamps are not sorted ({ms_to_iso(int(ts[i + 1]))} comes after "
                           f"{ms_to_iso(int(ts[i]))}); sort the file by time")
    if n > 1 and (diffs == 0).any():
        i = int(np.flatnonzero(diffs == 0)[0])
        raise DatasetError(f"{what}: duplicate timestamp {ms_to_iso(int(ts[i]))}; remove the duplicate rows")
    step = timeframe_ms(bars.timeframe)
    off = bucket_start(ts, step) != ts
    if off.any():
        raise DatasetError(f"{what}: bar time {ms_to_iso(int(ts[np.flatnonzero(off)[0]]))} is not on the "
                           f"{bars.timeframe} grid")
    for name in OHLCV:
        col = getattr(bars, name)
        bad = ~np.isfinite(col)
        if bad.any():
            raise DatasetError(f"{what}: {name} is missing, NaN or infinite at "
                               f"{ms_to_iso(int(ts[np.flatnonzero(bad)[0]]))}")
    for name in PRICE_COLUMNS:
        col = getattr(bars, name)
        if (col <= 0).any():
            i = int(np.flatnonzero(col <= 0)[0])
            raise DatasetError(f"{what}: {name} is not positive ({col[i]}) at {ms_to_iso(int(ts[i]))}")
    for name, col in [("volume", bars.volume), *bars.extra.items()]:
        if (col < 0).any():
            i = int(np.flatnonzero(col < 0)[0])
            raise DatasetError(f"{what}: negative {name} ({col[i]}) at {ms_to_iso(int(ts[i]))}")
    bad = ohlc_inconsistent(bars)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DatasetError(f"{what}: high/low contradict open/close at {ms_to_iso(int(ts[i]))} "
                           f"(o={bars.open[i]} h={bars.high[i]} l={bars.low[i]} c={bars.close[i]})")


def ohlc_inconsistent(bars: Bars) -> np.ndarray:
    """Mask of bars whose high is under open/close/low or whose low is over open/close."""
    hi = np.maximum(bars.open, bars.close)
    lo = np.minimum(bars.open, bars.close)
    return (bars.high < hi) | (bars.low > lo) | (bars.high < bars.low)


def infer_timeframe(ts: np.ndarray, what: str = "input") -> str:
    """The bar spacing of sorted open times: the most common step. Every step must be a whole
    multiple of it (a larger one is a gap); a smaller or uneven one means mixed timeframes."""
    if len(ts) < 2:
        raise DatasetError(f"{what}: need at least two bars to tell the timeframe; pass --timeframe")
    diffs = np.diff(np.asarray(ts, np.int64))
    if (diffs < 0).any():
        i = int(np.flatnonzero(diffs < 0)[0])
        raise DatasetError(f"{what}: timestamps are not sorted ({ms_to_iso(int(ts[i + 1]))} comes after "
                           f"{ms_to_iso(int(ts[i]))}); sort the file by time")
    if (diffs == 0).any():
        i = int(np.flatnonzero(diffs == 0)[0])
        raise DatasetError(f"{what}: duplicate timestamp {ms_to_iso(int(ts[i]))}; remove the duplicate rows")
    if (diffs == diffs[0]).all():
        step = int(diffs[0])
    else:
        values, counts = np.unique(diffs, return_counts=True)
        step = int(values[np.argmax(counts)])
        uneven = diffs % step != 0
        if uneven.any():
            i = int(np.flatnonzero(uneven)[0])
            raise DatasetError(f"{what}: mixed bar spacing (mostly {_spacing(step)}, but {_spacing(int(diffs[i]))} "
                               f"before {ms_to_iso(int(ts[i + 1]))}); one file must hold one timeframe")
    return timeframe_name(step)


def _spacing(ms: int) -> str:
    return timeframe_name(ms) if ms % 1000 == 0 else f"{ms} ms"


def count_gaps(ts: np.ndarray, step: int) -> tuple[int, int, list[tuple[int, int]]]:
    """(gap stretches, missing bars, [(first missing, last missing)...]) in sorted, unique open times."""
    if len(ts) < 2:
        return 0, 0, []
    diffs = np.diff(ts)
    where = np.flatnonzero(diffs > step)
    missing = int((-(-diffs[where] // step) - 1).sum())      # ceil: an off-grid gap still counts
    spans = [(int(ts[i] + step), int(ts[i + 1] - step)) for i in where]
    return len(where), missing, spans


def resample(bars: Bars, timeframe: str, complete_until: int | None = None,
             complete_from: int | None = None) -> Bars:
    """Aggregate bars to a coarser timeframe (open first, high max, low min, close last, sums).

    A bucket still open at ``complete_until`` (the close time of the last recorded source bar)
    is dropped: its bar has not closed yet. So is a bucket that began before ``complete_from``
    (the first recorded source bar): its opening part was never recorded.
    """
    src, dst = timeframe_ms(bars.timeframe), timeframe_ms(timeframe)
    if dst == src:
        return bars
    if dst < src or dst % src:
        raise DatasetError(f"cannot make {timeframe} bars from {bars.timeframe} bars: "
                           f"the target must be a multiple of {bars.timeframe}")
    if len(bars) == 0:
        return Bars.empty(bars.symbol, timeframe)
    keys = bucket_start(bars.ts, dst)
    starts = np.concatenate(([0], np.flatnonzero(np.diff(keys)) + 1))
    ends = np.concatenate((starts[1:], [len(keys)])) - 1
    out = Bars(bars.symbol, timeframe, keys[starts], bars.open[starts],
               np.maximum.reduceat(bars.high, starts), np.minimum.reduceat(bars.low, starts),
               bars.close[ends], np.add.reduceat(bars.volume, starts),
               extra={k: np.add.reduceat(v, starts) for k, v in bars.extra.items()})
    keep = np.ones(len(out), dtype=bool)
    if complete_until is not None:
        keep &= out.ts + dst <= complete_until
    if complete_from is not None:
        keep &= out.ts >= complete_from
    return out if keep.all() else out.take(keep)


def quality_report(bars: Bars, exchange: str = "") -> dict:
    """Gaps, duplicates, OHLC inconsistencies, non-positive prices and long flat runs."""
    step = timeframe_ms(bars.timeframe)
    order = np.argsort(bars.ts, kind="stable")
    ts = bars.ts[order]
    duplicates = int((np.diff(ts) == 0).sum()) if len(ts) > 1 else 0
    gaps, missing, spans = count_gaps(np.unique(ts), step)
    inconsistent = int(ohlc_inconsistent(bars).sum())
    non_positive = int(sum(((getattr(bars, c) <= 0) | ~np.isfinite(getattr(bars, c))).sum() for c in PRICE_COLUMNS))
    runs = _flat_runs(bars.close[order], IDENTICAL_CLOSE_RUN)
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


def fingerprint(series: Iterable[Bars], exchange: str = "") -> str:
    """SHA-256 (first 16 hex) over symbol, timeframe and the raw bytes of each series' bars
    (OHLCV and the optional columns present)."""
    digest = hashlib.sha256(exchange.encode())
    for bars in sorted(series, key=lambda b: b.symbol):
        digest.update(f"|{bars.symbol}|{bars.timeframe}|{len(bars)}|".encode())
        digest.update(np.ascontiguousarray(bars.ts, dtype="<i8").tobytes())
        for c in OHLCV:
            digest.update(np.ascontiguousarray(getattr(bars, c), dtype="<f8").tobytes())
        for name in sorted(bars.extra):
            digest.update(f"|{name}|".encode())
            digest.update(np.ascontiguousarray(bars.extra[name], dtype="<f8").tobytes())
    return digest.hexdigest()[:16]


def arrow_to_numpy(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """An int64, float64 or timestamp arrow column as numpy (timestamps as their int64 values,
    nulls as NaN in a float64 result), without pyarrow's ``to_numpy``, which imports pandas."""
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    parts = []
    for arr in chunks:
        if pa.types.is_timestamp(arr.type):
            arr = arr.cast(pa.int64())
        dtype = _NUMPY_TYPES.get(arr.type)
        if dtype is None:
            arr, dtype = arr.cast(pa.float64()), np.float64
        data = np.frombuffer(arr.buffers()[1], dtype=dtype, count=len(arr), offset=arr.offset) if len(arr) \
            else np.empty(0, dtype)
        if arr.null_count:
            bits = np.frombuffer(arr.buffers()[0], np.uint8)
            valid = np.unpackbits(bits, bitorder="little", count=arr.offset + len(arr))[arr.offset:].astype(bool)
            data = np.where(valid, data.astype(np.float64), np.nan)
        parts.append(data)
    if not parts:
        return np.empty(0, np.float64)
    return np.concatenate(parts) if len(parts) > 1 else parts[0].copy()


def numpy_to_arrow(values: np.ndarray, kind: pa.DataType, missing: np.ndarray | None = None) -> pa.Array:
    """An int64 or float64 arrow array over numpy values (nulls where ``missing``), without
    ``pa.array``, which imports pandas."""
    data = np.ascontiguousarray(values, dtype=_NUMPY_TYPES[kind])
    validity = None
    if missing is not None and missing.any():
        validity = pa.py_buffer(np.packbits(~np.asarray(missing, bool), bitorder="little"))
    return pa.Array.from_buffers(kind, len(data), [validity, pa.py_buffer(data)],
                                 null_count=-1 if validity is not None else 0)


_NUMPY_TYPES = {pa.int64(): np.int64, pa.float64(): np.float64}


# --------------------------------------------------------------------------------------------
# helpers


def _flat_runs(close: np.ndarray, length: int) -> list[tuple[int, int]]:
    if len(close) < length:
        return []
    change = np.concatenate(([True], close[1:] != close[:-1], [True]))
    starts = np.flatnonzero(change)
    sizes = np.diff(starts)
    return [(int(s), int(n)) for s, n in zip(starts[:-1], sizes, strict=True) if n >= length]
