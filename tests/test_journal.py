"""harness.journal: the round trip through DuckDB and Parquet, unknown run ids, and readers and
writers waiting while another process holds the DuckDB file lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness import journal as journal_module
from harness.errors import JournalError, RunNotFound
from harness.journal import SCHEMAS, TABLES, Journal, table_from_rows
from harness.runs import run_sql
from tests.helpers.market import CONFIG, ROOT, T0

MIN = 60_000


def sample_tables() -> dict[str, pa.Table]:
    """A small hand-made run: one round trip, a rejection, a signal."""
    return {
        "orders": table_from_rows("orders", [
            {"order_id": "O1", "client_order_id": "qt1", "exchange_order_id": "", "ts": T0, "symbol": "BTC/USDT",
             "side": "buy", "type": "market", "qty": 1.5, "price": None, "stop_price": None, "status": "filled",
             "reason": "", "filled_qty": 1.5, "avg_price": 100.0, "origin": "strategy", "updated_at": T0 + MIN},
            {"order_id": "O2", "client_order_id": "qt2", "exchange_order_id": "", "ts": T0 + MIN, "symbol": "BTC/USDT",
             "side": "sell", "type": "limit", "qty": 1.5, "price": 101.5, "stop_price": None, "status": "filled",
             "reason": "", "filled_qty": 1.5, "avg_price": 101.5, "origin": "strategy", "updated_at": T0 + 3 * MIN},
            {"order_id": "O3", "client_order_id": "qt3", "exchange_order_id": "", "ts": T0 + 2 * MIN,
             "symbol": "BTC/USDT", "side": "buy", "type": "market", "qty": 0.01, "price": None, "stop_price": None,
             "status": "rejected", "reason": "Filter failure: NOTIONAL", "filled_qty": 0.0, "avg_price": None,
             "origin": "strategy", "updated_at": T0 + 2 * MIN},
        ]),
        "fills": table_from_rows("fills", [
            {"fill_id": "F1", "order_id": "O1", "ts": T0 + MIN, "symbol": "BTC/USDT", "side": "buy", "qty": 1.5,
             "price": 100.0, "fee": 0.15, "fee_asset": "USDT", "liquidity": "taker", "exchange_trade_id": ""},
            {"fill_id": "F2", "order_id": "O2", "ts": T0 + 3 * MIN, "symbol": "BTC/USDT", "side": "sell", "qty": 1.5,
             "price": 101.5, "fee": 0.15225, "fee_asset": "USDT", "liquidity": "maker", "exchange_trade_id": ""},
        ]),
        "trades": table_from_rows("trades", [
            {"trade_id": "T1", "symbol": "BTC/USDT", "opened_at": T0 + MIN, "closed_at": T0 + 3 * MIN, "qty": 1.5,
             "entry_price": 100.0, "exit_price": 101.5, "pnl": 1.94775, "return_pct": 1.2985, "fees": 0.30225},
        ]),
        "equity": table_from_rows("equity", [
            {"ts": T0 + (i + 1) * MIN, "cash": c, "positions_value": v, "equity": c + v, "gross_exposure": g,
             "drawdown_pct": d}
            for i, (c, v, g, d) in enumerate([(10_000.0, 0.0, 0.0, 0.0), (9_849.85, 150.3, 0.015, 0.0),
                                              (9_849.85, 151.0, 0.0151, 0.0), (10_001.94775, 0.0, 0.0, 0.0)])]),
        "events": table_from_rows("events", [
            {"ts": T0 + 2 * MIN, "kind": "order_rejected", "symbol": "BTC/USDT", "detail": "Filter failure: NOTIONAL",
             "request_id": "", "data": json.dumps({"code": -1013, "order_id": "O3"})},
        ]),
        "signals": table_from_rows("signals", [
            {"ts": T0 + MIN, "symbol": "BTC/USDT", "signal": 0.4, "confidence": 0.62, "model_version": "m1",
             "acted": True},
        ]),
    }


def start(journal: Journal, run_id: str, started_at: int = T0 + 10 * MIN) -> None:
    row = {"run_id": run_id, "mode": "replay", "strategy": "sma_cross", "params": {"fast": 5, "slow": 20},
           "symbols": ["BTC/USDT"], "timeframe": "1m", "start": T0, "end": T0 + 4 * MIN, "cash": 10_000.0,
           "profile": None, "config_digest": "abc", "data_fingerprint": "def", "code_version": "test",
           "started_at": started_at, "status": "running", "exchange": "testex", "synthetic": False, "bars": 4}
    journal.start_run(row, {**row, "config": {"run": {"cash": 10_000.0}}})


@pytest.fixture
def journal(tmp_path) -> Journal:
    j = Journal(tmp_path / "reports")
    start(j, "20240301T001000Z-sma_cross-aaaaaa")
    j.finish_run("20240301T001000Z-sma_cross-aaaaaa", sample_tables(),
                 {"status": "completed", "finished_at": T0 + 11 * MIN, "final_equity": 10_001.94775})
    return j


RUN = "20240301T001000Z-sma_cross-aaaaaa"


def test_round_trip_through_duckdb_and_parquet(journal):
    written = sample_tables()
    from_db = journal.read_tables(RUN)
    for name in TABLES:
        assert from_db[name].equals(written[name]), name
        on_disk = pq.read_table(journal.run_dir(RUN) / f"{name}.parquet")
        assert on_disk.schema.equals(SCHEMAS[name]) and "run_id" not in on_disk.schema.names
        assert on_disk.equals(written[name]), name
    record = journal.load(RUN)
    assert record.run_id == RUN
    assert (record.run["status"], record.run["final_equity"], record.run["symbols"]) == \
        ("completed", 10_001.94775, "BTC/USDT")
    assert json.loads(record.run["params"]) == {"fast": 5, "slow": 20}
    assert record.run["end"].timestamp() * 1000 == T0 + 4 * MIN
    assert record.run_json["config"] == {"run": {"cash": 10_000.0}}
    assert list(record.fills["fill_id"]) == ["F1", "F2"]
    assert str(record.fills["ts"].dt.tz) == "UTC"
    assert record.orders.set_index("order_id").loc["O3", "reason"] == "Filter failure: NOTIONAL"
    assert [r["run_id"] for r in journal.list_runs()] == [RUN]


def test_finishing_a_run_again_replaces_its_rows(journal):
    tables = sample_tables()
    tables["fills"] = tables["fills"].slice(0, 1)
    journal.finish_run(RUN, tables, {"status": "completed"})
    with journal.connect(read_only=True) as con:
        assert con.execute("select count(*) from fills where run_id = ?", [RUN]).fetchone()[0] == 1
        assert con.execute("select count(*) from orders where run_id = ?", [RUN]).fetchone()[0] == 3
    assert pq.read_table(journal.run_dir(RUN) / "fills.parquet").num_rows == 1


def test_runs_do_not_see_each_others_rows(journal):
    start(journal, "20240301T002000Z-sma_cross-bbbbbb", started_at=T0 + 20 * MIN)
    journal.finish_run("20240301T002000Z-sma_cross-bbbbbb", {"fills": sample_tables()["fills"].slice(1, 1)},
                       {"status": "completed"})
    assert journal.read_tables(RUN)["fills"].num_rows == 2
    other = journal.read_tables("20240301T002000Z-sma_cross-bbbbbb")
    assert other["fills"].column("fill_id").to_pylist() == ["F2"] and other["orders"].num_rows == 0
    assert [r["run_id"] for r in journal.list_runs()] == ["20240301T002000Z-sma_cross-bbbbbb", RUN]   # newest first


def test_unknown_run_id_raises_run_not_found(journal):
    with pytest.raises(RunNotFound, match=r"no run 'nosuchrun' in .*journal\.duckdb.*python cli\.py runs"):
        journal.load("nosuchrun")
    assert journal.run_row("aaaaaa")["run_id"] == RUN            # a unique fragment is enough
    start(journal, "20240301T002000Z-sma_cross-bbbbbb")
    with pytest.raises(RunNotFound, match="did you mean"):
        journal.run_row("sma_cross")                              # ambiguous


def test_reading_an_absent_journal(tmp_path):
    empty = Journal(tmp_path / "nothing")
    assert empty.list_runs() == []
    with pytest.raises(RunNotFound, match="no journal at .*run a replay first"):
        empty.load("any")


@pytest.mark.parametrize("command", [["report"], ["gate"]])          # `runs show`: test_replay_cli
def test_unknown_run_id_is_one_line_from_the_cli(journal, command):
    env = {**os.environ, "QT_REPORTS_DIR": str(journal.root), "QT_DATASETS_DIR": str(journal.root.parent / "ds"),
           "QT_CONFIG": str(CONFIG)}
    proc = subprocess.run([sys.executable, str(ROOT / "cli.py"), *command, "nosuchrun"], capture_output=True,
                          text=True, env=env, cwd=journal.root.parent, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc
    assert len(lines) == 1 and "nosuchrun" in lines[0] and "Traceback" not in proc.stderr
    assert proc.stdout == ""


# -- the DuckDB file lock ----------------------------------------------------------------------

HOLDER = textwrap.dedent("""
    import sys, time
    import duckdb
    con = duckdb.connect(sys.argv[1])          # read-write: an exclusive lock on the file
    con.execute("select count(*) from runs").fetchone()
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    con.close()
""")


class LockHolder:
    """Another process that opens the journal read-write and keeps it for ``hold`` seconds."""

    def __init__(self, path, hold: float):
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), str(hold)], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if line.strip() != "locked":
            self.wait()
            raise AssertionError(f"lock holder did not start: {line!r}")
        self.since = time.monotonic()

    def wait(self) -> None:
        _, err = self.proc.communicate(timeout=60)        # also closes the pipes
        assert self.proc.returncode == 0, err


def test_readers_and_writers_wait_for_a_brief_lock(journal):
    import duckdb

    hold = 1.0
    holder = LockHolder(journal.db_path, hold)
    with pytest.raises(duckdb.IOException, match="(?i)lock"):       # the lock is real: a bare open fails
        duckdb.connect(str(journal.db_path), read_only=True)
    record = journal.load(RUN)                     # read side: waits, then reads
    waited = time.monotonic() - holder.since
    holder.wait()
    assert waited >= hold * 0.7, f"did not wait for the lock ({waited:.2f}s)"
    assert record.fills["fill_id"].tolist() == ["F1", "F2"]

    holder = LockHolder(journal.db_path, hold)
    journal.update_run(RUN, status="halted")       # write side: waits, then writes
    waited = time.monotonic() - holder.since
    holder.wait()
    assert waited >= hold * 0.7
    assert journal.run_row(RUN)["status"] == "halted"

    holder = LockHolder(journal.db_path, hold)
    columns, rows = run_sql(journal, journal.root.parent / "ds", "select count(*) as n from fills")   # sql
    waited = time.monotonic() - holder.since
    holder.wait()
    assert waited >= hold * 0.7
    assert (columns, rows) == (["n"], [(2,)])


def test_a_lock_held_too_long_is_a_clear_journal_error(journal, monkeypatch):
    monkeypatch.setattr(journal_module, "LOCK_TIMEOUT_S", 0.3)
    holder = LockHolder(journal.db_path, 1.0)
    try:
        with pytest.raises(JournalError, match=r"cannot open .*journal\.duckdb"):
            journal.list_runs()
    finally:
        holder.wait()
