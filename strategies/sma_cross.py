"""SMA crossover: long when the fast SMA crosses above the slow one, flat when it crosses below."""

from __future__ import annotations

import backtrader as bt

from harness.errors import StrategyError
from harness.strategy import HarnessStrategy


class SmaCross(HarnessStrategy):
    """Long-only SMA crossover on every symbol of the run.

    Parameters: ``fast`` (10) and ``slow`` (30) SMA periods in bars; ``fraction`` (0.95) of
    current equity committed on entry, after fees, rounded to the lot step.
    """

    params = (("fast", 10), ("slow", 30), ("fraction", 0.95))

    @classmethod
    def check_params(cls, params):
        if not 0 < params["fast"] < params["slow"]:
            raise StrategyError(f"sma_cross needs 0 < fast < slow (got fast={params['fast']}, slow={params['slow']})")
        if not 0 < params["fraction"] <= 1:
            raise StrategyError(f"sma_cross fraction must be in (0, 1], not {params['fraction']}")

    def __init__(self):
        super().__init__()
        self.cross = {d: bt.ind.CrossOver(bt.ind.SMA(d.close, period=self.p.fast),
                                          bt.ind.SMA(d.close, period=self.p.slow)) for d in self.datas}

    def next(self):
        for data, cross in self.cross.items():
            if self.pending[data] is not None:
                continue
            signal = cross[0]
            if signal > 0 and not self.holding(data):
                self.buy_fraction(data, self.p.fraction / len(self.datas))
            elif signal < 0 and self.holding(data):
                self.exit_position(data)
