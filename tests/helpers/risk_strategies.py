"""Strategies that push against the risk limits, for the scenario tests."""

from __future__ import annotations

from harness.strategy import HarnessStrategy


class KeepBuying(HarnessStrategy):
    """Buys ``fraction`` of equity every bar, whatever it holds: runs into the position limit."""

    params = (("fraction", 0.3),)

    def next(self):
        if self.pending[self.data] is None:
            qty = self.entry_qty(self.data, self.p.fraction)
            if qty > 0:
                self.pending[self.data] = self.buy(size=qty)


class BuyAndHold(HarnessStrategy):
    """Buys once with ``fraction`` of equity and holds: rides a crash into the drawdown limit.

    Once the kill switch has flattened it, it tries ``buybacks`` more market buys, one a bar,
    straight through ``self.buy`` (``buy_fraction`` would not send them): the guard must refuse each."""

    params = (("fraction", 0.95), ("buybacks", 3))

    def __init__(self):
        super().__init__()
        self.buybacks = 0

    def next(self):
        if self.holding(self.data) or self.pending[self.data] is not None:
            return
        if not self.broker.halted:
            self.buy_fraction(self.data, self.p.fraction)
        elif self.buybacks < self.p.buybacks:
            qty = self.entry_qty(self.data, self.p.fraction)
            if qty > 0:
                self.buybacks += 1
                self.pending[self.data] = self.buy(data=self.data, size=qty)


class Burst(HarnessStrategy):
    """Sends ``per_bar`` small market buys on every bar: tests the order-rate limit."""

    params = (("per_bar", 3), ("qty", 0.0001))

    def next(self):
        for _ in range(self.p.per_bar):
            self.buy(size=self.p.qty)
