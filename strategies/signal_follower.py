"""Model-driven: long while the model's signal is above ``threshold`` with enough confidence.

Predictions come from a recorded file (Parquet or CSV with ``ts, symbol, signal, confidence,
model_version``; ``ts`` is when the prediction was made, and a bar uses the latest prediction
made at or before its close) or, by default, from the built-in online model in
:mod:`strategies.online_model`, which learns from past bars only. Every prediction the
strategy evaluates is journaled in ``signals`` with whether it was acted on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.errors import StrategyError
from harness.feed import num_to_ms
from harness.strategy import HarnessStrategy
from strategies.online_model import LOOKBACK, VERSION, ReturnModel

COLUMNS = ("ts", "symbol", "signal", "confidence", "model_version")


def load_predictions(path: str) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]]:
    """{symbol: (ts ms, signal, confidence, model_version)} sorted by time, validated."""
    import pandas as pd

    from harness.model import normalize_symbol

    file = Path(path)
    if not file.is_file():
        raise StrategyError(f"predictions file {file} not found")
    try:
        frame = pd.read_parquet(file) if file.suffix.lower() in (".parquet", ".pq") else pd.read_csv(file)
    except Exception as exc:
        raise StrategyError(f"cannot read predictions file {file}: {exc}") from None
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise StrategyError(f"predictions file {file} lacks columns {', '.join(missing)} (needs {', '.join(COLUMNS)})")
    ts = pd.to_datetime(frame["ts"], utc=True)
    if ts.isna().any() or frame["signal"].isna().any() or frame["confidence"].isna().any():
        raise StrategyError(f"predictions file {file} has empty ts, signal or confidence values")
    frame = frame.assign(ts=ts.astype("int64") // 10**6 if ts.dt.unit == "ns" else ts.astype("int64"))
    if ts.dt.unit != "ns":
        frame["ts"] = ts.dt.as_unit("ms").astype("int64")
    out = {}
    for symbol, group in frame.groupby(frame["symbol"].map(normalize_symbol), sort=True):
        group = group.sort_values("ts", kind="stable")
        out[symbol] = (group["ts"].to_numpy(np.int64), group["signal"].to_numpy(float),
                       group["confidence"].to_numpy(float), group["model_version"].astype(str).tolist())
    return out


class SignalFollower(HarnessStrategy):
    """Long while signal > ``threshold`` and confidence >= ``min_confidence``; flat otherwise.

    Parameters: ``threshold`` (0.0), ``min_confidence`` (0.55), ``fraction`` (0.95),
    ``predictions`` (a file; empty = the built-in online model).
    """

    params = (("threshold", 0.0), ("min_confidence", 0.55), ("fraction", 0.95), ("predictions", ""))

    @classmethod
    def check_params(cls, params):
        if not 0 <= params["min_confidence"] <= 1:
            raise StrategyError(f"signal_follower min_confidence must be in [0, 1], not {params['min_confidence']}")
        if not 0 < params["fraction"] <= 1:
            raise StrategyError(f"signal_follower fraction must be in (0, 1], not {params['fraction']}")
        if params["predictions"]:
            load_predictions(params["predictions"])

    def __init__(self):
        super().__init__()
        self.recorded = load_predictions(self.p.predictions) if self.p.predictions else None
        self.models = {d: ReturnModel() for d in self.datas}
        self.cursor = {d: -1 for d in self.datas}

    def predict(self, data) -> tuple[float, float, str] | None:
        if self.recorded is None:
            closes = list(data.close.get(size=min(len(data), LOOKBACK)))
            out = self.models[data].step(closes)
            return None if out is None else (out[0], out[1], VERSION)
        series = self.recorded.get(data.symbol)
        if series is None:
            return None
        ts, signal, confidence, versions = series
        now = num_to_ms(data.datetime[0])
        i = self.cursor[data]
        j = int(np.searchsorted(ts, now, side="right")) - 1
        if j < 0 or j == i:
            return None             # nothing new since the last bar
        self.cursor[data] = j
        return float(signal[j]), float(confidence[j]), versions[j]

    def next(self):
        for data in self.datas:
            prediction = self.predict(data)
            if prediction is None:
                continue
            signal, confidence, version = prediction
            want_long = signal > self.p.threshold and confidence >= self.p.min_confidence
            holding = self.holding(data) > 0
            acted = False
            if self.pending[data] is None:
                if want_long and not holding:
                    acted = self.buy_fraction(data, self.p.fraction / len(self.datas)) is not None
                elif not want_long and holding:
                    acted = self.exit_position(data) is not None
            self.emit_signal(data, signal, confidence, version, acted)
