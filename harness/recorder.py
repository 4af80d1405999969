"""What a run writes down as it goes: orders, fills, events, signals, equity points.

:class:`Recorder` keeps rows in memory and turns them into journal tables at the end (replay).
A durable subclass used by live runs writes each fill and order change to the journal as it
happens (see ``harness.live``). Rows use the journal's column names; times are ms.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from harness.journal import table_from_rows
from harness.model import Event, Fill, Order


def order_row(order: Order, updated_at: int, avg_price: float | None) -> dict[str, Any]:
    return {
        "order_id": order.order_id, "client_order_id": order.client_order_id,
        "exchange_order_id": order.exchange_order_id, "ts": order.ts, "symbol": order.symbol,
        "side": order.side.value, "type": order.type.value, "qty": order.qty, "price": order.price,
        "stop_price": order.stop_price, "status": order.status.value, "reason": order.reason,
        "filled_qty": order.filled_qty, "avg_price": avg_price, "origin": order.origin, "updated_at": updated_at,
    }


def fill_row(fill: Fill, exchange_trade_id: str = "") -> dict[str, Any]:
    return {"fill_id": fill.fill_id, "order_id": fill.order_id, "ts": fill.ts, "symbol": fill.symbol,
            "side": fill.side.value, "qty": fill.qty, "price": fill.price, "fee": fill.fee,
            "fee_asset": fill.fee_asset, "liquidity": fill.liquidity.value, "exchange_trade_id": exchange_trade_id}


def event_row(event: Event) -> dict[str, Any]:
    return {"ts": event.ts, "kind": event.kind, "symbol": event.symbol, "detail": event.detail,
            "request_id": event.request_id,
            "data": json.dumps(event.data, sort_keys=True, default=str) if event.data else ""}


class Recorder:
    """In-memory record of one run."""

    def __init__(self) -> None:
        self.orders: dict[str, dict[str, Any]] = {}
        self.fills: list[Fill] = []
        self.fill_trade_ids: dict[str, str] = {}
        self.events: list[Event] = []
        self.signals: list[dict[str, Any]] = []
        self._fill_sums: dict[str, tuple[float, float]] = {}

    def order(self, order: Order, ts: int) -> None:
        """Record an order's current state (called on every change)."""
        qty, notional = self._fill_sums.get(order.order_id, (0.0, 0.0))
        self.orders[order.order_id] = order_row(order, ts, notional / qty if qty else None)

    def fill(self, fill: Fill, exchange_trade_id: str = "") -> None:
        self.fills.append(fill)
        if exchange_trade_id:
            self.fill_trade_ids[fill.fill_id] = exchange_trade_id
        qty, notional = self._fill_sums.get(fill.order_id, (0.0, 0.0))
        self._fill_sums[fill.order_id] = (qty + fill.qty, notional + fill.qty * fill.price)

    def event(self, event: Event) -> None:
        self.events.append(event)

    def signal(self, ts: int, symbol: str, signal: float, confidence: float, model_version: str,
               acted: bool) -> None:
        self.signals.append({"ts": ts, "symbol": symbol, "signal": float(signal),
                             "confidence": float(confidence), "model_version": model_version, "acted": bool(acted)})

    def count(self, kind: str) -> int:
        return sum(1 for e in self.events if e.kind == kind)

    def tables(self) -> dict[str, pa.Table]:
        """orders, fills, events and signals as journal tables (trades and equity come from the engine)."""
        orders = sorted(self.orders.values(), key=lambda r: (r["ts"], r["order_id"]))
        fills = [fill_row(f, self.fill_trade_ids.get(f.fill_id, "")) for f in self.fills]
        events = [event_row(e) for e in sorted(self.events, key=lambda e: e.ts)]
        signals = sorted(self.signals, key=lambda r: (r["ts"], r["symbol"]))
        return {"orders": table_from_rows("orders", orders), "fills": table_from_rows("fills", fills),
                "events": table_from_rows("events", events), "signals": table_from_rows("signals", signals)}
