"""Unit tests of harness.risk: each limit at, just above and just below its threshold, the
reasons, the kill switch, the UTC day rollover and the rolling minute."""

from __future__ import annotations

import math

import pytest

from harness.config import RiskSection
from harness.errors import ConfigError
from harness.model import DAY_MS, MINUTE_MS, OrderIntent, OrderType, Side, parse_time
from harness.risk import APPROVED, Approved, Book, Denied, KillSwitch, RiskGuard, RiskLimits, RiskState

MIDNIGHT = parse_time("2025-06-15")        # a UTC midnight
NOON = MIDNIGHT + DAY_MS // 2
BTC, ETH = "BTC/USDT", "ETH/USDT"


def make_book(**kw) -> Book:
    values = dict(ts=NOON, cash=10_000.0, equity=10_000.0, positions={}, prices={BTC: 100.0, ETH: 2_000.0},
                  open_orders=0, resting_buy_notional={}, submissions=(), peak_equity=10_000.0,
                  day_start_equity=10_000.0)
    values.update(kw)
    return Book(**values)


def order(qty: float, side: Side = Side.BUY, type: OrderType = OrderType.MARKET, symbol: str = BTC,
          ref: float = 100.0, price: float | None = None, stop: float | None = None, origin: str = "strategy",
          ts: int = NOON) -> OrderIntent:
    return OrderIntent(symbol, side, type, qty, ts, ref, price, stop, origin)


def check(limits: RiskLimits, intent: OrderIntent, **book) -> Approved | Denied:
    return RiskGuard(limits).check(intent, make_book(**book))


def denied(decision, limit: str) -> Denied:
    assert isinstance(decision, Denied), decision
    assert decision.limit == limit, decision
    assert decision.approved is False
    return decision


# -- limits, one by one ------------------------------------------------------------------------


def test_no_limits_approve_anything():
    assert check(RiskLimits(), order(1e9, ref=1e6)) is APPROVED
    assert APPROVED.approved is True


def test_max_order_notional():
    lim = RiskLimits(max_order_notional=2_000.0)
    assert check(lim, order(20.0)) is APPROVED                       # 2,000.00 = limit
    assert check(lim, order(19.99)) is APPROVED
    d = denied(check(lim, order(52.0)), "max_order_notional")
    assert d.reason == "max_order_notional 5,200.00 > 2,000.00"
    assert (d.observed, d.threshold) == (5_200.0, 2_000.0)
    denied(check(lim, order(20.0001)), "max_order_notional")


def test_order_notional_values_limit_and_stop_orders_at_their_own_price():
    lim = RiskLimits(max_order_notional=2_000.0)
    # 20 x 101 = 2,020 even though the reference price says 2,000
    d = denied(check(lim, order(20.0, type=OrderType.LIMIT, price=101.0)), "max_order_notional")
    assert d.observed == pytest.approx(2_020.0)
    denied(check(lim, order(20.0, type=OrderType.STOP, stop=100.5)), "max_order_notional")
    assert check(lim, order(20.0, type=OrderType.LIMIT, price=99.0)) is APPROVED


def test_max_position_notional_counts_holding_and_resting_buys():
    lim = RiskLimits(max_position_notional=5_000.0)
    book = dict(positions={BTC: 30.0, ETH: 100.0}, resting_buy_notional={BTC: 1_000.0, ETH: 50_000.0})
    assert check(lim, order(10.0), **book) is APPROVED               # 3,000 + 1,000 + 1,000 = limit
    d = denied(check(lim, order(10.01), **book), "max_position_notional")
    assert d.observed == pytest.approx(5_001.0)
    assert d.reason.startswith("max_position_notional 5,001.00 > 5,000.00 for BTC/USDT")
    # the holding is valued at the last price, not at the order's reference
    denied(check(lim, order(10.0), **{**book, "prices": {BTC: 100.01, ETH: 2_000.0}}), "max_position_notional")


def test_max_gross_exposure_sums_all_symbols_and_resting_buys():
    lim = RiskLimits(max_gross_exposure=0.5)
    book = dict(positions={BTC: 10.0, ETH: 1.0}, resting_buy_notional={ETH: 500.0})   # 1,000 + 2,000 + 500
    assert check(lim, order(15.0), **book) is APPROVED               # 5,000 / 10,000 = 0.5
    d = denied(check(lim, order(15.01), **book), "max_gross_exposure")
    assert d.reason == "max_gross_exposure 0.5001 > 0.5000 of equity (5,001.00 / 10,000.00)"
    assert d.observed == pytest.approx(0.5001)
    # with equity gone, any new exposure is refused
    denied(check(lim, order(0.001), equity=0.0), "max_gross_exposure")


def test_max_open_orders_applies_to_every_order():
    lim = RiskLimits(max_open_orders=3)
    assert check(lim, order(1.0), open_orders=2) is APPROVED
    d = denied(check(lim, order(1.0), open_orders=3), "max_open_orders")
    assert d.reason == "max_open_orders 4 > 3"
    # an operational limit: a reduction is held to it too
    denied(check(lim, order(1.0, Side.SELL), open_orders=3, positions={BTC: 5.0}), "max_open_orders")


def test_max_orders_per_minute_window_is_the_last_60_seconds_half_open():
    lim = RiskLimits(max_orders_per_minute=3)
    # a submission exactly 60 s ago has left the window; 59.999 s ago has not
    subs = (NOON - MINUTE_MS, NOON - MINUTE_MS + 1, NOON - 30_000)
    assert check(lim, order(1.0), submissions=subs) is APPROVED      # 2 in window + this one = 3
    d = denied(check(lim, order(1.0), submissions=(*subs, NOON)), "max_orders_per_minute")
    assert d.reason == "max_orders_per_minute 4 > 3 in the last 60 s"
    assert (d.observed, d.threshold) == (4, 3)


def test_price_band_on_limit_stop_and_market_reference():
    lim = RiskLimits(price_band_pct=5.0)
    limit = OrderType.LIMIT
    assert check(lim, order(1.0, type=limit, price=105.0)) is APPROVED
    assert check(lim, order(1.0, Side.SELL, type=limit, price=95.0), positions={BTC: 1.0}) is APPROVED
    d = denied(check(lim, order(1.0, type=limit, price=105.01)), "price_band_pct")
    assert d.reason == "price_band_pct 5.01% > 5.00% (limit 105.01 vs last 100.00)"
    denied(check(lim, order(1.0, Side.SELL, type=limit, price=94.99)), "price_band_pct")
    denied(check(lim, order(1.0, type=OrderType.STOP, stop=105.01)), "price_band_pct")
    # a market order is judged by its reference price against the last price
    assert check(lim, order(1.0, ref=100.0)) is APPROVED
    d = denied(check(lim, order(1.0, ref=94.0)), "price_band_pct")
    assert d.reason == "price_band_pct 6.00% > 5.00% (reference 94.00 vs last 100.00)"
    # a reduction is still held to the band (a fat-finger check, not an exposure limit)
    denied(check(lim, order(1.0, Side.SELL, type=limit, price=80.0), positions={BTC: 1.0}), "price_band_pct")
    # without a last price the reference stands in for it
    assert check(lim, order(1.0, ref=94.0), prices={}) is APPROVED


def test_max_daily_loss_blocks_new_exposure_and_latches_for_the_day():
    lim = RiskLimits(max_daily_loss_pct=3.0)
    assert check(lim, order(1.0), equity=9_700.0) is APPROVED          # 3.00% = limit
    denied(check(lim, order(1.0), equity=9_699.99), "max_daily_loss_pct")
    d = denied(check(lim, order(1.0), equity=9_650.0), "max_daily_loss_pct")
    assert d.reason == ("max_daily_loss_pct 3.50% > 3.00% since 00:00 UTC: "
                        "new exposure refused until the next UTC day")
    # equity back up, but the day's low breached the limit: still refused
    denied(check(lim, order(1.0), equity=9_900.0, day_low_equity=9_600.0), "max_daily_loss_pct")
    # reductions still pass
    assert check(lim, order(1.0, Side.SELL), equity=9_000.0, positions={BTC: 1.0}) is APPROVED


def test_reductions_are_never_blocked_by_exposure_limits():
    lim = RiskLimits(max_order_notional=10.0, max_position_notional=10.0, max_gross_exposure=0.01,
                     max_daily_loss_pct=1.0)
    book = dict(positions={BTC: 50.0}, equity=5_000.0, day_start_equity=10_000.0)
    assert check(lim, order(50.0, Side.SELL), **book) is APPROVED     # sells the whole holding
    assert check(lim, order(20.0, Side.SELL, type=OrderType.LIMIT, price=101.0), **book) is APPROVED
    # selling more than is held is not a reduction
    denied(check(lim, order(50.5, Side.SELL), **book), "max_order_notional")
    assert isinstance(check(lim, order(0.01, Side.SELL), **{**book, "positions": {}}), Denied)


def test_a_sell_beyond_the_holding_is_valued_as_the_net_position_it_leaves():
    # spot brokers refuse it anyway; the guard values it as the short it would open
    lim = RiskLimits(max_position_notional=600.0)
    assert check(lim, order(15.0, Side.SELL), positions={BTC: 10.0}) is APPROVED     # |1,000 - 1,500|
    denied(check(lim, order(16.01, Side.SELL), positions={BTC: 10.0}), "max_position_notional")


def test_guard_orders_are_always_approved():
    lim = RiskLimits(max_order_notional=1.0, max_open_orders=1, max_orders_per_minute=1, price_band_pct=0.1)
    intent = order(1_000.0, Side.SELL, ref=50.0, origin="guard")
    assert check(lim, intent, halted=True, open_orders=5, submissions=(NOON,) * 5) is APPROVED


def test_halted_allows_only_reductions():
    lim = RiskLimits(max_drawdown_pct=10.0)
    book = dict(halted=True, positions={BTC: 2.0}, equity=8_800.0, peak_equity=11_000.0)
    d = denied(check(lim, order(0.1), **book), "halted")
    assert d.reason == "halted by the kill switch: only orders that reduce a position are allowed"
    assert (d.observed, d.threshold) == (pytest.approx(20.0), 10.0)
    assert check(lim, order(2.0, Side.SELL), **book) is APPROVED
    denied(check(RiskLimits(), order(3.0, Side.SELL), **book), "halted")


def test_first_breached_limit_in_documented_order_is_reported():
    lim = RiskLimits(max_order_notional=1.0, max_open_orders=1, max_orders_per_minute=1, price_band_pct=1.0)
    intent = order(100.0, type=OrderType.LIMIT, price=150.0)
    assert check(lim, intent, submissions=(NOON,), open_orders=1).limit == "max_orders_per_minute"
    assert check(lim, intent, open_orders=1).limit == "max_open_orders"
    assert check(lim, intent).limit == "price_band_pct"
    assert check(lim, order(100.0)).limit == "max_order_notional"


def test_nan_fails_closed():
    lim = RiskLimits(max_order_notional=1_000.0)
    denied(check(lim, order(math.nan)), "max_order_notional")
    denied(check(RiskLimits(max_gross_exposure=1.0), order(1.0), equity=math.nan), "max_gross_exposure")


def test_a_held_symbol_without_a_price_is_a_broker_bug():
    with pytest.raises(ValueError, match="no price for ETH/USDT"):
        check(RiskLimits(max_gross_exposure=1.0), order(1.0), positions={ETH: 1.0}, prices={BTC: 100.0})


# -- limits from config -------------------------------------------------------------------------


def test_limits_from_config_and_active():
    section = RiskSection(max_order_notional=2_000.0, max_open_orders=5, max_drawdown_pct=10.0)
    lim = RiskLimits.from_config(section)
    assert lim == RiskLimits(max_order_notional=2_000.0, max_open_orders=5, max_drawdown_pct=10.0)
    assert lim.active() == {"max_order_notional": 2_000.0, "max_open_orders": 5, "max_drawdown_pct": 10.0}
    assert RiskLimits.from_config(RiskSection()).active() == {}


@pytest.mark.parametrize("kwargs, key", [
    ({"max_order_notional": -1.0}, "risk.max_order_notional"),
    ({"max_open_orders": 0}, "risk.max_open_orders"),
    ({"max_gross_exposure": 1.01}, "risk.max_gross_exposure"),
    ({"price_band_pct": 100.5}, "risk.price_band_pct"),
    ({"max_drawdown_pct": math.inf}, "risk.max_drawdown_pct"),
    ({"max_order_notional": math.nan}, "risk.max_order_notional"),
    ({"max_orders_per_minute": True}, "risk.max_orders_per_minute"),
    ({"max_daily_loss_pct": "3"}, "risk.max_daily_loss_pct"),
])
def test_limits_reject_bad_values_naming_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        RiskLimits(**kwargs)


# -- state: kill switch, day rollover, rolling minute -------------------------------------------


def test_kill_switch_fires_once_at_the_threshold_from_the_peak():
    state = RiskState(RiskLimits(max_drawdown_pct=10.0))
    assert state.watches_equity
    assert state.on_equity(NOON, 10_000.0) is None
    assert state.on_equity(NOON + 1, 11_000.0) is None               # new peak
    assert state.on_equity(NOON + 2, 9_900.01) is None               # 9.9999% below the peak
    assert not state.halted
    kill = state.on_equity(NOON + 3, 9_900.0)                         # exactly 10% below
    assert kill == KillSwitch(NOON + 3, pytest.approx(10.0), 10.0, 11_000.0, 9_900.0)
    assert kill.reason == "max_drawdown_pct 10.00% >= 10.00% (peak 11,000.00, equity 9,900.00): kill switch"
    assert kill.info == {"drawdown_pct": kill.drawdown_pct, "threshold": 10.0, "peak_equity": 11_000.0,
                         "equity": 9_900.0}
    assert state.halted and state.kill_switch is kill
    assert state.on_equity(NOON + 4, 5_000.0) is None                # never twice
    assert state.on_equity(NOON + 5, 20_000.0) is None
    assert state.on_equity(NOON + 6, 1_000.0) is None
    assert state.book(ts=NOON + 7, cash=1_000.0, equity=1_000.0, positions={}, prices={}).halted


def test_kill_switch_without_a_drawdown_limit_never_fires():
    state = RiskState(RiskLimits(max_daily_loss_pct=5.0))
    assert state.watches_equity
    assert [state.on_equity(NOON + i, e) for i, e in enumerate((10_000.0, 1.0, 0.0, -5.0))] == [None] * 4
    assert not RiskState(RiskLimits(max_order_notional=1.0)).watches_equity


def test_resumed_state_keeps_its_peak_and_halt():
    state = RiskState(RiskLimits(max_drawdown_pct=10.0), peak_equity=12_000.0)
    assert state.on_equity(NOON, 10_800.01) is None
    assert state.on_equity(NOON + 1, 10_800.0) is not None
    halted = RiskState(RiskLimits(max_drawdown_pct=10.0), halted=True)
    assert halted.on_equity(NOON, 10_000.0) is None and halted.on_equity(NOON + 1, 1.0) is None


def test_restore_picks_up_peak_and_day_of_a_resumed_run():
    lim = RiskLimits(max_drawdown_pct=10.0, max_daily_loss_pct=3.0)
    state = RiskState(lim)
    state.restore(NOON, peak_equity=12_000.0, day_start_equity=10_000.0, day_low_equity=9_800.0)
    assert (state.day_start_equity, state.day_low_equity) == (10_000.0, 9_800.0)
    assert state.on_equity(NOON + MINUTE_MS, 10_800.01) is None       # same day: no new day start
    assert state.day_start_equity == 10_000.0
    book = state.book(ts=NOON + MINUTE_MS, cash=0.0, equity=10_800.01, positions={}, prices={})
    assert RiskGuard(lim).check(order(1.0), book) is APPROVED          # day low 2% down: within 3%
    state.restore(NOON, peak_equity=12_000.0, day_start_equity=11_200.0)
    denied(RiskGuard(lim).check(order(1.0), state.book(ts=NOON + 2, cash=0.0, equity=10_850.0, positions={},
                                                      prices={})), "max_daily_loss_pct")
    assert state.on_equity(NOON + 3, 10_800.0).peak_equity == 12_000.0   # 10% below the restored peak
    state.on_equity(MIDNIGHT + DAY_MS, 10_500.0)                         # the restored day ends at midnight
    assert state.day_start_equity == 10_500.0


def test_daily_loss_rolls_over_at_utc_midnight():
    lim = RiskLimits(max_daily_loss_pct=3.0)
    guard, state = RiskGuard(lim), RiskState(lim)

    def buy_at(ts: int, equity: float) -> Approved | Denied:
        book = state.book(ts=ts, cash=equity, equity=equity, positions={}, prices={BTC: 100.0})
        return guard.check(order(1.0, ts=ts), book)

    state.on_equity(MIDNIGHT + MINUTE_MS, 10_000.0)                  # first bar of the day
    assert buy_at(MIDNIGHT + 2 * MINUTE_MS, 9_800.0) is APPROVED
    state.on_equity(NOON, 9_600.0)                                    # 4% down
    denied(buy_at(NOON, 9_600.0), "max_daily_loss_pct")
    state.on_equity(MIDNIGHT + DAY_MS - 1, 9_800.0)                  # recovered, same UTC day
    denied(buy_at(MIDNIGHT + DAY_MS - 1, 9_800.0), "max_daily_loss_pct")
    state.on_equity(MIDNIGHT + DAY_MS, 9_800.0)                      # 00:00 the next day: new start
    assert state.day_start_equity == 9_800.0
    assert buy_at(MIDNIGHT + DAY_MS, 9_800.0) is APPROVED
    state.on_equity(MIDNIGHT + DAY_MS + 1, 9_506.0)                  # exactly 3% below 9,800
    assert buy_at(MIDNIGHT + DAY_MS + 1, 9_506.0) is APPROVED
    state.on_equity(MIDNIGHT + DAY_MS + 2, 9_505.99)
    denied(buy_at(MIDNIGHT + DAY_MS + 2, 9_600.0), "max_daily_loss_pct")


def test_book_rolls_the_day_when_no_bar_was_seen_yet():
    state = RiskState(RiskLimits(max_daily_loss_pct=3.0))
    state.on_equity(NOON, 10_000.0)
    book = state.book(ts=MIDNIGHT + DAY_MS + 5, cash=0.0, equity=9_000.0, positions={}, prices={})
    assert (book.day_start_equity, book.day_low_equity) == (9_000.0, 9_000.0)


def test_rolling_minute_through_the_state():
    lim = RiskLimits(max_orders_per_minute=3)
    guard, state = RiskGuard(lim), RiskState(lim)
    sent = []
    for ts in (NOON, NOON + 1, NOON + 2, NOON + MINUTE_MS - 1, NOON + MINUTE_MS, NOON + MINUTE_MS + 1):
        decision = guard.check(order(1.0, ts=ts), state.book(ts=ts, cash=0.0, equity=1.0, positions={}, prices={}))
        if decision.approved:
            state.record_submission(ts)
            sent.append(ts)
        else:
            state.record_denial(decision.limit)
    # the 4th is refused; at NOON + 60 s the first submission has left the window, then the second
    assert sent == [NOON, NOON + 1, NOON + 2, NOON + MINUTE_MS, NOON + MINUTE_MS + 1]
    assert (state.denials, state.denials_by_limit) == (1, {"max_orders_per_minute": 1})


def test_book_carries_the_state():
    state = RiskState(RiskLimits(max_orders_per_minute=10, max_drawdown_pct=50.0))
    state.on_equity(NOON, 12_000.0)
    state.on_equity(NOON + 1, 11_000.0)
    state.record_submission(NOON + 2 - MINUTE_MS)       # exactly 60 s before the book: gone
    state.record_submission(NOON + 1)
    positions, prices = {BTC: 1.0}, {BTC: 100.0}
    book = state.book(ts=NOON + 2, cash=10_900.0, equity=11_000.0, positions=positions, prices=prices,
                      open_orders=2, resting_buy_notional={BTC: 50.0})
    assert book == Book(NOON + 2, 10_900.0, 11_000.0, positions, prices, 2, {BTC: 50.0}, (NOON + 1,),
                        12_000.0, 12_000.0, False, 11_000.0)
    assert book.drawdown_pct == pytest.approx(100 / 12)
