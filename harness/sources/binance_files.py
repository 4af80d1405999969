"""``data import``: bars from files a user already has.

Formats, told apart by the file's suffix:

* Binance public-data kline files (data.binance.vision) as ``.csv`` or ``.zip``, with or without
  a header: ``open_time, open, high, low, close, volume, close_time, quote_volume, count,
  taker_buy_volume, taker_buy_quote_volume, ignore``. Times in milliseconds or (spot files from
  2025 on) microseconds, told apart value by value by their magnitude.
* freqtrade candles: ``.feather`` (``date, open, high, low, close, volume``) and ``.json``
  (``[[ms, open, high, low, close, volume], ...]``, also ``.json.gz``).
* Parquet or CSV with a header naming a time column (``ts, open_time, date, timestamp, datetime,
  time``) and ``open, high, low, close, volume``; optional ``quote_volume`` and ``trades``
  (``count``) are kept. Times are timestamps (tz-naive means UTC), ISO strings, or epoch numbers.

The symbol comes from the file name (``BTCUSDT-1m-2024-01.zip``, ``BTC_USDT-1m.feather``,
``BTCUSDT_20250520_20250818.parquet``) or the Parquet metadata ``symbol``, else ``--symbol``.
The timeframe comes from the bars' spacing and must agree with ``--timeframe`` and with an
interval in the file name or metadata. Every file is read and validated before anything is
written; the writes are then one transaction, so bad input or a failure writes nothing.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from harness.bars import OHLCV, Bars, arrow_to_numpy, infer_timeframe, validate_bars
from harness.datasets import Store
from harness.errors import DatasetError, UserError
from harness.model import QUOTE_ASSETS, ms_to_iso, normalize_symbol, timeframe_ms, timeframe_name
from harness.sources.market_rules import rules_for

# Binance kline intervals (the harness imports these; "1M" months are not supported).
INTERVALS = ("1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w")
BINANCE_COLUMNS = ("open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume",
                   "trades", "taker_buy_base", "taker_buy_quote", "ignore")
ALIASES: dict[str, tuple[str, ...]] = {
    "ts": ("ts", "open_time", "opentime", "kline_open_time", "date", "timestamp", "datetime", "time", "open_date"),
    "open": ("open", "o", "open_price"),
    "high": ("high", "h", "high_price"),
    "low": ("low", "l", "low_price"),
    "close": ("close", "c", "close_price"),
    "volume": ("volume", "v", "vol", "base_volume", "volume_base"),
    "quote_volume": ("quote_volume", "quote_asset_volume", "qav", "volume_quote", "quote_vol"),
    "trades": ("trades", "count", "number_of_trades", "num_trades", "n_trades", "trade_count"),
    "close_time": ("close_time", "closetime", "kline_close_time"),
}
SUFFIXES = (".csv", ".csv.gz", ".zip", ".feather", ".arrow", ".json", ".json.gz", ".parquet", ".pq")
DERIVATIVES = {"futures", "mark", "index", "premiumindex", "fundingrate", "funding", "perp", "swap"}
# Epoch bounds for sanity: a time outside them means a wrong unit or a wrong column.
MIN_MS, MAX_MS = 1_230_768_000_000, 4_102_444_800_000      # 2009-01-01 .. 2100-01-01


@dataclass
class _Raw:
    """What a reader found: columns by canonical name, plus what the file says about itself."""

    columns: dict[str, pa.ChunkedArray | pa.Array]
    meta_symbol: str | None = None
    meta_interval: str | None = None


def import_paths(store: Store, paths: list[str | Path], exchange: str = "binance",
                 symbol: str | None = None, timeframe: str | None = None) -> list[dict]:
    """Read, validate and store every file in ``paths``; all or nothing.

    Returns one dict per file: path, symbol, timeframe, bars, first, last, added, replaced,
    unchanged. Stores a market-rules snapshot for each symbol the exchange has none for.
    """
    wanted_symbol = None if symbol is None else normalize_symbol(symbol)
    if timeframe is not None:
        _check_interval(timeframe_ms(timeframe), f"--timeframe {timeframe}")
    if not paths:
        raise DatasetError("no files given: pass one or more paths to import")
    loaded = [load_file(Path(p), wanted_symbol, timeframe) for p in paths]
    results = store.write_many([(exchange, bars) for bars in loaded], [str(p) for p in paths])
    firsts: dict[str, Bars] = {}
    for bars in loaded:
        if bars.symbol not in firsts or bars.ts[0] < firsts[bars.symbol].ts[0]:
            firsts[bars.symbol] = bars
    for sym, bars in firsts.items():
        if store.rules(exchange, sym) is None:
            rules, source = rules_for(exchange, bars)
            store.save_rules(exchange, {sym: rules}, taken_at=int(bars.ts[0]), source=source)
    return [{"path": str(p), "symbol": b.symbol, "timeframe": b.timeframe, "bars": len(b),
             "first": ms_to_iso(int(b.ts[0])), "last": ms_to_iso(int(b.ts[-1])),
             "added": r.added, "replaced": r.replaced, "unchanged": r.unchanged}
            for p, b, r in zip(paths, loaded, results, strict=True)]


def load_file(path: Path, symbol: str | None = None, timeframe: str | None = None) -> Bars:
    """One file's bars, validated; ``symbol``/``timeframe`` are the user's (checked, not trusted)."""
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    name = path.name.lower()
    what = str(path)
    if name.endswith(".zip"):
        raw, inner = _read_zip(path)
        hints = _name_hints(path.name)
        if hints[0] is None:
            hints = _name_hints(inner)
    elif name.endswith((".csv", ".csv.gz")):
        raw, hints = _read_csv(_read_bytes(path), what), _name_hints(path.name)
    elif name.endswith((".json", ".json.gz")):
        raw, hints = _read_json(_read_bytes(path), what), _name_hints(path.name)
    elif name.endswith((".feather", ".arrow")):
        raw, hints = _read_arrow(path, what, feather=True), _name_hints(path.name)
    elif name.endswith((".parquet", ".pq")):
        raw, hints = _read_arrow(path, what, feather=False), _name_hints(path.name)
    else:
        raise DatasetError(f"{path}: unknown file type; import one of {', '.join(SUFFIXES)}")
    bars = _to_bars(raw, what)
    bars.symbol = _choose_symbol(path, hints[0], raw.meta_symbol, symbol)
    bars.timeframe = _choose_timeframe(bars, raw, hints[1], timeframe, what)
    validate_bars(bars, what)
    return bars


# --------------------------------------------------------------------------------------------
# readers


def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
        return gzip.decompress(data) if path.name.lower().endswith(".gz") else data
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"{path}: cannot read the file ({exc})") from None


def _read_zip(path: Path) -> tuple[_Raw, str]:
    try:
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.namelist() if m.lower().endswith(".csv") and not m.startswith("__MACOSX")]
            if not members:
                raise DatasetError(f"{path}: the ZIP archive holds no .csv file")
            if len(members) > 1:
                raise DatasetError(f"{path}: the ZIP archive holds {len(members)} CSV files; "
                                   "import archives of one kline file each, as Binance publishes them")
            data = archive.read(members[0])
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise DatasetError(f"{path}: not a readable ZIP archive ({exc}); download it again") from None
    return _read_csv(data, f"{path}:{members[0]}"), Path(members[0]).name


def _read_csv(data: bytes, what: str) -> _Raw:
    from pyarrow import csv

    text_start = data[:4096].decode("utf-8", "replace").lstrip("\ufeff")
    first_line = text_start.splitlines()[0] if text_start.strip() else ""
    if not first_line.strip():
        raise DatasetError(f"{what}: the file is empty")
    delimiter = max(",;\t", key=first_line.count)
    first_field = first_line.split(delimiter)[0].strip().strip('"')
    has_header = not _is_number(first_field)
    n = len(first_line.split(delimiter))
    if has_header:
        read_options = csv.ReadOptions(use_threads=True)
    else:
        if not 6 <= n <= len(BINANCE_COLUMNS):
            raise DatasetError(f"{what}: no header and {n} columns; expected Binance's 12 kline columns "
                               "(or time, open, high, low, close, volume), or a header naming the columns")
        read_options = csv.ReadOptions(column_names=list(BINANCE_COLUMNS[:n]), use_threads=True)
    convert = csv.ConvertOptions(strings_can_be_null=True)
    try:
        table = csv.read_csv(io.BytesIO(data.lstrip(b"\xef\xbb\xbf")), read_options=read_options,
                             parse_options=csv.ParseOptions(delimiter=delimiter), convert_options=convert)
    except pa.ArrowInvalid as exc:
        raise DatasetError(f"{what}: not a readable CSV file ({_first_line(exc)})") from None
    return _Raw(_canonical(table, what))


def _read_json(data: bytes, what: str) -> _Raw:
    try:
        rows = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{what}: not valid JSON ({exc})") from None
    if not isinstance(rows, list) or not rows:
        raise DatasetError(f"{what}: expected a non-empty JSON list of candles [[ms, open, high, low, close, volume], ...]")
    if all(isinstance(r, dict) for r in rows):
        try:
            table = pa.Table.from_pylist(rows)
        except (pa.ArrowException, TypeError) as exc:
            raise DatasetError(f"{what}: candles of mixed types ({_first_line(exc)})") from None
        return _Raw(_canonical(table, what))
    if not all(isinstance(r, list) and len(r) >= 6 for r in rows):
        raise DatasetError(f"{what}: every candle must be a list [ms, open, high, low, close, volume]")
    names = ("ts", *OHLCV)
    try:
        cols = {name: pa.array([r[i] for r in rows]) for i, name in enumerate(names)}
    except (pa.ArrowException, TypeError) as exc:
        raise DatasetError(f"{what}: candles hold values of mixed types ({_first_line(exc)})") from None
    return _Raw(cols)


def _read_arrow(path: Path, what: str, feather: bool) -> _Raw:
    try:
        if feather:
            from pyarrow import feather as fmt

            table = fmt.read_table(path)
        else:
            import pyarrow.parquet as pq

            table = pq.ParquetFile(path).read()       # (pq.read_table would import pyarrow.dataset: ~0.8 s)
    except (OSError, pa.ArrowException) as exc:
        kind = "Feather" if feather else "Parquet"
        raise DatasetError(f"{what}: not a readable {kind} file ({_first_line(exc)})") from None
    meta = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in (table.schema.metadata or {}).items()}
    return _Raw(_canonical(table, what), meta.get("symbol"), meta.get("interval") or meta.get("timeframe"))


def _canonical(table: pa.Table, what: str) -> dict[str, pa.ChunkedArray]:
    """The table's columns under their canonical names; a required one missing is an error."""
    by_name = {}
    for name in table.column_names:
        key = re.sub(r"[\s\-]+", "_", str(name).strip().lower())
        by_name.setdefault(key, name)
    out = {}
    for canonical, aliases in ALIASES.items():
        found = next((by_name[a] for a in aliases if a in by_name), None)
        if found is not None:
            out[canonical] = table.column(found)
        elif canonical in ("ts", *OHLCV):
            expected = "a time column (ts, open_time, date, timestamp, datetime or time)" if canonical == "ts" \
                else f"a '{canonical}' column"
            found_names = ", ".join(map(str, table.column_names)) or "none"
            raise DatasetError(f"{what}: missing {expected}; columns found: {found_names}")
    return out


# --------------------------------------------------------------------------------------------
# columns to bars


def _to_bars(raw: _Raw, what: str) -> Bars:
    cols = raw.columns
    ts = _times(cols["ts"], "time", what)
    values = {name: _numbers(cols[name], name, what, ts) for name in OHLCV}
    extra = {name: _numbers(cols[name], name, what, ts) for name in ("quote_volume", "trades") if name in cols}
    bars = Bars("", "", ts, *(values[c] for c in OHLCV), extra=extra)
    if "close_time" in cols:
        bars.extra["_close_time"] = _times(cols["close_time"], "close_time", what)
    return bars


def _times(column, name: str, what: str) -> np.ndarray:
    """Epoch milliseconds from timestamps, dates, ISO strings or epoch numbers (s, ms, µs, ns by magnitude)."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if arr.null_count:
        row = int(np.flatnonzero(arrow_to_numpy(arr.is_null().cast(pa.int64())) == 1)[0])
        raise DatasetError(f"{what}: {name} is missing at row {row + 1}")
    kind = arr.type
    if pa.types.is_timestamp(kind):
        per_ms = {"s": 1 / 1000, "ms": 1, "us": 1000, "ns": 1_000_000}[kind.unit]
        raw = arrow_to_numpy(arr.cast(pa.int64()))
        ms = raw * 1000 if per_ms < 1 else raw // int(per_ms)
    elif pa.types.is_date(kind):
        ms = arrow_to_numpy(arr.cast(pa.date64()).cast(pa.int64()))
    elif pa.types.is_integer(kind) or pa.types.is_floating(kind):
        raw = arrow_to_numpy(arr.cast(pa.float64()))
        if not np.isfinite(raw).all() or (raw != np.floor(raw)).any():
            raise DatasetError(f"{what}: {name} holds a value that is not a whole epoch time")
        ms = _epoch_to_ms(arrow_to_numpy(arr.cast(pa.int64())))
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        ms = _parse_time_strings(arr, name, what)
    else:
        raise DatasetError(f"{what}: {name} has type {kind}, not times")
    bad = (ms < MIN_MS) | (ms > MAX_MS)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DatasetError(f"{what}: {name} at row {i + 1} ({arr[i].as_py()}) is not a time between 2009 and 2100; "
                           "times must be epoch s, ms or µs, or ISO-8601")
    return ms.astype(np.int64)


def _epoch_to_ms(values: np.ndarray) -> np.ndarray:
    """Each value's unit told by its magnitude: seconds < 1e11 ≤ ms < 1e14 ≤ µs < 1e17 ≤ ns."""
    mag = np.abs(values)
    return np.select([mag < 10**11, mag < 10**14, mag < 10**17],
                     [values * 1000, values, values // 1000], values // 1_000_000)


def _parse_time_strings(arr: pa.Array, name: str, what: str) -> np.ndarray:
    import pandas as pd

    text = arr.to_pandas()
    if text.str.fullmatch(r"\s*-?\d+\s*").all():
        return _epoch_to_ms(text.astype(np.int64).to_numpy())
    try:
        parsed = pd.to_datetime(text, utc=True, format="ISO8601")
    except (ValueError, TypeError):
        parsed = pd.to_datetime(text, utc=True, errors="coerce", format="mixed")
        bad = parsed.isna().to_numpy()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DatasetError(f"{what}: {name} at row {i + 1} is {text.iloc[i]!r}, not a time") from None
    return parsed.dt.tz_localize(None).to_numpy().astype("datetime64[ms]").astype(np.int64)


def _numbers(column, name: str, what: str, ts: np.ndarray) -> np.ndarray:
    """A numeric column as float64 (missing → NaN, caught by validation with its time)."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type) or pa.types.is_decimal(arr.type):
        return arrow_to_numpy(arr.cast(pa.float64()))
    if pa.types.is_null(arr.type):
        return np.full(len(arr), np.nan)
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        trimmed = pc.utf8_trim_whitespace(arr)
        ok = pc.or_kleene(pc.is_null(trimmed), pc.match_substring_regex(
            trimmed, r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^(?i:nan)$"))
        okn = arrow_to_numpy(ok.cast(pa.int64())) == 1
        if not okn.all():
            i = int(np.flatnonzero(~okn)[0])
            raise DatasetError(f"{what}: {name} at {ms_to_iso(int(ts[i]))} is {arr[i].as_py()!r}, not a number")
        return arrow_to_numpy(pc.cast(trimmed, pa.float64()))
    raise DatasetError(f"{what}: {name} has type {arr.type}, not numbers")


# --------------------------------------------------------------------------------------------
# symbol and timeframe


def _name_hints(file_name: str) -> tuple[str | None, str | None]:
    """(symbol, interval) read from a file name, each None when it does not say."""
    stem = file_name
    while Path(stem).suffix.lower() in (".zip", ".csv", ".gz", ".json", ".feather", ".arrow", ".parquet", ".pq"):
        stem = Path(stem).stem
    tokens = [t for t in re.split(r"[-_.\s]+", stem) if t]
    if DERIVATIVES & {t.lower() for t in tokens}:
        raise DatasetError(f"{file_name}: looks like derivatives candles ({stem}); the harness replays spot only")
    interval = next((t for t in tokens if t in INTERVALS), None)
    symbol = None
    if len(tokens) >= 2 and tokens[0].isalnum() and tokens[0].isupper() and tokens[1] in QUOTE_ASSETS:
        symbol = f"{tokens[0]}/{tokens[1]}"                          # freqtrade: BTC_USDT-1m
    elif tokens and tokens[0].isalnum() and tokens[0].isupper():
        try:
            symbol = normalize_symbol(tokens[0])                     # Binance: BTCUSDT-1m-2024-01
        except UserError:
            symbol = None
    return symbol, interval


def _choose_symbol(path: Path, from_name: str | None, from_meta: str | None, given: str | None) -> str:
    meta = None
    if from_meta:
        try:
            meta = normalize_symbol(from_meta)
        except UserError:
            meta = None
    said = [(s, where) for s, where in ((from_name, "its name"), (meta, "its metadata"), (given, "--symbol")) if s]
    for s, where in said[1:]:
        if s != said[0][0]:
            raise DatasetError(f"{path}: {said[0][1]} says {said[0][0]} but {where} says {s}; "
                               "rename the file or fix --symbol")
    if not said:
        raise DatasetError(f"{path}: cannot tell which symbol the file holds; name it like BTCUSDT-1m-2024-01.csv "
                           "or pass --symbol BTC/USDT")
    return said[0][0]


def _choose_timeframe(bars: Bars, raw: _Raw, from_name: str | None, given: str | None, what: str) -> str:
    close_time = bars.extra.pop("_close_time", None)
    if len(bars) >= 2:
        found, how = infer_timeframe(bars.ts, what), "the bars are"
    elif close_time is not None:
        found, how = timeframe_name(int(close_time[0] - bars.ts[0] + 1)), "the close time says bars are"
    else:
        found, how = None, ""
    claims = [(tf, where) for tf, where in ((from_name, "the file name"), (raw.meta_interval, "the metadata"),
                                            (given, "--timeframe")) if tf]
    if found is None:
        if not claims:
            raise DatasetError(f"{what}: one bar cannot show its timeframe; pass --timeframe")
        found, how = claims[0][0], f"{claims[0][1]} says bars are"
    step = timeframe_ms(found)
    for tf, where in claims:
        if _claimed_ms(tf, where, what) != step:
            raise DatasetError(f"{what}: {how} {found} apart, but {where} says {tf}")
    _check_interval(step, what)
    return timeframe_name(step)


def _claimed_ms(tf: str, where: str, what: str) -> int:
    try:
        return timeframe_ms(tf)
    except UserError:
        raise DatasetError(f"{what}: {where} names an unknown timeframe {tf!r}") from None


def _check_interval(step: int, what: str) -> None:
    name = timeframe_name(step)
    if name not in INTERVALS:
        raise DatasetError(f"{what}: unknown timeframe {name} (bars {step // 1000:,} s apart); "
                           f"Binance intervals are {', '.join(INTERVALS)}")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
