"""Risk limits, the pre-trade guard and the drawdown kill switch (DESIGN 3.6).

Pure logic: no I/O, no backtrader, no wall clock. Three pieces:

- :class:`RiskLimits`: the configured limits (all optional), frozen.
- :class:`RiskGuard`: ``check(intent, book) -> Approved | Denied``, a pure function of a
  :class:`Book` snapshot; it never mutates its inputs.
- :class:`RiskState`: the little state a broker keeps between orders (equity peak, the UTC
  day's starting equity, recent submissions, halted); it builds the :class:`Book` and fires the
  :class:`KillSwitch` once.

How a broker uses them::

    guard, state = RiskGuard(limits), RiskState(limits)
    # every bar, after marking to market (only needed when state.watches_equity):
    if (kill := state.on_equity(ts, equity)) is not None:
        ...  # cancel open orders, flatten with origin="guard" market orders, mark the run halted
    # every order:
    decision = guard.check(intent, state.book(ts=ts, cash=..., equity=..., positions=...,
                                              prices=..., open_orders=..., resting_buy_notional=...))
    if decision.approved:
        state.record_submission(ts)   # then route it
    else:
        state.record_denial(decision.limit)   # reject it with decision.reason

Comparisons fail closed: a NaN where a limit needs a number denies the order.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, ClassVar, NamedTuple

from harness.errors import ConfigError
from harness.model import DAY_MS, MINUTE_MS, OrderIntent, OrderType, Side

EMPTY: Mapping[str, float] = MappingProxyType({})
BUY, SELL, MARKET = Side.BUY, Side.SELL, OrderType.MARKET      # enum member lookups are slow on 3.11
REDUCE_TOLERANCE = 1e-9     # a sell may exceed the holding by this fraction (float noise) and still reduce


@dataclass(frozen=True, slots=True)
class RiskLimits:
    """The ``[risk]`` limits; ``None`` turns a limit off.

    - ``max_order_notional``: largest single order, quote asset (qty x limit/stop/reference price).
    - ``max_position_notional``: largest position per symbol after the order, quote asset,
      counting resting buy orders on that symbol.
    - ``max_gross_exposure``: Σ |position value| + resting buys, as a fraction of equity, in (0, 1].
    - ``max_open_orders``: orders open at the broker at once (count, any type).
    - ``max_orders_per_minute``: submissions in any rolling 60 s (count).
    - ``price_band_pct``: percent a limit or stop price (or a market order's reference) may
      differ from the last price.
    - ``max_daily_loss_pct``: percent below the UTC day's starting equity at which new
      exposure is refused until the next UTC day.
    - ``max_drawdown_pct``: percent below the equity peak that fires the kill switch.
    """

    max_order_notional: float | None = None
    max_position_notional: float | None = None
    max_gross_exposure: float | None = None
    max_open_orders: int | None = None
    max_orders_per_minute: int | None = None
    price_band_pct: float | None = None
    max_daily_loss_pct: float | None = None
    max_drawdown_pct: float | None = None

    def __post_init__(self) -> None:
        for name, value in self.active().items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
                raise ConfigError(f"risk.{name} must be a positive finite number, not {value!r}")
            if name == "max_gross_exposure" and value > 1:
                raise ConfigError(f"risk.max_gross_exposure is a fraction of equity in (0, 1], not {value}")
            if name.endswith("_pct") and value > 100:
                raise ConfigError(f"risk.{name} is a percentage in (0, 100], not {value}")

    @classmethod
    def from_config(cls, risk: Any) -> RiskLimits:
        """Limits from a :class:`harness.config.RiskSection` (or anything with the same attributes)."""
        return cls(**{f.name: getattr(risk, f.name, None) for f in fields(cls)})

    def active(self) -> dict[str, float]:
        """The limits that are set, by name, in declaration order (for run.json and reports)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


class Book(NamedTuple):
    """What the guard sees of the account when an order arrives. Build it with :meth:`RiskState.book`.

    Immutable (a named tuple: five times cheaper to build than a frozen dataclass).
    ``ts`` ms UTC; money in the quote asset. ``positions`` {symbol: base qty}, ``prices``
    {symbol: last price} (must price every symbol held), ``open_orders`` orders open at the
    broker, ``resting_buy_notional`` {symbol: quote value of the unfilled part of open buys},
    ``submissions`` ascending times of recent submissions, ``day_low_equity`` the lowest
    equity seen since the UTC day started. The mappings are not copied: do not change them
    while the snapshot is in use.
    """

    ts: int
    cash: float
    equity: float
    positions: Mapping[str, float]
    prices: Mapping[str, float]
    open_orders: int
    resting_buy_notional: Mapping[str, float]
    submissions: tuple[int, ...]
    peak_equity: float
    day_start_equity: float
    halted: bool = False
    day_low_equity: float = math.inf

    @property
    def drawdown_pct(self) -> float:
        """Percent below the equity peak now (0 at or above the peak)."""
        peak = max(self.peak_equity, self.equity)
        return 100.0 * (peak - self.equity) / peak if peak > 0 else 0.0


@dataclass(frozen=True, slots=True)
class Approved:
    """The guard let the order through."""

    approved: ClassVar[bool] = True


APPROVED = Approved()


@dataclass(frozen=True, slots=True)
class Denied:
    """The guard refused the order: which limit, the value it saw, the limit's value, and why."""

    limit: str
    observed: float
    threshold: float
    reason: str
    approved: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class KillSwitch:
    """The drawdown from the equity peak reached ``max_drawdown_pct``: cancel, flatten, halt."""

    ts: int
    drawdown_pct: float
    threshold: float
    peak_equity: float
    equity: float

    @property
    def reason(self) -> str:
        return (f"max_drawdown_pct {self.drawdown_pct:.2f}% >= {self.threshold:.2f}% "
                f"(peak {self.peak_equity:,.2f}, equity {self.equity:,.2f}): kill switch")

    @property
    def info(self) -> dict[str, float]:
        """The ``kill_switch`` event's data (docs/CONTRACTS.md)."""
        return {"drawdown_pct": self.drawdown_pct, "threshold": self.threshold,
                "peak_equity": self.peak_equity, "equity": self.equity}


class RiskGuard:
    """Pre-trade checks of one order against :class:`RiskLimits`; pure and deterministic.

    Order of checks (the first failure is reported): origin ``"guard"`` → approved; halted →
    only reductions; ``max_orders_per_minute``; ``max_open_orders``; ``price_band_pct``; then,
    unless the order is a reduction (a sell of at most the held quantity), ``max_order_notional``,
    ``max_position_notional``, ``max_gross_exposure`` and ``max_daily_loss_pct``. A limit is
    breached when the value *after* the order is strictly above it.
    """

    __slots__ = ("limits", "_band")

    def __init__(self, limits: RiskLimits):
        self.limits = limits
        self._band = None if limits.price_band_pct is None else limits.price_band_pct / 100.0

    def check(self, intent: OrderIntent, book: Book) -> Approved | Denied:
        """Approve or deny ``intent`` given the account ``book``; never mutates either."""
        if intent.origin == "guard":
            return APPROVED
        lim = self.limits
        symbol = intent.symbol
        held = book.positions.get(symbol, 0.0)
        reducing = intent.side is SELL and 0 < intent.qty <= held * (1 + REDUCE_TOLERANCE)
        if book.halted and not reducing:
            return Denied("halted", book.drawdown_pct, lim.max_drawdown_pct or 0.0,
                          "halted by the kill switch: only orders that reduce a position are allowed")
        if lim.max_orders_per_minute is not None:
            subs = book.submissions
            count = len(subs) - bisect_right(subs, book.ts - MINUTE_MS) + 1
            if count > lim.max_orders_per_minute:
                return Denied("max_orders_per_minute", count, lim.max_orders_per_minute,
                              f"max_orders_per_minute {count} > {lim.max_orders_per_minute} in the last 60 s")
        if lim.max_open_orders is not None and book.open_orders + 1 > lim.max_open_orders:
            return Denied("max_open_orders", book.open_orders + 1, lim.max_open_orders,
                          f"max_open_orders {book.open_orders + 1} > {lim.max_open_orders}")
        last = book.prices.get(symbol, 0.0)
        if not last > 0:
            last = intent.ref_price
        if self._band is not None:
            denied = self._check_band(intent, last)
            if denied is not None:
                return denied
        if reducing:
            return APPROVED
        return self._check_exposure(intent, book, held, last)

    def _check_band(self, intent: OrderIntent, last: float) -> Denied | None:
        band = self._band
        if intent.type is MARKET:
            candidates = (("reference", intent.ref_price),)
        else:
            candidates = (("limit", intent.price), ("stop", intent.stop_price))
        for what, price in candidates:
            if price is not None and not abs(price - last) <= last * band:
                pct = 100.0 * abs(price - last) / last if last else math.inf
                return Denied("price_band_pct", pct, self.limits.price_band_pct,
                              f"price_band_pct {pct:.2f}% > {self.limits.price_band_pct:.2f}% "
                              f"({what} {price:,.2f} vs last {last:,.2f})")
        return None

    def _check_exposure(self, intent: OrderIntent, book: Book, held: float, last: float) -> Approved | Denied:
        lim = self.limits
        symbol = intent.symbol
        notional = intent.qty * (intent.price or intent.stop_price or intent.ref_price)
        if lim.max_order_notional is not None and not notional <= lim.max_order_notional:
            return Denied("max_order_notional", notional, lim.max_order_notional,
                          f"max_order_notional {notional:,.2f} > {lim.max_order_notional:,.2f}")
        resting = book.resting_buy_notional
        position = abs(held * last + (notional if intent.side is BUY else -notional)) + resting.get(symbol, 0.0)
        if lim.max_position_notional is not None and not position <= lim.max_position_notional:
            return Denied("max_position_notional", position, lim.max_position_notional,
                          f"max_position_notional {position:,.2f} > {lim.max_position_notional:,.2f} "
                          f"for {symbol} (after this order, with resting buys)")
        if lim.max_gross_exposure is not None:
            gross = position + sum(v for s, v in resting.items() if s != symbol)
            for s, qty in book.positions.items():
                if s != symbol and qty:
                    if s not in book.prices:
                        raise ValueError(f"Book.prices has no price for {s}, which is held")
                    gross += abs(qty) * book.prices[s]
            if not gross <= lim.max_gross_exposure * book.equity:
                ratio = gross / book.equity if book.equity > 0 else math.inf
                return Denied("max_gross_exposure", ratio, lim.max_gross_exposure,
                              f"max_gross_exposure {ratio:.4f} > {lim.max_gross_exposure:.4f} of equity "
                              f"({gross:,.2f} / {book.equity:,.2f})")
        if lim.max_daily_loss_pct is not None and book.day_start_equity > 0:
            low = min(book.equity, book.day_low_equity)
            if not low >= book.day_start_equity * (1 - lim.max_daily_loss_pct / 100.0):
                loss = 100.0 * (book.day_start_equity - low) / book.day_start_equity
                return Denied("max_daily_loss_pct", loss, lim.max_daily_loss_pct,
                              f"max_daily_loss_pct {loss:.2f}% > {lim.max_daily_loss_pct:.2f}% "
                              f"since 00:00 UTC: new exposure refused until the next UTC day")
        return APPROVED


@dataclass(slots=True)
class RiskState:
    """The guard's memory across orders and bars; one per run, owned by the broker.

    Call :meth:`on_equity` after each bar is marked to market (needed only when
    :attr:`watches_equity`), :meth:`book` for each order, :meth:`record_submission` for each
    order that passed (guard orders included), :meth:`record_denial` for each denial. ``ts``
    everywhere is the time the equity was valued or the order sent (a bar's close time in
    replay), in ms UTC; the UTC day rolls over at the first ``ts`` on or after midnight, and
    that call's equity becomes the day's starting equity.
    """

    limits: RiskLimits
    peak_equity: float = -math.inf
    halted: bool = False
    day_start_equity: float = 0.0
    day_low_equity: float = math.inf
    denials: int = 0
    denials_by_limit: dict[str, int] = field(default_factory=dict)
    kill_switch: KillSwitch | None = None
    _day_end: int = field(default=0, init=False, repr=False)
    _dd_factor: float | None = field(default=None, init=False, repr=False)
    _dd_floor: float = field(default=-math.inf, init=False, repr=False)
    _submissions: deque[int] = field(default_factory=deque, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.limits.max_drawdown_pct is not None:
            self._dd_factor = 1.0 - self.limits.max_drawdown_pct / 100.0
            if self.peak_equity > 0:
                self._dd_floor = self.peak_equity * self._dd_factor

    @property
    def watches_equity(self) -> bool:
        """True when a limit needs :meth:`on_equity` on every bar (drawdown or daily loss)."""
        return self.limits.max_drawdown_pct is not None or self.limits.max_daily_loss_pct is not None

    def on_equity(self, ts: int, equity: float) -> KillSwitch | None:
        """Track peak, day start and day low; the :class:`KillSwitch` the first time
        ``equity <= peak * (1 - max_drawdown_pct / 100)``, then None for the rest of the run."""
        if ts >= self._day_end:
            self._new_day(ts, equity)
        elif equity < self.day_low_equity:
            self.day_low_equity = equity
        if equity > self.peak_equity:
            self.peak_equity = equity
            if self._dd_factor is not None:
                self._dd_floor = equity * self._dd_factor
        elif equity <= self._dd_floor and not self.halted:
            self.halted = True
            peak = self.peak_equity
            self.kill_switch = KillSwitch(ts, 100.0 * (peak - equity) / peak, self.limits.max_drawdown_pct,
                                          peak, equity)
            return self.kill_switch
        return None

    def book(self, ts: int, cash: float, equity: float, positions: Mapping[str, float],
             prices: Mapping[str, float], open_orders: int = 0,
             resting_buy_notional: Mapping[str, float] = EMPTY) -> Book:
        """A :class:`Book` of the account now, with this state's memory filled in."""
        if ts >= self._day_end:
            self._new_day(ts, equity)
        subs = self._submissions
        if self.limits.max_orders_per_minute is not None:
            while subs and subs[0] <= ts - MINUTE_MS:
                subs.popleft()
        return Book(ts, cash, equity, positions, prices, open_orders, resting_buy_notional, tuple(subs),
                    max(self.peak_equity, equity), self.day_start_equity, self.halted, self.day_low_equity)

    def record_submission(self, ts: int) -> None:
        """An order was sent at ``ts`` (counts towards ``max_orders_per_minute``)."""
        if self.limits.max_orders_per_minute is not None:
            subs = self._submissions
            subs.append(ts)
            while subs[0] <= ts - MINUTE_MS:
                subs.popleft()

    def record_denial(self, limit: str = "") -> None:
        """Count a denial (by limit when given)."""
        self.denials += 1
        if limit:
            self.denials_by_limit[limit] = self.denials_by_limit.get(limit, 0) + 1

    def restore(self, ts: int, peak_equity: float, day_start_equity: float,
                day_low_equity: float | None = None) -> None:
        """Pick up a resumed run: its equity peak, and the starting (and lowest) equity of the
        UTC day that ``ts`` falls in. Fires nothing; the next :meth:`on_equity` judges the drawdown."""
        self.peak_equity = peak_equity
        if self._dd_factor is not None:
            self._dd_floor = peak_equity * self._dd_factor
        self._day_end = (ts // DAY_MS + 1) * DAY_MS
        self.day_start_equity = day_start_equity
        self.day_low_equity = day_start_equity if day_low_equity is None else day_low_equity

    def halt(self) -> None:
        """Refuse everything but reductions from now on (e.g. a resumed halted run)."""
        self.halted = True

    def _new_day(self, ts: int, equity: float) -> None:
        self._day_end = (ts // DAY_MS + 1) * DAY_MS
        self.day_start_equity = equity
        self.day_low_equity = equity
