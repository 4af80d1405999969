"""``python cli.py replay``, ``runs``, ``runs show`` and ``sql`` used as a user would (DESIGN 3.1).

One workspace holds two days of 1m bars and one good replay; every bad invocation after it
must exit 2 with exactly one line on stderr, no traceback, and leave the journal as it was.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.helpers.market import CONFIG, ROOT, RULES, random_walk, write_market

SUMMARY_KEYS = {"run_id", "mode", "strategy", "params", "symbols", "timeframe", "start", "end", "bars", "orders",
                "fills", "trades", "risk_denials", "final_equity", "return_pct", "max_drawdown_pct", "sharpe",
                "verdict", "report"}


class Workspace:
    def __init__(self, root: Path):
        self.root = root
        self.reports = root / "reports"
        self.env = {**os.environ, "QT_DATASETS_DIR": str(root / "datasets"), "QT_REPORTS_DIR": str(self.reports),
                    "QT_CONFIG": str(CONFIG)}
        for var in ("STAGING_MODE", "QT_DEBUG"):
            self.env.pop(var, None)

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True, text=True,
                              env=self.env, cwd=self.root, timeout=120)

    def snapshot(self) -> dict:
        """What the journal holds on disk: every file under reports/ with its bytes."""
        return {str(p.relative_to(self.reports)): p.read_bytes() for p in sorted(self.reports.rglob("*"))
                if p.is_file()}


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    write_market(root / "datasets", [random_walk("BTC/USDT", 2 * 1440, seed=12, volume=400.0)],
                 {"BTC/USDT": RULES}, exchange="binance")
    return Workspace(root)


@pytest.fixture(scope="module")
def good_run(ws):
    proc = ws.cli("replay", "--days", "1", "--strategy", "sma_cross", "--param", "fast=5", "--param", "slow=20",
                  "--no-report", "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)            # the whole of stdout is one JSON document


def test_json_summary_has_the_documented_keys(good_run, ws):
    s = good_run
    assert SUMMARY_KEYS <= set(s)
    assert (s["mode"], s["strategy"], s["symbols"], s["timeframe"]) == ("replay", "sma_cross", ["BTC/USDT"], "1m")
    assert s["params"] == {"fast": 5, "slow": 20, "fraction": 0.95}
    assert (s["start"], s["end"]) == ("2024-03-02T00:00:00Z", "2024-03-03T00:00:00Z")     # the last recorded day
    assert s["bars"] == 1440 and s["fills"] > 0 and s["orders"] > 0 and s["trades"] > 0
    assert s["verdict"] in ("PASS", "FAIL") and s["report"] is None
    assert isinstance(s["final_equity"], float) and s["return_pct"] == pytest.approx(
        (s["final_equity"] / 10_000 - 1) * 100, abs=1e-5)
    assert (ws.reports / s["run_id"] / "run.json").exists()


def test_sql_count_agrees_with_the_runs_parquet(good_run, ws):
    run_id = good_run["run_id"]
    proc = ws.cli("sql", f"select count(*) as n from fills where run_id = '{run_id}'", "--json")
    assert proc.returncode == 0, proc.stderr
    n = pq.read_table(ws.reports / run_id / "fills.parquet").num_rows
    assert json.loads(proc.stdout) == [{"n": n}] and n == good_run["fills"]


def test_runs_and_runs_show_list_the_run(good_run, ws):
    run_id = good_run["run_id"]
    listing = ws.cli("runs")
    assert listing.returncode == 0, listing.stderr
    (line,) = [line for line in listing.stdout.splitlines() if run_id in line]
    assert "sma_cross" in line and "completed" in line
    shown = ws.cli("runs", "show", run_id, "--json")
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)
    assert (info["run_id"], info["status"], info["mode"]) == (run_id, "completed", "replay")
    for table in ("orders", "fills", "trades", "equity"):
        assert info["counts"][table] == pq.read_table(ws.reports / run_id / f"{table}.parquet").num_rows


BAD = [
    ("more days than recorded", ["--days", "7"],
     "recorded from 2024-03-01T00:00:00Z to 2024-03-03T00:00:00Z"),
    ("unknown strategy", ["--days", "1", "--strategy", "nope"], "unknown strategy 'nope'"),
    ("strategy file that does not exist", ["--days", "1", "--strategy", "nothere.py:Nope"], "nothere.py not found"),
    ("unknown --param name", ["--days", "1", "--param", "nope=1"], "unknown parameter 'nope'"),
    ("--param of the wrong type", ["--days", "1", "--param", "fast=abc"], "fast"),
    ("--param without a value", ["--days", "1", "--param", "fast"], "malformed"),
    ("parameters that contradict", ["--days", "1", "--param", "fast=40"], "fast"),
    ("malformed --set", ["--days", "1", "--set", "fees"], "malformed"),
    ("--set of an unknown key", ["--days", "1", "--set", "fees.nope=1"], "fees.nope"),
    ("--set of the wrong type", ["--days", "1", "--set", "fees.taker_bps=abc"], "fees.taker_bps"),
    ("unknown profile", ["--days", "1", "--profile", "nope"], "unknown profile 'nope'"),
    ("symbol not recorded", ["--days", "1", "--symbols", "ETH/USDT"], "ETH/USDT"),
    ("unreadable --end", ["--days", "1", "--end", "yesterday"], "yesterday"),
    ("unknown timeframe", ["--days", "1", "--timeframe", "7x"], "7x"),
]


@pytest.fixture(scope="module")
def bad_results(good_run, ws):
    """Every bad invocation (run side by side to save time), with the journal before and after."""
    before = ws.snapshot()
    with ThreadPoolExecutor(max_workers=4) as pool:
        procs = dict(zip([b[0] for b in BAD], pool.map(lambda b: ws.cli("replay", *b[1], "--no-report", "--json"), BAD),
                         strict=True))
    return before, procs, ws.snapshot()


@pytest.mark.parametrize("name, says", [(b[0], b[2]) for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_one_line_exit_2_and_leaves_the_journal_untouched(bad_results, name, says):
    before, procs, after = bad_results
    proc = procs[name]
    assert proc.returncode == 2, proc
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert says in lines[0]
    assert after == before, f"journal changed: {sorted(set(after) ^ set(before))}"


def test_more_days_than_recorded_writes_nothing_in_a_fresh_workspace(tmp_path):
    fresh = Workspace(tmp_path)
    write_market(tmp_path / "datasets", [random_walk("BTC/USDT", 1440, seed=2)], exchange="binance")
    proc = fresh.cli("replay", "--days", "7", "--end", "2024-03-02")
    assert proc.returncode == 2 and "recorded from" in proc.stderr and "(1.0 days)" in proc.stderr
    assert not fresh.reports.exists() or list(fresh.reports.iterdir()) == []


def test_unknown_run_id_is_one_line(good_run, ws):
    proc = ws.cli("runs", "show", "nosuchrun")
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "nosuchrun" in lines[0] and "Traceback" not in proc.stderr
