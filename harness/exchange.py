"""The exchange adapter: the only module that imports ccxt.

:class:`ExchangeClient` wraps a ccxt ``binance`` instance pointed at the Binance spot **testnet**
(sandbox mode) or at a **loopback** base URL (the paper exchange). It refuses every other
endpoint with :class:`~harness.errors.SafetyError` — when it is built and again before every
HTTP request — so no code path can send anything to mainnet.

The one exception is read-only market data (``public=True``, used by ``data fetch`` and
``data record`` for real history): such a client holds no keys, and its guard lets through
only unsigned ``GET`` requests for public market-data paths on Binance's spot hosts; an order,
a signed call or any other path is refused before it leaves the process.

What goes in and out is the harness's vocabulary (:class:`~harness.model.Order`,
:class:`~harness.model.Fill`, :class:`~harness.model.MarketRules`,
:class:`~harness.datasets.Bars`); no ccxt dict travels past this module.

Errors are translated at this edge (ccxt → harness)::

    RequestTimeout, NetworkError, ExchangeNotAvailable,   → TemporaryExchangeError (retried with
    DDoSProtection/RateLimitExceeded (429/418), 5xx,         exponential backoff, then raised)
    OperationFailed (-1000/-1001 ...)
    InvalidNonce (-1021, clock skew)                       → ExchangeError (testnet: one time resync + retry)
    AuthenticationError (-1022, -2014, -2015)              → AuthenticationFailed
    InsufficientFunds, InvalidOrder, BadRequest (-1013 filter
      failures incl. NOTIONAL, -1100/-1102/-1104), BadSymbol,
      OperationRejected/MarketClosed                       → OrderRejected (on order calls), else ExchangeError
    OrderNotFound (-2013/-2011)                            → OrderNotFound
    anything else from ccxt                                → ExchangeError

Only temporary errors are retried. An order submission whose outcome is unknown (timeout,
5xx, a dropped connection) is never simply resent: the order is first looked up by its
client order id, and resent (with the same id) only when the exchange says it does not exist.
Messages are scrubbed of the key, the secret, signatures and query strings before they leave.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import ccxt
import numpy as np

from harness import errors
from harness.datasets import Bars
from harness.model import (
    Fill,
    Liquidity,
    MarketRules,
    Order,
    OrderStatus,
    OrderType,
    Side,
    normalize_symbol,
    timeframe_ms,
)

log = logging.getLogger("harness.exchange")
_CCXT_LOG = logging.getLogger("harness.exchange.ccxt")
_CCXT_LOG.disabled = True

TESTNET_HOSTS = frozenset({"testnet.binance.vision", "testnet.binancefuture.com"})
#: mainnet hosts a ``public=True`` client may read market data from (never trade on)
MARKET_DATA_HOSTS = frozenset({"api.binance.com", "api1.binance.com", "api2.binance.com", "api3.binance.com",
                               "api4.binance.com", "data-api.binance.vision"})
MARKET_DATA_PATHS = frozenset({"/api/v3/ping", "/api/v3/time", "/api/v3/exchangeInfo", "/api/v3/klines",
                               "/api/v3/uiKlines", "/api/v3/ticker/24hr", "/api/v3/ticker/price",
                               "/api/v3/ticker/bookTicker", "/api/v3/depth", "/api/v3/avgPrice"})
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
SUPPORTED_EXCHANGES = ("binance",)

#: The request id of the job or call in progress; set it to carry a caller's id into the events.
request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("qt_request_id", default=None)

_BINANCE_STATUS = {
    "NEW": OrderStatus.NEW, "PARTIALLY_FILLED": OrderStatus.PARTIALLY_FILLED, "FILLED": OrderStatus.FILLED,
    "CANCELED": OrderStatus.CANCELED, "PENDING_CANCEL": OrderStatus.CANCELED, "REJECTED": OrderStatus.REJECTED,
    "EXPIRED": OrderStatus.EXPIRED, "EXPIRED_IN_MATCH": OrderStatus.EXPIRED,
}
_CCXT_STATUS = {"open": OrderStatus.NEW, "closed": OrderStatus.FILLED, "canceled": OrderStatus.CANCELED,
                "rejected": OrderStatus.REJECTED, "expired": OrderStatus.EXPIRED}


@dataclass(frozen=True)
class RequestEvent:
    """One HTTP request made by the client, as seen by an observer.

    ``endpoint`` is ``"METHOD path"`` (e.g. ``"POST /api/v3/order"``); ``error_kind`` is None,
    ``"temporary"`` or ``"permanent"``; ``error`` is a scrubbed one-line message.
    """

    request_id: str
    endpoint: str
    ok: bool
    duration_ms: float
    error_kind: str | None = None
    error: str = ""


Observer = Callable[[RequestEvent], None]


def check_market_data_request(url: str, method: str, headers: dict | None) -> None:
    """Refuse anything but an unsigned GET of public market data on a mainnet host."""
    parts = urlsplit(str(url))
    host = (parts.hostname or "").lower()
    signed = "signature=" in (parts.query or "") or any(str(k).lower() == "x-mbx-apikey" for k in (headers or {}))
    if (parts.scheme != "https" or host not in MARKET_DATA_HOSTS or method.upper() != "GET"
            or parts.path not in MARKET_DATA_PATHS or signed):
        raise errors.SafetyError(f"refusing {method.upper()} {parts.scheme}://{host}{parts.path}: the mainnet "
                                 "client reads public market data only and never trades")


def check_endpoint(url: str | None, testnet: bool = True) -> str:
    """``"loopback"`` or ``"testnet"`` for an allowed endpoint; :class:`SafetyError` otherwise.

    ``url`` None means the Binance spot testnet, which needs ``testnet`` to be true.
    """
    if url is None:
        if not testnet:
            raise errors.SafetyError("refusing to connect to Binance mainnet: enable the testnet "
                                     "(execution.binance_testnet = true) or give a loopback --exchange-url")
        return "testnet"
    parts = urlsplit(str(url).strip())
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        raise errors.SafetyError(f"cannot read exchange URL {_scrub_url(url)!r}: use e.g. http://127.0.0.1:8765")
    if host in LOOPBACK_HOSTS:
        return "loopback"
    if host in TESTNET_HOSTS and parts.scheme == "https":
        return "testnet"
    raise errors.SafetyError(f"refusing exchange URL {parts.scheme}://{host}: only the Binance spot testnet "
                             "or a loopback address (127.0.0.1, localhost, ::1) is allowed")


class ExchangeClient:
    """A Binance spot client on the testnet or a loopback URL, speaking the harness's types.

    Keys come from the arguments, else ``config.execution`` (which reads
    ``QT_EXECUTION_BINANCE_API_KEY`` / ``_SECRET``), else those variables directly; public calls
    need none. ``observer`` is called once per HTTP request with a :class:`RequestEvent`.
    The client is safe to share between threads (calls are serialised).
    """

    def __init__(self, config=None, url: str | None = None, *, testnet: bool | None = None,
                 exchange: str = "binance", api_key: str | None = None, api_secret: str | None = None,
                 timeout_s: float = 10.0, retries: int = 4, backoff_s: float = 0.25, max_backoff_s: float = 8.0,
                 recv_window_ms: int | None = None, observer: Observer | None = None,
                 sleep: Callable[[float], None] = time.sleep, public: bool = False):
        execution = getattr(config, "execution", None)
        exchange = (exchange or "binance").lower()
        if exchange not in SUPPORTED_EXCHANGES:
            raise errors.UserError(f"unsupported exchange {exchange!r}: the harness trades {', '.join(SUPPORTED_EXCHANGES)}")
        if public and url is None and not testnet:
            self.mode = "public"                  # mainnet market data, read-only (see module docstring)
        else:
            if testnet is None:
                testnet = True if execution is None else bool(execution.binance_testnet)
            self.mode = check_endpoint(url, testnet)
        self.url = None if url is None else str(url).rstrip("/")
        self.exchange_id = exchange
        self.retries = max(0, int(retries))
        self.backoff_s, self.max_backoff_s = backoff_s, max_backoff_s
        self.observer = observer
        self._sleep = sleep
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._stats: dict[str, dict[str, int]] = {}
        key = api_key or _reveal(getattr(execution, "api_key", None)) or os.environ.get("QT_EXECUTION_BINANCE_API_KEY")
        secret = (api_secret or _reveal(getattr(execution, "api_secret", None))
                  or os.environ.get("QT_EXECUTION_BINANCE_API_SECRET"))
        if self.mode == "public":
            key = secret = None                   # a market-data client holds no keys
        self._secrets = tuple(s for s in (key, secret) if s)
        recv = recv_window_ms or getattr(execution, "recv_window_ms", None) or 10_000
        # A request still in flight when the client gives up must be refused by the exchange if it
        # arrives later, or a resend after "order not found" would double it: the receive window
        # never outlasts the client's timeout.
        recv = min(int(recv), int(timeout_s * 1000))
        loopback = self.mode == "loopback"
        self._ccxt = ccxt.binance({
            "apiKey": key or "", "secret": secret or "",
            "logger": _CCXT_LOG,                      # ccxt's debug lines carry the key header: silenced
            "enableRateLimit": not loopback,          # real endpoints: ccxt's limiter; loopback: none
            "timeout": int(timeout_s * 1000),
            "options": {
                "defaultType": "spot",
                "fetchMarkets": {"types": ["spot"]}, "fetchCurrencies": False, "fetchMargins": False,
                # a loopback server shares this machine's clock; the testnet may not
                "adjustForTimeDifference": self.mode == "testnet",
                "recvWindow": int(recv),
                "fetchOpenOrders": {"warnWithoutSymbol": False},
                "warnOnFetchOpenOrdersWithoutSymbol": False,
                "newOrderRespType": {"market": "FULL", "limit": "FULL"},
            },
        })
        if self.mode != "public":
            self._ccxt.set_sandbox_mode(True)
        if self.url is not None:
            base = urlsplit(self.url)
            for name, value in list(self._ccxt.urls["api"].items()):
                if isinstance(value, str):
                    self._ccxt.urls["api"][name] = f"{base.scheme}://{base.netloc}{urlsplit(value).path}"
        if self.mode != "public":
            for value in self._ccxt.urls["api"].values():
                if isinstance(value, str):
                    check_endpoint(value)
        self._install_guard()
        self._markets_loaded = False

    # -- identity ---------------------------------------------------------------------------

    def __repr__(self) -> str:
        return f"ExchangeClient({self.exchange_id}, {self.mode}, {self.url or 'testnet'})"

    @property
    def dataset_id(self) -> str:
        """The datasets/ exchange id for bars fetched through this client: ``binance`` for mainnet
        market data, else ``binance-testnet`` / ``binance-paper`` (testnet and paper-exchange bars
        must not mix with recorded mainnet data)."""
        if self.mode == "public":
            return self.exchange_id               # real market data: recorded beside imported files
        return f"{self.exchange_id}-{'paper' if self.mode == 'loopback' else 'testnet'}"

    def stats(self) -> dict[str, dict[str, int]]:
        """Requests and errors so far, per endpoint: ``{"GET /api/v3/klines": {"requests": n, "errors": m}}``."""
        with self._lock:
            return {k: dict(v) for k, v in self._stats.items()}

    # -- market data ------------------------------------------------------------------------

    def server_time(self) -> int:
        """The exchange's clock in ms (the paper exchange's replay clock, or the testnet's)."""
        return int(self._call("fetch_time"))

    def load_rules(self, symbols: list[str] | tuple[str, ...] | None = None) -> dict[str, MarketRules]:
        """Market rules (lot step, tick, limits, min notional) of spot symbols, from exchangeInfo."""
        markets = self._markets(reload=True)
        wanted = None if symbols is None else [normalize_symbol(s) for s in symbols]
        out: dict[str, MarketRules] = {}
        for market in markets.values():
            if not market.get("spot"):
                continue
            symbol = market["symbol"]
            if wanted is None or symbol in wanted:
                out[symbol] = _rules_from_info(symbol, market.get("info") or {})
        for symbol in wanted or ():
            if symbol not in out:
                raise errors.UserError(f"unknown symbol {symbol} on {self.exchange_id} ({self.mode}); "
                                       "check --symbols")
        return out

    def fetch_bars(self, symbol: str, timeframe: str = "1m", since: int | None = None,
                   limit: int | None = None) -> Bars:
        """Bars as the exchange returns them (Binance includes the bar still in progress)."""
        symbol = normalize_symbol(symbol)
        timeframe_ms(timeframe)
        self._markets()
        rows = self._call("fetch_ohlcv", symbol, timeframe, since, limit)
        if not rows:
            return Bars.empty(symbol, timeframe)
        arr = np.asarray([r[:6] for r in rows], dtype=np.float64)
        return Bars(symbol, timeframe, arr[:, 0].astype(np.int64), arr[:, 1], arr[:, 2], arr[:, 3],
                    arr[:, 4], arr[:, 5])

    def fetch_closed_bars(self, symbol: str, timeframe: str = "1m", since: int | None = None,
                          limit: int | None = None, now: int | None = None) -> Bars:
        """Only bars that have closed by ``now`` (default: the exchange's clock)."""
        bars = self.fetch_bars(symbol, timeframe, since, limit)
        if len(bars) == 0:
            return bars
        now = self.server_time() if now is None else now
        keep = int(np.searchsorted(bars.ts + timeframe_ms(timeframe), now, "right"))
        return bars.slice(0, keep)

    # -- account ----------------------------------------------------------------------------

    def fetch_balances(self) -> dict[str, tuple[float, float]]:
        """``{asset: (free, locked)}`` for every asset the account holds."""
        self._private("read the account")
        balance = self._call("fetch_balance")
        out = {}
        for item in (balance.get("info") or {}).get("balances", []):
            out[item["asset"]] = (float(item["free"]), float(item["locked"]))
        return out

    def create_order(self, symbol: str, side: Side | str, type: OrderType | str, qty: float,
                     price: float | None = None, client_order_id: str | None = None,
                     stop_price: float | None = None, quote_qty: float | None = None) -> Order:
        """Send an order under ``client_order_id`` (always passed as ``newClientOrderId``).

        Market orders go by ``qty`` (base) or by ``quote_qty`` (quote). When the outcome is
        unknown (timeout, 5xx, dropped connection) the order is looked up by its client id and
        resent only if the exchange does not have it, so a retry never doubles an order.
        """
        self._private("trade")
        symbol = normalize_symbol(symbol)
        side, type = Side(side), OrderType(type)
        cid = client_order_id or f"qt-{uuid.uuid4().hex[:24]}"
        params: dict = {"newClientOrderId": cid, "newOrderRespType": "FULL"}
        ccxt_type = {"market": "market", "limit": "limit", "stop": "STOP_LOSS"}[type.value]
        if type is OrderType.STOP:
            if stop_price is None:
                raise errors.UserError("a stop order needs stop_price")
            params["stopPrice"] = _num(stop_price)
        if quote_qty is not None:
            params["quoteOrderQty"] = _num(quote_qty)
        self._markets()
        request_id = _current_request_id(self)
        attempt, last_error = 0, None
        must_look_up = resynced = False
        while attempt <= self.retries:
            if must_look_up:
                try:
                    return self._lookup_after_unknown(symbol, cid, request_id)
                except errors.OrderNotFound:
                    must_look_up = False          # the exchange never saw it: resend, same id
                except errors.TemporaryExchangeError as exc:
                    last_error = exc
                    attempt += 1
                    self._backoff(attempt)
                    continue
            try:
                raw = self._raw_call(request_id, "create_order", symbol, ccxt_type, side.value, qty, price, params)
                return _order_from_ccxt(raw, symbol)
            except ccxt.BaseError as exc:
                if isinstance(exc, ccxt.InvalidNonce) and self.mode == "testnet" and not resynced:
                    resynced = True                   # -1021 is refused before execution: safe to resend
                    with self._lock:
                        self._ccxt.load_time_difference()
                    continue
                translated = self._translate(exc, order=True)
                if "Duplicate order sent" in str(exc):
                    return self._lookup_after_unknown(symbol, cid, request_id)
                if not isinstance(translated, errors.TemporaryExchangeError):
                    raise translated from None
                last_error = translated
                log.warning("order %s: outcome unknown (%s); looking it up before any resend", cid, translated)
                must_look_up = True
                attempt += 1
                self._backoff(attempt)
        assert last_error is not None
        raise last_error

    def fetch_order(self, symbol: str, order_id: str | None = None, client_order_id: str | None = None) -> Order:
        """An order by the exchange's id or by its client order id."""
        self._private("read the account")
        symbol = normalize_symbol(symbol)
        params = {} if client_order_id is None else {"origClientOrderId": client_order_id}
        if order_id is None and client_order_id is None:
            raise errors.UserError("fetch_order needs order_id or client_order_id")
        self._markets()
        return _order_from_ccxt(self._call("fetch_order", order_id, symbol, params), symbol)

    def cancel_order(self, symbol: str, order_id: str | None = None, client_order_id: str | None = None) -> Order:
        """Cancel an open order (by exchange id or client id); returns it with status canceled."""
        self._private("read the account")
        symbol = normalize_symbol(symbol)
        params = {} if client_order_id is None else {"origClientOrderId": client_order_id}
        if order_id is None and client_order_id is None:
            raise errors.UserError("cancel_order needs order_id or client_order_id")
        self._markets()
        return _order_from_ccxt(self._call("cancel_order", order_id, symbol, params, order=True), symbol)

    def fetch_open_orders(self, symbol: str | None = None) -> list[Order]:
        """Open orders of one symbol, or of all symbols."""
        self._private("read the account")
        symbol = None if symbol is None else normalize_symbol(symbol)
        self._markets()
        return [_order_from_ccxt(o, symbol) for o in self._call("fetch_open_orders", symbol)]

    def fetch_my_trades(self, symbol: str, since: int | None = None, limit: int | None = None,
                        from_id: int | None = None) -> list[Fill]:
        """Own trades of ``symbol`` as fills: from trade id ``from_id`` (paging that never skips a
        trade, however far apart), else from ``since`` (ms), else the most recent. ``fill_id``
        is the exchange's trade id and ``order_id`` the exchange's order id."""
        self._private("read the account")
        symbol = normalize_symbol(symbol)
        self._markets()
        params = {} if from_id is None else {"fromId": int(from_id)}
        return [_fill_from_ccxt(t) for t in self._call("fetch_my_trades", symbol, since if from_id is None else None,
                                                        limit, params)]

    # -- plumbing ---------------------------------------------------------------------------

    def _private(self, what: str) -> None:
        if self.mode == "public":
            raise errors.SafetyError(f"the mainnet market-data client cannot {what}: use --testnet or --exchange-url")

    def _markets(self, reload: bool = False) -> dict:
        if reload or not self._markets_loaded:
            markets = self._call("load_markets", reload)
            self._markets_loaded = True
            return markets
        return self._ccxt.markets

    def _call(self, method: str, *args, order: bool = False):
        """A ccxt call with translation and retries of temporary errors."""
        request_id = _current_request_id(self)
        attempt, resynced = 0, False
        while True:
            try:
                return self._raw_call(request_id, method, *args)
            except ccxt.InvalidNonce as exc:
                if self.mode == "testnet" and not resynced:
                    resynced = True
                    with self._lock:
                        self._ccxt.load_time_difference()
                    continue
                raise self._translate(exc, order=order) from None
            except ccxt.BaseError as exc:
                translated = self._translate(exc, order=order)
                if not isinstance(translated, errors.TemporaryExchangeError) or attempt >= self.retries:
                    raise translated from None
                attempt += 1
                log.warning("%s failed (%s); retry %d of %d", method, translated, attempt, self.retries)
                self._backoff(attempt)

    def _raw_call(self, request_id: str, method: str, *args):
        token = _REQUEST.set(request_id)
        try:
            with self._lock:
                return getattr(self._ccxt, method)(*args)
        finally:
            _REQUEST.reset(token)

    def _lookup_after_unknown(self, symbol: str, cid: str, request_id: str) -> Order:
        try:
            raw = self._raw_call(request_id, "fetch_order", None, symbol, {"origClientOrderId": cid})
        except ccxt.BaseError as exc:
            raise self._translate(exc) from None
        return _order_from_ccxt(raw, symbol)

    def _backoff(self, attempt: int) -> None:
        self._sleep(min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)))

    def _translate(self, exc: BaseException, order: bool = False) -> errors.ExchangeError:
        text = self.scrub(str(exc))
        code = getattr(exc, "binance_code", None) or _binance_code(text)
        if isinstance(exc, ccxt.AuthenticationError) or code in (-1022, -2014, -2015):
            return errors.AuthenticationFailed(f"exchange refused the API key or signature: {text}", code)
        if isinstance(exc, ccxt.InvalidNonce):
            return errors.ExchangeError(f"clock skew: the request's timestamp is outside recvWindow: {text}", code)
        if isinstance(exc, ccxt.OrderNotFound):
            return errors.OrderNotFound(text, code)
        if isinstance(exc, ccxt.NetworkError) and not isinstance(exc, ccxt.RequestTimeout | ccxt.DDoSProtection) \
                and code is None and "connection" in repr(exc.__cause__ or exc.__context__ or "").lower():
            where = self.url or self.mode
            return errors.TemporaryExchangeError(f"cannot reach the exchange at {where} (connection refused or "
                                                 f"dropped): is it running? [{text}]", code)
        if isinstance(exc, ccxt.OperationFailed):      # network, timeouts, 5xx, 429/418, -1000/-1001
            return errors.TemporaryExchangeError(text, code)
        if order and isinstance(exc, ccxt.InsufficientFunds | ccxt.InvalidOrder | ccxt.BadRequest
                                | ccxt.OperationRejected):
            return errors.OrderRejected(text, code)    # a min-notional failure arrives as BadRequest
        return errors.ExchangeError(text, code)

    def scrub(self, text: str) -> str:
        """``text`` without the key, the secret, signatures or query strings."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return _scrub_url(text)

    def _install_guard(self) -> None:
        """Wrap ccxt's HTTP call: refuse non-allowed hosts, time and report every request."""
        inner = self._ccxt.fetch

        def fetch(url, method="GET", headers=None, body=None):
            if self.mode == "public":
                check_market_data_request(url, method, headers)
            else:
                check_endpoint(url)
            endpoint = f"{method} {urlsplit(url).path}"
            started = time.perf_counter()
            self._ccxt.last_http_response = None
            try:
                result = inner(url, method, headers, body)
            except BaseException as exc:
                code = _binance_code(self._ccxt.last_http_response or "")
                if code is not None:
                    exc.binance_code = code
                kind = "temporary" if isinstance(exc, ccxt.OperationFailed) and not isinstance(exc, ccxt.InvalidNonce) \
                    else "permanent"
                self._record(endpoint, started, False, kind, self.scrub(str(exc))[:300])
                raise
            self._record(endpoint, started, True, None, "")
            return result

        self._ccxt.fetch = fetch

    def _record(self, endpoint: str, started: float, ok: bool, kind: str | None, error: str) -> None:
        entry = self._stats.setdefault(endpoint, {"requests": 0, "errors": 0})
        entry["requests"] += 1
        entry["errors"] += 0 if ok else 1
        if self.observer is not None:
            event = RequestEvent(_REQUEST.get() or "", endpoint, ok, (time.perf_counter() - started) * 1000,
                                 kind, error)
            try:
                self.observer(event)
            except Exception:  # an observer must never break a request
                log.exception("request observer failed")

    @contextmanager
    def request_id(self, value: str) -> Iterator[None]:
        """Carry ``value`` as the request id of every call made inside the block."""
        token = request_id_var.set(value)
        try:
            yield
        finally:
            request_id_var.reset(token)


_REQUEST: contextvars.ContextVar[str | None] = contextvars.ContextVar("qt_exchange_request", default=None)


def _current_request_id(client: ExchangeClient) -> str:
    return request_id_var.get() or f"req-{next(client._ids):06d}"


def _reveal(value) -> str | None:
    if value is None:
        return None
    return value.reveal() if hasattr(value, "reveal") else str(value)


_SIGNATURE_RE = re.compile(r"signature=[0-9a-fA-F%]+")
_QUERY_RE = re.compile(r"(https?://[^\s?\"']+)\?[^\s\"']*")
_CODE_RE = re.compile(r'"code"\s*:\s*(-?\d+)')


def _scrub_url(text: str) -> str:
    text = _QUERY_RE.sub(r"\1?…", str(text))
    return _SIGNATURE_RE.sub("signature=…", text)


def _binance_code(text: str) -> int | None:
    match = _CODE_RE.search(text)
    return int(match.group(1)) if match else None


def _num(value: float) -> str:
    return format(float(value), ".8f").rstrip("0").rstrip(".") or "0"


def _rules_from_info(symbol: str, info: dict) -> MarketRules:
    filters = {f.get("filterType"): f for f in info.get("filters", [])}
    price = filters.get("PRICE_FILTER", {})
    lot = filters.get("LOT_SIZE", {})
    notional = filters.get("NOTIONAL") or filters.get("MIN_NOTIONAL") or {}
    defaults = MarketRules(symbol, 0.0, 0.0)
    return MarketRules(
        symbol=symbol,
        lot_step=float(lot.get("stepSize", 0) or 0),
        tick_size=float(price.get("tickSize", 0) or 0),
        min_qty=float(lot.get("minQty", 0) or 0),
        max_qty=float(lot.get("maxQty", defaults.max_qty) or defaults.max_qty),
        min_notional=float(notional.get("minNotional", 0) or 0),
        max_notional=float(notional.get("maxNotional", defaults.max_notional) or defaults.max_notional),
        base_precision=int(info.get("baseAssetPrecision", 8)),
        quote_precision=int(info.get("quoteAssetPrecision", info.get("quotePrecision", 8))),
    )


def _order_type(raw: str | None, has_price: bool) -> OrderType:
    raw = (raw or "").upper()
    if raw == "MARKET":
        return OrderType.MARKET
    if raw in ("STOP_LOSS", "STOP", "STOP_MARKET"):
        return OrderType.STOP
    if raw in ("LIMIT", "LIMIT_MAKER"):
        return OrderType.LIMIT
    return OrderType.LIMIT if has_price else OrderType.MARKET


def _order_from_ccxt(raw: dict, symbol: str | None) -> Order:
    info = raw.get("info") or {}
    cid = info.get("origClientOrderId") or raw.get("clientOrderId") or info.get("clientOrderId") or ""
    status = _BINANCE_STATUS.get(str(info.get("status", "")).upper())
    filled = float(raw.get("filled") or 0.0)
    if status is None:
        status = _CCXT_STATUS.get(raw.get("status") or "", OrderStatus.NEW)
        if status is OrderStatus.NEW and filled > 0:
            status = OrderStatus.PARTIALLY_FILLED
    price = raw.get("price")
    trigger = raw.get("triggerPrice")
    return Order(
        order_id=cid or str(raw.get("id")),
        client_order_id=cid,
        symbol=raw.get("symbol") or symbol or "",
        side=Side(str(raw.get("side") or info.get("side", "buy")).lower()),
        type=_order_type(info.get("type") or raw.get("type"), bool(price)),
        qty=float(raw.get("amount") or 0.0),
        ts=int(raw.get("timestamp") or info.get("transactTime") or 0),
        price=float(price) if price else None,
        stop_price=float(trigger) if trigger else None,
        status=status,
        filled_qty=filled,
        exchange_order_id=str(raw.get("id") or info.get("orderId") or ""),
    )


def _fill_from_ccxt(trade: dict) -> Fill:
    fee = trade.get("fee") or {}
    return Fill(
        fill_id=str(trade["id"]),
        order_id=str(trade.get("order") or ""),
        ts=int(trade["timestamp"]),
        symbol=trade["symbol"],
        side=Side(trade["side"]),
        qty=float(trade["amount"]),
        price=float(trade["price"]),
        fee=float(fee.get("cost") or 0.0),
        fee_asset=str(fee.get("currency") or ""),
        liquidity=Liquidity.MAKER if trade.get("takerOrMaker") == "maker" else Liquidity.TAKER,
    )
