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
    """Buys once with ``fraction`` of equity and holds: rides a crash into the drawdown limit."""

    params = (("fraction", 0.95),)

    def next(self):
        if not self.holding(self.data) and self.pending[self.data] is None and not self.broker.halted:
            self.buy_fraction(self.data, self.p.fraction)


class Burst(HarnessStrategy):
    """Sends ``per_bar`` small market buys on every bar: tests the order-rate limit."""

    params = (("per_bar", 3), ("qty", 0.0001))

    def next(self):
        for _ in range(self.p.per_bar):
            self.buy(size=self.p.qty)
