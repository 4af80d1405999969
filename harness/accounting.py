"""Spot accounting shared by every broker: cash, holdings, equity, and round-trip trades.

A :class:`Portfolio` applies fills (fees in the quote asset) and values holdings at the last
prices. :func:`build_trades` rebuilds round trips from a fill list alone, so ``trades`` can
always be checked against ``fills``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.model import Fill, Position, Side

EPS = 1e-12


@dataclass
class Portfolio:
    """Cash in the quote asset plus long spot positions; fees are charged in the quote asset."""

    cash: float
    positions: dict[str, Position] = field(default_factory=dict)
    prices: dict[str, float] = field(default_factory=dict)
    fees_paid: float = 0.0

    def position(self, symbol: str) -> Position:
        pos = self.positions.get(symbol)
        if pos is None:
            pos = self.positions[symbol] = Position(symbol)
        return pos

    def qty(self, symbol: str) -> float:
        pos = self.positions.get(symbol)
        return pos.qty if pos is not None else 0.0

    def apply(self, fill: Fill) -> float:
        """Book a fill; returns the realised pnl of the part that reduced a position (before fees)."""
        pos = self.position(fill.symbol)
        notional = fill.qty * fill.price
        fee_quote = fill.fee if fill.fee_asset != fill.symbol.split("/")[0] else fill.fee * fill.price
        self.fees_paid += fee_quote
        realised = 0.0
        if fill.side is Side.BUY:
            new_qty = pos.qty + fill.qty
            pos.avg_price = (pos.avg_price * pos.qty + notional) / new_qty if new_qty > EPS else 0.0
            pos.qty = new_qty
            self.cash -= notional
        else:
            realised = (fill.price - pos.avg_price) * fill.qty
            pos.qty -= fill.qty
            if abs(pos.qty) < EPS:
                pos.qty, pos.avg_price = 0.0, 0.0
            self.cash += notional
        if fill.fee_asset == fill.symbol.split("/")[0]:
            pos.qty -= fill.fee          # a fee in the base asset shrinks the holding
        else:
            self.cash -= fill.fee
        pos.qty = round(pos.qty, 12)     # sums of lot-step quantities, free of float dust
        return realised

    def mark(self, symbol: str, price: float) -> None:
        self.prices[symbol] = price

    def positions_value(self) -> float:
        return sum(p.qty * self.prices.get(s, p.avg_price) for s, p in self.positions.items())

    def gross_exposure(self) -> float:
        return sum(abs(p.qty) * self.prices.get(s, p.avg_price) for s, p in self.positions.items())

    def equity(self) -> float:
        return self.cash + self.positions_value()


@dataclass(frozen=True)
class Trade:
    """A round trip on one symbol: from flat to flat (long-only spot)."""

    trade_id: str
    symbol: str
    opened_at: int
    closed_at: int | None
    qty: float                   # largest quantity held during the trade
    entry_price: float           # volume-weighted buy price
    exit_price: float | None     # volume-weighted sell price
    pnl: float | None            # sell proceeds - buy cost - all fees (quote asset)
    return_pct: float | None     # pnl / buy cost, in percent
    fees: float


def build_trades(fills: list[Fill], dust: dict[str, float] | None = None, dust_share: float = 0.002) -> list[Trade]:
    """Round trips from fills in time order; a trade still open at the end has ``closed_at`` None.

    A round trip closes when what is left is dust: less than the symbol's lot step (``dust``,
    when known), else less than ``dust_share`` of the largest holding — e.g. the crumb a buy fee
    taken in the base asset leaves behind, which no sell can ever clear.
    """
    open_: dict[str, dict] = {}
    out: list[Trade] = []
    counter = 0
    for f in sorted(fills, key=lambda f: (f.ts, f.fill_id)):
        base = f.symbol.split("/")[0]
        fee_quote = f.fee * f.price if f.fee_asset == base else f.fee
        state = open_.get(f.symbol)
        if state is None:
            if f.side is Side.SELL:
                continue          # selling a holding that predates the record: not a round trip
            counter += 1
            state = open_[f.symbol] = {"id": f"T{counter:06d}", "opened": f.ts, "held": 0.0, "max": 0.0,
                                       "bq": 0.0, "bc": 0.0, "sq": 0.0, "sp": 0.0, "fees": 0.0}
        state["fees"] += fee_quote
        if f.side is Side.BUY:
            state["bq"] += f.qty
            state["bc"] += f.qty * f.price
            state["held"] += f.qty - (f.fee if f.fee_asset == base else 0.0)
            state["max"] = max(state["max"], state["held"])
        else:
            state["sq"] += f.qty
            state["sp"] += f.qty * f.price
            state["held"] -= f.qty
        limit = (dust or {}).get(f.symbol, dust_share * state["max"])
        if state["held"] < limit * (1 - 1e-9) + 1e-12 and state["sq"] > 0:
            pnl = state["sp"] - state["bc"] - state["fees"]
            out.append(Trade(state["id"], f.symbol, state["opened"], f.ts, state["max"],
                             state["bc"] / state["bq"], state["sp"] / state["sq"], pnl,
                             100.0 * pnl / state["bc"] if state["bc"] else 0.0, state["fees"]))
            del open_[f.symbol]
    for symbol, state in open_.items():
        out.append(Trade(state["id"], symbol, state["opened"], None, state["max"],
                         state["bc"] / state["bq"] if state["bq"] else 0.0,
                         state["sp"] / state["sq"] if state["sq"] else None, None, None, state["fees"]))
    out.sort(key=lambda t: t.trade_id)
    return out
