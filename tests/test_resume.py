"""``kill -9`` at several points of a live run, ``live --resume RUN_ID`` after each (DESIGN 3.3,
3.8; issue 7): no fill missing, none doubled, no order sent twice.

One run against an in-process paper exchange (its fault injection holds or drops order requests),
the ``live`` command in a subprocess trading a fixed cycle (``tests/helpers/live_strategies.py``),
killed three times:

1. **right after a fill**: the kill lands the moment a buy's fill reaches the write-ahead log;
   ``report`` and ``gate`` read the killed run;
2. **an order in flight**: the exchange executed it but its reply is held back — the journal holds
   the order (written ahead), not its fill;
3. **an order that never reached the exchange**: every POST of it is dropped while the client
   retries — the journal holds it, the exchange does not.

Then a last resume runs to a clean stop, and the journal is compared with the exchange's own
``myTrades``, ``allOrders`` and account.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness.journal import Journal
from tests.helpers.live_support import (
    DAY,
    SYMBOL,
    T0,
    LiveProcess,
    assert_fills_match_trades,
    assert_fills_per_order_match,
    assert_no_order_doubled,
    assert_order_states_match,
    cli,
    in_process_view,
    journal_balances,
    killed_on_exit,
    latest_orders,
    live_env,
    new_run_id,
    paper_exchange,
    tail,
    wait_until,
    wal,
    write_market,
)

SPEED = 2000
CYCLE = f"{Path(__file__).resolve().parent / 'helpers' / 'live_strategies.py'}:Cycle"


@dataclass
class Scenario:
    root: Path
    run_id: str
    stages: dict = field(default_factory=dict)
    final: dict = field(default_factory=dict)

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    def positions_seen(self, pid: int) -> list[dict]:
        lines = (self.root / "positions.jsonl").read_text().splitlines()
        return [row for row in map(json.loads, lines) if row["pid"] == pid]


def _exchange_cids(exchange) -> dict[str, dict]:
    return {o["clientOrderId"]: o for o in in_process_view(exchange)[1]}


@pytest.fixture(scope="module")
def scenario(tmp_path_factory) -> Scenario:
    root = tmp_path_factory.mktemp("resume")
    store = write_market(root / "datasets")
    env = live_env(root)
    reports = root / "reports"
    logs = root / "logs"
    exchange = paper_exchange(store, SPEED, start=T0 + DAY)
    try:
        url = ("--exchange-url", exchange.url)
        start = ("--symbols", SYMBOL, "--strategy", CYCLE, "--param", f"log={root / 'positions.jsonl'}",
                 "--warmup", "5", "--duration", "600m", "--no-report")

        # 1. kill the moment the first buy's fill is in the write-ahead log
        live = LiveProcess(env, logs, *url, *start, name="start")
        with killed_on_exit(live):
            run_id = new_run_id(reports, [])
            fill = wait_until(lambda: [f for f in wal(reports, run_id, "fills") if f["side"] == "buy"], 60,
                              "the first buy's fill")[0]
            live.kill()
        s = Scenario(root, run_id)
        with ThreadPoolExecutor(2) as pool:
            report, gate = pool.map(lambda args: cli(env, *args), [("report", run_id), ("gate", run_id)])
        s.stages["after a fill"] = {
            "fill": fill, "record": Journal(reports).load(run_id), "status": Journal(reports).run_row(run_id)["status"],
            "exchange_trades": in_process_view(exchange)[0], "holding": in_process_view(exchange)[2]["BTC"],
            "report": report, "gate": gate, "stderr": live.stderr,
        }

        # 2. resume; the next order executes on the exchange but its reply is held back: kill
        held = exchange.faults.inject("timeout", 1, path="order", method="POST", delay_s=60)
        on_exchange = len(exchange.account.orders)
        live = LiveProcess(env, logs, "--resume", run_id, *url, "--duration", "600m", "--no-report", name="resume1")
        with killed_on_exit(live):
            wait_until(lambda: held.remaining <= 0 and len(exchange.account.orders) > on_exchange, 60,
                       "an order executed with its reply held back")
            live.kill()
        s.stages["in flight"] = {"wal_orders": latest_orders(wal(reports, run_id, "orders")),
                                 "exchange": _exchange_cids(exchange), "record": Journal(reports).load(run_id),
                                 "pid": live.proc.pid, "stderr": live.stderr}

        # 3. resume; every POST of the next order is dropped while the client retries: kill
        dropped = exchange.faults.inject("disconnect", 1000, path="order", method="POST")
        on_exchange = len(exchange.account.orders)
        live = LiveProcess(env, logs, "--resume", run_id, *url, "--duration", "600m", "--no-report", name="resume2")
        with killed_on_exit(live):
            wait_until(lambda: exchange.faults.served.get("disconnect", 0) >= 2, 60, "an order POST dropped twice")
            live.kill()
        exchange.faults.clear()
        assert dropped.remaining > 0
        s.stages["never sent"] = {"wal_orders": latest_orders(wal(reports, run_id, "orders")),
                                  "exchange": _exchange_cids(exchange), "exchange_orders_before": on_exchange,
                                  "after": len(exchange.account.orders), "stderr": live.stderr}

        # 4. the last resume runs to a clean stop
        live = LiveProcess(env, logs, "--resume", run_id, *url, "--duration", "60m", "--no-report", "--json",
                           name="resume3")
        with killed_on_exit(live):
            code = live.wait(120)
        trades, orders, balances = in_process_view(exchange)
        s.final = {"code": code, "stdout": live.stdout, "stderr": live.stderr, "trades": trades, "orders": orders,
                   "balances": balances, "record": Journal(reports).load(run_id)}
        return s
    finally:
        exchange.stop()


def test_a_fill_is_durable_the_moment_it_is_seen(scenario):
    stage = scenario.stages["after a fill"]
    assert stage["status"] == "running"                    # killed: nobody closed the run
    fill = stage["fill"]
    assert fill["fill_id"] in set(stage["record"].fills["fill_id"]), "Journal.load (catalog + log) has it"
    assert fill["exchange_trade_id"] in {str(t["id"]) for t in stage["exchange_trades"]}


def test_report_and_gate_read_the_killed_run(scenario):
    stage = scenario.stages["after a fill"]
    report, gate = stage["report"], stage["gate"]
    assert report.returncode == 0, report.stderr
    assert (scenario.reports / scenario.run_id / "report.html").stat().st_size > 0
    assert gate.returncode in (0, 1), gate.stderr                # a verdict (PASS or FAIL), not an error
    assert scenario.run_id in gate.stdout
    assert "Traceback" not in report.stderr + gate.stderr


def test_an_order_in_flight_is_in_the_journal_before_the_exchange_answers(scenario):
    stage = scenario.stages["in flight"]
    unanswered = [o for o in stage["wal_orders"].values() if o["status"] == "new" and not o["exchange_order_id"]]
    assert len(unanswered) == 1, unanswered
    order = unanswered[0]
    assert stage["exchange"][order["client_order_id"]]["status"] == "FILLED"     # executed; nobody heard
    assert order["order_id"] not in set(stage["record"].fills["order_id"])
    final = scenario.final["record"]
    booked = final.orders.drop_duplicates("order_id", keep="last").set_index("order_id").loc[order["order_id"]]
    assert booked["status"] == "filled" and booked["exchange_order_id"]
    assert (final.fills["order_id"] == order["order_id"]).sum() == 1, "booked once on resume"


def test_an_order_that_never_reached_the_exchange_is_closed_and_not_resent(scenario):
    stage = scenario.stages["never sent"]
    unsent = [o for o in stage["wal_orders"].values() if o["client_order_id"] not in stage["exchange"]]
    assert len(unsent) == 1, unsent
    order = unsent[0]
    assert order["status"] == "new"                         # written ahead, never confirmed
    assert stage["after"] == stage["exchange_orders_before"]
    final = scenario.final["record"].orders.drop_duplicates("order_id", keep="last").set_index("order_id")
    row = final.loc[order["order_id"]]
    assert row["status"] == "rejected" and "never reached the exchange" in row["reason"]
    assert order["client_order_id"] not in {o["clientOrderId"] for o in scenario.final["orders"]}, "re-sent"
    events = scenario.final["record"].events
    assert any(e.kind == "order_rejected" and order["order_id"] in e.data for e in events.itertuples())


def test_the_last_resume_completes_cleanly(scenario):
    final = scenario.final
    assert final["code"] == 0, tail(final["stderr"])
    summary = json.loads(final["stdout"])
    assert summary["run_id"] == scenario.run_id and summary["status"] == "completed"
    record = final["record"]
    assert record.run["status"] == "completed"
    kinds = list(record.events["kind"])
    assert kinds.count("run_resumed") == 3 and kinds.count("run_started") == 1
    assert "position_mismatch" not in kinds, "positions rebuilt from the journal agree with the exchange"
    for stderr in [final["stderr"]] + [s["stderr"] for s in scenario.stages.values()]:
        assert "Traceback" not in stderr


def test_journal_fills_are_the_exchange_trades_one_to_one(scenario):
    assert_fills_match_trades(scenario.final["record"].fills, scenario.final["trades"])


def test_no_order_was_sent_twice(scenario):
    record = scenario.final["record"]
    assert_no_order_doubled(record.orders, scenario.final["orders"])
    assert_fills_per_order_match(record.fills, record.orders, scenario.final["orders"])
    cids = [o["clientOrderId"] for o in scenario.final["orders"]]
    prefix = scenario.run_id[-6:] + "-qt"
    assert all(c.startswith(prefix) for c in cids)
    numbers = sorted(int(c[len(prefix):]) for c in cids)
    assert len(numbers) == len(set(numbers)) >= 4, "resumed runs continue the run's order numbers"


def test_balances_after_the_resumes_are_the_exchange_account(scenario):
    record, balances = scenario.final["record"], scenario.final["balances"]
    implied = journal_balances(record.fills)
    assert implied["USDT"] == pytest.approx(balances["USDT"], abs=1e-6)
    assert implied["BTC"] == pytest.approx(balances.get("BTC", 0.0), abs=1e-9)
    assert record.equity.iloc[-1]["cash"] == pytest.approx(balances["USDT"], abs=1e-6)


def test_the_resumed_strategy_sees_the_position_it_holds(scenario):
    held = scenario.stages["after a fill"]["holding"]
    assert held > 0.009
    first = scenario.positions_seen(scenario.stages["in flight"]["pid"])[0]
    assert first["size"] == pytest.approx(held, abs=1e-9)


def test_order_states_after_the_resumes_are_the_exchange_orders(scenario):
    record = scenario.final["record"]
    assert_order_states_match(record.orders, record.fills, scenario.final["orders"])
