"""``live --exchange-url`` end to end, as a user runs it: ``exchange serve`` in one process,
``live`` in another, a few hundred 1m bars at 3000× real time (DESIGN 3.8, 3.9; issue 7).

What the journal says must be what the exchange says: its fills are the exchange's own trades
(``myTrades``, read with a plain ccxt client), its orders the exchange's orders (``allOrders``),
and the balances they imply the exchange's account. The bars the run saw are tapped to
``datasets/exchange=binance-paper`` and replay. ``runs``, ``report`` and ``gate`` work from other
processes while the run writes, and neither the key nor the secret reaches any output.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from harness.datasets import Store
from harness.journal import Journal, RunRecord
from harness.model import ms_to_iso
from tests.helpers.live_support import (
    KEY,
    MINUTE,
    SECRET,
    SYMBOL,
    ExchangeView,
    LiveProcess,
    ServedExchange,
    assert_fills_match_trades,
    assert_no_order_doubled,
    assert_order_states_match,
    catalog_rows,
    cli,
    current_orders,
    journal_balances,
    killed_on_exit,
    live_env,
    new_run_id,
    source_bars,
    tail,
    wait_until,
    wal,
    write_market,
)

SPEED = 3000
DURATION_MIN = 300
WARMUP = 20


@dataclass
class Reader:
    """One call of a reading command made while the live run was writing."""

    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str
    overlapped: bool          # the live process was still running when the call returned


@dataclass
class E2E:
    root: Path
    env: dict
    run_id: str
    code: int
    summary: dict
    stderr: str
    exchange_err: str
    offset: int
    trades: list[dict]
    orders: list[dict]
    balances: dict[str, float]
    record: RunRecord
    readers: list[Reader] = field(default_factory=list)


@pytest.fixture(scope="module")
def e2e(tmp_path_factory) -> E2E:
    root = tmp_path_factory.mktemp("live_e2e")
    write_market(root / "datasets")
    env = live_env(root)
    reports = root / "reports"
    with ServedExchange(env, root, "--symbols", SYMBOL, "--speed", str(SPEED), "--exchange", "binance",
                        "--start", "2025-06-02T00:00:00Z") as exchange:
        live = LiveProcess(env, root / "logs", "--exchange-url", exchange.url, "--symbols", SYMBOL,
                           "--strategy", "sma_cross", "--param", "fast=3", "--param", "slow=8",
                           "--duration", f"{DURATION_MIN}m", "--warmup", str(WARMUP), "--json",
                           "--log-file", str(root / "logs" / "live.jsonl"))
        readers: list[Reader] = []

        def read(args: tuple[str, ...]) -> Reader:
            proc = cli(env, *args, timeout=60)
            return Reader(args, proc.returncode, proc.stdout, proc.stderr, live.alive())

        with killed_on_exit(live), ThreadPoolExecutor(3) as pool:
            run_id = new_run_id(reports, [])
            wait_until(lambda: wal(reports, run_id, "fills") or not live.alive(), 60, "the run's first fill")
            readers += pool.map(read, [("runs", "--json"), ("report", run_id), ("gate", run_id)])
            code = live.wait(120)
        view = ExchangeView(exchange.url)
        trades, orders, balances = view.trades(), view.orders(), view.balances()
        offset = exchange.offset
    exchange_err = (root / "exchange.err").read_text()
    summary = json.loads(live.stdout) if code == 0 else {}
    return E2E(root, env, run_id, code, summary, live.stderr, exchange_err, offset, trades, orders, balances,
               Journal(reports).load(run_id), readers)


def test_live_run_trades_and_completes(e2e):
    assert e2e.code == 0, tail(e2e.stderr)
    s = e2e.summary
    assert s["run_id"] == e2e.run_id and s["mode"] == "live-paper" and s["status"] == "completed"
    assert s["exchange"] == "binance-paper"
    assert s["bars"] >= DURATION_MIN * 0.9, s["bars"]          # a few hundred bars, none lost on the way
    assert len(e2e.record.fills) >= 10, "the strategy should have traded"
    assert "Traceback" not in e2e.stderr
    assert e2e.record.run["status"] == "completed"
    assert not [e for e in e2e.record.events.itertuples() if e.kind in ("exchange_error", "error", "data_gap")]
    span = (e2e.record.run["end"] - e2e.record.run["start"]).total_seconds() / 60
    assert DURATION_MIN <= span < DURATION_MIN * 1.25, f"a {DURATION_MIN}m run lasted {span:.0f}m of exchange time"


def test_journal_fills_are_the_exchange_trades(e2e):
    assert_fills_match_trades(e2e.record.fills, e2e.trades)


def test_journal_orders_are_the_exchange_orders(e2e):
    orders = current_orders(e2e.record.orders)
    assert_no_order_doubled(orders, e2e.orders)
    assert_order_states_match(orders, e2e.record.fills, e2e.orders)
    by_cid = {o["clientOrderId"]: o for o in e2e.orders}
    assert set(by_cid) == set(orders["client_order_id"]), "every order of the run reached the exchange"
    prefix = e2e.run_id[-6:] + "-qt"
    for row in orders.itertuples(index=False):
        seen = by_cid[row.client_order_id]
        assert row.client_order_id.startswith(prefix)
        assert row.status == seen["status"].lower() and row.side == seen["side"].lower()
        assert row.qty == float(seen["origQty"]) and row.type == seen["type"].lower()


def test_balances_in_the_journal_are_the_exchange_account(e2e):
    implied = journal_balances(e2e.record.fills)
    assert implied["USDT"] == pytest.approx(e2e.balances["USDT"], abs=1e-6)
    assert implied["BTC"] == pytest.approx(e2e.balances.get("BTC", 0.0), abs=1e-9)
    last = e2e.record.equity.iloc[-1]
    assert last["cash"] == pytest.approx(e2e.balances["USDT"], abs=1e-6)
    synced = [json.loads(e.data) for e in e2e.record.events.itertuples() if e.kind == "positions_synced"]
    assert synced and synced[0]["cash"] == pytest.approx(10_000.0) and synced[0]["positions"] == {SYMBOL: 0.0}


def test_catalog_holds_one_row_per_order(e2e):
    rows = catalog_rows(e2e.root / "reports", "SELECT count(*), count(DISTINCT order_id) FROM orders WHERE run_id = ?",
                        [e2e.run_id])[0]
    assert rows[0] == rows[1]
    assert e2e.summary["orders"] == len(e2e.orders)


def test_round_trips_close_when_fees_are_paid_in_the_base_asset(e2e):
    """A buy's fee comes out of the BTC received, so the sell leaves dust under one lot step:
    the round trip is closed all the same."""
    sells = int((e2e.record.fills["side"] == "sell").sum())
    assert sells >= 3
    closed = e2e.record.trades["closed_at"].notna().sum()
    assert closed == sells and e2e.summary["trades"] == sells


def test_tapped_bars_are_the_exchange_bars(e2e):
    store = Store(e2e.root / "datasets")
    tapped = store.read("binance-paper", SYMBOL, "1m")
    assert len(tapped) >= e2e.summary["bars"], "every bar the run saw (warm-up included) is tapped"
    assert np.all(np.diff(tapped.ts) == MINUTE), "tapped bars are contiguous"
    source = source_bars(store, int(tapped.ts[0]) - e2e.offset, int(tapped.ts[-1]) - e2e.offset + MINUTE)
    assert np.array_equal(source.ts + e2e.offset, tapped.ts)
    for column in ("open", "high", "low", "close", "volume"):
        assert np.array_equal(getattr(source, column), getattr(tapped, column)), column
    fills = e2e.record.fills
    first_fill = int(fills["ts"].iloc[0].value // 10**6)
    assert int(tapped.ts[0]) <= first_fill < int(tapped.ts[-1]) + MINUTE
    assert store.rules("binance-paper", SYMBOL, int(tapped.ts[0])) is not None, "the exchange's rules are kept beside"


def test_the_tapped_window_replays(e2e):
    tapped = Store(e2e.root / "datasets").read("binance-paper", SYMBOL, "1m")
    end = int(tapped.ts[-1]) + MINUTE
    days = 200 * MINUTE / 86_400_000
    proc = cli(e2e.env, "replay", "--days", repr(days), "--end", ms_to_iso(end), "--set", "run.exchange=binance-paper",
               "--strategy", "sma_cross", "--param", "fast=3", "--param", "slow=8", "--no-report", "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["exchange"] == "binance-paper" and summary["bars"] == 200 and summary["mode"] == "replay"
    assert summary["fills"] > 0


def test_runs_report_and_gate_work_while_the_run_writes(e2e):
    overlapping = [r for r in e2e.readers if r.overlapped]
    kinds = {r.args[0] for r in overlapping}
    assert kinds == {"runs", "report", "gate"}, f"readers that ran during the live run: {[r.args for r in e2e.readers]}"
    for r in e2e.readers:
        assert "Traceback" not in r.stderr, r.stderr
        if r.args[0] == "gate":
            assert r.code in (0, 1) and e2e.run_id in r.stdout, r.stderr       # a verdict, PASS or FAIL
        else:
            assert r.code == 0, r.stderr
    during = [json.loads(r.stdout) for r in overlapping if r.args[0] == "runs"]
    assert any(run["run_id"] == e2e.run_id and run["status"] == "running" for rows in during for run in rows)
    assert (e2e.root / "reports" / e2e.run_id / "report.html").exists()


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def test_secrets_reach_no_log_journal_or_report(e2e):
    needles = [KEY.encode(), SECRET.encode()]
    log_file = (e2e.root / "logs" / "live.jsonl").read_text()
    assert len(log_file.splitlines()) > 10, "the JSON log has lines to search"
    texts = {"live stderr": e2e.stderr, "live log file": log_file, "exchange stderr": e2e.exchange_err,
             "live stdout": json.dumps(e2e.summary)}
    texts.update({f"{r.args[0]} output": r.stdout + r.stderr for r in e2e.readers})
    for name, text in texts.items():
        for needle in needles:
            assert needle.decode() not in text, f"a secret in the {name}"
    run_dir = e2e.root / "reports" / e2e.run_id
    written = _files(e2e.root / "reports") + _files(e2e.root / "datasets")
    names = {p.name for p in written}
    assert {"journal.duckdb", "run.json", "journal.wal", "report.html", "fills.parquet", "orders.parquet"} <= names
    assert (run_dir / "journal.wal").stat().st_size > 0
    for path in written:
        data = path.read_bytes()
        for needle in needles:
            assert needle not in data, f"a secret in {path}"
    # DuckDB may compress strings on disk: also ask it, column by column
    columns = catalog_rows(e2e.root / "reports", "SELECT table_name, column_name FROM information_schema.columns "
                                                 "WHERE data_type = 'VARCHAR'")
    assert len(columns) > 20
    probes = " UNION ALL ".join(f"""SELECT '{t}.{c}', count(*) FROM "{t}" WHERE "{c}" LIKE $1 OR "{c}" LIKE $2"""
                                for t, c in columns)
    hits = {name: n for name, n in catalog_rows(e2e.root / "reports", probes, [f"%{KEY}%", f"%{SECRET}%"])}
    assert not any(hits.values()), f"a secret in {[name for name, n in hits.items() if n]}"
