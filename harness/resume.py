"""``live --resume RUN_ID``: pick up a live run that stopped (crash, ``kill -9``, reboot).

Before trading again the journal and the exchange are reconciled:

1. the journal's record of the run is loaded back (orders, fills, equity, events);
2. every order the journal holds as open is looked up by its client order id: one the
   exchange never received is closed as rejected (it is never re-sent), one still resting is
   cancelled (the restarted strategy decides afresh);
3. the exchange's trades since the last journaled fill are booked, each trade id once;
4. balances are read and positions synced.

So after any crash no fill is missing, none is doubled, and no order is sent twice.
"""

from __future__ import annotations

import json
import re
from typing import Any

from harness.config import Config, load_config
from harness.errors import ExchangeError, OrderNotFound, UserError
from harness.journal import Journal
from harness.model import Event, Fill, Liquidity, Order, OrderStatus, OrderType, Side


def resume_config(journal: Journal, run_id: str, config_path: str | None = None) -> tuple[str, Config]:
    """The configuration a run started with (secrets again from the environment / config file)."""
    if not journal.db_path.exists():
        raise UserError(f"cannot resume run {run_id!r}: there is no journal at {journal.db_path} "
                        "(check --reports-dir / QT_REPORTS_DIR)")
    row = journal.run_row(run_id)
    if not str(row["mode"]).startswith("live"):
        raise UserError(f"run {row['run_id']} is a {row['mode']} run; only live runs can be resumed")
    if row["status"] == "completed":
        raise UserError(f"run {row['run_id']} completed; start a new run instead of resuming it")
    path = journal.run_dir(row["run_id"]) / "run.json"
    info = json.loads(path.read_text()) if path.exists() else {}
    saved = info.get("config") or {}
    values: dict[str, Any] = {}
    for section, table in saved.items():
        if not isinstance(table, dict):
            continue
        for key, value in table.items():
            if section == "execution" and key in ("api_key", "api_secret"):
                continue
            values[f"{section}.{key}"] = tuple(value) if isinstance(value, list) else value
    config = load_config(config_path, profile=None, values=values)
    return row["run_id"], config.replace(profile=saved.get("profile"))


def _ms(value) -> int | None:
    if value is None:
        return None
    try:
        return int(value.value // 10**6)            # pandas Timestamp
    except AttributeError:
        return int(value.timestamp() * 1000)


def reconcile(session) -> None:
    """Load the run back from the journal and square it with the exchange (see module docstring)."""
    journal, run_id, broker, recorder = session.journal, session.run_id, session.broker, session.recorder
    record = journal.load(run_id)
    session.run_info = record.run_json
    ts = session.data_now()

    for row in record.events.itertuples(index=False):
        if row.kind == "positions_synced" and row.data:       # the account as the run found it
            for symbol, qty in (json.loads(row.data).get("positions") or {}).items():
                broker.portfolio.position(symbol).qty = float(qty)
            break
    fills = record.fills
    for row in fills.itertuples(index=False):
        fill = Fill(row.fill_id, row.order_id, _ms(row.ts), row.symbol, Side(row.side), row.qty, row.price,
                    row.fee, row.fee_asset, Liquidity(row.liquidity))
        recorder.fills.append(fill)
        recorder.fill_trade_ids[fill.fill_id] = row.exchange_trade_id
        qty, notional = recorder._fill_sums.get(fill.order_id, (0.0, 0.0))
        recorder._fill_sums[fill.order_id] = (qty + fill.qty, notional + fill.qty * fill.price)
        if row.exchange_trade_id:
            broker.seen_trades.add(row.exchange_trade_id)
        if row.exchange_trade_id and row.exchange_trade_id.isdigit():
            broker.trade_cursor[row.symbol] = max(broker.trade_cursor.get(row.symbol, -1), int(row.exchange_trade_id))
        broker.portfolio.apply(fill)
    broker._fill_seq = max([int(m.group(1)) for f in fills["fill_id"] if (m := re.match(r"F(\d+)$", f))], default=0)
    for row in record.equity.itertuples(index=False):
        recorder.equity_rows.append({"ts": _ms(row.ts), "cash": row.cash, "positions_value": row.positions_value,
                                     "equity": row.equity, "gross_exposure": row.gross_exposure,
                                     "drawdown_pct": row.drawdown_pct})
        broker.peak_equity = max(broker.peak_equity, row.equity)
    if recorder.equity_rows:
        last = recorder.equity_rows[-1]["ts"]
        today = [r["equity"] for r in recorder.equity_rows if r["ts"] // 86_400_000 == last // 86_400_000]
        broker.risk_state.restore(last, broker.peak_equity, today[0], min(today))
    for row in record.events.itertuples(index=False):
        recorder.events.append(Event(_ms(row.ts), row.kind, row.symbol, row.detail, row.request_id,
                                     json.loads(row.data) if row.data else {}))
        if row.kind == "kill_switch":
            broker.halted = True
            broker.risk_state.halt()
    seqs = []
    for row in record.orders.itertuples(index=False):
        order = Order(row.order_id, row.client_order_id, row.symbol, Side(row.side), OrderType(row.type), row.qty,
                      _ms(row.ts), price=None if row.price != row.price else row.price,
                      stop_price=None if row.stop_price != row.stop_price else row.stop_price,
                      status=OrderStatus(row.status), filled_qty=row.filled_qty or 0.0, reason=row.reason or "",
                      exchange_order_id=row.exchange_order_id or "", origin=row.origin or "strategy")
        recorder.orders[order.order_id] = dict(row._asdict())
        if m := re.match(r"O(\d+)$", order.order_id):
            seqs.append(int(m.group(1)))
        if order.status.is_open:
            _settle_open_order(session, order, ts)
        if order.exchange_order_id:
            broker.by_exchange_id[order.exchange_order_id] = (None, order)
    broker._order_seq = max(seqs, default=0)
    for symbol in session.symbols:
        broker.pull_fills(symbol)
    journal.update_run(run_id, status="running", finished_at=None)
    recorder.event(Event(ts, "run_resumed", "", f"resumed after {len(record.fills)} journaled fills",
                         data={"fills": len(record.fills), "orders": len(record.orders)}))
    recorder.flush(force=True)


def _settle_open_order(session, order: Order, ts: int) -> None:
    """An order the journal holds as open: close it as never sent, or cancel it on the exchange."""
    client, recorder = session.client, session.recorder
    try:
        seen = client.fetch_order(order.symbol, client_order_id=order.client_order_id)
    except OrderNotFound:
        order.status = OrderStatus.REJECTED
        order.reason = "never reached the exchange: the run stopped before it was confirmed (not re-sent)"
        recorder.order(order, ts)
        recorder.event(Event(ts, "order_rejected", order.symbol, order.reason,
                             data={"reason": order.reason, "code": None, "order_id": order.order_id}))
        return
    except ExchangeError as exc:
        recorder.event(Event(ts, "exchange_error", order.symbol, f"resume lookup failed: {exc}",
                             data={"error": str(exc), "kind": type(exc).__name__, "retried": True}))
        return
    order.exchange_order_id = seen.exchange_order_id
    if seen.status.is_open:
        try:
            client.cancel_order(order.symbol, client_order_id=order.client_order_id)
            order.status, order.reason = OrderStatus.CANCELED, "canceled on resume"
        except OrderNotFound:
            order.status = seen.status
    else:
        order.status = seen.status
    recorder.order(order, ts)
