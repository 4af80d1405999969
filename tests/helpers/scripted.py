"""A strategy that sends orders from a table, for scenario tests of the broker and the engine.

``script`` is JSON text (or a path to a ``.json`` file): a list of steps, each run at the close
of bar ``bar`` (1-based, the strategy's clock):

- an order: ``{"bar": 1, "side": "buy", "type": "market" | "limit" | "stop", "qty": 1.0,
  "price": 99.5, "symbol": 0, "tag": "a"}`` (``symbol`` is the index of the data, default 0;
  ``price`` is the limit or the stop price);
- a cancel: ``{"bar": 3, "cancel": "a"}`` (the order tagged ``a``);
- a model prediction to journal: ``{"bar": 2, "signal": 0.4, "confidence": 0.7, "symbol": 0}``;
- a market sell of the whole holding: ``{"bar": 9, "flatten": true, "symbol": 0}``.

``log`` (a path, optional) receives one JSON line per order notification the strategy sees:
``{"bar", "tag", "status", "reason", "executed_size", "executed_price"}``.
"""

from __future__ import annotations

import json
from pathlib import Path

import backtrader as bt

from harness.strategy import HarnessStrategy

EXEC = {"market": bt.Order.Market, "limit": bt.Order.Limit, "stop": bt.Order.Stop,
        "stoplimit": bt.Order.StopLimit}


def load_script(text: str) -> list[dict]:
    text = text.strip()
    if text.endswith(".json"):
        text = Path(text).read_text()
    return json.loads(text or "[]")


class Scripted(HarnessStrategy):
    params = (("script", "[]"), ("log", ""))

    def __init__(self):
        super().__init__()
        self.steps: dict[int, list[dict]] = {}
        for step in load_script(self.p.script):
            self.steps.setdefault(int(step["bar"]), []).append(step)
        self.tagged: dict[str, bt.Order] = {}
        self.tags: dict[int, str] = {}

    def next(self):
        for step in self.steps.get(len(self), []):
            if "cancel" in step:
                self.cancel(self.tagged[step["cancel"]])
                continue
            data = self.datas[int(step.get("symbol", 0))]
            if "signal" in step:
                self.emit_signal(data, step["signal"], step["confidence"], "scripted-1", acted=False)
                continue
            if step.get("flatten"):
                self.exit_position(data)
                continue
            kwargs = {"data": data, "size": float(step["qty"]), "exectype": EXEC[step.get("type", "market")]}
            if step.get("price") is not None:
                kwargs["price"] = float(step["price"])
            send = self.buy if step["side"] == "buy" else self.sell
            order = send(**kwargs)
            tag = step.get("tag", f"#{order.ref}")
            self.tagged[tag] = order
            self.tags[order.ref] = tag

    def notify_order(self, order):
        super().notify_order(order)
        if not self.p.log:
            return
        row = {"bar": len(self), "tag": self.tags.get(order.ref, f"#{order.ref}"), "status": order.getstatusname(),
               "reason": order.info.get("reason"), "executed_size": order.executed.size,
               "executed_price": order.executed.price}
        with open(self.p.log, "a") as fh:
            fh.write(json.dumps(row) + "\n")
