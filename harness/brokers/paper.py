"""The paper broker: simulated spot fills on replayed bars (DESIGN 3.5).

Orders are checked when they are sent (exchange filters, spot balances) and matched against
each later bar with :func:`harness.fills.match` — the same code the paper exchange uses.
Nothing fills on the bar that produced the order: an order sent while bar *t* closes meets
bar *t+1* first. Cash is reserved for resting buys and quantity for resting sells, as an
exchange locks balances, so an account can never go negative or sell what it does not hold.
"""

from __future__ import annotations

import backtrader as bt

from harness import fills as fm
from harness.brokers.base import HarnessBroker
from harness.feed import EPOCH_ORDINAL, MS_PER_DAY
from harness.model import Fill, Liquidity, MarketRules, Order, OrderType, Side


class PaperBroker(HarnessBroker):
    """Simulated fills with fees, slippage, exchange filters, spot balances and volume caps."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.step = 0
        self.changes: list[tuple[int, float, dict[str, float]]] = []   # (step, cash, holdings) after fills
        self.progress = None          # callable(step) for the progress bar
        self._datas: list = []
        self._last_bar: dict[int, int] = {}   # order ref → len(data) of the last bar it was matched on
        self._watch_equity = False

    def start(self) -> None:
        super().start()
        self._watch_equity = self.risk_state.watches_equity

    def attach(self, datas) -> None:
        self._datas = list(datas)
        self._watched = [(d.symbol, d.lines.close, d.lines.datetime) for d in self._datas]

    # -- order entry ------------------------------------------------------------------------

    def _route(self, order: bt.Order, record: Order) -> bt.Order:
        data = order.data
        rules = self._rules_for(record.symbol)
        ts = record.ts
        qty = fm.round_qty(record.qty, rules)
        record.qty = qty
        if record.price is not None:
            record.price = fm.round_step(record.price, rules.tick_size, "down" if record.side is Side.BUY else "up")
        if record.stop_price is not None:
            record.stop_price = fm.round_price(record.stop_price, rules)
        ref = float(data.close[0])
        reason = fm.check_filters(qty, record.price or record.stop_price, rules, ref, record.type)
        if reason:
            return self._reject(order, record, reason, ts, code=-1013)
        if not self._affordable(record, ref):
            return self._reject(order, record, fm.REASON_INSUFFICIENT, ts, code=-2010)
        self._last_bar[order.ref] = len(data)
        self._accept(order, record, ts)
        return order

    def _affordable(self, record: Order, ref: float) -> bool:
        """Spot rule at submission: the quote (buys) or base (sells) free balance covers the order."""
        if record.side is Side.SELL:
            reserved = sum(r.remaining for _, r in self.open_orders.values()
                           if r.symbol == record.symbol and r.side is Side.SELL)
            return record.qty <= self.portfolio.qty(record.symbol) - reserved + self._dust(record.symbol)
        price = record.price or record.stop_price or ref
        if record.type is not OrderType.LIMIT:
            price *= 1 + self.fill_config.slippage_bps / 10_000.0
        rate = self.fill_config.fee_rate(Liquidity.MAKER if record.type is OrderType.LIMIT else Liquidity.TAKER)
        return record.qty * price * (1 + rate) <= self.free_cash() + 1e-9

    def reservation(self, record: Order) -> float:
        """Cash a resting buy holds back: its remainder at its limit (or stop) price plus fees."""
        if record.side is not Side.BUY:
            return 0.0
        price = record.price or record.stop_price or 0.0
        return record.remaining * price * (1 + self.fill_config.fee_rate(Liquidity.MAKER))

    def free_cash(self) -> float:
        """Cash not reserved for resting buys."""
        return self.portfolio.cash - sum(self.reservation(r) for _, r in self.open_orders.values())

    def _rules_for(self, symbol: str) -> MarketRules:
        rules = self.rules.get(symbol)
        if rules is None:
            rules = self.rules[symbol] = MarketRules(symbol, lot_step=1e-8, tick_size=1e-8)
        return rules

    # -- the bar loop -----------------------------------------------------------------------

    def next(self) -> None:
        self.step += 1
        if self.open_orders:
            self._match()
        if self._watch_equity:
            self._watch()
        if self.progress is not None and not self.step & 4095:
            self.progress(self.step)

    def _match(self) -> None:
        cfg = self.fill_config
        for ref, (order, record) in list(self.open_orders.items()):
            data = order.data
            bar = len(data)
            if bar <= self._last_bar.get(ref, bar):
                continue          # no new bar for this symbol since the order was sent or last matched
            self._last_bar[ref] = bar
            if order.valid and data.datetime[0] > order.valid:
                self._expire(order, record)
                continue
            rules = self._rules_for(record.symbol)
            plan, triggered = fm.match(record.type, record.side, record.remaining, data.open[0], data.high[0],
                                       data.low[0], data.volume[0], cfg, rules, price=record.price,
                                       stop_price=record.stop_price, already_triggered=record.triggered)
            record.triggered = triggered
            if plan is None:
                continue
            qty = plan.qty
            ts = self.now_ms(data) - data.tf_ms          # the bar's open: when the fill happens
            if record.side is Side.BUY:
                available = self.free_cash() + self.reservation(record)
                qty = min(qty, fm.affordable_qty(available, plan.price, cfg, rules, plan.liquidity))
                if qty <= 0:
                    self._cancel(order, record, ts, fm.REASON_INSUFFICIENT)
                    continue
            else:
                qty = min(qty, self.portfolio.qty(record.symbol))
            fee = fm.fee(qty, plan.price, plan.liquidity, cfg)
            fill = Fill(self.next_fill_id(), record.order_id, ts, record.symbol, record.side, qty, plan.price,
                        fee, self.quote_asset, plan.liquidity)
            self.portfolio.mark(record.symbol, data.close[0])
            self._execute(order, record, fill)
            self.changes.append((self.step, self.portfolio.cash,
                                 {s: p.qty for s, p in self.portfolio.positions.items()}))

    def _expire(self, order: bt.Order, record: Order) -> None:
        from harness.model import OrderStatus

        self.open_orders.pop(order.ref, None)
        record.status = OrderStatus.EXPIRED
        order.expire()
        self.notify(order)
        self.recorder.order(record, self.now_ms(order.data))

    def _watch(self) -> None:
        """Equity for the drawdown and daily-loss limits (only when such limits are set).

        On the per-bar path: reads the feeds' line buffers directly (no look-ahead check, no
        backtrader indexing) and values holdings at the bar's close.
        """
        portfolio = self.portfolio
        prices, positions = portfolio.prices, portfolio.positions
        equity = portfolio.cash
        num = 0.0
        for symbol, close, stamp in self._watched:
            if close.lencount:
                i = close._idx
                price = close.array[i]
                prices[symbol] = price
                pos = positions.get(symbol)
                if pos is not None:
                    equity += pos.qty * price
                if stamp.array[i] > num:
                    num = stamp.array[i]
        ts = int((num - EPOCH_ORDINAL) * MS_PER_DAY + 0.5)
        decision = self.risk_state.on_equity(ts, equity)
        if decision is not None and not self.halted:
            self.kill_switch(ts, self._datas, decision.reason, decision.info)
