"""Unit tests of harness.fills, the pure fill model shared by the paper broker and the paper
exchange: grid rounding, Binance's filters, what one bar does to an order, and sizing.

Expected values are worked out by hand in the tables (prices on a 0.01 tick, lots of 0.001)."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import fills as fm
from harness.fills import FillConfig, FillPlan
from harness.model import Liquidity, MarketRules, OrderType, Side

RULES = MarketRules("BTC/USDT", lot_step=0.001, tick_size=0.01, min_qty=0.001, max_qty=100.0,
                    min_notional=5.0, max_notional=1_000_000.0)
NO_SLIP = FillConfig(taker_bps=10, maker_bps=10, slippage_bps=0, max_bar_volume_pct=0)
BUY, SELL = Side.BUY, Side.SELL
MARKET, LIMIT, STOP = OrderType.MARKET, OrderType.LIMIT, OrderType.STOP
MAKER, TAKER = Liquidity.MAKER, Liquidity.TAKER


# -- rounding ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value, step, mode, expected", [
    (1.23456, 0.001, "down", 1.234),
    (1.2349999, 0.001, "down", 1.234),
    (0.1 + 0.2, 0.1, "down", 0.3),             # 0.30000000000000004: float dust does not lose a step
    (0.7, 0.1, "down", 0.7),                   # 0.7 / 0.1 is 6.999999999999999 in floats
    (2.0, 0.001, "down", 2.0),
    (0.0009, 0.001, "down", 0.0),
    (1.2341, 0.001, "up", 1.235),
    (1.234, 0.001, "up", 1.234),               # on the grid already: unchanged
    (101.0202, 0.01, "up", 101.03),
    (101.17976, 0.01, "down", 101.17),
    (0.0125, 0.001, "nearest", 0.012),         # half to even
    (0.0135, 0.001, "nearest", 0.014),
    (12345.678, 5.0, "down", 12345.0),         # a step larger than one
    (7.5, 0.0, "down", 7.5),                   # no grid: unchanged
])
def test_round_step(value, step, mode, expected):
    assert fm.round_step(value, step, mode) == expected


@given(st.decimals(min_value=0, max_value=10**6, places=8, allow_nan=False, allow_infinity=False),
       st.sampled_from([0.00001, 0.001, 0.01, 0.1, 1.0, 5.0]))
@settings(max_examples=300, deadline=None)
def test_round_step_down_is_the_largest_grid_value_not_above(value, step):
    got = fm.round_step(float(value), step, "down")
    units = Decimal(repr(got)) / Decimal(repr(step))
    assert units == units.to_integral_value()                 # on the grid, exactly
    assert Decimal(repr(got)) <= Decimal(repr(float(value)))    # never above
    assert Decimal(repr(got)) + Decimal(repr(step)) > Decimal(repr(float(value)))   # one step more is


@pytest.mark.parametrize("price, side, expected", [
    (100.004, BUY, 100.01), (100.004, SELL, 100.0), (100.004, None, 100.0), (100.006, None, 100.01),
    (100.01, BUY, 100.01), (100.01, SELL, 100.01),
])
def test_round_price_is_adverse_for_the_side(price, side, expected):
    assert fm.round_price(price, RULES, side) == expected


def test_round_qty_never_rounds_up():
    assert fm.round_qty(0.9999, RULES) == 0.999
    assert fm.round_qty(1.0, RULES) == 1.0


# -- filters ----------------------------------------------------------------------------------


@pytest.mark.parametrize("qty, price, ref, otype, expected", [
    (1.0, None, 100.0, MARKET, None),
    (0.05, None, 100.0, MARKET, None),                         # notional 5.00 == min: passes
    (0.049, None, 100.0, MARKET, fm.REASON_NOTIONAL),          # 4.90 < 5
    (0.05, 99.99, 200.0, LIMIT, fm.REASON_NOTIONAL),           # a limit is valued at its price, not the last
    (0.05, 100.0, 1.0, LIMIT, None),
    (0.05, 99.0, 200.0, STOP, fm.REASON_NOTIONAL),             # a stop at its stop price
    (0.0, None, 100.0, MARKET, fm.REASON_LOT_SIZE),            # rounded to nothing
    (0.0005, None, 1e6, MARKET, fm.REASON_LOT_SIZE),           # under min_qty and off the lot grid
    (100.001, None, 1.0, MARKET, fm.REASON_LOT_SIZE),          # over max_qty
    (1.0005, None, 100.0, MARKET, fm.REASON_LOT_SIZE),         # off the lot grid
    (1.0, 100.005, 100.0, LIMIT, fm.REASON_PRICE_FILTER),      # off the tick
    (1.0, 0.0, 100.0, LIMIT, fm.REASON_PRICE_FILTER),
    (99.0, 20_000.0, 100.0, LIMIT, fm.REASON_NOTIONAL),        # 1.98M > max_notional
])
def test_check_filters(qty, price, ref, otype, expected):
    assert fm.check_filters(qty, price, RULES, ref, otype) == expected


def test_reasons_are_binance_texts_word_for_word():
    assert fm.REASON_NOTIONAL == "Filter failure: NOTIONAL"
    assert fm.REASON_LOT_SIZE == "Filter failure: LOT_SIZE"
    assert fm.REASON_PRICE_FILTER == "Filter failure: PRICE_FILTER"
    assert fm.REASON_INSUFFICIENT == "Account has insufficient balance for requested action."


# -- match: what one bar does to an order -----------------------------------------------------

# bar: open 100.00, high 101.00, low 99.00 unless a row says otherwise
MATCH_CASES = [
    # id, type, side, price/stop, (open, high, low), expected (price, liquidity) or None, triggered after
    ("market buy at the open", MARKET, BUY, None, (100.0, 101.0, 99.0), (100.0, TAKER), False),
    ("market sell at the open", MARKET, SELL, None, (100.0, 101.0, 99.0), (100.0, TAKER), False),
    ("limit buy traded through: at the limit", LIMIT, BUY, 99.5, (100.0, 101.0, 99.0), (99.5, MAKER), False),
    ("limit buy gapped through: at the open", LIMIT, BUY, 100.5, (100.0, 101.0, 99.0), (100.0, MAKER), False),
    ("limit buy, low touches the limit: no fill", LIMIT, BUY, 99.0, (100.0, 101.0, 99.0), None, False),
    ("limit buy under the bar's low", LIMIT, BUY, 98.0, (100.0, 101.0, 99.0), None, False),
    # an open exactly at the limit counts as gapping through (fills at open == limit), unlike a low touch
    ("limit buy, open at the limit", LIMIT, BUY, 100.0, (100.0, 101.0, 100.0), (100.0, MAKER), False),
    ("limit sell traded through: at the limit", LIMIT, SELL, 100.5, (100.0, 101.0, 99.0), (100.5, MAKER), False),
    ("limit sell gapped through: at the open", LIMIT, SELL, 99.5, (100.0, 101.0, 99.0), (100.0, MAKER), False),
    ("limit sell, high touches the limit: no fill", LIMIT, SELL, 101.0, (100.0, 101.0, 99.0), None, False),
    ("stop buy reached: from the stop", STOP, BUY, 100.5, (100.0, 101.0, 99.0), (100.5, TAKER), True),
    ("stop buy touched exactly: triggers", STOP, BUY, 101.0, (100.0, 101.0, 99.0), (101.0, TAKER), True),
    ("stop buy gapped over: from the open", STOP, BUY, 99.5, (100.0, 101.0, 99.0), (100.0, TAKER), True),
    ("stop buy not reached", STOP, BUY, 101.5, (100.0, 101.0, 99.0), None, False),
    ("stop sell reached: from the stop", STOP, SELL, 99.5, (100.0, 101.0, 99.0), (99.5, TAKER), True),
    ("stop sell gapped under: from the open", STOP, SELL, 100.5, (100.0, 101.0, 99.0), (100.0, TAKER), True),
    ("stop sell touched exactly: triggers", STOP, SELL, 99.0, (100.0, 101.0, 99.0), (99.0, TAKER), True),
    ("stop sell not reached", STOP, SELL, 98.5, (100.0, 101.0, 99.0), None, False),
]


@pytest.mark.parametrize("otype, side, price, bar, expected, triggered",
                         [c[1:] for c in MATCH_CASES], ids=[c[0] for c in MATCH_CASES])
def test_match_price_and_liquidity(otype, side, price, bar, expected, triggered):
    kwargs = {"price": price} if otype is LIMIT else {"stop_price": price} if otype is STOP else {}
    plan, now_triggered = fm.match(otype, side, 2.0, *bar, 1_000.0, NO_SLIP, RULES, **kwargs)
    if expected is None:
        assert plan is None
    else:
        assert plan == FillPlan(expected[0], 2.0, expected[1])
    assert now_triggered is triggered


def test_triggered_stop_fills_later_bars_at_their_open():
    # triggered on an earlier bar (e.g. one without volume): the next bar fills from its open,
    # even when that bar no longer reaches the stop
    plan, still = fm.match(STOP, BUY, 1.0, 97.0, 98.0, 96.0, 1_000.0, NO_SLIP, RULES, stop_price=100.0,
                           already_triggered=True)
    assert plan == FillPlan(97.0, 1.0, TAKER) and still is True


def test_a_bar_without_volume_neither_fills_nor_triggers_a_stop():
    cfg = FillConfig(slippage_bps=0, max_bar_volume_pct=10)      # nothing traded: its prices are not trades
    plan, triggered = fm.match(STOP, SELL, 1.0, 100.0, 100.0, 98.0, 0.0, cfg, RULES, stop_price=99.0)
    assert plan is None and triggered is False
    plan, triggered = fm.match(STOP, SELL, 1.0, 100.0, 100.0, 98.0, 0.0, cfg, RULES, stop_price=99.0,
                               already_triggered=True)
    assert plan is None and triggered is True                    # an earlier trigger is kept


@pytest.mark.parametrize("otype, side, kwargs, expected", [
    (MARKET, BUY, {}, 100.03),                    # 100.00 × 1.0003 = 100.03 (on the tick)
    (MARKET, SELL, {}, 99.97),
    (STOP, BUY, {"stop_price": 100.5}, 100.54),   # 100.5 × 1.0003 = 100.53015 → up to 100.54
    (STOP, SELL, {"stop_price": 99.5}, 99.47),    # 99.5 × 0.9997 = 99.47015 → down to 99.47
    (LIMIT, BUY, {"price": 99.5}, 99.5),          # limits never slip
])
def test_slippage_moves_taker_fills_against_the_trader_on_the_tick(otype, side, kwargs, expected):
    cfg = FillConfig(slippage_bps=3, max_bar_volume_pct=0)
    plan, _ = fm.match(otype, side, 1.0, 100.0, 101.0, 99.0, 1_000.0, cfg, RULES, **kwargs)
    assert plan.price == expected


@pytest.mark.parametrize("remaining, volume, pct, expected", [
    (5.0, 20.0, 10.0, 2.0),          # capped at 10% of the bar
    (1.5, 20.0, 10.0, 1.5),          # under the cap: all of it
    (5.0, 12.3456, 10.0, 1.234),     # the cap is rounded down to the lot step
    (5.0, 0.0, 10.0, None),          # no volume: nothing
    (5.0, 0.005, 10.0, None),        # cap under one lot: nothing
    (5.0, 20.0, 0.0, 5.0),           # 0 turns the cap off
    (1.23456, 20.0, 0.0, 1.234),     # the fill itself is on the lot step
])
def test_volume_cap(remaining, volume, pct, expected):
    cfg = FillConfig(slippage_bps=0, max_bar_volume_pct=pct)
    plan, _ = fm.match(MARKET, BUY, remaining, 100.0, 101.0, 99.0, volume, cfg, RULES)
    assert (plan.qty if plan else None) == expected


def test_volume_cap_function():
    cfg = FillConfig(max_bar_volume_pct=25.0)
    assert fm.volume_cap(10.0, cfg, RULES) == 2.5
    assert fm.volume_cap(10.0, FillConfig(max_bar_volume_pct=0), RULES) == math.inf


# -- fees and sizing --------------------------------------------------------------------------


@pytest.mark.parametrize("liquidity, expected", [(MAKER, 0.2), (TAKER, 0.7)])
def test_fee_in_quote_by_liquidity(liquidity, expected):
    cfg = FillConfig(taker_bps=7, maker_bps=2)
    assert fm.fee(10.0, 100.0, liquidity, cfg) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("cash, price, liquidity, expected", [
    (1_000.0, 100.0, TAKER, 9.99),       # 9.99 × 100 × 1.001 = 999.999; 9.991 would cost 1000.0991
    (1_001.0, 100.0, TAKER, 10.0),       # exactly enough for 10 with the fee
    (1_000.99, 100.0, TAKER, 9.999),
    (0.05, 100.0, TAKER, 0.0),           # under one lot
    (0.0, 100.0, TAKER, 0.0),
    (-5.0, 100.0, TAKER, 0.0),
    (1_000.0, 0.0, TAKER, 0.0),
])
def test_affordable_qty(cash, price, liquidity, expected):
    assert fm.affordable_qty(cash, price, NO_SLIP, RULES, liquidity) == expected


@given(cash=st.floats(0.0, 1e7), price=st.floats(0.01, 1e5), fee_bps=st.floats(0.0, 100.0),
       lot=st.sampled_from([0.00001, 0.001, 0.1, 1.0]))
@settings(max_examples=400, deadline=None)
def test_affordable_qty_is_the_largest_lot_that_fits(cash, price, fee_bps, lot):
    rules = MarketRules("X/USDT", lot_step=lot, tick_size=0.01)
    cfg = FillConfig(taker_bps=fee_bps, maker_bps=fee_bps)
    rate = 1 + fee_bps / 10_000
    qty = fm.affordable_qty(cash, price, cfg, rules, TAKER)
    units = Decimal(repr(qty)) / Decimal(repr(lot))
    assert units == units.to_integral_value()
    assert qty * price * rate <= cash + 1e-9                   # it fits
    assert (qty + lot) * price * rate > cash - 1e-9 * max(1.0, cash)    # one lot more does not
