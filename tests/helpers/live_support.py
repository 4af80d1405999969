"""Support for the live-staging tests: a market on disk, the paper exchange (in-process or as
``exchange serve``), the ``live`` command in a subprocess, the exchange's own view of the account
through a plain ccxt client, and the journal as a reader sees it.

Every wait is bounded, every subprocess has a timeout, every server is stopped.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import duckdb

from harness.config import load_config
from harness.datasets import Store
from harness.fills import FillConfig
from harness.journal import Journal, read_wal
from harness.model import DAY_MS, MarketRules, parse_time
from harness.paper_exchange import PaperExchange
from tests.exchange_support import ccxt_client, make_bars

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "config.toml"
# Distinctive values: the secrets test searches every output for them.
KEY = "qtlive-key-5c1f0e9a7b3d4e21a8"
SECRET = "qtlive-secret-8d2b6f4a1c9e7305bb"
SYMBOL = "BTC/USDT"
WIRE = "BTCUSDT"
T0 = parse_time("2025-06-01")
MINUTE = 60_000
RULES = MarketRules(SYMBOL, lot_step=0.00001, tick_size=0.01, min_qty=0.00001, min_notional=5.0)
CASH = 10_000.0
DAY = DAY_MS


# -- the market ---------------------------------------------------------------------------------


def write_market(datasets: Path, days: int = 3, seed: int = 11) -> Store:
    """``days`` of seeded 1m BTC/USDT bars from :data:`T0` under ``exchange=binance``, with rules."""
    store = Store(datasets)
    store.write("binance", make_bars(SYMBOL, days=days, seed=seed))
    store.save_rules("binance", {SYMBOL: RULES}, taken_at=T0, source="tests")
    return store


def source_bars(store: Store, start: int, end: int):
    return store.read("binance", SYMBOL, "1m", start, end)


def live_env(root: Path, key: str | None = KEY, secret: str | None = SECRET, **extra: str) -> dict[str, str]:
    """The environment of a CLI call in workspace ``root`` (nothing inherited that steers a run)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("QT_", "QUANTUM_TRADER_", "STAGING_")) and k not in ("HTTP_PROXY", "HTTPS_PROXY")}
    env.update(QT_DATASETS_DIR=str(root / "datasets"), QT_REPORTS_DIR=str(root / "reports"), QT_CONFIG=str(CONFIG),
               PYTHONUNBUFFERED="1")
    if key is not None:
        env["QT_EXECUTION_BINANCE_API_KEY"] = key
    if secret is not None:
        env["QT_EXECUTION_BINANCE_API_SECRET"] = secret
    env.update(extra)
    return env


def cli(env: dict[str, str], *args: str, timeout: float = 60, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python cli.py ARGS`` to completion (bounded)."""
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=cwd)


def config_for(strategy: str = "sma_cross", params: dict | None = None, timeframe: str = "1m",
               overrides: tuple[str, ...] = ()):
    """A live run's configuration through the real loader (no environment)."""
    values = {"run.strategy": strategy, "run.symbols": (SYMBOL,), "run.timeframe": timeframe, "run.cash": CASH}
    if params is not None:
        values["strategy.params"] = params
    return load_config(CONFIG, overrides=overrides, values=values, env={})


# -- waiting ------------------------------------------------------------------------------------


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.005):
    """Poll ``predicate`` until it is truthy (returns its value) or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# -- the paper exchange -------------------------------------------------------------------------


def paper_exchange(store: Store, speed: float, start: int, timeframe: str = "1m",
                   fill_config: FillConfig | None = None, **options) -> PaperExchange:
    """An in-process paper exchange (started) replaying ``start`` as the present, ``speed``× real time."""
    return PaperExchange(store, [SYMBOL], exchange="binance", timeframe=timeframe, start=start, speed=speed,
                         balances={"USDT": CASH}, api_key=KEY, api_secret=SECRET,
                         fill_config=fill_config or FillConfig.from_config(config_for()), **options).start()


_LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:\d+) .*replaying (\S+) as (\S+?);")


class ServedExchange:
    """``python cli.py exchange serve --port 0`` in a subprocess, as a user runs it."""

    def __init__(self, env: dict[str, str], folder: Path, *args: str):
        self.env, self.folder, self.args = env, folder, args
        self.proc: subprocess.Popen | None = None
        self.url = ""
        self.offset = 0              # exchange time - recorded time

    def __enter__(self) -> ServedExchange:
        self.err = (self.folder / "exchange.err").open("w")
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "exchange", "serve", "--port", "0",
                                      *self.args], stdout=subprocess.PIPE, stderr=self.err, env=self.env, text=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline() if ready else ""
        found = _LISTENING.search(line)
        if not found:
            self.__exit__()
            raise AssertionError(f"exchange serve did not start: {line!r} "
                                 f"{(self.folder / 'exchange.err').read_text()[-2000:]}")
        self.url = found.group(1)
        self.offset = parse_time(found.group(3)) - parse_time(found.group(2))
        return self

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self.err.close()


# -- the live command ---------------------------------------------------------------------------


class LiveProcess:
    """``python cli.py live ...`` in a subprocess; stdout and stderr go to files under ``folder``."""

    def __init__(self, env: dict[str, str], folder: Path, *args: str, name: str = "live"):
        folder.mkdir(parents=True, exist_ok=True)
        self.out_path, self.err_path = folder / f"{name}.out", folder / f"{name}.err"
        self._out, self._err = self.out_path.open("w"), self.err_path.open("w")
        self.args = args
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "live", *args], stdout=self._out,
                                     stderr=self._err, env=env, cwd=folder)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"live {' '.join(self.args)} did not finish in {timeout:.0f} s; "
                                 f"stderr: {self.stderr[-3000:]}") from None
        finally:
            self._close()

    def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is flushed beyond what is already in the OS."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self._close()

    def _close(self) -> None:
        for fh in (self._out, self._err):
            if not fh.closed:
                fh.close()

    @property
    def stdout(self) -> str:
        if not self._out.closed:
            self._out.flush()
        return self.out_path.read_text()

    @property
    def stderr(self) -> str:
        if not self._err.closed:
            self._err.flush()
        return self.err_path.read_text()

    def summary(self) -> dict:
        return json.loads(self.stdout)


@contextmanager
def killed_on_exit(process: LiveProcess):
    """Make sure a live process does not outlive its test."""
    try:
        yield process
    finally:
        if process.alive():
            process.kill()
        process._close()


# -- the journal --------------------------------------------------------------------------------


def run_ids(reports: Path) -> list[str]:
    return sorted(p.name for p in reports.iterdir() if p.is_dir()) if reports.exists() else []


def new_run_id(reports: Path, before: list[str], timeout: float = 30) -> str:
    """The run folder that appears under ``reports`` (bounded wait)."""
    found = wait_until(lambda: [r for r in run_ids(reports) if r not in before], timeout, "a new run folder")
    assert len(found) == 1, found
    return found[0]


def wal(reports: Path, run_id: str, table: str | None = None) -> list[dict]:
    """Rows of the run's write-ahead log (complete lines only), optionally of one table."""
    return [row for _, t, row in read_wal(Journal(reports).wal_path(run_id)) if table is None or t == table]


def latest_orders(rows: list[dict]) -> dict[str, dict]:
    """order_id → its latest row."""
    out: dict[str, dict] = {}
    for row in rows:
        out[row["order_id"]] = row
    return out


def catalog_rows(reports: Path, sql: str, params: list | None = None) -> list[tuple]:
    """A read-only query of the DuckDB catalog (waits out a writer holding the lock)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            con = duckdb.connect(str(reports / "journal.duckdb"), read_only=True)
            break
        except duckdb.IOException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


# -- the exchange's own view ----------------------------------------------------------------------


class ExchangeView:
    """The account as the exchange reports it, read with a plain ccxt client (no harness code)."""

    def __init__(self, url: str, key: str = KEY, secret: str = SECRET):
        self.client = ccxt_client(url, key, secret)

    def trades(self) -> list[dict]:
        return list(self.client.privateGetMyTrades({"symbol": WIRE, "fromId": 1, "limit": 1000}))

    def orders(self) -> list[dict]:
        return list(self.client.privateGetAllOrders({"symbol": WIRE, "orderId": 1, "limit": 1000}))

    def balances(self) -> dict[str, float]:
        account = self.client.privateGetAccount()
        return {b["asset"]: float(b["free"]) + float(b["locked"]) for b in account["balances"]}


def in_process_view(exchange: PaperExchange) -> tuple[list[dict], list[dict], dict[str, float]]:
    """(trades, orders, balances) read from an in-process paper exchange's account (wire shapes)."""
    from harness.paper_account import order_json, trade_json

    now = exchange.now()
    account = exchange.account
    with account.lock:
        trades = [trade_json(t, WIRE) for t in account.my_trades(SYMBOL, now, from_id=1, limit=1000)]
        orders = [order_json(o, WIRE) for o in account.all_orders(SYMBOL, now, from_id=1, limit=1000)]
        balances = {a: f + lk for a, (f, lk) in account.balances(now).items()}
    return trades, orders, balances


def journal_balances(fills, cash: float = CASH) -> dict[str, float]:
    """USDT and BTC the journal's fills leave from a start of ``cash`` USDT and no BTC."""
    usdt, btc = cash, 0.0
    for f in fills.itertuples(index=False):
        notional = f.qty * f.price
        if f.side == "buy":
            usdt -= notional
            btc += f.qty
        else:
            usdt += notional
            btc -= f.qty
        if f.fee_asset == "BTC":
            btc -= f.fee
        else:
            usdt -= f.fee
    return {"USDT": usdt, "BTC": btc}


def assert_fills_match_trades(fills, trades: list[dict]) -> None:
    """The journal's fills are the exchange's trades, one to one by trade id, field by field."""
    journal_ids = [str(x) for x in fills["exchange_trade_id"]]
    assert len(journal_ids) == len(set(journal_ids)), f"a trade booked twice: {sorted(journal_ids)}"
    exchange_ids = [str(t["id"]) for t in trades]
    assert exchange_ids, "the exchange holds no trades: nothing to compare"
    assert sorted(journal_ids, key=int) == sorted(exchange_ids, key=int), \
        f"journal trade ids {sorted(journal_ids, key=int)} != exchange {sorted(exchange_ids, key=int)}"
    by_id = {str(t["id"]): t for t in trades}
    for f in fills.itertuples(index=False):
        t = by_id[str(f.exchange_trade_id)]
        assert f.side == ("buy" if t["isBuyer"] else "sell")
        assert f.qty == float(t["qty"]) and f.price == float(t["price"])
        assert abs(f.fee - float(t["commission"])) < 1e-12 and f.fee_asset == t["commissionAsset"]
        assert f.liquidity == ("maker" if t["isMaker"] else "taker")


def current_orders(orders):
    """One row per order: its latest state (by ``updated_at``; the catalog may hold stale rows)."""
    return orders.sort_values("updated_at", kind="stable").drop_duplicates("order_id", keep="last")


def assert_no_order_doubled(orders_journal, exchange_orders: list[dict]) -> None:
    """Every client order id reached the exchange at most once, each one is journaled once, and
    the journal knows the exchange's id of every order the exchange holds."""
    cids = [o["clientOrderId"] for o in exchange_orders]
    assert cids, "the exchange holds no orders: nothing to compare"
    assert len(cids) == len(set(cids)), f"an order was sent twice: {sorted(cids)}"
    journal = current_orders(orders_journal)
    journaled = list(journal["client_order_id"])
    assert len(journaled) == len(set(journaled))
    assert set(cids) <= set(journaled), f"orders on the exchange the journal does not hold: {set(cids) - set(journaled)}"
    by_cid = {o["clientOrderId"]: o for o in exchange_orders}
    for row in journal.itertuples(index=False):
        seen = by_cid.get(row.client_order_id)
        if seen is None:
            assert row.status == "rejected", f"{row.order_id} {row.status} never reached the exchange"
            continue
        assert str(row.exchange_order_id) == str(seen["orderId"]), (row, seen)


def assert_order_states_match(orders_journal, fills, exchange_orders: list[dict]) -> None:
    """Each order's current state in the journal (status, filled quantity) is the exchange's, and
    its filled quantity is the sum of its journaled fills."""
    by_cid = {o["clientOrderId"]: o for o in exchange_orders}
    per_order = fills.groupby("order_id")["qty"].sum()
    current = current_orders(orders_journal)
    assert len(current) and by_cid.keys() & set(current["client_order_id"]), "no journaled order on the exchange"
    for row in current.itertuples(index=False):
        assert abs(row.filled_qty - per_order.get(row.order_id, 0.0)) < 1e-9, row
        seen = by_cid.get(row.client_order_id)
        if seen is not None:
            assert row.status == seen["status"].lower(), (row, seen)
            assert abs(row.filled_qty - float(seen["executedQty"])) < 1e-9, (row, seen)


def assert_fills_per_order_match(fills, orders_journal, exchange_orders: list[dict]) -> None:
    """Σ journaled fills of each order = the exchange's executed quantity of that order."""
    per_order = fills.groupby("order_id")["qty"].sum()
    cid_of = dict(zip(orders_journal["order_id"], orders_journal["client_order_id"], strict=True))
    assert exchange_orders, "the exchange holds no orders: nothing to compare"
    for order in exchange_orders:
        mine = [oid for oid, cid in cid_of.items() if cid == order["clientOrderId"]]
        assert len(mine) == 1, order
        assert abs(per_order.get(mine[0], 0.0) - float(order["executedQty"])) < 1e-9, (mine[0], order)


def journal_status(reports: Path, run_id: str) -> str:
    return Journal(reports).run_row(run_id)["status"]


def tail(text: str, n: int = 3000) -> str:
    return text[-n:]


