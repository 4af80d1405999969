"""Strategies for the live tests, loaded by path (``tests/helpers/live_strategies.py:Cycle``)."""

from __future__ import annotations

import json
import os

from harness.feed import num_to_ms
from harness.strategy import HarnessStrategy


class Cycle(HarnessStrategy):
    """Trades on a fixed cycle of the bars it sees, whatever it holds: a market buy of ``qty`` on
    the first bar of every ``period``, a market sell of ``sell_qty`` half a period later. So it
    keeps trading across kills and resumes, and its orders do not depend on its position.

    ``log`` (optional): one JSON line per bar — the process id, the bar's close time and the
    position the strategy sees (``getposition(data).size``).
    """

    params = (("period", 4), ("qty", 0.01), ("sell_qty", 0.0099), ("log", ""))

    def __init__(self):
        super().__init__()
        self.calls = 0

    def next(self):
        data = self.datas[0]
        self.calls += 1
        if self.p.log:
            with open(self.p.log, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"pid": os.getpid(), "ts": num_to_ms(data.datetime[0]), "call": self.calls,
                                     "size": self.getposition(data).size}) + "\n")
        phase = (self.calls - 1) % self.p.period
        if phase == 0:
            self.buy(data=data, size=self.p.qty)
        elif phase == self.p.period // 2:
            self.sell(data=data, size=self.p.sell_qty)
