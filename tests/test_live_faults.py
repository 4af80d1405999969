"""Exchange faults injected at the paper exchange during a live run (DESIGN 3.8, 3.9; issue 7):
timeouts, 5xx, 429, 418, dropped connections and a rejected order. The run keeps going, retries
only what is safe (an order is never doubled: ``allOrders`` holds each client id once), and
journals each fault.

The session runs in-process through ``harness.live.run_live`` (what ``live`` calls, telemetry
included) so the exchange adapter's client timeout can be shortened to 1 s (its default is 10 s)
and its backoff to 10 ms; ``execution.recv_window_ms`` is kept under the timeout, as the defaults
are (a request that outlives the client's patience must also outlive its recvWindow).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import harness.exchange as exchange_adapter
from harness.journal import Journal
from harness.live import LiveOptions, run_live
from tests.helpers.live_support import (
    DAY,
    KEY,
    MINUTE,
    SECRET,
    T0,
    assert_fills_match_trades,
    assert_fills_per_order_match,
    assert_no_order_doubled,
    config_for,
    in_process_view,
    paper_exchange,
    write_market,
)

CYCLE = f"{Path(__file__).resolve().parent / 'helpers' / 'live_strategies.py'}:Cycle"
CLIENT_TIMEOUT_S = 1.0
SPEED = 3000


@pytest.fixture(scope="module", autouse=True)
def impatient_client():
    """The adapter with a 1 s timeout and 10 ms backoff (the same code, shorter waits)."""
    defaults = exchange_adapter.ExchangeClient.__init__.__kwdefaults__
    saved = dict(defaults)
    defaults.update(timeout_s=CLIENT_TIMEOUT_S, backoff_s=0.01, max_backoff_s=0.08)
    yield
    defaults.clear()
    defaults.update(saved)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_market(tmp_path_factory.mktemp("faults") / "datasets")


class Armer(threading.Thread):
    """Arms one fault at a time on an endpoint; the next once the last was served and the exchange
    has taken a clean order since (orders) or ``spacing_s`` has passed (market data)."""

    def __init__(self, exchange, plan: list[tuple[str, dict]], path: str, method: str, spacing_s: float | None = None):
        super().__init__(daemon=True)
        self.exchange, self.plan, self.path, self.method, self.spacing_s = exchange, plan, path, method, spacing_s
        self.armed: list = []
        self.stop = threading.Event()

    def _wait(self, predicate) -> bool:
        while not self.stop.is_set():
            if predicate():
                return True
            time.sleep(0.002)
        return False

    def run(self) -> None:
        account = self.exchange.account
        for kind, options in self.plan:
            fault = self.exchange.faults.inject(kind, 1, path=self.path, method=self.method, **options)
            self.armed.append(fault)
            if not self._wait(lambda f=fault: f.remaining <= 0):
                return
            if self.spacing_s is not None:
                self.stop.wait(self.spacing_s)
            else:
                count = len(account.orders)
                self._wait(lambda c=count: len(account.orders) > c)

    @property
    def served(self) -> int:
        return sum(1 for f in self.armed if f.remaining <= 0)


@dataclass
class Outcome:
    summary: dict
    record: object
    trades: list[dict]
    orders: list[dict]
    served: dict[str, int]


def run_with_faults(root: Path, store, order_faults, market_faults=(), other=(), duration_min: int = 200,
                    recv_window_ms: int = 900, speed: float = SPEED) -> Outcome:
    exchange = paper_exchange(store, speed, start=T0 + DAY)
    armers = [Armer(exchange, list(order_faults), "order", "POST")]
    if market_faults:
        armers.append(Armer(exchange, list(market_faults), "klines", "GET", spacing_s=0.2))
    try:
        for path, method, kind, count, options in other:
            exchange.faults.inject(kind, count, path=path, method=method, **options)
        config = config_for(CYCLE, params={"period": 4}, overrides=(f"execution.recv_window_ms={recv_window_ms}",))
        options = LiveOptions(url=exchange.url, duration_ms=duration_min * MINUTE, warmup_bars=5, api_key=KEY,
                              api_secret=SECRET, install_signals=False, hooks={"report": False})
        for armer in armers:
            armer.start()
        journal = Journal(root / "reports")
        result = run_live(config, store, journal, options)
        for armer in armers:
            armer.stop.set()
            armer.join(5)
            assert armer.served == len(armer.plan), f"only {armer.served} of {armer.plan} faults were served"
        trades, orders, _ = in_process_view(exchange)
        return Outcome(result.summary, journal.load(result.run_id), trades, orders, dict(exchange.faults.served))
    finally:
        for armer in armers:
            armer.stop.set()
        exchange.stop()


ORDER_FAULTS = [
    ("error", {"status": 503}),                       # refused before execution: looked up, resent once
    ("rate_limit", {}),                               # 429
    ("ban", {}),                                      # 418
    ("timeout", {"delay_s": 1.5}),                    # executed, reply held past the client's timeout
    ("timeout", {"delay_s": 1.5, "before": True}),    # held before execution past the timeout and recvWindow
    ("disconnect", {}),                               # connection dropped without a reply
    ("reject", {}),                                   # -2010
    ("error", {"status": 500}),
]
MARKET_FAULTS = [("error", {"status": 502}), ("rate_limit", {}), ("ban", {}), ("timeout", {"delay_s": 1.5}),
                 ("disconnect", {})]
OTHER_FAULTS = [("myTrades", "GET", "error", 1, {"status": 503}), ("account", "GET", "rate_limit", 1, {}),
                ("time", "GET", "error", 1, {"status": 504})]
TEMPORARY = len(ORDER_FAULTS) - 1 + len(MARKET_FAULTS) + sum(f[3] for f in OTHER_FAULTS)


@pytest.fixture(scope="module")
def faulty(tmp_path_factory, store) -> Outcome:
    return run_with_faults(tmp_path_factory.mktemp("faulty"), store, ORDER_FAULTS, MARKET_FAULTS, OTHER_FAULTS)


def _events(record, kind: str) -> list[dict]:
    return [{"detail": e.detail, **json.loads(e.data or "{}")} for e in record.events.itertuples() if e.kind == kind]


def test_the_run_keeps_going_through_the_faults(faulty):
    s = faulty.summary
    assert s["status"] == "completed"
    assert s["bars"] >= 200 * 0.9
    assert faulty.record.run["status"] == "completed"
    kinds = {"timeout", "error", "rate_limit", "ban", "disconnect", "reject"}
    assert kinds <= set(faulty.served), faulty.served
    assert len(faulty.record.fills) >= 40, "the run traded through the faults"


def test_no_order_is_doubled_by_a_retry(faulty):
    assert_no_order_doubled(faulty.record.orders, faulty.orders)
    assert_fills_per_order_match(faulty.record.fills, faulty.record.orders, faulty.orders)


def test_every_trade_of_the_exchange_is_journaled_once(faulty):
    assert_fills_match_trades(faulty.record.fills, faulty.trades)


def test_a_rejected_order_is_journaled_with_its_code(faulty):
    rejected = [e for e in _events(faulty.record, "order_rejected") if e.get("code") == -2010]
    assert len(rejected) == 1, _events(faulty.record, "order_rejected")
    order_id = rejected[0]["order_id"]
    orders = faulty.record.orders.set_index("order_id")
    assert set(orders.loc[[order_id], "status"]) >= {"rejected"}
    cid = orders.loc[[order_id], "client_order_id"].iloc[0]
    assert cid not in {o["clientOrderId"] for o in faulty.orders}


def test_the_request_errors_are_counted(faulty):
    stats = _events(faulty.record, "exchange_stats")[-1]
    assert stats["errors"] >= TEMPORARY + 1, stats          # every fault the client saw, the reject included
    assert stats["requests"] > stats["errors"]


def test_each_fault_is_journaled_as_an_event(faulty):
    errors = _events(faulty.record, "exchange_error")
    assert len(errors) >= TEMPORARY, f"{len(errors)} exchange_error events for {TEMPORARY} faults: {errors}"


def test_an_order_whose_outcome_stays_unknown_is_not_written_off(tmp_path, store):
    outcome = run_with_faults(tmp_path, store, [("timeout", {"delay_s": 1.5})], duration_min=40,
                              other=[("order", "GET", "error", 6, {"status": 503})])
    assert_fills_match_trades(outcome.record.fills, outcome.trades)


def test_a_late_original_request_does_not_double_the_order(tmp_path, store):
    outcome = run_with_faults(tmp_path, store, [("timeout", {"delay_s": 1.5, "before": True})], duration_min=40,
                              recv_window_ms=5_000)
    cids = [o["clientOrderId"] for o in outcome.orders]
    assert cids, "no order reached the exchange"
    assert len(cids) == len(set(cids)), f"an order reached the exchange twice: {sorted(cids)}"
