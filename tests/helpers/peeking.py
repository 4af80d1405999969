"""Strategies that try to see the future, for the look-ahead tests."""

from __future__ import annotations

from harness.strategy import HarnessStrategy


class PeekNext(HarnessStrategy):
    """Reads the next bar's close (``close[1]``) and buys when it is higher: a classic leak."""

    def next(self):
        if len(self) > 5 and self.data.close[1] > self.data.close[0]:
            self.buy(size=0.1)


class PeekForwardLine(HarnessStrategy):
    """Builds a line shifted from the future (``close(1)``) in ``__init__`` and trades on it."""

    def __init__(self):
        super().__init__()
        self.future_close = self.data.close(1)

    def next(self):
        if 5 < len(self) < self.data.buflen() and self.future_close[0] > self.data.close[0]:
            self.buy(size=0.1)


class PeekOperation(HarnessStrategy):
    """Combines lines in ``__init__`` (``close - open``) and reads the result one bar ahead."""

    def __init__(self):
        super().__init__()
        self.body = self.data.close - self.data.open

    def next(self):
        if 5 < len(self) < self.data.buflen() and self.body[1] > 0:
            self.buy(size=0.1)
