"""A small online model for ``signal_follower``: logistic regression learnt bar by bar.

At each closed bar it first learns from the bar that just closed (were the features of the
previous bar followed by a rise?), then predicts the next bar. It only ever sees past bars, is
deterministic (zero start, fixed learning rate) and costs a few microseconds per bar.
Features: the last 1-, 5- and 15-bar log returns and the distance from a 20-bar mean, each
scaled by a running volatility, plus that volatility's ratio to its slow average.
"""

from __future__ import annotations

import math

VERSION = "online-logreg-v1"
LOOKBACK = 21


class OnlineLogit:
    """Online logistic regression with L2 decay on a handful of features."""

    def __init__(self, n_features: int, learning_rate: float = 0.05, l2: float = 1e-4):
        self.w = [0.0] * (n_features + 1)
        self.lr = learning_rate
        self.l2 = l2
        self.seen = 0

    def predict(self, x: list[float]) -> float:
        z = self.w[0] + sum(wi * xi for wi, xi in zip(self.w[1:], x, strict=True))
        z = max(-30.0, min(30.0, z))
        return 1.0 / (1.0 + math.exp(-z))

    def learn(self, x: list[float], y: float) -> None:
        err = y - self.predict(x)
        lr, decay = self.lr, 1.0 - self.lr * self.l2
        self.w[0] += lr * err
        for i, xi in enumerate(x, start=1):
            self.w[i] = self.w[i] * decay + lr * err * xi
        self.seen += 1


class ReturnModel:
    """Features from recent closes and the online logit that maps them to P(next close > close)."""

    def __init__(self):
        self.model = OnlineLogit(5)
        self.fast_var = None
        self.slow_var = None
        self.prev_x: list[float] | None = None
        self.prev_close: float | None = None

    def features(self, closes: list[float]) -> list[float] | None:
        """``closes`` holds the last LOOKBACK closes, oldest first."""
        if len(closes) < LOOKBACK or min(closes) <= 0:
            return None
        c = closes[-1]
        r1 = math.log(c / closes[-2])
        self.fast_var = r1 * r1 if self.fast_var is None else 0.9 * self.fast_var + 0.1 * r1 * r1
        self.slow_var = r1 * r1 if self.slow_var is None else 0.995 * self.slow_var + 0.005 * r1 * r1
        vol = math.sqrt(self.fast_var) or 1e-9
        mean20 = sum(closes[-20:]) / 20.0
        clip = lambda v: max(-5.0, min(5.0, v))  # noqa: E731
        return [clip(r1 / vol), clip(math.log(c / closes[-6]) / (vol * math.sqrt(5))),
                clip(math.log(c / closes[-16]) / (vol * math.sqrt(15))), clip((c / mean20 - 1.0) / vol),
                clip(math.sqrt(self.fast_var / self.slow_var) - 1.0 if self.slow_var else 0.0)]

    def step(self, closes: list[float]) -> tuple[float, float] | None:
        """Learn from the bar that closed, then (signal in [-1, 1], confidence in [0.5, 1]) for the next."""
        close = closes[-1]
        if self.prev_x is not None and self.prev_close is not None:
            self.model.learn(self.prev_x, 1.0 if close > self.prev_close else 0.0)
        x = self.features(closes)
        self.prev_x, self.prev_close = x, close
        if x is None or self.model.seen < 50:
            return None
        p = self.model.predict(x)
        return 2.0 * p - 1.0, max(p, 1.0 - p)
