"""Sources: `data import` of real Binance data in every supported format, `data synth`, and bad input.

Real files come from ../shared (the `shared_data` fixture); the format fixtures are built in
tmp_path from those real bars. Imports go through cli.py, as a user would run them.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness.bars import validate_bars
from harness.datasets import Store
from harness.model import DAY_MS, MINUTE_MS, ms_to_iso, parse_time
from harness.sources.synthetic import synth_bars, synth_to_store
from tests.conftest import BTC_1M, ROOT, need_shared

END = parse_time("2025-01-01")


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def real_rows(shared: Path, name: str, rows: int) -> dict[str, np.ndarray]:
    """The first ``rows`` real 1m bars of a shipped file: ts (ms) and OHLCV."""
    table = pq.read_table(shared / "klines_1m" / name).slice(0, rows)
    out = {"ts": table.column("open_time").cast(pa.int64()).to_numpy()}
    out.update({c: table.column(c).to_numpy() for c in ("open", "high", "low", "close", "volume")})
    return out


def binance_lines(bars: dict[str, np.ndarray], unit: str = "ms") -> list[str]:
    """Rows as in data.binance.vision kline CSVs (12 columns, prices with 8 decimals)."""
    scale = {"ms": 1, "us": 1000}
    lines = []
    for i, ts in enumerate(bars["ts"]):
        u = scale[unit] if isinstance(unit, str) else scale[unit[i]]
        o, h, low, c, v = (bars[k][i] for k in ("open", "high", "low", "close", "volume"))
        lines.append(f"{ts * u},{o:.8f},{h:.8f},{low:.8f},{c:.8f},{v:.8f},{(ts + MINUTE_MS) * u - 1},"
                     f"{v * c:.8f},{1000 + i},{v / 2:.8f},{v * c / 2:.8f},0")
    return lines


BINANCE_HEADER = ("open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
                  "taker_buy_quote_volume,ignore")


def write_lines(path: Path, lines: list[str], header: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(([header] if header else []) + lines) + "\n")
    return path


def zip_of(path: Path, member: str, text: str) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(member, text)
    return path


def assert_stored(datasets: Path, bars: dict[str, np.ndarray], exchange: str = "binance",
                  symbol: str = "BTC/USDT") -> None:
    got = Store(datasets).read(exchange, symbol, "1m")
    assert np.array_equal(got.ts, bars["ts"])
    for c in ("open", "high", "low", "close", "volume"):
        assert np.array_equal(getattr(got, c), bars[c]), c


def ok(result, code: int = 0):
    assert result.code == code, result
    return result.json()


# -- real data through the CLI ----------------------------------------------------------------


@pytest.fixture(scope="module")
def btc_imported(tmp_path_factory) -> tuple[Path, list[dict]]:
    """The 90-day BTCUSDT 1m file imported once through cli.py: (datasets dir, its --json output)."""
    need_shared()
    root = tmp_path_factory.mktemp("btc") / "datasets"
    proc = subprocess.run([sys.executable, str(ROOT / "cli.py"), "--datasets-dir", str(root), "data", "import",
                           str(BTC_1M), "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return root, json.loads(proc.stdout)


def test_real_file_imports_with_no_gaps_and_a_second_import_changes_nothing(btc_imported, cli):
    root, first = btc_imported
    where = ("--datasets-dir", str(root))
    assert first[0] | {"path": None} == {"path": None, "symbol": "BTC/USDT", "timeframe": "1m", "bars": 130_708,
                                         "first": "2025-05-20T00:00:00Z", "last": "2025-08-18T18:27:00Z",
                                         "added": 130_708, "replaced": 0, "unchanged": 0}
    listing = ok(cli(*where, "data", "list", "--json"))
    assert listing == [{"exchange": "binance", "symbol": "BTC/USDT", "timeframe": "1m",
                        "first": "2025-05-20T00:00:00Z", "last": "2025-08-18T18:27:00Z",
                        "bars": 130_708, "gaps": 0, "missing_bars": 0}]
    before = tree(root)
    again = ok(cli(*where, "data", "import", str(BTC_1M), "--json"))
    assert (again[0]["added"], again[0]["unchanged"]) == (0, 130_708)
    assert tree(root) == before
    report = ok(cli(*where, "data", "check", "--json"))
    assert report[0]["ok"] and report[0]["gaps"] == 0 and report[0]["issues"] == []
    snapshot = json.loads(next((root / "exchange=binance" / "_rules").glob("*.json")).read_text())
    assert snapshot["taken_at"] == "2025-05-20T00:00:00Z" and "Binance spot" in snapshot["source"]
    assert {"tick_size": 0.01, "lot_step": 0.00001, "min_notional": 5.0}.items() <= snapshot["symbols"]["BTC/USDT"].items()


def test_hourly_bars_resampled_from_1m_equal_the_shipped_hourly_file(btc_imported, shared_data, workspace, cli):
    ok(cli("data", "import", str(shared_data / "klines_1h" / "BTCUSDT.parquet"), "--json"))
    mine = Store(btc_imported[0]).read("binance", "BTC/USDT", "1h")
    ref = Store(workspace / "datasets").read("binance", "BTC/USDT", "1h", int(mine.ts[0]), int(mine.ts[-1]) + 3_600_000)
    assert len(mine) == 2178 and ms_to_iso(int(mine.ts[-1])) == "2025-08-18T17:00:00Z"   # 18:00 is unfinished
    assert np.array_equal(mine.ts, ref.ts)
    for c in ("open", "high", "low", "close"):
        assert np.array_equal(getattr(mine, c), getattr(ref, c)), c
    np.testing.assert_allclose(mine.volume, ref.volume, rtol=1e-9)
    assert set(ref.extra) == {"quote_volume", "trades"} and not np.isnan(ref.extra["trades"]).any()
    listing = ok(cli("data", "list", "--json"))
    assert (listing[0]["timeframe"], listing[0]["bars"], listing[0]["gaps"]) == ("1h", 37_923, 1)   # 2023-03-24 halt


def test_binance_csv_with_and_without_header_and_zipped_store_the_same_bars(shared_data, workspace, cli, tmp_path):
    bars = real_rows(shared_data, "BTCUSDT_20240101_20240201.parquet", 3 * 1440)
    lines = binance_lines(bars)
    plain = write_lines(tmp_path / "plain" / "BTCUSDT-1m-2024-01.csv", lines)
    headed = write_lines(tmp_path / "headed" / "BTCUSDT-1m-2024-01.csv", lines, BINANCE_HEADER)
    zipped = zip_of(tmp_path / "BTCUSDT-1m-2024-01.zip", "BTCUSDT-1m-2024-01.csv", "\n".join(lines))
    results = ok(cli("data", "import", str(plain), str(headed), str(zipped), "--json"))
    assert [(r["added"], r["unchanged"]) for r in results] == [(4320, 0), (0, 4320), (0, 4320)]
    assert results[0]["first"] == "2024-01-01T00:00:00Z" and results[0]["timeframe"] == "1m"
    assert_stored(workspace / "datasets", bars)
    got = Store(workspace / "datasets").read("binance", "BTC/USDT", "1m")
    assert np.array_equal(got.extra["trades"], 1000.0 + np.arange(4320))
    np.testing.assert_allclose(got.extra["quote_volume"], bars["volume"] * bars["close"], rtol=1e-12)


def test_microsecond_timestamps_are_read_value_by_value(shared_data, workspace, cli, tmp_path):
    bars = real_rows(shared_data, "BTCUSDT_20250520_20250818.parquet", 2 * 1440)
    micro = zip_of(tmp_path / "BTCUSDT-1m-2025-05.zip", "BTCUSDT-1m-2025-05.csv", "\n".join(binance_lines(bars, "us")))
    mixed = write_lines(tmp_path / "BTCUSDT-1m-2025-05.csv",            # ms, then µs (files joined across the switch)
                        binance_lines(bars, ["ms"] * 1440 + ["us"] * 1440))
    results = ok(cli("data", "import", str(micro), str(mixed), "--json"))
    assert results[0]["first"] == "2025-05-20T00:00:00Z" and results[0]["last"] == "2025-05-21T23:59:00Z"
    assert [(r["added"], r["unchanged"]) for r in results] == [(2880, 0), (0, 2880)]
    assert_stored(workspace / "datasets", bars)


def test_freqtrade_json_and_feather_candles(shared_data, workspace, cli, tmp_path):
    from pyarrow import feather

    bars = real_rows(shared_data, "ETHUSDT_20240101_20240201.parquet", 1000)
    candles = [[int(t), *(float(bars[c][i]) for c in ("open", "high", "low", "close", "volume"))]
               for i, t in enumerate(bars["ts"])]
    (tmp_path / "ETH_USDT-1m.json").write_text(json.dumps(candles))
    table = pa.table({"date": pa.array(bars["ts"] * 1_000_000, pa.int64()).cast(pa.timestamp("ns", tz="UTC")),
                      **{c: bars[c] for c in ("open", "high", "low", "close", "volume")}})
    feather.write_feather(table, tmp_path / "ETH_USDT-1m.feather")
    results = ok(cli("data", "import", str(tmp_path / "ETH_USDT-1m.json"), str(tmp_path / "ETH_USDT-1m.feather"),
                     "--json"))
    assert [(r["symbol"], r["added"], r["unchanged"]) for r in results] == [("ETH/USDT", 1000, 0), ("ETH/USDT", 0, 1000)]
    assert_stored(workspace / "datasets", bars, symbol="ETH/USDT")


def test_ohlcv_csv_with_naive_iso_times_and_parquet_named_by_metadata(shared_data, workspace, cli, tmp_path):
    bars = real_rows(shared_data, "BNBUSDT_20240101_20240201.parquet", 500)
    times = [ms_to_iso(int(t)).replace("T", " ").rstrip("Z") for t in bars["ts"]]    # tz-naive: UTC
    lines = [",".join([t, *(repr(float(bars[c][i])) for c in ("open", "high", "low", "close", "volume"))])
             for i, t in enumerate(times)]
    csv = write_lines(tmp_path / "candles.csv", lines, "Date,Open,High,Low,Close,Volume")
    naive = pa.array(bars["ts"], pa.int64()).cast(pa.timestamp("ms"))
    table = pa.table({"timestamp": naive, **{c: bars[c] for c in ("open", "high", "low", "close", "volume")}})
    pq.write_table(table.replace_schema_metadata({"symbol": "BNBUSDT"}), tmp_path / "export.parquet")
    results = ok(cli("data", "import", str(csv), "--symbol", "BNBUSDT", "--timeframe", "1m", "--json"))
    again = ok(cli("data", "import", str(tmp_path / "export.parquet"), "--json"))
    assert (results[0]["added"], again[0]["symbol"], again[0]["unchanged"]) == (500, "BNB/USDT", 500)
    assert_stored(workspace / "datasets", bars, symbol="BNB/USDT")
    rules = Store(workspace / "datasets").rules("binance", "BNB/USDT")
    assert (rules.tick_size, rules.lot_step, rules.min_notional) == (0.01, 0.001, 5.0)


def test_rules_are_inferred_from_decimals_for_unknown_pairs(shared_data, workspace, cli, tmp_path):
    bars = real_rows(shared_data, "ETHUSDT_20240101_20240201.parquet", 100)
    write_lines(tmp_path / "ETHBTC-1m-2024-01.csv", binance_lines(bars))
    ok(cli("data", "import", str(tmp_path / "ETHBTC-1m-2024-01.csv"), "--json"))
    snapshot = json.loads(next((workspace / "datasets" / "exchange=binance" / "_rules").glob("*.json")).read_text())
    assert "inferred from the decimals" in snapshot["source"]
    assert snapshot["symbols"]["ETH/BTC"]["tick_size"] == 0.01 and snapshot["taken_at"] == "2024-01-01T00:00:00Z"


# -- synthetic --------------------------------------------------------------------------------


def test_data_check_finds_the_gap_of_a_halt(workspace, cli):
    made = ok(cli("data", "synth", "--symbols", "BTC/USDT,ETH/USDT", "--days", "3", "--scenario", "halt",
                  "--end", "2025-01-01", "--json"))
    assert [m["symbol"] for m in made] == ["BTC/USDT", "ETH/USDT"] and made[0]["last"] == "2024-12-31T23:59:00Z"
    reports = ok(cli("data", "check", "--json"), code=1)
    assert [r["symbol"] for r in reports] == ["BTC/USDT", "ETH/USDT"]
    for report in reports:
        assert report["exchange"] == "synthetic" and not report["ok"]
        assert report["gaps"] == 1 and 120 <= report["missing_bars"] <= 360
    store = Store(workspace / "datasets")
    assert store.rules("synthetic", "BTC/USDT").tick_size == 0.01


def test_synthetic_bars_are_seeded(tmp_path):
    a = synth_bars("BTC/USDT", 2, seed=7, end=END)
    b = synth_bars("BTCUSDT", 2, seed=7, end=END)
    assert all(np.array_equal(getattr(a, c), getattr(b, c)) for c in ("ts", "open", "high", "low", "close", "volume"))
    assert not np.array_equal(a.close, synth_bars("BTC/USDT", 2, seed=8, end=END).close)
    eth = synth_bars("ETH/USDT", 2, seed=7, end=END)
    assert not np.allclose(np.diff(np.log(a.close)), np.diff(np.log(eth.close)))
    one, two = Store(tmp_path / "one"), Store(tmp_path / "two")
    synth_to_store(one, ["BTC/USDT"], days=2, seed=7, end=END)
    synth_to_store(two, ["BTC/USDT"], days=2, seed=7, end=END)
    assert one.fingerprint("synthetic", ["BTC/USDT"], "1m") == two.fingerprint("synthetic", ["BTC/USDT"], "1m")


def test_synthetic_bars_look_like_a_market():
    bars = synth_bars("BTC/USDT", 30, seed=11, end=END)
    validate_bars(bars)
    assert len(bars) == 30 * 1440 and bars.ts[-1] == END - MINUTE_MS
    assert 40_000 < bars.open[0] < 80_000
    r = np.diff(np.log(bars.close))
    assert ((r - r.mean()) ** 4).mean() / r.var() ** 2 > 6                         # fat tails
    a = np.abs(r)
    assert np.corrcoef(a[:-1], a[1:])[0, 1] > 0.1                                   # volatility clustering
    assert np.corrcoef(np.abs(np.log(bars.close / bars.open)), bars.volume)[0, 1] > 0.3   # volume with |return|
    hour = (bars.ts % DAY_MS) // 3_600_000
    by_hour = np.array([bars.volume[hour == h].mean() for h in range(24)])
    assert by_hour.max() / by_hour.min() > 1.3 and 12 <= by_hour.argmax() <= 18        # intraday seasonality
    assert np.array_equal(bars.open[1:], bars.close[:-1])
    for c in ("open", "high", "low", "close"):
        assert np.allclose(getattr(bars, c) * 100, np.round(getattr(bars, c) * 100), rtol=0, atol=1e-6)
    assert np.allclose(bars.volume * 1e5, np.round(bars.volume * 1e5), rtol=0, atol=1e-6)
    assert 2_000 < synth_bars("ETH/USDT", 1, end=END).open[0] < 4_000
    assert 80 < synth_bars("DOGE/USDT", 1, end=END).open[0] < 120


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_scenarios_do_what_they_say(seed):
    crash = synth_bars("ETH/USDT", 20, seed=seed, scenario="crash", end=END)
    drawdown = 1 - crash.close / np.maximum.accumulate(crash.close)
    assert 0.15 <= drawdown.max() <= 0.30
    assert (crash.close[360:] / crash.close[:-360]).min() < 0.88         # fast: over 12% within 6 hours
    assert crash.close[-1] > crash.close.min() * 1.1                     # and a recovery
    trend = synth_bars("SOL/USDT", 20, seed=seed, scenario="trend", end=END)
    assert 1.24 <= trend.close[-1] / trend.open[0] <= 1.46
    halt = synth_bars("BTC/USDT", 20, seed=seed, scenario="halt", end=END)
    steps = np.diff(halt.ts) // MINUTE_MS
    assert (steps > 1).sum() == 1 and 120 <= steps.max() - 1 <= 360


def test_coarser_synthetic_timeframes_are_resampled_from_1m():
    from harness.bars import resample

    minute = synth_bars("BTC/USDT", 3, seed=5, scenario="crash", end=END)
    for timeframe in ("15m", "1h", "1d"):
        bars = synth_bars("BTC/USDT", 3, timeframe=timeframe, seed=5, scenario="crash", end=END)
        expected = resample(minute, timeframe, complete_until=END)
        assert np.array_equal(bars.ts, expected.ts) and np.array_equal(bars.close, expected.close)
        np.testing.assert_allclose(bars.volume, expected.volume, rtol=1e-12)
    daily = synth_bars("BTC/USDT", 3, timeframe="1d", seed=5, end=END + 5 * 3_600_000)
    assert daily.ts[-1] == END - DAY_MS                                  # end is rounded down to the timeframe
    hourly_halt = synth_bars("BTC/USDT", 3, timeframe="1h", seed=5, scenario="halt", end=END)
    assert (np.diff(hourly_halt.ts) > 3_600_000).sum() == 1              # a halt spans whole bars of any timeframe


def test_synth_ends_at_the_start_of_today_by_default(workspace, cli):
    from harness.sources.synthetic import default_end

    before = default_end()
    made = ok(cli("data", "synth", "--days", "1", "--json"))
    assert made[0]["last"] in {ms_to_iso(before - MINUTE_MS), ms_to_iso(default_end() - MINUTE_MS)}


# -- bad input: one line, exit 2, nothing written ---------------------------------------------


def _good_lines(n: int = 30, step: int = MINUTE_MS) -> list[str]:
    t0 = parse_time("2024-01-01")
    return [f"{t0 + i * step},{100 + i * 0.01:.2f},{100.5 + i * 0.01:.2f},{99.5 + i * 0.01:.2f},"
            f"{100 + (i + 1) * 0.01:.2f},{1 + i % 7}" for i in range(n)]


def _at(line: str, ms: int) -> str:
    return ",".join([str(ms), *line.split(",")[1:]])


def _spoil(lines: list[str], row: int, column: int, value: str) -> list[str]:
    cells = lines[row].split(",")
    cells[column] = value
    return lines[:row] + [",".join(cells)] + lines[row + 1:]


def _bad_case(tmp: Path, case: str) -> tuple[list[str], str]:
    """(arguments of `data import`, what the error must say) for one kind of bad input."""
    good = _good_lines()
    name = "BTCUSDT-1m-2024-01.csv"
    put = lambda lines, header=None, file=name: str(write_lines(tmp / file, lines, header))  # noqa: E731
    shuffled = good[:5] + [good[6], good[5]] + good[7:]

    def corrupt_zip() -> str:
        data = zip_of(tmp / "valid.zip", name, "\n".join(good)).read_bytes()
        (tmp / "BTCUSDT-1m-2024-02.zip").write_bytes(data[: len(data) // 2])
        return str(tmp / "BTCUSDT-1m-2024-02.zip")

    cases = {
        "missing column": lambda: ([put([g.rsplit(",", 1)[0] for g in good], "open_time,open,high,low,close")],
                                   "missing a 'volume' column; columns found: open_time, open, high, low, close"),
        "misnamed column": lambda: ([put(good, "open_time,open,high,low,price,volume")], "missing a 'close' column"),
        "unsorted timestamps": lambda: ([put(shuffled)], r"timestamps are not sorted \(2024-01-01T00:05:00Z comes after"),
        "duplicate timestamps": lambda: ([put(good[:8] + [good[7]] + good[8:])], "duplicate timestamp 2024-01-01T00:07:00Z"),
        "NaN price": lambda: ([put(_spoil(good, 3, 4, ""))], "close is missing, NaN or infinite at 2024-01-01T00:03:00Z"),
        "not a number": lambda: ([put(_spoil(good, 3, 4, "abc"))], "close at 2024-01-01T00:03:00Z is 'abc', not a number"),
        "negative price": lambda: ([put(_spoil(good, 4, 3, "-5"))], r"low is not positive \(-5.0\) at 2024-01-01T00:04:00Z"),
        "mixed spacing": lambda: ([put(good[:10] + [_at(good[10], parse_time("2024-01-01") + 630_000)])],
                                  r"mixed bar spacing \(mostly 1m, but 90s before 2024-01-01T00:10:30Z"),
        "corrupt zip": lambda: ([corrupt_zip()], "not a readable ZIP archive"),
        "unknown symbol": lambda: ([put(good, file="prices.csv")], "cannot tell which symbol the file holds"),
        "bad --symbol": lambda: ([put(good, file="prices.csv"), "--symbol", "FOO"], "cannot read symbol 'FOO'"),
        "symbol conflict": lambda: ([put(good), "--symbol", "ETH/USDT"], "its name says BTC/USDT but --symbol says ETH/USDT"),
        "unknown --timeframe": lambda: ([put(good), "--timeframe", "7x"], "unknown timeframe '7x'"),
        "unknown spacing": lambda: ([put(_good_lines(step=2 * MINUTE_MS), file="BTCUSDT-2024.csv")], "unknown timeframe 2m"),
        "timeframe mismatch": lambda: ([put(good), "--timeframe", "5m"], "the bars are 1m apart, but --timeframe says 5m"),
        "name interval mismatch": lambda: ([put(good, file="BTCUSDT-5m-2024-01.csv")], "but the file name says 5m"),
        "seconds mistaken": lambda: ([put([_at(line, i) for i, line in enumerate(good, 1)])],
                                     "is not a time between 2009 and 2100"),
        "derivatives": lambda: ([put(good, file="BTC_USDT_USDT-1m-futures.csv")], "the harness replays spot only"),
        "missing file": lambda: ([str(tmp / "nope.csv")], "no such file"),
        "unknown type": lambda: ([put(good, file="BTCUSDT-1m.txt")], "unknown file type"),
        "one bad file of two": lambda: ([put(good), put(shuffled, file="ETHUSDT-1m-2024-01.csv")], "ETHUSDT-1m-2024-01.csv"),
    }
    return cases[case]()


BAD_IDS = ["missing column", "misnamed column", "unsorted timestamps", "duplicate timestamps", "NaN price",
           "not a number", "negative price", "mixed spacing", "corrupt zip", "unknown symbol", "bad --symbol",
           "symbol conflict", "unknown --timeframe", "unknown spacing", "timeframe mismatch",
           "name interval mismatch", "seconds mistaken", "derivatives", "missing file", "unknown type",
           "one bad file of two"]


# These run as a subprocess, exactly as a user would; the rest of the matrix runs the same click
# group in-process (same code path, without paying an interpreter start per case).
SUBPROCESS_CASES = {"unsorted timestamps", "corrupt zip", "one bad file of two"}


@pytest.fixture
def cli_in_process():
    """Invoke cli.py's click group in this process; returns a CliResult like the `cli` fixture."""
    import importlib

    from click.testing import CliRunner

    from tests.conftest import CliResult

    group = importlib.import_module("cli").cli

    def run(*args: str) -> CliResult:
        result = CliRunner().invoke(group, list(args), catch_exceptions=False)
        return CliResult(result.exit_code, result.stdout, result.stderr)

    return run


@pytest.mark.parametrize("case", BAD_IDS)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, workspace, cli, cli_in_process, tmp_path):
    synth_to_store(Store(workspace / "datasets"), ["BTC/USDT"], days=1, seed=1, end=END)
    before = tree(workspace / "datasets")
    (tmp_path / "in").mkdir()
    args, message = _bad_case(tmp_path / "in", case)
    result = (cli if case in SUBPROCESS_CASES else cli_in_process)("data", "import", *args)
    assert result.code == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result
    assert re.search(message, lines[0]), lines[0]
    assert result.stdout == ""
    assert tree(workspace / "datasets") == before


def test_an_unreadable_config_is_one_line_exit_2(workspace, cli, tmp_path):
    bad = tmp_path / "config.toml"
    bad.write_text("[run\nstrategy = ")
    result = cli("--config", str(bad), "data", "fetch", "--symbols", "BTC/USDT", "--days", "1",
                 "--exchange-url", "http://127.0.0.1:9")
    assert result.code == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "is not valid TOML" in lines[0] and "Traceback" not in result.stderr
    assert tree(workspace / "datasets") == {}


def test_a_window_outside_what_is_recorded_is_a_clear_error(workspace):
    from harness.errors import DatasetError

    store = Store(workspace / "datasets")
    synth_to_store(store, ["BTC/USDT"], days=1, seed=1, end=END)
    with pytest.raises(DatasetError, match="recorded from 2024-12-31T00:00:00Z to 2025-01-01T00:00:00Z"):
        store.read("synthetic", "BTC/USDT", "1m", END + DAY_MS, END + 2 * DAY_MS)


def test_bad_zip_contents_and_empty_files_are_clear(tmp_path):
    from harness.errors import DatasetError
    from harness.sources.binance_files import load_file

    empty = zip_of(tmp_path / "BTCUSDT-1m-2024-01.zip", "readme.txt", "hello")
    with pytest.raises(DatasetError, match="holds no .csv file"):
        load_file(empty)
    (tmp_path / "BTCUSDT-1m-2024-03.csv").write_text("")
    with pytest.raises(DatasetError, match="the file is empty"):
        load_file(tmp_path / "BTCUSDT-1m-2024-03.csv")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.csv", "1,2,3,4,5,6")
        archive.writestr("b.csv", "1,2,3,4,5,6")
    (tmp_path / "BTCUSDT-1m-2024-04.zip").write_bytes(buffer.getvalue())
    with pytest.raises(DatasetError, match="holds 2 CSV files"):
        load_file(tmp_path / "BTCUSDT-1m-2024-04.zip")


def test_times_as_other_strings_offsets_and_a_single_bar(tmp_path):
    from harness.sources.binance_files import load_file

    rows = "1,2,0.5,1.5,3\n1.5,2,0.5,1.2,3\n"
    slashes = tmp_path / "ETHUSDT-export.csv"
    slashes.write_text("time,open,high,low,close,volume\n" + "".join(
        f"2024/01/01 00:0{i},{r}\n" for i, r in enumerate(rows.splitlines())))
    assert [ms_to_iso(int(t)) for t in load_file(slashes).ts] == ["2024-01-01T00:00:00Z", "2024-01-01T00:01:00Z"]
    offsets = tmp_path / "SOLUSDT.csv"
    offsets.write_text("date,open,high,low,close,volume\n" + "".join(
        f"2024-01-01T00:0{i}:00+02:00,{r}\n" for i, r in enumerate(rows.splitlines())))
    assert ms_to_iso(int(load_file(offsets).ts[0])) == "2023-12-31T22:00:00Z"
    single = tmp_path / "BTCUSDT-2024-01-01.csv"                      # one hourly kline: close_time tells
    single.write_text("1704067200000,42283.58,42554.57,42261.02,42475.23,1271.68108,1704070799999,0,0,0,0,0\n")
    bars = load_file(single)
    assert (bars.timeframe, len(bars), bars.symbol) == ("1h", 1, "BTC/USDT")
