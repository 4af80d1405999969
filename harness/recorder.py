"""What a run writes down as it goes: orders, fills, events, signals, equity points.

:class:`Recorder` keeps rows in memory and turns them into journal tables at the end (replay).
A durable subclass used by live runs writes each fill and order change to the journal as it
happens (see ``harness.live``). Rows use the journal's column names; times are ms.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa

from harness.accounting import build_trades
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


def trades_table(fills: list[Fill], dust: dict[str, float] | None = None) -> pa.Table:
    """The ``trades`` table rebuilt from fills (round trips, see accounting.build_trades;
    ``dust`` maps symbols to their lot step)."""
    rows = [{"trade_id": t.trade_id, "symbol": t.symbol, "opened_at": t.opened_at, "closed_at": t.closed_at,
             "qty": t.qty, "entry_price": t.entry_price, "exit_price": t.exit_price, "pnl": t.pnl,
             "return_pct": t.return_pct, "fees": t.fees} for t in build_trades(fills, dust)]
    return table_from_rows("trades", rows)


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


class DurableRecorder(Recorder):
    """A recorder for live runs: every row is in the run's write-ahead log the moment it exists,
    and in the DuckDB catalog within ``interval_s`` (a fill wakes the writer at once).

    The log (``reports/<run_id>/journal.wal``, one JSON line per row with a sequence number)
    costs microseconds on the trading path; the catalog write (tens to hundreds of ms, holding
    DuckDB's file lock only briefly so other processes can read) happens on a background
    thread. The catalog remembers the last sequence it holds (``runs.wal_seq``): a reader or a
    resumed run adds the log's newer lines, so a ``kill -9`` loses nothing that was recorded.
    """

    def __init__(self, journal, run_id: str, interval_s: float = 0.5, start_seq: int = 0,
                 dust: dict[str, float] | None = None):
        super().__init__()
        self.dust = dust
        import threading

        self.journal = journal
        self.run_id = run_id
        self.interval_s = interval_s
        self.equity_rows: list[dict[str, Any]] = []
        self.run_fields: dict[str, Any] = {}
        self._seq = start_seq
        self._pending: list[tuple[int, str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._wal = None
        self._thread: threading.Thread | None = None
        self.errors: list[str] = []

    # -- lifecycle ------------------------------------------------------------------------------

    def open(self) -> None:
        """Open the log (appending) and start the catalog writer."""
        import threading

        path = self.journal.wal_path(self.run_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._wal = path.open("a", encoding="utf-8")
        self._thread = threading.Thread(target=self._writer, name=f"journal-{self.run_id[-6:]}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the writer after a last catalog write; close the log."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None
        self._write_catalog()
        if self._wal is not None:
            self._wal.close()
            self._wal = None

    # -- rows -----------------------------------------------------------------------------------

    def _log(self, table: str, row: dict[str, Any]) -> None:
        with self._lock:
            self._seq += 1
            item = (self._seq, table, row)
            self._pending.append(item)
            if self._wal is not None:
                self._wal.write(json.dumps({"seq": self._seq, "table": table, "row": row}, default=str) + "\n")
                self._wal.flush()              # in the OS now: survives the process being killed

    def order(self, order: Order, ts: int) -> None:
        super().order(order, ts)
        self._log("orders", self.orders[order.order_id])

    def fill(self, fill: Fill, exchange_trade_id: str = "") -> None:
        super().fill(fill, exchange_trade_id)
        self._log("fills", fill_row(fill, exchange_trade_id))
        self._wake.set()

    def event(self, event: Event) -> None:
        super().event(event)
        self._log("events", event_row(event))

    def signal(self, ts, symbol, signal, confidence, model_version, acted) -> None:
        super().signal(ts, symbol, signal, confidence, model_version, acted)
        self._log("signals", self.signals[-1])

    def equity(self, row: dict[str, Any]) -> None:
        self.equity_rows.append(row)
        self._log("equity", row)

    def flush(self, force: bool = False) -> bool:
        """Ask the writer for a catalog write now (``force``); without a writer, write here."""
        if self._thread is None:
            return self._write_catalog()
        if force:
            self._wake.set()
        return False

    # -- the catalog writer ---------------------------------------------------------------------

    def _writer(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            try:
                self._write_catalog()
            except Exception as exc:            # keep trading; the log still has every row
                self.errors.append(f"{type(exc).__name__}: {exc}")

    def _write_catalog(self) -> bool:
        with self._lock:
            batch, self._pending = self._pending, []
            fields, self.run_fields = self.run_fields, {}
            fills = list(self.fills) if any(t == "fills" for _, t, _ in batch) else None
        if not batch and not fields:
            return False
        tables = {name: table_from_rows(name, [row for _, t, row in batch if t == name])
                  for name in ("orders", "fills", "events", "signals", "equity")}
        replace: tuple[str, ...] = ()
        if fills is not None:
            tables["trades"] = trades_table(fills, self.dust)
            replace = ("trades",)
        if batch:
            fields = {**fields, "wal_seq": batch[-1][0]}
        try:
            self.journal.append(self.run_id, tables, replace=replace, run_fields=fields)
        except Exception:
            with self._lock:                   # put the batch back: it is written next time
                self._pending = batch + self._pending
            raise
        return True

    def tables(self) -> dict[str, pa.Table]:
        out = super().tables()
        out["equity"] = table_from_rows("equity", self.equity_rows)
        return out
