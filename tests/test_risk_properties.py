"""Property tests of the risk guard: for random limits, books and intents, what the guard
approves never leaves a limit exceeded, what it denies really breaches the named limit,
reductions pass exposure limits, and decisions are deterministic and side-effect free.

Post-trade values are computed here from first principles, not with harness.risk's code."""

from __future__ import annotations

import copy
import dataclasses

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.model import DAY_MS, MINUTE_MS, OrderIntent, OrderType, Side
from harness.risk import Book, Denied, RiskGuard, RiskLimits, RiskState

SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
TS = 1_750_000_000_000
REL = 1e-9          # float noise allowed at a boundary
EXPOSURE_LIMITS = {"max_order_notional", "max_position_notional", "max_gross_exposure", "max_daily_loss_pct",
                   "halted"}

PROFILE = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def opt(strategy):
    return st.none() | strategy


money = st.floats(1.0, 1e6, allow_nan=False)
limits_st = st.builds(
    RiskLimits,
    max_order_notional=opt(money), max_position_notional=opt(money),
    max_gross_exposure=opt(st.floats(0.01, 1.0)), max_open_orders=opt(st.integers(1, 12)),
    max_orders_per_minute=opt(st.integers(1, 12)), price_band_pct=opt(st.floats(0.1, 100.0)),
    max_daily_loss_pct=opt(st.floats(0.1, 30.0)), max_drawdown_pct=opt(st.floats(0.1, 100.0)),
)


@st.composite
def books(draw) -> Book:
    prices = {s: draw(st.floats(0.01, 1e5)) for s in SYMBOLS}
    positions = {s: draw(st.sampled_from([0.0]) | st.floats(0.0, 500.0)) for s in SYMBOLS}
    resting = {s: draw(st.floats(0.0, 5e4)) for s in draw(st.lists(st.sampled_from(SYMBOLS), unique=True))}
    cash = draw(st.floats(0.0, 1e6))
    equity = cash + sum(q * prices[s] for s, q in positions.items())
    if equity <= 0:
        cash = equity = 1.0
    subs = sorted(draw(st.lists(st.integers(TS - 2 * MINUTE_MS, TS), max_size=10)))
    day_start = equity * draw(st.floats(0.9, 1.2))
    day_low = draw(st.sampled_from([float("inf")]) | st.floats(0.4, 1.0).map(lambda f: f * min(equity, day_start)))
    halted = draw(st.sampled_from([False] * 9 + [True]))
    return Book(TS, cash, equity, positions, prices, draw(st.integers(0, 8)), resting, tuple(subs),
                equity * draw(st.floats(1.0, 2.0)), day_start, halted, day_low)


@st.composite
def intents(draw, book: Book) -> OrderIntent:
    symbol = draw(st.sampled_from(SYMBOLS))
    last = book.prices[symbol]
    side = draw(st.sampled_from(Side))
    held = book.positions[symbol]
    if side is Side.SELL and held > 0 and draw(st.booleans()):
        qty = held * draw(st.sampled_from([1.0]) | st.floats(0.001, 1.0))          # a reduction
    else:
        qty = draw(st.floats(1e-6, 1e3))
    otype = draw(st.sampled_from(OrderType))
    near = st.floats(0.5, 1.5).map(lambda f: f * last)
    ref = draw(st.sampled_from([last]) | near)
    price = draw(near) if otype is OrderType.LIMIT else None
    stop = draw(near) if otype is OrderType.STOP else None
    origin = draw(st.sampled_from(["strategy"] * 5 + ["guard"]))
    return OrderIntent(symbol, side, otype, qty, TS, ref, price, stop, origin)


@st.composite
def cases(draw):
    """Limits, a book and an intent; a third of the intents are sized to within 1% of a limit."""
    lim, book = draw(limits_st), draw(books())
    intent = draw(intents(book))
    room = {
        "order": lim.max_order_notional,
        "position": None if lim.max_position_notional is None
        else lim.max_position_notional - symbol_exposure(book, intent.symbol),
        "gross": None if lim.max_gross_exposure is None else lim.max_gross_exposure * book.equity - gross(book),
    }
    room = {k: v for k, v in room.items() if v is not None and v > 0}
    if intent.side is Side.BUY and room and draw(st.integers(0, 2)) == 0:
        target = room[draw(st.sampled_from(sorted(room)))]
        qty = target / (intent.price or intent.stop_price or intent.ref_price) * draw(st.floats(0.99, 1.01))
        intent = dataclasses.replace(intent, qty=qty)
    return lim, book, intent


# -- the same quantities, computed independently -----------------------------------------------


def is_reduction(intent: OrderIntent, book: Book) -> bool:
    return intent.side is Side.SELL and intent.qty <= book.positions.get(intent.symbol, 0.0) * (1 + REL)


def order_value(intent: OrderIntent) -> float:
    if intent.type is OrderType.LIMIT:
        return intent.qty * intent.price
    if intent.type is OrderType.STOP:
        return intent.qty * intent.stop_price
    return intent.qty * intent.ref_price


def symbol_exposure(book: Book, symbol: str, intent: OrderIntent | None = None) -> float:
    """Quote value of a symbol's holding (at the last price) and resting buys, optionally after ``intent``."""
    value = book.positions.get(symbol, 0.0) * book.prices[symbol]
    if intent is not None and intent.symbol == symbol:
        value += order_value(intent) if intent.side is Side.BUY else -order_value(intent)
    return abs(value) + book.resting_buy_notional.get(symbol, 0.0)


def gross(book: Book, intent: OrderIntent | None = None) -> float:
    return sum(symbol_exposure(book, s, intent) for s in SYMBOLS)


def in_band(intent: OrderIntent, book: Book, pct: float, slack: float) -> bool:
    last = book.prices[intent.symbol]
    prices = [intent.ref_price] if intent.type is OrderType.MARKET else [intent.price, intent.stop_price]
    return all(abs(p / last - 1) * 100 <= pct * (1 + slack) for p in prices if p is not None)


def daily_loss_pct(book: Book) -> float:
    low = min(book.equity, book.day_low_equity)
    return (book.day_start_equity - low) / book.day_start_equity * 100


def breaches(lim: RiskLimits, book: Book, intent: OrderIntent, slack: float) -> set[str]:
    """Every limit this order would leave exceeded (exposure ones only for non-reductions).

    ``slack`` > 0 forgives float noise just above a threshold (only clear breaches count);
    ``slack`` < 0 counts values within noise of a threshold as breaches too."""
    out = set()
    k = 1 + slack
    recent = sum(1 for t in book.submissions if TS - MINUTE_MS < t <= TS)
    if book.halted and not is_reduction(intent, book):
        out.add("halted")
    if lim.max_orders_per_minute is not None and recent + 1 > lim.max_orders_per_minute:
        out.add("max_orders_per_minute")
    if lim.max_open_orders is not None and book.open_orders >= lim.max_open_orders:
        out.add("max_open_orders")
    if lim.price_band_pct is not None and not in_band(intent, book, lim.price_band_pct, slack):
        out.add("price_band_pct")
    if is_reduction(intent, book):
        return out
    if lim.max_order_notional is not None and order_value(intent) > lim.max_order_notional * k:
        out.add("max_order_notional")
    if (lim.max_position_notional is not None
            and symbol_exposure(book, intent.symbol, intent) > lim.max_position_notional * k):
        out.add("max_position_notional")
    if lim.max_gross_exposure is not None and gross(book, intent) > lim.max_gross_exposure * book.equity * k:
        out.add("max_gross_exposure")
    if lim.max_daily_loss_pct is not None and daily_loss_pct(book) > lim.max_daily_loss_pct * k:
        out.add("max_daily_loss_pct")
    return out


# -- properties ----------------------------------------------------------------------------------


@PROFILE
@given(cases())
def test_approved_orders_never_leave_a_limit_exceeded(case):
    lim, book, intent = case
    decision = RiskGuard(lim).check(intent, book)
    if intent.origin == "guard":
        assert decision.approved
        return
    if decision.approved:
        assert breaches(lim, book, intent, slack=REL) == set()
        if is_reduction(intent, book):        # exempt from exposure limits, but never adds exposure
            assert symbol_exposure(book, intent.symbol, intent) <= symbol_exposure(book, intent.symbol) * (1 + REL)
            assert gross(book, intent) <= gross(book) * (1 + REL)


@PROFILE
@given(cases())
def test_denials_name_a_limit_that_is_really_breached(case):
    lim, book, intent = case
    decision = RiskGuard(lim).check(intent, book)
    if isinstance(decision, Denied):
        assert decision.limit in breaches(lim, book, intent, slack=-REL), decision
        assert decision.reason.startswith(decision.limit)


@PROFILE
@given(cases())
def test_reductions_are_never_blocked_by_exposure_limits(case):
    lim, book, intent = case
    if intent.origin != "strategy" or not is_reduction(intent, book):
        return
    decision = RiskGuard(lim).check(intent, book)
    assert decision.approved or decision.limit not in EXPOSURE_LIMITS, decision


@PROFILE
@given(cases())
def test_check_is_deterministic_and_leaves_its_inputs_alone(case):
    lim, book, intent = case
    before = copy.deepcopy((book, intent))
    first = RiskGuard(lim).check(intent, book)
    assert (book, intent) == before
    assert RiskGuard(RiskLimits(**lim.active())).check(*copy.deepcopy((intent, book))) == first
    assert RiskGuard(lim).check(intent, book) == first


equity_paths = st.lists(st.floats(1.0, 1e5), min_size=1, max_size=80)


@PROFILE
@given(st.floats(0.1, 100.0), equity_paths, st.lists(st.integers(0, 6 * 3_600_000), min_size=80, max_size=80))
def test_kill_switch_fires_exactly_once_at_the_first_breach(pct, path, gaps):
    state = RiskState(RiskLimits(max_drawdown_pct=pct))
    ts, peak, expected, fired = TS, 0.0, None, []
    for i, equity in enumerate(path):
        ts += gaps[i]
        peak = max(peak, equity)
        if expected is None and equity <= peak * (1 - pct / 100):
            expected = i
        if state.on_equity(ts, equity) is not None:
            fired.append(i)
        assert state.peak_equity == peak
    assert fired == ([] if expected is None else [expected])
    assert state.halted == (expected is not None)


@PROFILE
@given(equity_paths, st.lists(st.integers(0, 9 * 3_600_000), min_size=80, max_size=80))
def test_day_start_is_the_first_equity_seen_each_utc_day(path, gaps):
    state = RiskState(RiskLimits(max_daily_loss_pct=5.0))
    ts, day, start, low = TS, None, None, None
    for i, equity in enumerate(path):
        ts += gaps[i]
        if ts // DAY_MS != day:
            day, start, low = ts // DAY_MS, equity, equity
        low = min(low, equity)
        state.on_equity(ts, equity)
        assert (state.day_start_equity, state.day_low_equity) == (start, low)


@PROFILE
@given(st.integers(1, 10), st.lists(st.integers(0, 40_000), min_size=1, max_size=60))
def test_no_rolling_minute_ever_holds_more_submissions_than_the_limit(limit, gaps):
    lim = RiskLimits(max_orders_per_minute=limit)
    guard, state = RiskGuard(lim), RiskState(lim)
    ts, sent = TS, []
    for gap in gaps:
        ts += gap
        intent = OrderIntent("BTC/USDT", Side.BUY, OrderType.MARKET, 1.0, ts, 100.0)
        if guard.check(intent, state.book(ts=ts, cash=1e6, equity=1e6, positions={}, prices={})).approved:
            state.record_submission(ts)
            sent.append(ts)
        else:   # denied only when the window really is full
            assert sum(1 for t in sent if ts - MINUTE_MS < t <= ts) == limit
    for t in sent:
        assert sum(1 for u in sent if t - MINUTE_MS < u <= t) <= limit
