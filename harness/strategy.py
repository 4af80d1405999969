"""The strategy base class and the loader.

Write a strategy as a backtrader strategy deriving from :class:`HarnessStrategy`; it runs
unchanged in replay, paced replay and live. It gets:

- ``self.harness`` — the run's context (config, symbols, mode, market rules);
- sizing: :meth:`entry_qty` (a fraction of current equity after fees, on the lot step),
  :meth:`buy_fraction`, :meth:`exit_position`;
- :meth:`emit_signal` to journal a model's ``(signal, confidence)`` in ``signals``;
- ``self.pending[data]`` — the order in flight per data, cleared when it completes or fails.

Strategies act on closed bars only; a read of a future value (``close[1]``) raises
:class:`harness.feed.LookAheadError`.

``load_strategy("sma_cross")`` loads a shipped strategy; ``load_strategy("path/to/file.py:Class")``
loads a user's file.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import backtrader as bt

from harness import fills as fm
from harness.errors import StrategyError
from harness.feed import forbid_lookahead
from harness.model import Liquidity, MarketRules

SHIPPED = {
    "sma_cross": "strategies.sma_cross:SmaCross",
    "rsi_reversion": "strategies.rsi_reversion:RsiReversion",
    "signal_follower": "strategies.signal_follower:SignalFollower",
}


@dataclass
class StrategyContext:
    """What a strategy may know about its run."""

    config: Any
    mode: str
    symbols: tuple[str, ...]
    timeframe: str
    rules: dict[str, MarketRules]
    recorder: Any = None
    extras: dict[str, Any] = field(default_factory=dict)


class HarnessStrategy(bt.Strategy):
    """Base for harness strategies: sizing helpers, signal journaling, look-ahead protection."""

    harness: StrategyContext | None = None

    def __init__(self):
        super().__init__()
        self.pending: dict[Any, bt.Order | None] = {d: None for d in self.datas}

    def start(self) -> None:
        for data in self.datas:
            forbid_lookahead(data)
        for item in self._lineiterators.get(bt.LineIterator.IndType, []):     # indicators, line operations
            forbid_lookahead(item)
        self._lean = self._lean_plan()
        super().start()

    # -- the per-bar bookkeeping of backtrader's runonce loop, without what the harness never uses

    def _lean_plan(self):
        """Buffers to advance per bar, or None when analyzers/observers/cash hooks need the full path."""
        cls = type(self)
        if (self.analyzers or self._slave_analyzers or self._lineiterators.get(bt.LineIterator.ObsType)
                or cls.notify_cashvalue is not bt.Strategy.notify_cashvalue
                or cls.notify_fund is not bt.Strategy.notify_fund):
            return None
        from backtrader.linebuffer import LineBuffer

        plan = []
        for item in self._lineiterators.get(bt.LineIterator.IndType, []):
            buffers = [item] if isinstance(item, LineBuffer) else list(item.lines)
            clock = item._clock
            plan.append((buffers[0], clock if isinstance(clock, LineBuffer) else clock.lines[0], buffers))
        self._own_lines = list(self.lines)
        return plan

    def _oncepost(self, dt):
        lean = self._lean
        if lean is None:
            return super()._oncepost(dt)
        for first, clock, buffers in lean:
            if clock.lencount > first.lencount:
                for buf in buffers:
                    buf._idx += 1
                    buf.lencount += 1
        for buf in self._own_lines:            # the strategy's own lines (its clock): one new slot
            buf.array.append(float("nan"))
            buf._idx += 1
            buf.lencount += 1
        self.lines.datetime.array[-1] = dt
        if self._orderspending or self._tradespending:
            for order in self._orderspending:
                self.notify_order(order)
            for trade in self._tradespending:
                self.notify_trade(trade)
        status = self._minperstatus
        if status >= 0:
            status = self._getminperstatus()
        if status < 0:
            self.next()
        elif status == 0:
            self.nextstart()
        else:
            self.prenext()
        self.clear()

    # -- sizing -----------------------------------------------------------------------------

    def rules(self, data) -> MarketRules:
        rules = self.harness.rules.get(data.symbol) if self.harness else None
        return rules or MarketRules(data.symbol, lot_step=1e-8, tick_size=1e-8)

    def entry_qty(self, data, fraction: float) -> float:
        """Quantity worth ``fraction`` of current equity after taker fees, rounded down to the lot step."""
        price = float(data.close[0])
        if price <= 0:
            return 0.0
        cfg = getattr(self.broker, "fill_config", None)
        rate = cfg.fee_rate(Liquidity.TAKER) + cfg.slippage_bps / 10_000.0 if cfg else 0.0
        qty = fraction * self.broker.getvalue() / (price * (1 + rate))
        return fm.round_qty(qty, self.rules(data))

    def buy_fraction(self, data, fraction: float, **kwargs) -> bt.Order | None:
        """A market buy of :meth:`entry_qty`; None when that rounds to nothing, or when the kill
        switch has halted the run (the guard would only deny it)."""
        if getattr(self.broker, "halted", False):
            return None
        qty = self.entry_qty(data, fraction)
        if qty <= 0:
            return None
        order = self.buy(data=data, size=qty, **kwargs)
        self.pending[data] = order
        return order

    def holding(self, data) -> float:
        """Quantity held in ``data``, or 0 when it is dust (under one lot step: it cannot be sold)."""
        qty = self.getposition(data).size
        return qty if qty >= self.rules(data).lot_step * 0.999 else 0.0

    def exit_position(self, data, **kwargs) -> bt.Order | None:
        """A market sell of the whole holding in ``data``; None when flat."""
        qty = fm.round_qty(self.holding(data), self.rules(data))
        if qty <= 0:
            return None
        order = self.sell(data=data, size=qty, **kwargs)
        self.pending[data] = order
        return order

    def notify_order(self, order: bt.Order) -> None:
        if order.status in (order.Completed, order.Canceled, order.Margin, order.Rejected, order.Expired):
            for data, pending in self.pending.items():
                if pending is not None and pending.ref == order.ref:
                    self.pending[data] = None

    # -- models -----------------------------------------------------------------------------

    def emit_signal(self, data, signal: float, confidence: float, model_version: str, acted: bool) -> None:
        """Journal one model prediction made at this bar's close for ``data``."""
        recorder = self.harness.recorder if self.harness else None
        if recorder is not None:
            from harness.feed import num_to_ms

            recorder.signal(num_to_ms(data.datetime[0]), data.symbol, signal, confidence, model_version, acted)

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        """Override to reject parameter combinations (raise StrategyError)."""


# ---------------------------------------------------------------------------------------------
# loading


def load_strategy(spec: str) -> type[bt.Strategy]:
    """A strategy class from a shipped name or ``path/to/file.py:ClassName``."""
    spec = spec.strip()
    if spec in SHIPPED:
        module_name, _, cls_name = SHIPPED[spec].partition(":")
        return getattr(importlib.import_module(module_name), cls_name)
    if ":" in spec or spec.endswith(".py"):
        path_text, _, cls_name = spec.partition(":")
        path = Path(path_text)
        if not path.is_file():
            raise StrategyError(f"strategy file {path} not found (use path/to/file.py:ClassName)")
        module_spec = importlib.util.spec_from_file_location(f"user_strategy_{path.stem}", path)
        module = importlib.util.module_from_spec(module_spec)
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            raise StrategyError(f"cannot load {path}: {type(exc).__name__}: {exc}") from None
        if not cls_name:
            found = [v for v in vars(module).values() if isinstance(v, type) and issubclass(v, bt.Strategy)
                     and v.__module__ == module.__name__]
            if len(found) != 1:
                raise StrategyError(f"{path} defines {len(found)} strategy classes: name one with {path}:ClassName")
            return found[0]
        cls = getattr(module, cls_name, None)
        if not (isinstance(cls, type) and issubclass(cls, bt.Strategy)):
            raise StrategyError(f"{path} has no strategy class {cls_name!r}")
        return cls
    raise StrategyError(f"unknown strategy {spec!r}: use one of {', '.join(SHIPPED)} or path/to/file.py:ClassName")


def strategy_name(spec: str, cls: type) -> str:
    return spec if spec in SHIPPED else cls.__name__


def resolve_params(cls: type[bt.Strategy], name: str, given: dict[str, Any]) -> dict[str, Any]:
    """Defaults merged with ``given``, typed like the defaults; unknown names are an error."""
    defaults = {k: v for k, v in cls.params._getitems() if not k.startswith("_")}
    out = dict(defaults)
    for key, value in given.items():
        if key not in defaults:
            known = ", ".join(defaults) or "none"
            raise StrategyError(f"unknown parameter {key!r} for {name} (it takes: {known})")
        out[key] = _typed_param(name, key, defaults[key], value)
    if issubclass(cls, HarnessStrategy):
        cls.check_params(out)
    return out


def _typed_param(name: str, key: str, default: Any, value: Any) -> Any:
    where = f"parameter {key} of {name}"
    if default is None or isinstance(value, type(default)) and not isinstance(value, bool) ^ isinstance(default, bool):
        return value
    if isinstance(default, bool):
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise StrategyError(f"{where} must be true or false, not {value!r}")
    if isinstance(default, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise StrategyError(f"{where} must be a whole number, not {value!r}")
    if isinstance(default, float):
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        raise StrategyError(f"{where} must be a number, not {value!r}")
    if isinstance(default, str):
        return str(value)
    raise StrategyError(f"{where} has an unexpected type ({type(value).__name__})")
