"""harness.accounting: the spot Portfolio (cash, holdings, fees in the quote or the base asset)
and build_trades (round trips rebuilt from fills alone). Values worked out by hand."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.accounting import Portfolio, build_trades
from harness.model import Fill, Liquidity, Side

BTC, ETH = "BTC/USDT", "ETH/USDT"
T = 1_709_251_200_000
MIN = 60_000
_seq = iter(range(1, 10**9))


def fill(side: str, qty: float, price: float, fee: float, ts: int = 0, symbol: str = BTC, fee_asset: str = "USDT",
         fill_id: str | None = None) -> Fill:
    return Fill(fill_id or f"F{next(_seq):07d}", "O1", T + ts * MIN, symbol, Side(side), qty, price, fee, fee_asset,
                Liquidity.TAKER)


def test_portfolio_books_buys_sells_and_quote_fees():
    p = Portfolio(1_000.0)
    assert p.apply(fill("buy", 2.0, 100.0, 0.2)) == 0.0
    assert (p.cash, p.qty(BTC), p.position(BTC).avg_price) == (pytest.approx(799.8), 2.0, 100.0)
    p.apply(fill("buy", 1.0, 103.0, 0.103))
    assert p.cash == pytest.approx(696.697) and p.position(BTC).avg_price == pytest.approx(101.0)
    assert p.apply(fill("sell", 1.5, 110.0, 0.165)) == pytest.approx(13.5)      # (110 - 101) × 1.5, before fees
    assert p.cash == pytest.approx(861.532) and p.qty(BTC) == 1.5
    assert p.position(BTC).avg_price == pytest.approx(101.0)                     # a sale does not move the entry
    p.mark(BTC, 120.0)
    assert (p.positions_value(), p.gross_exposure()) == (180.0, 180.0)
    assert p.equity() == pytest.approx(861.532 + 180.0)
    assert p.apply(fill("sell", 1.5, 90.0, 0.135)) == pytest.approx(-16.5)
    assert p.qty(BTC) == 0.0 and p.position(BTC).avg_price == 0.0
    assert p.cash == pytest.approx(996.397)
    assert p.fees_paid == pytest.approx(0.2 + 0.103 + 0.165 + 0.135)
    assert p.cash == pytest.approx(1_000.0 + 13.5 - 16.5 - p.fees_paid)


def test_portfolio_fee_in_the_base_asset_shrinks_the_holding():
    p = Portfolio(1_000.0)
    p.apply(fill("buy", 1.0, 100.0, 0.001, fee_asset="BTC"))
    assert (p.cash, p.qty(BTC)) == (900.0, 0.999)
    assert p.fees_paid == pytest.approx(0.1)                                    # valued in the quote at the fill


def test_portfolio_quantities_stay_free_of_float_dust():
    p = Portfolio(10_000.0)
    for _ in range(10):
        p.apply(fill("buy", 0.1, 100.0, 0.0))
    p.apply(fill("sell", 0.3, 100.0, 0.0))
    assert p.qty(BTC) == 0.7                                                     # not 0.7000000000000001
    p.apply(fill("sell", 0.7, 100.0, 0.0))
    assert p.qty(BTC) == 0.0


def test_a_round_trip_with_two_entries():
    trades = build_trades([fill("buy", 2.0, 100.0, 0.2, ts=1), fill("buy", 1.0, 103.0, 0.103, ts=2),
                           fill("sell", 3.0, 110.0, 0.33, ts=5)])
    (t,) = trades
    assert (t.trade_id, t.symbol, t.opened_at, t.closed_at) == ("T000001", BTC, T + MIN, T + 5 * MIN)
    assert (t.qty, t.entry_price, t.exit_price) == (3.0, 101.0, 110.0)
    assert t.fees == pytest.approx(0.633)
    assert t.pnl == pytest.approx(330.0 - 303.0 - 0.633)                         # 26.367
    assert t.return_pct == pytest.approx(100 * 26.367 / 303.0)


def test_partial_exits_close_the_trade_when_flat():
    trades = build_trades([fill("buy", 2.0, 100.0, 0.2, ts=1), fill("sell", 1.0, 105.0, 0.105, ts=2),
                           fill("sell", 1.0, 95.0, 0.095, ts=3), fill("buy", 1.0, 90.0, 0.09, ts=4)])
    first, second = trades
    assert (first.closed_at, first.qty, first.exit_price) == (T + 3 * MIN, 2.0, 100.0)
    assert first.pnl == pytest.approx(-0.4)
    # the later buy opens a trade still open at the end
    assert (second.trade_id, second.opened_at, second.closed_at, second.pnl, second.exit_price) == \
        ("T000002", T + 4 * MIN, None, None, None)
    assert (second.entry_price, second.fees) == (90.0, pytest.approx(0.09))


def test_an_open_trade_with_a_partial_exit_reports_the_exit_so_far():
    (t,) = build_trades([fill("buy", 2.0, 100.0, 0.0, ts=1), fill("sell", 0.5, 120.0, 0.0, ts=2)])
    assert (t.closed_at, t.qty, t.exit_price, t.pnl) == (None, 2.0, 120.0, None)


def test_selling_a_holding_older_than_the_record_is_not_a_round_trip():
    assert build_trades([fill("sell", 1.0, 100.0, 0.1, ts=1)]) == []


def test_symbols_are_tracked_apart_and_fills_sorted_by_time():
    fills = [fill("sell", 1.0, 2_100.0, 0.0, ts=6, symbol=ETH, fill_id="F5"),
             fill("buy", 1.0, 100.0, 0.0, ts=1, fill_id="F1"),
             fill("buy", 1.0, 2_000.0, 0.0, ts=2, symbol=ETH, fill_id="F2"),
             fill("sell", 1.0, 90.0, 0.0, ts=3, fill_id="F3")]
    btc, eth = build_trades(fills)
    assert (btc.trade_id, btc.symbol, btc.pnl) == ("T000001", BTC, pytest.approx(-10.0))
    assert (eth.trade_id, eth.symbol, eth.pnl) == ("T000002", ETH, pytest.approx(100.0))


def test_fee_in_the_base_asset_in_a_round_trip():
    (t,) = build_trades([fill("buy", 1.0, 100.0, 0.001, ts=1, fee_asset="BTC"),
                         fill("sell", 0.999, 110.0, 0.10989, ts=2)])
    assert t.closed_at == T + 2 * MIN                         # the fee-reduced holding sold: flat
    assert t.fees == pytest.approx(0.1 + 0.10989)
    assert t.pnl == pytest.approx(0.999 * 110.0 - 100.0 - 0.20989)


@st.composite
def fill_sequences(draw):
    """Buys and sells on a 0.001 lot that never sell more than held, ending flat."""
    steps = draw(st.lists(st.tuples(st.booleans(), st.integers(1, 5_000), st.integers(1_000, 20_000),
                                    st.integers(0, 20)), min_size=1, max_size=30))
    held = 0
    out = []
    for i, (is_buy, lots, cents, fee_bps) in enumerate(steps):
        if not is_buy:
            lots = min(lots, held)
            if lots == 0:
                continue
        held += lots if is_buy else -lots
        price = cents / 100
        out.append(fill("buy" if is_buy else "sell", lots / 1000, price, lots / 1000 * price * fee_bps / 10_000,
                        ts=i, fill_id=f"F{i:04d}"))
    if held:
        out.append(fill("sell", held / 1000, 100.0, 0.0, ts=len(steps), fill_id=f"F{len(steps):04d}"))
    return out


@given(fill_sequences())
@settings(max_examples=200, deadline=None)
def test_closed_trades_account_for_every_cash_movement(fills):
    """Ending flat, Σ trade pnl (after fees) equals the portfolio's cash change; trades never overlap."""
    p = Portfolio(1e7)
    for f in fills:
        p.apply(f)
    trades = build_trades(fills)
    assert p.qty(BTC) == 0.0
    assert all(t.closed_at is not None for t in trades)
    assert sum(t.pnl for t in trades) == pytest.approx(p.cash - 1e7, abs=1e-6)
    assert sum(t.fees for t in trades) == pytest.approx(p.fees_paid, abs=1e-9)
    spans = sorted((t.opened_at, t.closed_at) for t in trades)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))
