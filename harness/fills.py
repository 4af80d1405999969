"""The fill model (DESIGN 3.5): pure functions shared by the paper broker and the paper exchange.

Given an open order and the next bar, decide whether, how much and at what price it fills:

- market orders fill at the bar's open, moved against the trader by ``slippage_bps`` (taker);
- limit orders fill when the bar trades through the limit — at the limit, or at the open when
  the bar gaps through it — as maker;
- stop orders trigger when the bar reaches the stop and fill like a market order from
  ``max(open, stop)`` (buy) or ``min(open, stop)`` (sell), as taker;
- one order takes at most ``max_bar_volume_pct`` of the bar's volume; the rest stays open;
- quantities are rounded down to the lot step, prices to the tick (adversely for slippage).

Nothing here knows about cash, time or I/O; callers apply spot balance rules.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, ROUND_UP, Decimal

from harness.model import Liquidity, MarketRules, OrderType, Side

# Binance's reasons, word for word, so a strategy sees the same text in replay and live.
REASON_LOT_SIZE = "Filter failure: LOT_SIZE"
REASON_PRICE_FILTER = "Filter failure: PRICE_FILTER"
REASON_NOTIONAL = "Filter failure: NOTIONAL"
REASON_INSUFFICIENT = "Account has insufficient balance for requested action."


@dataclass(frozen=True)
class FillConfig:
    """Fees in basis points, slippage in basis points, volume cap in percent (0 = no cap)."""

    taker_bps: float = 10.0
    maker_bps: float = 10.0
    slippage_bps: float = 2.0
    max_bar_volume_pct: float = 10.0

    @classmethod
    def from_config(cls, config) -> FillConfig:
        return cls(config.fees.taker_bps, config.fees.maker_bps, config.slippage.bps,
                   config.fills.max_bar_volume_pct)

    def fee_rate(self, liquidity: Liquidity) -> float:
        return (self.maker_bps if liquidity is Liquidity.MAKER else self.taker_bps) / 10_000.0


@dataclass(frozen=True, slots=True)
class FillPlan:
    """What one bar does to one order."""

    price: float
    qty: float
    liquidity: Liquidity


def round_step(value: float, step: float, mode: str = "down") -> float:
    """``value`` on the grid of ``step`` (``down``, ``up`` or ``nearest``), free of float dust."""
    if step <= 0:
        return value
    value = round(value, 12)      # 0.08024999999999999 is 0.08025: float dust must not cost a lot step
    d_step = Decimal(repr(step))
    rounding = {"down": ROUND_DOWN, "up": ROUND_UP, "nearest": ROUND_HALF_EVEN}[mode]
    units = (Decimal(repr(value)) / d_step).quantize(Decimal(1), rounding=rounding)
    return float(units * d_step)


def round_qty(qty: float, rules: MarketRules) -> float:
    """Quantity rounded down to the lot step (an exchange never fills more than asked)."""
    return round_step(qty, rules.lot_step, "down")


def round_price(price: float, rules: MarketRules, side: Side | None = None) -> float:
    """Price on the tick: adverse for a trader of ``side`` (buy up, sell down), else nearest."""
    if side is None:
        return round_step(price, rules.tick_size, "nearest")
    return round_step(price, rules.tick_size, "up" if side is Side.BUY else "down")


def on_grid(value: float, step: float) -> bool:
    if step <= 0:
        return True
    units = Decimal(repr(value)) / Decimal(repr(step))
    return units == units.to_integral_value()


def check_filters(qty: float, price: float | None, rules: MarketRules, ref_price: float,
                  order_type: OrderType = OrderType.MARKET) -> str | None:
    """Binance's reason an order breaks the symbol's filters, or None when it passes.

    ``qty`` must already be on the lot step; ``price`` (limit or stop) on the tick.
    Notional is checked at the order's price, or at ``ref_price`` for market orders.
    """
    if qty <= 0 or qty < rules.min_qty or qty > rules.max_qty or not on_grid(qty, rules.lot_step):
        return REASON_LOT_SIZE
    if price is not None and (price <= 0 or not on_grid(price, rules.tick_size)):
        return REASON_PRICE_FILTER
    notional = qty * (price if price is not None and order_type is not OrderType.MARKET else ref_price)
    if notional < rules.min_notional or notional > rules.max_notional:
        return REASON_NOTIONAL
    return None


def volume_cap(bar_volume: float, cfg: FillConfig, rules: MarketRules) -> float:
    """The most one order may take from a bar (infinite when the cap is off)."""
    if cfg.max_bar_volume_pct <= 0:
        return math.inf
    return round_step(bar_volume * cfg.max_bar_volume_pct / 100.0, rules.lot_step, "down")


def slipped(price: float, side: Side, cfg: FillConfig, rules: MarketRules) -> float:
    """``price`` moved against a trader of ``side`` by the slippage, on the tick."""
    moved = price * (1 + side.sign * cfg.slippage_bps / 10_000.0)
    return round_price(moved, rules, side) if cfg.slippage_bps else price


def triggered(side: Side, stop_price: float, high: float, low: float) -> bool:
    """Whether a bar reaches a stop: a buy stop at or above it, a sell stop at or below it."""
    return high >= stop_price if side is Side.BUY else low <= stop_price


def match(order_type: OrderType, side: Side, remaining: float, bar_open: float, bar_high: float,
          bar_low: float, bar_volume: float, cfg: FillConfig, rules: MarketRules,
          price: float | None = None, stop_price: float | None = None,
          already_triggered: bool = False) -> tuple[FillPlan | None, bool]:
    """What the next bar does to an open order: (the fill or None, whether a stop is now triggered).

    The caller guarantees the bar is later than the bar the order was sent on.
    """
    is_triggered = already_triggered
    if not bar_volume > 0:
        return None, is_triggered          # nothing traded in this bar: nothing can fill or trigger
    if order_type is OrderType.MARKET:
        fill_price, liquidity = slipped(bar_open, side, cfg, rules), Liquidity.TAKER
    elif order_type is OrderType.LIMIT:
        assert price is not None
        if side is Side.BUY:
            if bar_open <= price:
                fill_price = bar_open
            elif bar_low < price:
                fill_price = price
            else:
                return None, is_triggered
        else:
            if bar_open >= price:
                fill_price = bar_open
            elif bar_high > price:
                fill_price = price
            else:
                return None, is_triggered
        liquidity = Liquidity.MAKER
    elif order_type is OrderType.STOP:
        assert stop_price is not None
        if is_triggered:
            base = bar_open
        elif triggered(side, stop_price, bar_high, bar_low):
            is_triggered = True
            base = max(bar_open, stop_price) if side is Side.BUY else min(bar_open, stop_price)
        else:
            return None, is_triggered
        fill_price, liquidity = slipped(base, side, cfg, rules), Liquidity.TAKER
    else:  # pragma: no cover - the enum has three members
        raise ValueError(order_type)
    qty = min(remaining, volume_cap(bar_volume, cfg, rules))
    qty = round_qty(qty, rules)
    if qty <= 0:
        return None, is_triggered
    return FillPlan(fill_price, qty, liquidity), is_triggered


def fee(qty: float, price: float, liquidity: Liquidity, cfg: FillConfig) -> float:
    """Fee in the quote asset for a fill."""
    return qty * price * cfg.fee_rate(liquidity)


def affordable_qty(cash: float, price: float, cfg: FillConfig, rules: MarketRules,
                   liquidity: Liquidity = Liquidity.TAKER) -> float:
    """The largest lot-rounded quantity whose cost plus fee fits in ``cash``."""
    if price <= 0 or cash <= 0:
        return 0.0
    qty = round_qty(cash / (price * (1 + cfg.fee_rate(liquidity))), rules)
    while qty > 0 and qty * price * (1 + cfg.fee_rate(liquidity)) > cash + 1e-9:
        qty = round_step(qty - rules.lot_step, rules.lot_step, "down")
    return max(qty, 0.0)

