"""The paper exchange's account and matching engine: balances, orders, trades.

Fills come from :mod:`harness.fills` (the same code as the paper broker). When orders fill:

- **market** orders fill on arrival at the open of the bar in progress, moved by the slippage
  (taker). The live path sends an order right after bar *t* closes, so this is bar *t+1*'s
  open — the paper broker's rule (DESIGN 3.5). A part beyond the bar-volume cap stays open
  and fills at the opens of the following bars, as in the paper broker;
- **limit** (GTC) and **stop** (``STOP_LOSS``) orders rest; each bar is matched against every
  open order when it closes, starting with the bar that was in progress when the order
  arrived (the first bar after the signal bar), at the limit or at the open if the bar gaps
  through it (maker), stops triggering like the paper broker's. A fill made at a bar's close
  carries the close time.

Balances are per asset, ``free`` and ``locked``: an open order locks what it may spend (the
base quantity of a sell; the quote cost of a buy, fee included when fees are paid in quote).
Fees are taken as Binance spot takes them — in the asset received (a buy pays in the base
asset, a sell in the quote asset) — or all in the quote asset with ``fee_asset="quote"``, the
paper broker's convention. Errors are Binance's codes and words (:class:`ApiError`).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field

from harness import fills
from harness.model import Liquidity, OrderType, Side, base_quote
from harness.paper_market import ApiError, BarView, ReplayedMarket, fmt

EPS = 1e-9
NUMBER_RANGE = r"^([0-9]{1,20})(\.[0-9]{1,20})?$"
_NUMBER_RE = re.compile(NUMBER_RANGE)
_INT_RE = re.compile(r"^-?[0-9]{1,20}$")
CLIENT_ID_RANGE = r"^[a-zA-Z0-9-_]{1,36}$"
_CLIENT_ID_RE = re.compile(CLIENT_ID_RANGE)
WIRE_TYPES = {"MARKET": OrderType.MARKET, "LIMIT": OrderType.LIMIT, "STOP_LOSS": OrderType.STOP}
KNOWN_TYPES = {"LIMIT", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT", "LIMIT_MAKER"}
ORDER_PARAMS = {"symbol", "side", "type", "timeInForce", "quantity", "quoteOrderQty", "price", "newClientOrderId",
                "stopPrice", "newOrderRespType", "selfTradePreventionMode", "timestamp", "recvWindow", "signature"}
MSG_INSUFFICIENT = fills.REASON_INSUFFICIENT


@dataclass(frozen=True, slots=True)
class PaperTrade:
    trade_id: int
    order_id: int
    symbol: str
    side: Side
    price: float
    qty: float
    commission: float
    commission_asset: str
    time: int
    maker: bool


@dataclass
class PaperOrder:
    order_id: int
    client_order_id: str
    symbol: str
    side: Side
    type: OrderType
    qty: float
    time: int
    price: float | None = None
    stop_price: float | None = None
    quote_qty: float = 0.0
    time_in_force: str | None = None
    status: str = "NEW"
    executed: float = 0.0
    cum_quote: float = 0.0
    update_time: int = 0
    last_bar: int = -(2**62)
    triggered: bool = False
    lock_asset: str = ""
    locked: float = 0.0
    trades: list[PaperTrade] = field(default_factory=list)

    @property
    def remaining(self) -> float:
        return max(self.qty - self.executed, 0.0)

    @property
    def is_open(self) -> bool:
        return self.status in ("NEW", "PARTIALLY_FILLED")

    @property
    def wire_type(self) -> str:
        return {OrderType.MARKET: "MARKET", OrderType.LIMIT: "LIMIT", OrderType.STOP: "STOP_LOSS"}[self.type]


class PaperAccount:
    """One spot account trading on a :class:`ReplayedMarket`; every method takes the exchange time."""

    def __init__(self, market: ReplayedMarket, balances: dict[str, float], config: fills.FillConfig,
                 fee_asset: str = "received"):
        if fee_asset not in ("received", "quote"):
            raise ValueError("fee_asset is 'received' (Binance) or 'quote' (the paper broker's convention)")
        self.market, self.config, self.fee_asset = market, config, fee_asset
        self.lock = threading.RLock()
        self._balances: dict[str, list[float]] = {a: [0.0, 0.0] for a in market.assets()}
        for asset, amount in balances.items():
            self._balances[asset.upper()] = [round(float(amount), 8), 0.0]
        self.orders: dict[int, PaperOrder] = {}
        self.trades: list[PaperTrade] = []
        self._open: dict[int, PaperOrder] = {}
        self._open_cids: dict[str, int] = {}          # client order id → order id, open orders only
        self._next_order = 1
        self._next_trade = 1
        start = market.now()
        self._processed = {s: start for s in market.symbols}
        self.update_time = start

    # -- time -----------------------------------------------------------------------------------

    def advance(self, now: int) -> None:
        """Match open orders against every bar that closed up to ``now``."""
        with self.lock:
            for symbol in self.market.symbols:
                after = self._processed[symbol]
                if now <= after:
                    continue
                resting = [o for o in self._open.values() if o.symbol == symbol]     # in order-id order
                if resting:
                    for bar in self.market.closed_between(symbol, after, now):
                        for order in resting:
                            if order.is_open and order.last_bar < bar.ts and order.time < bar.ts + self.market.tf:
                                self._match(order, bar, bar.ts + self.market.tf)
                self._processed[symbol] = now

    # -- balances -------------------------------------------------------------------------------

    def balances(self, now: int) -> dict[str, tuple[float, float]]:
        """``{asset: (free, locked)}``."""
        with self.lock:
            self.advance(now)
            return {a: (v[0], v[1]) for a, v in self._balances.items()}

    def _move(self, asset: str, free: float = 0.0, locked: float = 0.0) -> None:
        entry = self._balances.setdefault(asset, [0.0, 0.0])
        entry[0] = round(entry[0] + free, 8)
        entry[1] = round(entry[1] + locked, 8)
        if abs(entry[0]) < 1e-12:
            entry[0] = 0.0
        if abs(entry[1]) < 1e-12:
            entry[1] = 0.0

    def debit(self, fraction: float, now: int) -> dict[str, float]:
        """Take ``fraction`` of every free balance out of the account (a drill's vanished funds);
        returns what was taken per asset."""
        with self.lock:
            self.advance(now)
            taken = {a: round(v[0] * fraction, 8) for a, v in self._balances.items() if v[0] > 0}
            for asset, amount in taken.items():
                self._move(asset, -amount)
            self.update_time = now
            return taken

    def _free(self, asset: str) -> float:
        return self._balances.get(asset, [0.0, 0.0])[0]

    # -- orders ---------------------------------------------------------------------------------

    def place(self, params: dict[str, str], now: int) -> PaperOrder:
        """Validate and accept a new order (``POST /api/v3/order`` parameters)."""
        with self.lock:
            self.advance(now)
            unknown = [k for k in params if k not in ORDER_PARAMS]
            if unknown:
                raise ApiError(-1104, f"Not all sent parameters were read; read '{len(params) - len(unknown)}' "
                                      f"parameter(s) but was sent '{len(params)}'.")
            symbol = self.market.symbol(params.get("symbol"))
            side = _enum(params, "side", {"BUY": Side.BUY, "SELL": Side.SELL}, -1117, "Invalid side.")
            wire_type = _required(params, "type").upper()
            if wire_type not in KNOWN_TYPES:
                raise ApiError(-1116, "Invalid orderType.")
            if wire_type not in WIRE_TYPES:
                raise ApiError(-1013, "This order type is not supported for this symbol.")
            otype = WIRE_TYPES[wire_type]
            qty = decimal_param(params, "quantity")
            quote_qty = decimal_param(params, "quoteOrderQty")
            price = decimal_param(params, "price")
            stop = decimal_param(params, "stopPrice")
            tif = params.get("timeInForce")
            if otype is OrderType.LIMIT:
                _required(params, "timeInForce")
                if tif not in ("GTC", "IOC", "FOK"):
                    raise ApiError(-1115, "Invalid timeInForce.")
                if tif != "GTC":
                    raise ApiError(-1013, "Only GTC limit orders are supported by the paper exchange.")
                decimal_param(params, "quantity", required=True)
                decimal_param(params, "price", required=True)
                _not_sent(params, "quoteOrderQty", "stopPrice")
            elif otype is OrderType.MARKET:
                if qty is None and quote_qty is None:
                    raise ApiError(-1102, "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty/null!")
                _not_sent(params, "price", "stopPrice", "timeInForce", *(["quoteOrderQty"] if qty is not None else []))
            else:
                decimal_param(params, "quantity", required=True)
                decimal_param(params, "stopPrice", required=True)
                _not_sent(params, "price", "quoteOrderQty", "timeInForce")
            if qty is not None and qty <= 0 or quote_qty is not None and quote_qty <= 0:
                raise ApiError(-1013, "Invalid quantity.")
            if price is not None and price <= 0 or stop is not None and stop <= 0:
                raise ApiError(-1013, "Invalid price.")
            cid = params.get("newClientOrderId")
            if cid is not None and not _CLIENT_ID_RE.match(cid):
                raise ApiError(-1100, f"Illegal characters found in parameter 'newClientOrderId'; legal range is "
                                      f"'{CLIENT_ID_RANGE}'.")
            if cid is not None and cid in self._open_cids:
                raise ApiError(-2010, "Duplicate order sent.")
            bar = self.market.current_bar(symbol, now)
            if bar is None:
                raise ApiError(-1013, "Market is closed.")
            rules = self.market.rules[symbol]
            base, quote = base_quote(symbol)
            fill_price = fills.slipped(bar.open, side, self.config, rules)
            if otype is OrderType.MARKET and qty is None:
                qty = self._qty_for_quote(symbol, side, quote_qty, fill_price)
            reason = fills.check_filters(qty, price if otype is OrderType.LIMIT else stop, rules, bar.open, otype)
            if reason is not None:
                raise ApiError(-1013, reason)
            taker_q = self._quote_fee_rate(Liquidity.TAKER)
            if side is Side.SELL:
                lock_asset, lock = base, qty
            elif otype is OrderType.LIMIT:
                lock_asset, lock = quote, qty * price * (1 + self._quote_fee_rate(Liquidity.MAKER))
            elif otype is OrderType.STOP:
                lock_asset = quote
                lock = qty * fills.slipped(max(stop, bar.open), side, self.config, rules) * (1 + taker_q)
            else:
                lock_asset, lock = quote, qty * fill_price * (1 + taker_q)
            lock = round(lock, 8)
            if lock > self._free(lock_asset) + EPS:
                raise ApiError(-2010, MSG_INSUFFICIENT)
            order = PaperOrder(self._next_order, cid or f"paper-{self._next_order}", symbol, side, otype,
                               qty, now, price=price if otype is OrderType.LIMIT else None,
                               stop_price=stop if otype is OrderType.STOP else None, quote_qty=quote_qty or 0.0,
                               time_in_force="GTC" if otype is not OrderType.MARKET else None, update_time=now,
                               lock_asset=lock_asset, locked=lock)
            self._next_order += 1
            self._move(lock_asset, -lock, lock)
            self.orders[order.order_id] = order
            self._open[order.order_id] = order
            self._open_cids[order.client_order_id] = order.order_id
            if otype is OrderType.MARKET:
                self._match(order, bar, now)
            self.update_time = now
            return order

    def _qty_for_quote(self, symbol: str, side: Side, quote_qty: float, price: float) -> float:
        """The base quantity a ``quoteOrderQty`` buys or sells at ``price`` (cost, fee in quote included)."""
        rules = self.market.rules[symbol]
        if side is Side.BUY and self.fee_asset == "quote":
            return fills.affordable_qty(quote_qty, price, self.config, rules)
        return fills.round_qty(quote_qty / price, rules)

    def find(self, symbol: str, order_id: str | None, client_order_id: str | None, now: int,
             cancel: bool = False) -> PaperOrder:
        """An order of ``symbol`` by id or client id (the latest with that client id)."""
        with self.lock:
            self.advance(now)
            if order_id is None and client_order_id is None:
                raise ApiError(-1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!")
            found = None
            if order_id is not None:
                if not _INT_RE.match(order_id):
                    raise ApiError(-1100, "Illegal characters found in parameter 'orderId'; legal range is "
                                          "'^[0-9]{1,20}$'.")
                found = self.orders.get(int(order_id))
            else:
                matches = [o for o in self.orders.values() if o.client_order_id == client_order_id]
                found = matches[-1] if matches else None
            if found is None or found.symbol != symbol:
                raise ApiError(-2011, "Unknown order sent.") if cancel else ApiError(-2013, "Order does not exist.")
            return found

    def cancel(self, symbol: str, order_id: str | None, client_order_id: str | None, now: int) -> PaperOrder:
        with self.lock:
            order = self.find(symbol, order_id, client_order_id, now, cancel=True)
            if not order.is_open:
                raise ApiError(-2011, "Unknown order sent.")
            self._close(order, "CANCELED", now)
            self.update_time = now
            return order

    def open_orders(self, symbol: str | None, now: int) -> list[PaperOrder]:
        with self.lock:
            self.advance(now)
            return [o for o in self._open.values() if symbol is None or o.symbol == symbol]

    def all_orders(self, symbol: str, now: int, from_id: int | None = None, start: int | None = None,
                   end: int | None = None, limit: int = 500) -> list[PaperOrder]:
        with self.lock:
            self.advance(now)
            rows = [o for o in self.orders.values() if o.symbol == symbol]
            return _window(rows, lambda o: o.order_id, lambda o: o.time, from_id, start, end, limit)

    def my_trades(self, symbol: str, now: int, from_id: int | None = None, start: int | None = None,
                  end: int | None = None, limit: int = 500, order_id: int | None = None) -> list[PaperTrade]:
        with self.lock:
            self.advance(now)
            rows = [t for t in self.trades if t.symbol == symbol and (order_id is None or t.order_id == order_id)]
            return _window(rows, lambda t: t.trade_id, lambda t: t.time, from_id, start, end, limit)

    # -- matching -------------------------------------------------------------------------------

    def _quote_fee_rate(self, liquidity: Liquidity) -> float:
        return self.config.fee_rate(liquidity) if self.fee_asset == "quote" else 0.0

    def _match(self, order: PaperOrder, bar: BarView, when: int) -> None:
        rules = self.market.rules[order.symbol]
        plan, triggered = fills.match(order.type, order.side, order.remaining, bar.open, bar.high, bar.low,
                                      bar.volume, self.config, rules, price=order.price,
                                      stop_price=order.stop_price, already_triggered=order.triggered)
        order.triggered, order.last_bar = triggered, bar.ts
        if plan is not None:
            self._fill(order, plan.price, plan.qty, plan.liquidity, when)

    def _fill(self, order: PaperOrder, price: float, qty: float, liquidity: Liquidity, when: int) -> None:
        rules = self.market.rules[order.symbol]
        base, quote = base_quote(order.symbol)
        rate = self.config.fee_rate(liquidity)
        if order.side is Side.BUY:
            unit = price * (1 + self._quote_fee_rate(liquidity))
            budget = order.locked + self._free(quote)
            if qty * unit > budget + EPS:
                qty = fills.round_qty(budget / unit, rules)
                if qty <= 0:
                    self._close(order, "EXPIRED", when)
                    return
            cost = qty * price
            fee = round(qty * rate if self.fee_asset == "received" else cost * rate, 8)
            fee_asset = base if self.fee_asset == "received" else quote
            need = round(cost + (fee if fee_asset == quote else 0.0), 8)
            from_lock = min(order.locked, need)
            order.locked = round(order.locked - from_lock, 8)
            self._move(quote, -(need - from_lock), -from_lock)
            self._move(base, qty - (fee if fee_asset == base else 0.0))
        else:
            from_lock = min(order.locked, qty)
            extra = qty - from_lock
            if extra > self._free(base) + EPS:
                qty = fills.round_qty(from_lock + self._free(base), rules)
                if qty <= 0:
                    self._close(order, "EXPIRED", when)
                    return
                from_lock, extra = min(order.locked, qty), max(0.0, qty - order.locked)
            order.locked = round(order.locked - from_lock, 8)
            self._move(base, -extra, -from_lock)
            cost = qty * price
            fee = round(cost * rate, 8)
            fee_asset = quote
            self._move(quote, cost - fee)
        trade = PaperTrade(self._next_trade, order.order_id, order.symbol, order.side, price, qty, fee, fee_asset,
                           when, liquidity is Liquidity.MAKER)
        self._next_trade += 1
        self.trades.append(trade)
        order.trades.append(trade)
        order.executed = round(order.executed + qty, 12)
        order.cum_quote += cost
        order.update_time = when
        if order.remaining <= max(rules.lot_step / 2, EPS):
            self._close(order, "FILLED", when)
        else:
            order.status = "PARTIALLY_FILLED"

    def _close(self, order: PaperOrder, status: str, when: int) -> None:
        order.status, order.update_time = status, when
        if order.locked:
            self._move(order.lock_asset, order.locked, -order.locked)
            order.locked = 0.0
        self._open.pop(order.order_id, None)
        if self._open_cids.get(order.client_order_id) == order.order_id:
            del self._open_cids[order.client_order_id]


# -- wire formats ----------------------------------------------------------------------------------


def order_json(order: PaperOrder, wire_symbol: str, kind: str = "query", resp_type: str = "FULL",
               cancel_id: str | None = None, now: int | None = None) -> dict:
    """An order as Binance shows it: ``kind`` is ``new`` (POST reply), ``query`` or ``cancel``."""
    body = {"symbol": wire_symbol, "orderId": order.order_id, "orderListId": -1,
            "clientOrderId": order.client_order_id}
    if kind == "cancel":
        body = {"symbol": wire_symbol, "origClientOrderId": order.client_order_id, "orderId": order.order_id,
                "orderListId": -1, "clientOrderId": cancel_id or f"cancel-{order.order_id}", "transactTime": now}
    elif kind == "new":
        body["transactTime"] = order.time
        if resp_type == "ACK":
            return body
    body.update({
        "price": fmt(order.price or 0.0), "origQty": fmt(order.qty), "executedQty": fmt(order.executed),
        "origQuoteOrderQty": fmt(order.quote_qty), "cummulativeQuoteQty": fmt(order.cum_quote),
        "status": order.status, "timeInForce": order.time_in_force or "GTC", "type": order.wire_type,
        "side": order.side.value.upper(),
    })
    if order.stop_price is not None or kind == "query":
        body["stopPrice"] = fmt(order.stop_price or 0.0)
    if kind == "query":
        body.update({"icebergQty": "0.00000000", "time": order.time, "updateTime": order.update_time,
                     "isWorking": True, "workingTime": order.time})
    else:
        body["workingTime"] = order.time
    body["selfTradePreventionMode"] = "NONE"
    if kind == "new" and resp_type == "FULL":
        body["fills"] = [{"price": fmt(t.price), "qty": fmt(t.qty), "commission": fmt(t.commission),
                          "commissionAsset": t.commission_asset, "tradeId": t.trade_id}
                         for t in order.trades if t.time == order.time]
    return body


def trade_json(trade: PaperTrade, wire_symbol: str) -> dict:
    """A row of ``GET /api/v3/myTrades``."""
    return {"symbol": wire_symbol, "id": trade.trade_id, "orderId": trade.order_id, "orderListId": -1,
            "price": fmt(trade.price), "qty": fmt(trade.qty), "quoteQty": fmt(trade.price * trade.qty),
            "commission": fmt(trade.commission), "commissionAsset": trade.commission_asset, "time": trade.time,
            "isBuyer": trade.side is Side.BUY, "isMaker": trade.maker, "isBestMatch": True}


# -- parameters ------------------------------------------------------------------------------------


def decimal_param(params: dict[str, str], name: str, required: bool = False) -> float | None:
    """A non-negative decimal parameter, checked as Binance checks it."""
    raw = params.get(name)
    if raw is None or raw == "":
        if required:
            raise ApiError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")
        return None
    if not _NUMBER_RE.match(raw):
        raise ApiError(-1100, f"Illegal characters found in parameter '{name}'; legal range is '{NUMBER_RANGE}'.")
    return float(raw)


def int_param(params: dict[str, str], name: str, default: int | None = None, lo: int | None = None,
              hi: int | None = None) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    if not _INT_RE.match(raw) or (lo is not None and int(raw) < lo) or (hi is not None and int(raw) > hi):
        legal = f"{lo if lo is not None else ''}..{hi if hi is not None else ''}" if lo is not None or hi is not None \
            else "^-?[0-9]{1,20}$"
        raise ApiError(-1100, f"Illegal characters found in parameter '{name}'; legal range is '{legal}'.")
    return int(raw)


def _required(params: dict[str, str], name: str) -> str:
    value = params.get(name)
    if value is None or value == "":
        raise ApiError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")
    return value


def _enum(params: dict[str, str], name: str, values: dict, code: int, msg: str):
    value = _required(params, name).upper()
    if value not in values:
        raise ApiError(code, msg)
    return values[value]


def _not_sent(params: dict[str, str], *names: str) -> None:
    for name in names:
        if params.get(name) not in (None, ""):
            raise ApiError(-1106, f"Parameter '{name}' sent when not required.")


def _window(rows: list, key, time_of, from_id: int | None, start: int | None, end: int | None, limit: int) -> list:
    """Binance's paging: from an id, or a time window of at most 24 h, else the latest ``limit``."""
    day = 86_400_000
    rows = sorted(rows, key=key)
    if from_id is not None:
        return [r for r in rows if key(r) >= from_id][:limit]
    if start is not None or end is not None:
        if start is not None and end is not None and end - start > day:
            raise ApiError(-1127, "More than 24 hours between startTime and endTime.")
        lo = start if start is not None else end - day
        hi = end if end is not None else start + day
        return [r for r in rows if lo <= time_of(r) <= hi][:limit]
    return rows[-limit:] if limit else []
