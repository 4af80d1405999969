"""The broker interface every run uses, with the risk guard built in.

:class:`HarnessBroker` is a backtrader broker. Its ``buy``/``sell`` (and ``submit``) are the
only way an order enters a run, and every one of them passes the risk guard first: a strategy
that calls the broker directly meets the same guard as one that calls ``self.buy()``. A denied
order reaches the strategy as a rejected backtrader order (``order.info.reason`` says why)
and the journal as a ``risk_denied`` event. Approved orders go to the concrete broker's
:meth:`_route` (simulated fills in :mod:`harness.brokers.paper`, the exchange in
:mod:`harness.brokers.testnet`).

Spot accounting (cash, holdings, fees in the quote asset) lives in :class:`Portfolio`;
backtrader's own ``Position`` objects are kept in step for strategies that read them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import backtrader as bt

from harness.accounting import Portfolio
from harness.feed import num_to_ms
from harness.fills import FillConfig
from harness.model import Event, Fill, MarketRules, Order, OrderIntent, OrderStatus, OrderType, Side
from harness.recorder import Recorder
from harness.risk import Denied, RiskGuard, RiskLimits, RiskState

BT_TYPES = {bt.Order.Market: OrderType.MARKET, bt.Order.Limit: OrderType.LIMIT, bt.Order.Stop: OrderType.STOP}
UNSUPPORTED = "order type not supported on spot by the harness (use market, limit or stop)"


class HarnessBroker(bt.BrokerBase):
    """Guarded order entry, spot accounting and the run's record, shared by all brokers."""

    def __init__(self, cash: float, rules: dict[str, MarketRules], fill_config: FillConfig,
                 limits: RiskLimits | None = None, recorder: Recorder | None = None,
                 quote_asset: str = "USDT", id_prefix: str = ""):
        super().__init__()
        self.portfolio = Portfolio(cash)
        self.startingcash = cash
        self.rules = rules
        self.fill_config = fill_config
        self.limits = limits or RiskLimits()
        self.guard = RiskGuard(self.limits)
        self.risk_state = RiskState(self.limits)
        self.recorder = recorder or Recorder()
        self.quote_asset = quote_asset
        self.id_prefix = id_prefix
        self.notifs: deque = deque()
        self.bt_positions: dict[object, bt.Position] = {}
        self.open_orders: dict[int, tuple[bt.Order, Order]] = {}
        self.halted = False
        self.strategy = None          # the run's strategy, set when it starts
        self.on_halt: Callable[[int, str], None] | None = None
        self._order_seq = 0
        self._fill_seq = 0
        self._comminfo = bt.CommInfoBase(commission=0.0, stocklike=True)

    # -- backtrader broker API --------------------------------------------------------------

    def start(self) -> None:
        super().start()
        self.notifs.clear()

    def getcommissioninfo(self, data) -> bt.CommInfoBase:
        return self._comminfo

    def getcash(self) -> float:
        return self.portfolio.cash

    def get_cash(self) -> float:
        return self.portfolio.cash

    def getvalue(self, datas=None) -> float:
        """Equity at the last close of each data (or the value of the given datas' holdings)."""
        if datas:
            return sum(self.portfolio.qty(d.symbol) * d.close[0] for d in datas)
        for data in self.bt_positions:
            if len(data):
                self.portfolio.mark(data.symbol, data.close[0])
        return self.portfolio.equity()

    get_value = getvalue

    def getposition(self, data) -> bt.Position:
        pos = self.bt_positions.get(data)
        if pos is None:
            pos = self.bt_positions[data] = bt.Position()
        return pos

    def get_notification(self):
        return self.notifs.popleft() if self.notifs else None

    def notify(self, order: bt.Order) -> None:
        self.notifs.append(order.clone())

    def buy(self, owner, data, size, price=None, plimit=None, exectype=None, valid=None, tradeid=0,
            oco=None, trailamount=None, trailpercent=None, parent=None, transmit=True, histnotify=False,
            _checksubmit=True, **kwargs):
        return self.submit(_bt_order(bt.BuyOrder, owner, data, size, price, plimit, exectype, valid, tradeid,
                                     trailamount, trailpercent, parent, transmit, histnotify, kwargs))

    def sell(self, owner, data, size, price=None, plimit=None, exectype=None, valid=None, tradeid=0,
             oco=None, trailamount=None, trailpercent=None, parent=None, transmit=True, histnotify=False,
             _checksubmit=True, **kwargs):
        return self.submit(_bt_order(bt.SellOrder, owner, data, size, price, plimit, exectype, valid, tradeid,
                                     trailamount, trailpercent, parent, transmit, histnotify, kwargs))

    def submit(self, order: bt.Order, origin: str = "strategy") -> bt.Order:
        """The single entry point for orders: guard, then the concrete broker's route."""
        order.addcomminfo(self._comminfo)
        data = order.data
        ts = self.clock_ms(data)
        otype = BT_TYPES.get(order.exectype if order.exectype is not None else bt.Order.Market)
        side = Side.BUY if order.isbuy() else Side.SELL
        qty = abs(float(order.size))
        ref = float(data.close[0])
        limit = stop = None
        if otype is OrderType.LIMIT:
            limit = float(order.price)
        elif otype is OrderType.STOP:
            stop = float(order.price)
        self._order_seq += 1
        record = Order(order_id=f"O{self._order_seq:07d}", client_order_id=f"{self.id_prefix}qt{self._order_seq:07d}",
                       symbol=data.symbol, side=side, type=otype or OrderType.MARKET, qty=qty, ts=ts,
                       price=limit, stop_price=stop, origin=origin)
        order.addinfo(order_id=record.order_id, client_order_id=record.client_order_id)
        order.submit(self)
        self.notify(order)
        if otype is None or order.parent is not None or not order.transmit or order.exectype == bt.Order.StopLimit:
            return self._reject(order, record, UNSUPPORTED, ts)
        intent = OrderIntent(record.symbol, side, record.type, qty, ts, ref, limit, stop, origin)
        decision = self.guard.check(intent, self._book(ts, intent))
        if isinstance(decision, Denied):
            self.risk_state.record_denial(decision.limit)
            self.recorder.event(Event(ts, "risk_denied", record.symbol, decision.reason,
                                      data={"limit": decision.limit, "observed": decision.observed,
                                            "threshold": decision.threshold, "order_id": record.order_id,
                                            "side": side.value, "qty": qty}))
            return self._reject(order, record, f"risk: {decision.reason}", ts, journal_event=False)
        self.risk_state.record_submission(ts)
        return self._route(order, record)

    def cancel(self, order: bt.Order) -> None:
        entry = self.open_orders.get(order.ref)
        if entry is None:
            return
        self._cancel(entry[0], entry[1], self.now_ms(order.data), "canceled by strategy")

    # -- for concrete brokers ---------------------------------------------------------------

    def _route(self, order: bt.Order, record: Order) -> bt.Order:  # pragma: no cover - abstract
        raise NotImplementedError

    def _cancel(self, order: bt.Order, record: Order, ts: int, reason: str) -> None:
        """Mark an open order cancelled and tell the strategy (concrete brokers add exchange calls)."""
        self.open_orders.pop(order.ref, None)
        record.status = OrderStatus.CANCELED
        record.reason = reason
        order.addinfo(reason=reason)
        order.cancel()
        self.notify(order)
        self.recorder.order(record, ts)

    def _book(self, ts: int, intent: OrderIntent):
        resting = {}
        for _, rec in self.open_orders.values():
            if rec.side is Side.BUY:
                price = rec.price or rec.stop_price or self.portfolio.prices.get(rec.symbol, intent.ref_price)
                resting[rec.symbol] = resting.get(rec.symbol, 0.0) + rec.remaining * price
        prices = dict(self.portfolio.prices)
        prices[intent.symbol] = intent.ref_price
        positions = {s: p.qty for s, p in self.portfolio.positions.items() if p.qty}
        self.portfolio.prices.update(prices)
        return self.risk_state.book(ts=ts, cash=self.portfolio.cash, equity=self.portfolio.equity(),
                                    positions=positions, prices=prices, open_orders=len(self.open_orders),
                                    resting_buy_notional=resting)

    def _reject(self, order: bt.Order, record: Order, reason: str, ts: int, journal_event: bool = True,
                code: int | None = None) -> bt.Order:
        record.status = OrderStatus.REJECTED
        record.reason = reason
        order.addinfo(reason=reason)
        order.reject(self)
        self.notify(order)
        self.recorder.order(record, ts)
        if journal_event:
            self.recorder.event(Event(ts, "order_rejected", record.symbol, reason,
                                      data={"reason": reason, "code": code, "order_id": record.order_id}))
        return order

    def _accept(self, order: bt.Order, record: Order, ts: int) -> None:
        order.accept(self)
        self.notify(order)
        self.open_orders[order.ref] = (order, record)
        self.recorder.order(record, ts)

    def _execute(self, order: bt.Order, record: Order, fill: Fill, exchange_trade_id: str = "") -> None:
        """Book a fill: portfolio, backtrader position and order, notifications, the record."""
        self.portfolio.apply(fill)
        data = order.data
        signed = fill.qty if fill.side is Side.BUY else -fill.qty
        pos = self.getposition(data)
        pprice_orig = pos.price
        psize, pprice, opened, closed = pos.update(signed, fill.price)
        if fill.fee_asset == fill.symbol.split("/")[0]:
            psize -= fill.fee                 # Binance takes a buy's fee from the asset received
        pos.size = psize = round(psize, 12)
        pnl = -closed * (fill.price - pprice_orig) if closed else 0.0
        closedvalue = -closed * pprice_orig if closed else 0.0
        openedvalue = opened * fill.price if opened else 0.0
        fee_quote = fill.fee if fill.fee_asset != fill.symbol.split("/")[0] else fill.fee * fill.price
        share = abs(closed) / fill.qty if fill.qty else 0.0
        order.execute(data.datetime[0], signed, fill.price, closed, closedvalue, fee_quote * share,
                      opened, openedvalue, fee_quote * (1 - share), 0.0, pnl, psize, pprice)
        record.filled_qty = round(record.filled_qty + fill.qty, 12)
        if record.remaining < self._dust(record.symbol):
            record.status = OrderStatus.FILLED
            order.completed()
            self.open_orders.pop(order.ref, None)
        else:
            record.status = OrderStatus.PARTIALLY_FILLED
            order.partial()
        self.notify(order)
        self.recorder.fill(fill, exchange_trade_id)
        self.recorder.order(record, fill.ts)

    def _dust(self, symbol: str) -> float:
        """A remainder smaller than one lot step can never fill: the order is done."""
        rules = self.rules.get(symbol)
        return rules.lot_step * 0.999 if rules else 1e-12

    def next_fill_id(self) -> str:
        self._fill_seq += 1
        return f"F{self._fill_seq:07d}"

    def clock_ms(self, data=None) -> int:
        """The run's moment: the latest bar close across its feeds (a symbol without a bar at
        this step must not stamp an order with its own, older, close)."""
        datas = getattr(self, "_datas", None) or ([data] if data is not None else [])
        return max((self.now_ms(d) for d in datas if len(d)), default=0)

    @staticmethod
    def now_ms(data) -> int:
        """The current moment of a feed: the close time of its latest bar."""
        return num_to_ms(data.datetime[0]) if len(data) else 0

    # -- kill switch ------------------------------------------------------------------------

    def kill_switch(self, ts: int, datas, detail: str, info: dict) -> None:
        """Cancel every open order, flatten every holding with market orders, refuse new exposure."""
        if self.halted:
            return
        self.halted = True
        self.recorder.event(Event(ts, "kill_switch", "", detail, data=info))
        for order, record in list(self.open_orders.values()):
            self._cancel(order, record, ts, "kill switch")
        for data in datas:
            qty = self.portfolio.qty(data.symbol)
            rules = self.rules.get(data.symbol)
            if qty > (rules.lot_step / 2 if rules else 0.0):
                order = bt.SellOrder(owner=self._owner_of(data), data=data, size=qty, price=None,
                                     exectype=bt.Order.Market)
                self.submit(order, origin="guard")
        if self.on_halt is not None:
            self.on_halt(ts, detail)

    def _owner_of(self, data):
        if self.strategy is None:
            raise RuntimeError("kill switch before the strategy started")
        return self.strategy


def _bt_order(cls, owner, data, size, price, plimit, exectype, valid, tradeid, trailamount, trailpercent,
              parent, transmit, histnotify, info: dict) -> bt.Order:
    """A backtrader order as ``Strategy.buy``/``sell`` would make it (not yet submitted)."""
    order = cls(owner=owner, data=data, size=size, price=price, pricelimit=plimit, exectype=exectype, valid=valid,
                tradeid=tradeid, trailamount=trailamount, trailpercent=trailpercent, parent=parent,
                transmit=transmit, histnotify=histnotify)
    order.addinfo(**info)
    return order
