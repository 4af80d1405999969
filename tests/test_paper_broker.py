"""Scenario tables of the paper broker (DESIGN 3.5): a few hand-written bars in, the exact fills out.

Each row replays a scripted strategy (tests/helpers/scripted.py) through the real store, feed,
strategy base, risk guard and :class:`PaperBroker`, and compares every fill (bar, side, qty,
price, fee, liquidity) and every order's final state with values worked out by hand.
Prices are on a 0.01 tick, quantities on a 0.001 lot, min notional 5 USDT; fees 10/10 bps in
USDT. Unless a row says otherwise, slippage is 0 and the volume cap is off, so each row shows
one rule. ``bar`` numbers are 1-based; an order "@ n" is sent when bar n closes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from harness import fills as fm
from harness.model import MINUTE_MS, MarketRules
from tests.helpers.market import RULES, T0, bars_from_rows, broker_replay

NOTIONAL, LOT, INSUFFICIENT = fm.REASON_NOTIONAL, fm.REASON_LOT_SIZE, fm.REASON_INSUFFICIENT
CASH = 10_000.0

#        open    high    low     close   volume
CALM = [(100.00, 100.50, 99.50, 100.20, 1000),
        (101.00, 101.50, 100.60, 101.20, 1000),
        (101.20, 101.80, 100.90, 101.50, 1000),
        (101.50, 102.00, 101.00, 101.80, 1000)]
DROP = [(100.00, 100.50, 99.50, 100.20, 1000),
        (100.20, 100.40, 99.60, 99.80, 1000),
        (98.50, 98.90, 98.00, 98.40, 1000),       # gaps down
        (98.40, 98.60, 97.50, 98.00, 1000)]
RISE = [(100.00, 100.50, 99.50, 100.20, 1000),
        (100.20, 100.80, 100.00, 100.60, 1000),
        (102.00, 102.50, 101.80, 102.30, 1000),   # gaps up
        (102.30, 102.90, 102.10, 102.70, 1000)]
THIN = [row[:4] + (10,) for row in CALM]          # 10 per bar: a 10% cap is 1.0 per bar
QUIET = [CALM[0], CALM[1][:4] + (0,), *CALM[2:]]  # bar 2 has no volume

NO_SLIP = ("slippage.bps=0", "fills.max_bar_volume_pct=0")
SLIP_2 = ("slippage.bps=2", "fills.max_bar_volume_pct=0")
CAP_10 = ("slippage.bps=0", "fills.max_bar_volume_pct=10")


def order(bar, side, qty, type="market", price=None, tag=None):
    step = {"bar": bar, "side": side, "type": type, "qty": qty, "price": price}
    if tag:
        step["tag"] = tag
    return step


def cancel(bar, tag):
    return {"bar": bar, "cancel": tag}


def buy(bar, qty, type="market", price=None, tag=None):
    return order(bar, "buy", qty, type, price, tag)


def sell(bar, qty, type="market", price=None, tag=None):
    return order(bar, "sell", qty, type, price, tag)


@dataclass
class Case:
    id: str
    bars: list
    script: list
    fills: list                 # (bar, side, qty, price, fee, liquidity)
    orders: list                # per order, in sending order: the columns that must match
    overrides: tuple = NO_SLIP
    cash: float = CASH
    marks: tuple = field(default=())


def F(bar, side, qty, price, fee, liquidity):
    return (bar, side, qty, price, fee, liquidity)


FILLED = {"status": "filled", "reason": ""}
RESTING = {"status": "new", "reason": ""}

CASES = [
    # -- market orders -----------------------------------------------------------------------
    Case("market buy fills at the next bar's open, not the signal bar's close", CALM, [buy(1, 1.0)],
         [F(2, "buy", 1.0, 101.00, 0.101, "taker")], [FILLED]),
    Case("market order sent on the last bar never fills", CALM, [buy(4, 1.0)], [], [RESTING]),
    Case("market buy slips up, rounded up to the tick", CALM, [buy(1, 1.0)],
         [F(2, "buy", 1.0, 101.03, 0.10103, "taker")], [FILLED], SLIP_2),          # 101.0202 → 101.03
    Case("market sell slips down, rounded down to the tick", CALM, [buy(1, 1.0), sell(2, 1.0)],
         [F(2, "buy", 1.0, 101.03, 0.10103, "taker"),
          F(3, "sell", 1.0, 101.17, 0.10117, "taker")], [FILLED, FILLED], SLIP_2),  # 101.17976 → 101.17
    # -- limit orders (maker) ----------------------------------------------------------------
    Case("limit buy traded through fills at the limit", DROP, [buy(1, 1.0, "limit", 99.70)],
         [F(2, "buy", 1.0, 99.70, 0.0997, "maker")], [FILLED]),
    Case("limit buy gapped through fills at the open", DROP, [buy(1, 1.0, "limit", 99.00)],
         [F(3, "buy", 1.0, 98.50, 0.0985, "maker")], [FILLED]),
    Case("limit buy whose price the low only touches does not fill", DROP, [buy(1, 1.0, "limit", 98.00)],
         [F(4, "buy", 1.0, 98.00, 0.098, "maker")], [FILLED]),                    # bar 3 low == 98.00
    Case("limit sell traded through fills at the limit", RISE, [buy(1, 1.0), sell(2, 1.0, "limit", 102.60)],
         [F(2, "buy", 1.0, 100.20, 0.1002, "taker"),
          F(4, "sell", 1.0, 102.60, 0.1026, "maker")], [FILLED, FILLED]),
    Case("limit sell gapped through fills at the open", RISE, [buy(1, 1.0), sell(2, 1.0, "limit", 101.00)],
         [F(2, "buy", 1.0, 100.20, 0.1002, "taker"),
          F(3, "sell", 1.0, 102.00, 0.102, "maker")], [FILLED, FILLED]),
    Case("limit sell whose price the high only touches does not fill", RISE,
         [buy(1, 1.0), sell(2, 1.0, "limit", 102.50)],
         [F(2, "buy", 1.0, 100.20, 0.1002, "taker"),
          F(4, "sell", 1.0, 102.50, 0.1025, "maker")], [FILLED, FILLED]),        # bar 3 high == 102.50
    # -- stop orders (taker) -----------------------------------------------------------------
    Case("stop buy triggers and fills from the stop", RISE, [buy(1, 1.0, "stop", 100.70)],
         [F(2, "buy", 1.0, 100.70, 0.1007, "taker")], [FILLED]),
    Case("stop buy triggers when the high touches it", RISE, [buy(1, 1.0, "stop", 100.80)],
         [F(2, "buy", 1.0, 100.80, 0.1008, "taker")], [FILLED]),
    Case("stop buy gapped over fills from the open, slipped up", RISE, [buy(1, 1.0, "stop", 101.00)],
         [F(3, "buy", 1.0, 102.03, 0.10203, "taker")], [FILLED], SLIP_2),         # 102.0204 → 102.03
    Case("stop sell triggers and fills from the stop", DROP, [buy(1, 1.0), sell(2, 1.0, "stop", 98.20)],
         [F(2, "buy", 1.0, 100.20, 0.1002, "taker"),
          F(3, "sell", 1.0, 98.20, 0.0982, "taker")], [FILLED, FILLED]),
    Case("stop sell gapped under fills from the open, slipped down", DROP, [buy(1, 1.0), sell(2, 1.0, "stop", 99.00)],
         [F(2, "buy", 1.0, 100.23, 0.10023, "taker"),                             # 100.22004 → 100.23
          F(3, "sell", 1.0, 98.48, 0.09848, "taker")], [FILLED, FILLED], SLIP_2), # 98.4803 → 98.48
    # -- fees --------------------------------------------------------------------------------
    Case("maker and taker fees follow the liquidity, in the quote asset", DROP,
         [buy(1, 1.0), buy(1, 1.0, "limit", 99.00)],
         [F(2, "buy", 1.0, 100.20, 0.07014, "taker"),
          F(3, "buy", 1.0, 98.50, 0.0197, "maker")], [FILLED, FILLED],
         NO_SLIP + ("fees.taker_bps=7", "fees.maker_bps=2")),
    # -- exchange filters --------------------------------------------------------------------
    Case("quantity rounded down to the lot step", CALM, [buy(1, 1.23456)],
         [F(2, "buy", 1.234, 101.00, 0.124634, "taker")], [{**FILLED, "qty": 1.234, "filled_qty": 1.234}]),
    Case("limit buy price rounded down to the tick", DROP, [buy(1, 1.0, "limit", 99.709)],
         [F(2, "buy", 1.0, 99.70, 0.0997, "maker")], [{**FILLED, "price": 99.70}]),
    Case("limit sell price rounded up to the tick", RISE, [buy(1, 1.0), sell(2, 1.0, "limit", 102.591)],
         [F(2, "buy", 1.0, 100.20, 0.1002, "taker"),
          F(4, "sell", 1.0, 102.60, 0.1026, "maker")], [FILLED, {**FILLED, "price": 102.60}]),
    Case("order under the min notional rejected with Binance's reason", CALM, [buy(1, 0.049)],
         [], [{"status": "rejected", "reason": NOTIONAL}]),                        # 0.049 × 100.20 = 4.91
    Case("order at the min notional passes", CALM, [buy(1, 0.05)],
         [F(2, "buy", 0.05, 101.00, 0.00505, "taker")], [FILLED]),                # 0.05 × 100.20 = 5.01
    Case("limit notional is valued at the limit price", DROP, [buy(1, 0.05, "limit", 99.00)],
         [], [{"status": "rejected", "reason": NOTIONAL}]),                        # 4.95 < 5
    Case("quantity under one lot rejected", CALM, [buy(1, 0.0004)],
         [], [{"status": "rejected", "reason": LOT}]),
    # -- spot balances -----------------------------------------------------------------------
    Case("selling what is not held is rejected", CALM, [sell(1, 1.0)],
         [], [{"status": "rejected", "reason": INSUFFICIENT}]),
    Case("selling more than held is rejected", CALM, [buy(1, 1.0), sell(2, 1.5)],
         [F(2, "buy", 1.0, 101.00, 0.101, "taker")], [FILLED, {"status": "rejected", "reason": INSUFFICIENT}]),
    Case("a resting sell reserves its quantity", CALM, [buy(1, 1.0), sell(2, 1.0, "limit", 105.00), sell(2, 0.5)],
         [F(2, "buy", 1.0, 101.00, 0.101, "taker")],
         [FILLED, RESTING, {"status": "rejected", "reason": INSUFFICIENT}]),
    Case("buying more than the cash is rejected", CALM, [buy(1, 10.0)],
         [], [{"status": "rejected", "reason": INSUFFICIENT}], cash=1_000.0),       # 10 × 100.20 × 1.001 = 1003
    Case("a market buy that no longer fits at the fill price is cut, the rest cancelled", CALM, [buy(1, 9.95)],
         [F(2, "buy", 9.891, 101.00, 0.998991, "taker")],                          # 1000 / (101 × 1.001) = 9.8911
         [{"status": "canceled", "reason": INSUFFICIENT, "filled_qty": 9.891}], cash=1_000.0),
    Case("cash reserved for a resting limit buy blocks a second buy", CALM,
         [buy(1, 9.0, "limit", 100.00), buy(1, 1.0)],                              # 900.90 reserved of 1000
         [], [RESTING, {"status": "rejected", "reason": INSUFFICIENT}], cash=1_000.0),
    # -- cancel ------------------------------------------------------------------------------
    Case("a cancelled resting limit never fills", DROP, [buy(1, 1.0, "limit", 99.00, tag="a"), cancel(2, "a")],
         [], [{"status": "canceled", "reason": "canceled by strategy", "filled_qty": 0.0}]),
    Case("cancelling a resting buy releases its cash", CALM,
         [buy(1, 9.0, "limit", 100.00, tag="a"), cancel(2, "a"), buy(2, 1.0)],
         [F(3, "buy", 1.0, 101.20, 0.1012, "taker")],
         [{"status": "canceled", "reason": "canceled by strategy"}, FILLED], cash=1_000.0),
    # -- volume ------------------------------------------------------------------------------
    Case("volume cap: partial fills across bars sum to the order", THIN, [buy(1, 2.5)],
         [F(2, "buy", 1.0, 101.00, 0.101, "taker"),
          F(3, "buy", 1.0, 101.20, 0.1012, "taker"),
          F(4, "buy", 0.5, 101.50, 0.05075, "taker")], [{**FILLED, "filled_qty": 2.5}], CAP_10),
    Case("volume cap on a limit: the rest keeps resting at the limit", THIN, [buy(1, 2.5, "limit", 100.80)],
         [F(2, "buy", 1.0, 100.80, 0.1008, "maker")],
         [{"status": "partially_filled", "reason": "", "filled_qty": 1.0}], CAP_10),
    Case("a bar without volume fills nothing", QUIET, [buy(1, 1.0)],
         [F(3, "buy", 1.0, 101.20, 0.1012, "taker")], [FILLED], CAP_10),
    Case("a bar without volume fills nothing, volume cap off", QUIET, [buy(1, 1.0)],
         [F(3, "buy", 1.0, 101.20, 0.1012, "taker")], [FILLED], NO_SLIP),
    Case("a stop buy may spend the cash it reserved", RISE, [buy(1, 9.0, "stop", 100.70)],
         [F(2, "buy", 9.0, 100.70, 0.9063, "taker")], [FILLED], cash=1_000.0),    # 906.30 + 0.91 of 1000
]


def run_case(tmp_path, case: Case):
    rules = {"BTC/USDT": RULES}
    return broker_replay(tmp_path, [bars_from_rows("BTC/USDT", case.bars)], case.script, rules=rules,
                         cash=case.cash, overrides=case.overrides)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_scenario(tmp_path, case: Case):
    run = run_case(tmp_path, case)
    fills = run.rows("fills")
    got = [(int((f["ts"].timestamp() * 1000 - T0) // MINUTE_MS) + 1, f["side"], f["qty"], f["price"], f["fee"],
            f["liquidity"]) for f in fills]
    assert [g[:4] + g[5:] for g in got] == [e[:4] + e[5:] for e in case.fills]
    assert [g[4] for g in got] == pytest.approx([e[4] for e in case.fills], rel=1e-9, abs=1e-12)
    assert all(f["fee_asset"] == "USDT" for f in fills)

    orders = sorted(run.rows("orders"), key=lambda o: o["order_id"])
    assert len(orders) == len(case.orders)
    for row, expected in zip(orders, case.orders, strict=True):
        assert {k: row[k] for k in expected} == expected, row

    # nothing fills on or before the bar that produced the order: the fill's bar opens no
    # earlier than the signal bar closes
    sent = {o["order_id"]: o["ts"] for o in orders}
    assert all(f["ts"] >= sent[f["order_id"]] for f in fills)

    # spot accounting: cash moved by exactly the fills, and never below zero
    cash = case.cash + sum((f["qty"] * f["price"]) * (1 if f["side"] == "sell" else -1) - f["fee"] for f in fills)
    held = sum(f["qty"] * (1 if f["side"] == "buy" else -1) for f in fills)
    assert run.broker.portfolio.cash == pytest.approx(cash, rel=1e-12)
    assert run.broker.portfolio.cash >= 0 and held >= -1e-12
    assert run.broker.portfolio.qty("BTC/USDT") == pytest.approx(held, abs=1e-12)


def test_rejections_reach_the_strategy_and_the_journal_with_the_exchange_reason(tmp_path):
    run = run_case(tmp_path, Case("", CALM, [buy(1, 0.049, tag="small"), sell(1, 1.0, tag="naked")], [], []))
    rejected = {s["tag"]: s["reason"] for s in run.seen if s["status"] == "Rejected"}
    assert rejected == {"small": NOTIONAL, "naked": INSUFFICIENT}
    events = [e for e in run.rows("events") if e["kind"] == "order_rejected"]
    assert [(e["detail"], e["data"]) for e in events] == [
        (NOTIONAL, '{"code": -1013, "order_id": "O0000001", "reason": "Filter failure: NOTIONAL"}'),
        (INSUFFICIENT, '{"code": -2010, "order_id": "O0000002", "reason": "' + INSUFFICIENT + '"}'),
    ]


def test_partial_fills_are_notified_as_partial_then_completed(tmp_path):
    run = run_case(tmp_path, Case("", THIN, [buy(1, 2.5, tag="big")], [], [], CAP_10))
    states = [(s["bar"], s["status"], s["executed_size"]) for s in run.seen if s["tag"] == "big"]
    # the strategy learns of each fill when the bar it happened on closes
    assert states == [(2, "Submitted", 0), (2, "Accepted", 0), (2, "Partial", 1.0), (3, "Partial", 2.0),
                      (4, "Completed", 2.5)]
    assert run.seen[-1]["executed_price"] == pytest.approx((101.00 + 101.20 + 0.5 * 101.50) / 2.5, rel=1e-12)


def test_no_risk_limits_means_no_denials_and_no_kill_switch(tmp_path):
    # 90 % of the account bought, then the price halves: without [risk] limits nothing intervenes
    crash = [(100.0, 100.5, 99.5, 100.0, 1000), (100.0, 100.5, 99.5, 100.0, 1000),
             (60.0, 61.0, 49.0, 50.0, 1000), (50.0, 51.0, 49.0, 50.0, 1000)]
    run = run_case(tmp_path, Case("", crash, [buy(1, 90.0), buy(3, 10.0)], [], []))
    assert [f["qty"] for f in run.rows("fills")] == [90.0, 10.0]
    assert run.broker.halted is False
    assert run.broker.limits.active() == {}
    assert run.rows("events") == []
    assert {o["origin"] for o in run.rows("orders")} == {"strategy"}
    assert run.broker.portfolio.qty("BTC/USDT") == 100.0


def test_an_order_on_a_symbol_without_a_new_bar_is_stamped_with_the_runs_clock(tmp_path):
    btc = bars_from_rows("BTC/USDT", CALM)
    eth = bars_from_rows("ETH/USDT", CALM).take(np.array([0, 3]))          # ETH trades only in bars 1 and 4
    eth_rules = MarketRules("ETH/USDT", lot_step=0.001, tick_size=0.01)
    run = broker_replay(tmp_path, [btc, eth], [{"bar": 3, "side": "buy", "type": "market", "qty": 1.0, "symbol": 1}],
                        rules={"BTC/USDT": RULES, "ETH/USDT": eth_rules}, overrides=NO_SLIP)
    (fill,) = run.rows("fills")
    assert int(fill["ts"].timestamp() * 1000) == T0 + 3 * MINUTE_MS and fill["price"] == 101.50   # ETH's bar 4
    (sent,) = run.rows("orders")
    assert int(sent["ts"].timestamp() * 1000) == T0 + 3 * MINUTE_MS       # sent as bar 3 closed
