"""Cost of the risk guard per call: RiskGuard.check, RiskState.book and RiskState.on_equity (ns)."""

from __future__ import annotations

import time

from harness.model import MINUTE_MS, OrderIntent, OrderType, Side
from harness.risk import RiskGuard, RiskLimits, RiskState
from tests.bench.common import line

STAGING = RiskLimits(max_order_notional=12_000.0, max_position_notional=12_000.0, max_gross_exposure=0.98,
                     max_open_orders=10, max_orders_per_minute=20, price_band_pct=5.0, max_daily_loss_pct=3.0,
                     max_drawdown_pct=10.0)
TS = 1_750_000_000_000
N = 20_000


def per_call_ns(fn, n: int = N, repeat: int = 30) -> float:
    """Fastest of ``repeat`` runs of ``fn(n)``, in ns per call (loop overhead included)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter_ns()
        fn(n)
        best = min(best, time.perf_counter_ns() - start)
    return best / n


def run() -> None:
    positions = {"BTC/USDT": 0.02, "ETH/USDT": 0.5, "SOL/USDT": 3.0}
    prices = {"BTC/USDT": 100_000.0, "ETH/USDT": 2_500.0, "SOL/USDT": 150.0}
    buy = OrderIntent("BTC/USDT", Side.BUY, OrderType.MARKET, 0.01, TS, 100_000.0)
    too_big = OrderIntent("BTC/USDT", Side.BUY, OrderType.MARKET, 1.0, TS, 100_000.0)

    for name, limits in (("no limits", RiskLimits()), ("staging limits", STAGING)):
        guard, state = RiskGuard(limits), RiskState(limits)
        for i in range(5):
            state.record_submission(TS - i * 10_000)
        book = state.book(ts=TS, cash=5_000.0, equity=8_200.0, positions=positions, prices=prices, open_orders=2,
                          resting_buy_notional={"ETH/USDT": 100.0})

        def checks(n, guard=guard, book=book, intent=buy):
            for _ in range(n):
                guard.check(intent, book)

        def books(n, state=state):
            for _ in range(n):
                state.book(ts=TS, cash=5_000.0, equity=8_200.0, positions=positions, prices=prices, open_orders=2)

        def equities(n, state=state):
            for i in range(n):
                state.on_equity(TS + i * MINUTE_MS, 10_000.0 - (i & 7))

        line(f"check(), approved buy, {name}", per_call_ns(checks), "ns/call")
        line(f"book(), {name}", per_call_ns(books), "ns/call")
        line(f"on_equity(), {name}", per_call_ns(equities), "ns/call")
    guard = RiskGuard(STAGING)
    book = RiskState(STAGING).book(ts=TS, cash=5_000.0, equity=8_200.0, positions=positions, prices=prices)

    def denials(n):
        for _ in range(n):
            guard.check(too_big, book)

    line("check(), denied (max_order_notional), staging limits", per_call_ns(denials), "ns/call")

    def empty(n):
        for _ in range(n):
            pass

    line("empty loop (overhead included above)", per_call_ns(empty), "ns/call")
