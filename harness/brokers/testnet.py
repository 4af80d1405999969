"""The exchange broker: orders through the exchange adapter (Binance spot testnet or a loopback
paper exchange), behind the same guard as the paper broker.

- Every order carries the harness's own client order id and is journaled before it is sent,
  so a crash between sending and hearing back leaves a row ``live --resume`` can look up.
- Fills are what the exchange reports in ``myTrades`` (price, quantity, fee, fee asset, trade
  id), journaled as soon as they are seen; an exchange trade id is never booked twice.
- Positions and cash come from exchange balances at start and every ``sync_seconds``
  (``positions_synced``); a difference from what the fills say is a ``position_mismatch``.
- Times in the journal are data times: exchange time minus ``time_offset`` (non-zero only
  when a paper exchange replays recorded bars shifted to the present, i.e. paced replay).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import backtrader as bt

from harness import fills as fm
from harness.brokers.base import HarnessBroker
from harness.errors import ExchangeError, OrderNotFound, OrderRejected
from harness.model import Event, Fill, MarketRules, Order, OrderStatus, Side


class TestnetBroker(HarnessBroker):
    """A backtrader broker whose fills come from a real (or paper) exchange."""

    __test__ = False        # not a pytest class

    def __init__(self, client, rules: dict[str, MarketRules], fill_config, limits=None, recorder=None,
                 quote_asset: str = "USDT", id_prefix: str = "qt", time_offset: int = 0,
                 poll_seconds: float = 1.0, sync_seconds: float = 300.0,
                 now: Callable[[], float] = time.monotonic):
        super().__init__(0.0, rules, fill_config, limits=limits, recorder=recorder, quote_asset=quote_asset,
                         id_prefix=id_prefix)
        self.client = client
        self.time_offset = time_offset
        self.poll_seconds = poll_seconds
        self.sync_seconds = sync_seconds
        self._now = now
        self._datas: list = []
        self.by_exchange_id: dict[str, tuple[bt.Order | None, Order]] = {}
        self.seen_trades: set[str] = set()
        self.trade_cursor: dict[str, int] = {}       # per symbol: exchange time of the last trade seen
        self.positions_synced = False
        self.last_sync_ts: int | None = None
        self._last_poll = 0.0
        self._last_sync = 0.0
        self._bar_lens: list[int] = []
        self.peak_equity = 0.0
        self.unconfirmed: dict[str, float] = {}      # client id → monotonic deadline for the exchange to know it
        self.confirm_seconds = 60.0
        self.window_end: int | None = None            # paced replay: orders stamped at or after it are not sent
        self.visible_at: dict[int, float] = {}        # bar close (data time) → perf_counter when it was seen
        self.bar_latencies_ms: list[float] = []       # bar seen → its order's request started

    def attach(self, datas) -> None:
        self._datas = list(datas)
        self._bar_lens = [0] * len(self._datas)

    # -- start: the account as the exchange sees it -----------------------------------------

    def sync_positions(self, ts: int, initial: bool = False) -> dict[str, float]:
        """Read balances; set cash and holdings from them; journal ``positions_synced`` and any mismatch."""
        balances = self.client.fetch_balances()
        free, locked = balances.get(self.quote_asset, (0.0, 0.0))
        holdings = {}
        for data in self._datas:
            base = data.symbol.split("/")[0]
            f, lk = balances.get(base, (0.0, 0.0))
            holdings[data.symbol] = round(f + lk, 12)
        if not initial:
            for symbol, qty in holdings.items():
                mine = self.portfolio.qty(symbol)
                step = self.rules[symbol].lot_step if symbol in self.rules else 1e-8
                if abs(mine - qty) > step / 2:
                    self.recorder.event(Event(ts, "position_mismatch", symbol,
                                              f"journal holds {mine:g}, exchange {qty:g}",
                                              data={"symbol": symbol, "journal_qty": mine, "exchange_qty": qty}))
        self.portfolio.cash = free + locked
        for data in self._datas:               # the exchange's holdings are what the strategy sees
            pos = self.portfolio.position(data.symbol)
            qty = holdings[data.symbol]
            pos.qty = qty
            bt_pos = self.getposition(data)
            bt_pos.size = qty
            if not qty:
                bt_pos.price = 0.0
            elif not bt_pos.price:
                bt_pos.price = pos.avg_price or (float(data.close[0]) if len(data) else 0.0)
        self.positions_synced = True
        self.last_sync_ts = ts
        self._last_sync = self._now()
        self.recorder.event(Event(ts, "positions_synced", "", "initial" if initial else "scheduled",
                                  data={"positions": holdings, "cash": self.portfolio.cash}))
        return holdings

    # -- order entry ------------------------------------------------------------------------

    def _route(self, order: bt.Order, record: Order) -> bt.Order:
        rules = self.rules[record.symbol]
        ts = record.ts
        record.qty = fm.round_qty(record.qty, rules)
        if record.price is not None:
            record.price = fm.round_step(record.price, rules.tick_size, "down" if record.side is Side.BUY else "up")
        if record.stop_price is not None:
            record.stop_price = fm.round_price(record.stop_price, rules)
        reason = fm.check_filters(record.qty, record.price or record.stop_price, rules, float(order.data.close[0]),
                                  record.type)
        if reason:
            return self._reject(order, record, reason, ts, code=-1013)
        if self.window_end is not None and ts >= self.window_end:
            # paced replay: the window has ended; like the paper broker at its last bar, the order
            # stays open and unfilled instead of meeting bars beyond the window
            record.reason = "sent as the window ended: not sent to the exchange"
            self._accept(order, record, ts)
            return order
        self.recorder.order(record, ts)               # written ahead of the request
        self._flush(force=True)
        started = time.perf_counter()
        seen = self.visible_at.get(ts)
        if seen is not None:
            self.bar_latencies_ms.append((started - seen) * 1000)
        try:
            sent = self.client.create_order(record.symbol, record.side, record.type, record.qty, price=record.price,
                                            client_order_id=record.client_order_id, stop_price=record.stop_price)
        except OrderRejected as exc:
            return self._reject(order, record, str(exc), ts, code=exc.code)
        except ExchangeError as exc:
            # The outcome is unknown (the adapter already retried and looked it up): keep the order
            # open as unconfirmed and settle it by its client id when the exchange answers again.
            self.recorder.event(Event(ts, "exchange_error", record.symbol, f"order not confirmed: {exc}",
                                      data={"error": str(exc), "kind": type(exc).__name__, "retried": True,
                                            "endpoint": "POST /api/v3/order"}))
            record.reason = "unconfirmed: the exchange did not answer; looked up by client id until it does"
            self._accept(order, record, ts)
            self.unconfirmed[record.client_order_id] = self._now() + self.confirm_seconds
            return order
        record.exchange_order_id = sent.exchange_order_id
        if sent.status in (OrderStatus.REJECTED, OrderStatus.EXPIRED, OrderStatus.CANCELED) and not sent.filled_qty:
            return self._reject(order, record, f"exchange answered {sent.status.value}", ts)
        self._accept(order, record, ts)
        self.by_exchange_id[sent.exchange_order_id] = (order, record)
        if sent.filled_qty > 0:
            self.pull_fills(record.symbol)
        return order

    def _cancel(self, order: bt.Order, record: Order, ts: int, reason: str) -> None:
        if not record.exchange_order_id and record.client_order_id not in self.unconfirmed:
            super()._cancel(order, record, ts, reason)          # never sent: nothing to cancel remotely
            return
        try:
            self.client.cancel_order(record.symbol, client_order_id=record.client_order_id)
        except OrderNotFound:
            self.pull_fills(record.symbol)            # it filled (or vanished) meanwhile
            if order.ref not in self.open_orders:
                return
        except ExchangeError as exc:
            self.recorder.event(Event(ts, "exchange_error", record.symbol, f"cancel failed: {exc}",
                                      data={"error": str(exc), "kind": type(exc).__name__, "retried": True,
                                            "endpoint": "DELETE /api/v3/order"}))
            return
        self.pull_fills(record.symbol)
        if order.ref in self.open_orders:
            super()._cancel(order, record, ts, reason)

    def cancel_all(self, ts: int, reason: str) -> int:
        """Cancel every open order of this run (shutdown, kill switch)."""
        count = 0
        for order, record in list(self.open_orders.values()):
            self._cancel(order, record, ts, reason)
            count += 1
        return count

    # -- fills ------------------------------------------------------------------------------

    def pull_fills(self, symbol: str) -> int:
        """Book the exchange's new trades of this run's orders in ``symbol``; returns how many."""
        booked = 0
        while True:
            last_id = self.trade_cursor.get(symbol)
            if last_id is None:
                trades = self.client.fetch_my_trades(symbol, limit=1000)                 # the most recent
            else:
                trades = self.client.fetch_my_trades(symbol, from_id=last_id + 1, limit=1000)
            booked += self._book_trades(symbol, trades)
            if len(trades) < 1000:
                break
        if booked:
            self._flush(force=True)
        return booked

    def _book_trades(self, symbol: str, trades: list[Fill]) -> int:
        booked = 0
        for trade in sorted(trades, key=lambda t: (t.ts, _trade_key(t.fill_id))):
            self.trade_cursor[symbol] = max(self.trade_cursor.get(symbol, -1), _trade_key(trade.fill_id))
            if trade.fill_id in self.seen_trades:
                continue
            entry = self.by_exchange_id.get(trade.order_id)
            if entry is None:
                continue                              # not this run's order
            self.seen_trades.add(trade.fill_id)
            order, record = entry
            fill = Fill(self.next_fill_id(), record.order_id, trade.ts - self.time_offset, symbol, trade.side,
                        trade.qty, trade.price, trade.fee, trade.fee_asset or self.quote_asset, trade.liquidity)
            if order is None:                         # an order from before a restart: book it directly
                self.portfolio.apply(fill)
                record.filled_qty = round(record.filled_qty + fill.qty, 12)
                if record.status.is_open:
                    record.status = OrderStatus.FILLED if record.remaining < self._dust(symbol) else \
                        OrderStatus.PARTIALLY_FILLED
                self.recorder.fill(fill, trade.fill_id)
                self.recorder.order(record, fill.ts)
            else:
                if order.ref not in self.open_orders:
                    self.open_orders[order.ref] = (order, record)
                self._execute(order, record, fill, trade.fill_id)
            booked += 1
        return booked

    def poll_orders(self, ts: int) -> None:
        """Ask the exchange about every open order; book fills, cancellations and expiries."""
        for order, record in list(self.open_orders.values()):
            if not record.exchange_order_id:
                if record.client_order_id in self.unconfirmed:
                    self._confirm(order, record, ts)
                continue                              # held back at the window's end: never sent
            try:
                seen = self.client.fetch_order(record.symbol, client_order_id=record.client_order_id)
            except ExchangeError as exc:
                self.recorder.event(Event(ts, "exchange_error", record.symbol, f"order poll failed: {exc}",
                                          data={"error": str(exc), "kind": type(exc).__name__, "retried": True,
                                                "endpoint": "GET /api/v3/order"}))
                continue
            if seen.filled_qty > record.filled_qty + 1e-12:
                self.pull_fills(record.symbol)
            if seen.status in (OrderStatus.CANCELED, OrderStatus.EXPIRED, OrderStatus.REJECTED) \
                    and order.ref in self.open_orders:
                HarnessBroker._cancel(self, order, record, ts, f"exchange: {seen.status.value}")

    def _confirm(self, order: bt.Order, record: Order, ts: int) -> None:
        """Settle an order whose submission went unanswered: found → tracked; absent past its
        deadline → it never reached the exchange, and is closed as rejected (never re-sent)."""
        try:
            seen = self.client.fetch_order(record.symbol, client_order_id=record.client_order_id)
        except OrderNotFound:
            if self._now() >= self.unconfirmed[record.client_order_id]:
                del self.unconfirmed[record.client_order_id]
                self.open_orders.pop(order.ref, None)
                self._reject(order, record, "never reached the exchange (not re-sent)", ts)
            return
        except ExchangeError:
            return                                    # still unreachable: try again on the next poll
        del self.unconfirmed[record.client_order_id]
        record.exchange_order_id = seen.exchange_order_id
        record.reason = ""
        self.by_exchange_id[seen.exchange_order_id] = (order, record)
        self.recorder.order(record, ts)
        if seen.filled_qty > 0:
            self.pull_fills(record.symbol)
        if seen.status in (OrderStatus.CANCELED, OrderStatus.EXPIRED, OrderStatus.REJECTED) \
                and order.ref in self.open_orders:
            HarnessBroker._cancel(self, order, record, ts, f"exchange: {seen.status.value}")

    # -- the loop ---------------------------------------------------------------------------

    def next(self) -> None:
        """Called on every pass of backtrader's live loop (with or without a new bar)."""
        now = self._now()
        new_bar = False
        for i, data in enumerate(self._datas):
            n = len(data)
            if n != self._bar_lens[i]:
                self._bar_lens[i] = n
                new_bar = True
        ts = max((self.now_ms(d) for d in self._datas if len(d)), default=0)
        if self.open_orders and (new_bar or now - self._last_poll >= self.poll_seconds):
            self._last_poll = now
            self.poll_orders(ts)
        if ts and now - self._last_sync >= self.sync_seconds:
            self.sync_positions(ts)
        if new_bar and ts and not any(getattr(d, "warming", False) for d in self._datas):
            self._mark(ts)
        self._flush()

    def _mark(self, ts: int) -> None:
        """Equity point at a bar close; the drawdown limit's check."""
        portfolio = self.portfolio
        for data in self._datas:
            if len(data):
                portfolio.prices[data.symbol] = data.close[0]
        equity = portfolio.equity()
        value = portfolio.positions_value()
        gross = portfolio.gross_exposure()
        self.peak_equity = max(self.peak_equity, equity)
        drawdown = (self.peak_equity - equity) / self.peak_equity * 100 if self.peak_equity > 0 else 0.0
        record = getattr(self.recorder, "equity", None)
        if record is not None:
            record({"ts": ts, "cash": portfolio.cash, "positions_value": value, "equity": equity,
                    "gross_exposure": gross / equity if equity > 0 else 0.0, "drawdown_pct": drawdown})
        decision = self.risk_state.on_equity(ts, equity)
        if decision is not None and not self.halted:
            self.kill_switch(ts, self._datas, decision.reason, decision.info)

    def _flush(self, force: bool = False) -> None:
        flush = getattr(self.recorder, "flush", None)
        if flush is not None:
            flush(force)


def _trade_key(trade_id: str) -> int:
    """Binance trade ids are increasing integers (the order ``fromId`` pages by)."""
    try:
        return int(trade_id)
    except ValueError:
        return -1
