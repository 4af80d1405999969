"""The shared vocabulary: symbols, timeframes, sides, intents, orders, fills, positions, events.

Times are integers of milliseconds since the Unix epoch, UTC, everywhere inside the harness;
they become ``timestamp[ms, UTC]`` only at the storage edge. No backtrader order or ccxt dict
travels past the adapter that received it: adapters translate into these types.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from harness.errors import DatasetError, UserError

# Quote assets tried, longest first, when splitting an exchange symbol such as "BTCUSDT".
QUOTE_ASSETS = ("FDUSD", "USDT", "USDC", "BUSD", "TUSD", "USDP", "DAI", "EUR", "TRY", "BRL",
                "GBP", "JPY", "BTC", "ETH", "BNB")

_TIMEFRAME_UNITS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_TIMEFRAME_RE = re.compile(r"^(\d+)([smhdw])$")
MINUTE_MS = 60_000
DAY_MS = 86_400_000


def timeframe_ms(timeframe: str) -> int:
    """Length of a timeframe such as ``"1m"``, ``"15m"``, ``"4h"`` or ``"1d"`` in milliseconds."""
    match = _TIMEFRAME_RE.match(str(timeframe).strip())
    if not match or int(match.group(1)) <= 0:
        raise UserError(f"unknown timeframe {timeframe!r}: use a number and a unit, e.g. 1m, 15m, 1h, 4h, 1d")
    return int(match.group(1)) * _TIMEFRAME_UNITS[match.group(2)]


def timeframe_name(ms: int) -> str:
    """The canonical name of a bar spacing in milliseconds (inverse of :func:`timeframe_ms`)."""
    for unit, size in sorted(_TIMEFRAME_UNITS.items(), key=lambda kv: -kv[1]):
        if ms % size == 0 and (unit != "w" or ms == size):
            return f"{ms // size}{unit}"
    raise DatasetError(f"bar spacing of {ms} ms is not a whole number of seconds")


def parse_duration(text: str) -> int:
    """Milliseconds of a duration such as ``10d``, ``2h``, ``30m``, ``45s`` (units may combine: ``1h30m``)."""
    raw = str(text).strip().lower()
    parts = re.findall(r"(\d+(?:\.\d+)?)([smhdw])", raw)
    if not parts or "".join(n + u for n, u in parts) != raw:
        raise UserError(f"cannot read duration {text!r}: use e.g. 10d, 2h, 30m or 1h30m")
    total = sum(float(n) * _TIMEFRAME_UNITS[u] for n, u in parts)
    if total <= 0:
        raise UserError(f"duration {text!r} must be positive")
    return int(total)


def normalize_symbol(symbol: str) -> str:
    """Unified ``BASE/QUOTE`` form; accepts ``BTC/USDT``, ``BTCUSDT``, ``BTC-USDT``, ``btc_usdt``."""
    text = str(symbol).strip().upper()
    for sep in ("/", "-", "_"):
        if sep in text:
            base, _, quote = text.partition(sep)
            if base.isalnum() and quote.isalnum() and base and quote:
                return f"{base}/{quote}"
            break
    else:
        for quote in QUOTE_ASSETS:
            if text.endswith(quote) and len(text) > len(quote) and text.isalnum():
                return f"{text[: -len(quote)]}/{quote}"
    raise UserError(f"cannot read symbol {symbol!r}: write it as BASE/QUOTE, e.g. BTC/USDT")


def parse_symbols(text: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """A comma-separated list (or a sequence) of symbols in unified form, order kept, no duplicates."""
    items = text.split(",") if isinstance(text, str) else list(text)
    seen: dict[str, None] = {}
    for item in items:
        if str(item).strip():
            seen[normalize_symbol(item)] = None
    if not seen:
        raise UserError("no symbols given: pass e.g. --symbols BTC/USDT,ETH/USDT")
    return tuple(seen)


def base_quote(symbol: str) -> tuple[str, str]:
    base, _, quote = normalize_symbol(symbol).partition("/")
    return base, quote


def exchange_symbol(symbol: str) -> str:
    """Binance's form: ``BTC/USDT`` → ``BTCUSDT``."""
    return normalize_symbol(symbol).replace("/", "")


def path_symbol(symbol: str) -> str:
    """The form used in dataset paths: ``BTC/USDT`` → ``BTC-USDT``."""
    return normalize_symbol(symbol).replace("/", "-")


def ms_to_iso(ms: int | None) -> str | None:
    """``2025-05-20T00:00:00Z`` for a millisecond timestamp (None stays None)."""
    if ms is None:
        return None
    dt = datetime.fromtimestamp(int(ms) / 1000, tz=UTC)
    text = dt.strftime("%Y-%m-%dT%H:%M:%S")
    if ms % 1000:
        text += f".{ms % 1000:03d}"
    return text + "Z"


def parse_time(text: str) -> int:
    """Milliseconds for an ISO-8601 time or date; a time without a zone is taken as UTC."""
    raw = str(text).strip()
    try:
        dt = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise UserError(f"cannot read time {text!r}: use ISO-8601, e.g. 2025-06-15 or 2025-06-15T12:00Z") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


class Side(enum.StrEnum):
    BUY = "buy"
    SELL = "sell"

    @property
    def sign(self) -> int:
        return 1 if self is Side.BUY else -1


class OrderType(enum.StrEnum):
    MARKET = "market"
    LIMIT = "limit"
    STOP = "stop"


class OrderStatus(enum.StrEnum):
    NEW = "new"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCELED = "canceled"
    REJECTED = "rejected"
    EXPIRED = "expired"

    @property
    def is_open(self) -> bool:
        return self in (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED)


class Liquidity(enum.StrEnum):
    MAKER = "maker"
    TAKER = "taker"


@dataclass(frozen=True, slots=True)
class MarketRules:
    """An exchange's trading rules for one symbol: lot step, tick size, limits, min notional."""

    symbol: str
    lot_step: float
    tick_size: float
    min_qty: float = 0.0
    max_qty: float = 9_000_000.0
    min_notional: float = 0.0
    max_notional: float = 9_000_000_000.0
    base_precision: int = 8
    quote_precision: int = 8

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__slots__}

    @classmethod
    def from_dict(cls, data: dict) -> MarketRules:
        return cls(**{k: data[k] for k in cls.__slots__ if k in data})


@dataclass(frozen=True, slots=True)
class Bar:
    """One OHLCV bar; ``ts`` is the bar's open time."""

    ts: int
    open: float
    high: float
    low: float
    close: float
    volume: float


@dataclass(frozen=True, slots=True)
class OrderIntent:
    """What a strategy (or the kill switch) wants to send, before the risk guard decides.

    ``qty`` is in the base asset and always positive; ``price`` is the limit price,
    ``stop_price`` the trigger of a stop order, ``ref_price`` the last known price used
    for notional checks of market orders. ``origin`` is ``"strategy"`` or ``"guard"``.
    """

    symbol: str
    side: Side
    type: OrderType
    qty: float
    ts: int
    ref_price: float
    price: float | None = None
    stop_price: float | None = None
    origin: str = "strategy"

    @property
    def check_price(self) -> float:
        """The price this order is valued at: limit, then stop, then the reference."""
        return self.price or self.stop_price or self.ref_price

    @property
    def notional(self) -> float:
        return self.qty * self.check_price


@dataclass(slots=True)
class Order:
    """An order as the harness tracks it, whichever broker carries it."""

    order_id: str
    client_order_id: str
    symbol: str
    side: Side
    type: OrderType
    qty: float
    ts: int
    price: float | None = None
    stop_price: float | None = None
    status: OrderStatus = OrderStatus.NEW
    filled_qty: float = 0.0
    reason: str = ""
    exchange_order_id: str = ""
    origin: str = "strategy"
    triggered: bool = False

    @property
    def remaining(self) -> float:
        return max(round(self.qty - self.filled_qty, 12), 0.0)


@dataclass(frozen=True, slots=True)
class Fill:
    """A single execution of (part of) an order; ``fee`` is in ``fee_asset``."""

    fill_id: str
    order_id: str
    ts: int
    symbol: str
    side: Side
    qty: float
    price: float
    fee: float
    fee_asset: str
    liquidity: Liquidity


@dataclass(slots=True)
class Position:
    """A spot holding: quantity of the base asset and its volume-weighted entry price."""

    symbol: str
    qty: float = 0.0
    avg_price: float = 0.0


@dataclass(frozen=True, slots=True)
class Event:
    """Something worth a row in the ``events`` table: a denial, a kill switch, an alert, a gap."""

    ts: int
    kind: str
    symbol: str = ""
    detail: str = ""
    request_id: str = ""
    data: dict = field(default_factory=dict, compare=False)
