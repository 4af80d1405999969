"""RSI mean reversion: long when RSI falls under ``lower``, flat when it rises over ``upper``."""

from __future__ import annotations

import backtrader as bt

from harness.errors import StrategyError
from harness.strategy import HarnessStrategy


class RsiReversion(HarnessStrategy):
    """Long-only RSI reversion on every symbol of the run.

    Parameters: ``period`` (14) of Wilder's RSI; ``lower`` (30) and ``upper`` (70) thresholds;
    ``fraction`` (0.95) of current equity committed on entry.
    """

    params = (("period", 14), ("lower", 30.0), ("upper", 70.0), ("fraction", 0.95))

    @classmethod
    def check_params(cls, params):
        if params["period"] < 2:
            raise StrategyError(f"rsi_reversion period must be at least 2, not {params['period']}")
        if not 0 <= params["lower"] < params["upper"] <= 100:
            raise StrategyError("rsi_reversion needs 0 <= lower < upper <= 100 "
                                f"(got lower={params['lower']}, upper={params['upper']})")
        if not 0 < params["fraction"] <= 1:
            raise StrategyError(f"rsi_reversion fraction must be in (0, 1], not {params['fraction']}")

    def __init__(self):
        super().__init__()
        self.rsi = {d: bt.ind.RSI(d.close, period=self.p.period, safediv=True) for d in self.datas}

    def next(self):
        for data, rsi in self.rsi.items():
            if self.pending[data] is not None:
                continue
            value = rsi[0]
            if value < self.p.lower and not self.holding(data):
                self.buy_fraction(data, self.p.fraction / len(self.datas))
            elif value > self.p.upper and self.holding(data):
                self.exit_position(data)
