"""A Binance-compatible spot REST server on loopback, backed by recorded bars and the paper fill model.

``python cli.py exchange serve`` runs it; tests and paced replays run it in-process::

    with PaperExchange(store, ["BTC/USDT"], api_key="k", api_secret="s", port=0) as ex:
        ...  # point any ccxt binance client at ex.url (sandbox mode, URLs rewritten)

It speaks the subset of ``/api/v3`` that ccxt uses (see ``notes/binance-spot-api.md``):
ping, time, exchangeInfo, klines, ticker/24hr, ticker/price, ticker/bookTicker, depth, avgPrice,
and, signed with HMAC-SHA256 over the raw query and body, account, order (POST/GET/DELETE),
openOrders, allOrders, myTrades. Errors are Binance's status codes and ``{"code", "msg"}``
bodies. ``recvWindow`` is checked against real time; everything else follows the replay clock
(:mod:`harness.paper_market`). Orders and fills: :mod:`harness.paper_account`.

:attr:`PaperExchange.faults` injects trouble for the next N requests (optionally per path):
``timeout`` (the reply is held back ``delay_s``), ``error`` (5xx), ``rate_limit`` (429),
``ban`` (418), ``reject`` (an order refused with -2010) and ``disconnect`` (no reply at all).
Another process arms them with a signed ``POST /_harness/faults`` (see ``_ep_admin_faults``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.datasets import Store
from harness.errors import DatasetError, SafetyError
from harness.fills import FillConfig
from harness.model import DAY_MS, MarketRules, base_quote, ms_to_iso, normalize_symbol, timeframe_ms
from harness.paper_account import PaperAccount, int_param, order_json, trade_json
from harness.paper_http import (
    Fault,
    Faults,
    Handler,
    HttpServer,
    endpoint_name,
    fault_reply,
    parse_params,
    without_signature,
)
from harness.paper_market import ApiError, Clock, ManualClock, ReplayClock, ReplayedMarket, fmt
from harness.sources.market_rules import rules_for

log = logging.getLogger("harness.paper_exchange")

LOOPBACK = ("127.0.0.1", "localhost", "::1")
MAX_RECV_WINDOW = 60_000


class PaperExchange:
    """The paper exchange, in-process: :meth:`start` serves it on ``host:port`` (0 = any free port).

    ``start`` is the data time (ms) of the first bar in progress (default: one day into the
    recording, or its middle if shorter). With ``shift_to_now`` bar times are shifted so that
    bar is the present minute; otherwise exchange time equals recorded time. ``clock`` replaces
    the replay clock (e.g. a :class:`~harness.paper_market.ManualClock` for deterministic tests).
    """

    def __init__(self, store: Store | str | Path, symbols, *, exchange: str = "binance", timeframe: str = "1m",
                 start: int | None = None, speed: float = 1.0, balances: dict[str, float] | None = None,
                 api_key: str = "", api_secret: str = "", fill_config: FillConfig | None = None,
                 fee_asset: str = "received", seed: int = 0, host: str = "127.0.0.1", port: int = 0,
                 shift_to_now: bool = True, clock: Clock | None = None, rules: dict[str, MarketRules] | None = None,
                 real_clock: Callable[[], float] = time.time):
        if host not in LOOPBACK:
            raise SafetyError(f"the paper exchange binds to loopback only (127.0.0.1), not {host}")
        if not api_key or not api_secret:
            raise SafetyError("the paper exchange needs an API key pair: pass --api-key/--api-secret or set "
                              "QT_EXECUTION_BINANCE_API_KEY / QT_EXECUTION_BINANCE_API_SECRET")
        store = store if isinstance(store, Store) else Store(store)
        symbols = [normalize_symbol(s) for s in ([symbols] if isinstance(symbols, str) else symbols)]
        self.exchange_id, self.host, self._port = exchange, host, int(port)
        self._key, self._secret = api_key.encode(), api_secret.encode()
        self._real = real_clock
        tf = timeframe_ms(timeframe)
        series = {s: store.read(exchange, s, timeframe) for s in symbols}
        for s, bars in series.items():
            if len(bars) == 0:
                raise DatasetError(f"no {timeframe} bars for {s} under {exchange}; see python cli.py data list")
        first = min(int(b.ts[0]) for b in series.values())
        last = max(int(b.ts[-1]) for b in series.values())
        if start is None:
            start = first + min(DAY_MS, (last - first) // 2)
        start -= start % tf
        if not first <= start <= last:
            raise DatasetError(f"--start {ms_to_iso(start)} is outside the recorded bars "
                               f"({ms_to_iso(first)} .. {ms_to_iso(last)})")
        self.start_data = start
        if clock is None:
            clock = ReplayClock(int(real_clock() * 1000) if shift_to_now else start, speed, real_clock)
        self.clock = clock
        origin = clock.now_ms()
        offset = (origin - origin % tf) - start
        chosen: dict[str, MarketRules] = {}
        for s, bars in series.items():
            found = (rules or {}).get(s) or store.rules(exchange, s, start)
            if found is None:
                found, source = rules_for(exchange, bars)
                log.warning("no market-rules snapshot for %s under %s: using rules %s", s, exchange, source)
            chosen[s] = found
        self.market = ReplayedMarket(series, chosen, clock, offset, seed)
        quote = base_quote(symbols[0])[1]
        self.account = PaperAccount(self.market, balances if balances is not None else {quote: 10_000.0},
                                    fill_config or FillConfig(), fee_asset)
        self.faults = Faults()
        self.requests = 0
        #: (method, endpoint, sorted parameter names) of each request, when ``record`` is on (tests)
        self.request_log: list[tuple[str, str, tuple[str, ...]]] = []
        self.record = False
        self._stopping = threading.Event()
        self._server: HttpServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> PaperExchange:
        """Bind, start the clock and serve in a background thread."""
        if self._server is not None:
            return self
        self._server = HttpServer((self.host if self.host != "localhost" else "127.0.0.1", self._port), Handler)
        self._server.exchange = self
        if isinstance(self.clock, ReplayClock):
            self.clock.start()
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name=f"paper-exchange-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (held-back replies are released at once); safe to call twice."""
        self._stopping.set()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> PaperExchange:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server is not None else self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def now(self) -> int:
        """The exchange's clock (ms)."""
        return self.clock.now_ms()

    def to_exchange_time(self, data_ms: int) -> int:
        """Where a recorded bar time appears on this exchange's clock."""
        return data_ms + self.market.offset

    # -- requests ---------------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: str, body: bytes, headers) -> tuple[int, object, dict]:
        """Serve one request: (HTTP status, JSON payload or None to drop the connection, headers)."""
        self.requests += 1
        name = endpoint_name(path)
        admin = path.startswith("/_harness/")
        fault = None if admin else self.faults.take(method, name)
        if fault is not None and fault.kind != "timeout":
            return fault_reply(fault, method, name)
        if fault is not None and fault.before:
            self._stopping.wait(fault.delay_s)
        route = ROUTES.get((method, name)) if path.startswith(("/api/v3/", "/api/v1/")) else None
        if method == "GET" and path in ("/fapi/v1/exchangeInfo", "/dapi/v1/exchangeInfo"):
            route = _NO_FUTURES      # a client that loads all market types gets spot markets only
        if admin:
            route = ADMIN_ROUTES.get((method, path))
        try:
            params = parse_params(query, body)
            if self.record:
                self.request_log.append((method, name, tuple(sorted(params))))
            if route is None:
                raise ApiError(-1020, "This operation is not supported.", 404)
            if route.signed:
                self._authenticate(headers, query, body, params)
            with self.account.lock:          # one request at a time sees and moves the book
                payload = route.fn(self, params, self.clock.now_ms())
            status = 200
        except ApiError as exc:
            status, payload = exc.status, {"code": exc.code, "msg": exc.msg}
        except Exception:  # a bug must cost one request a 500, never the server
            log.exception("paper exchange failed on %s %s", method, path)
            status, payload = 500, {"code": -1000, "msg": "An unknown error occurred while processing the request."}
        if fault is not None and not fault.before:
            self._stopping.wait(fault.delay_s)
        return status, payload, {}

    def _authenticate(self, headers, query: str, body: bytes, params: dict[str, str]) -> None:
        key = headers.get("X-MBX-APIKEY")
        if not key:
            raise ApiError(-2014, "API-key format invalid.", 401)
        if not hmac.compare_digest(key.encode(), self._key):
            raise ApiError(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        signature = params.get("signature")
        if not signature:
            raise ApiError(-1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.")
        signed = without_signature(query.encode()) + without_signature(body)
        expected = hmac.new(self._secret, signed, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature.lower()):
            raise ApiError(-1022, "Signature for this request is not valid.")
        timestamp = int_param(params, "timestamp")
        if timestamp is None:
            raise ApiError(-1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed.")
        window = int_param(params, "recvWindow", 5000, 0)
        if window > MAX_RECV_WINDOW:
            raise ApiError(-1131, f"recvWindow must be less than {MAX_RECV_WINDOW}")
        real = int(self._real() * 1000)
        if timestamp > real + 1000:
            raise ApiError(-1021, "Timestamp for this request was 1000ms ahead of the server's time.")
        if real - timestamp > window:
            raise ApiError(-1021, "Timestamp for this request is outside of the recvWindow.")

    # -- endpoints --------------------------------------------------------------------------------

    def _symbols_param(self, params: dict[str, str]) -> list[str] | None:
        if params.get("symbol"):
            return [self.market.symbol(params["symbol"])]
        if params.get("symbols"):
            try:
                names = json.loads(params["symbols"])
                assert isinstance(names, list) and all(isinstance(n, str) for n in names)
            except (ValueError, AssertionError):
                raise ApiError(-1100, "Illegal characters found in parameter 'symbols'; legal range is "
                                      "'^\\[(\"[A-Z0-9-_.]{1,20}\"(,\"[A-Z0-9-_.]{1,20}\"){0,}){0,1}\\]$'.") from None
            return [self.market.symbol(n) for n in names]
        return None

    def _one_or_all(self, params: dict[str, str], fn) -> object:
        chosen = self._symbols_param(params)
        rows = [fn(s) for s in (chosen or self.market.symbols)]
        return rows[0] if params.get("symbol") else rows

    def _ep_exchange_info(self, params, now):
        rules_ok = self._symbols_param(params) or list(self.market.symbols)
        return {"timezone": "UTC", "serverTime": now,
                "rateLimits": [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                                "limit": 6000},
                               {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100}],
                "exchangeFilters": [], "symbols": [self._symbol_info(s, now) for s in rules_ok]}

    def _symbol_info(self, symbol: str, now: int) -> dict:
        r = self.market.rules[symbol]
        base, quote = base_quote(symbol)
        return {
            "symbol": self.market.wire(symbol), "status": "TRADING" if self.market.is_trading(symbol, now) else "BREAK",
            "baseAsset": base, "baseAssetPrecision": r.base_precision, "quoteAsset": quote,
            "quotePrecision": r.quote_precision, "quoteAssetPrecision": r.quote_precision,
            "baseCommissionPrecision": r.base_precision, "quoteCommissionPrecision": r.quote_precision,
            "orderTypes": ["LIMIT", "MARKET", "STOP_LOSS"], "icebergAllowed": False, "ocoAllowed": False,
            "otoAllowed": False, "quoteOrderQtyMarketAllowed": True, "allowTrailingStop": False,
            "cancelReplaceAllowed": False, "isSpotTradingAllowed": True, "isMarginTradingAllowed": False,
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": fmt(r.tick_size), "maxPrice": fmt(1_000_000.0),
                 "tickSize": fmt(r.tick_size)},
                {"filterType": "LOT_SIZE", "minQty": fmt(r.min_qty or r.lot_step), "maxQty": fmt(r.max_qty),
                 "stepSize": fmt(r.lot_step)},
                {"filterType": "NOTIONAL", "minNotional": fmt(r.min_notional), "applyMinToMarket": True,
                 "maxNotional": fmt(r.max_notional), "applyMaxToMarket": False, "avgPriceMins": 5},
            ],
            "permissions": [], "permissionSets": [["SPOT"]], "defaultSelfTradePreventionMode": "NONE",
            "allowedSelfTradePreventionModes": ["NONE"],
        }

    def _ep_klines(self, params, now):
        symbol = self.market.symbol(params.get("symbol"))
        interval = params.get("interval")
        if not interval:
            raise ApiError(-1102, "Mandatory parameter 'interval' was not sent, was empty/null, or malformed.")
        return self.market.klines(symbol, interval, int_param(params, "startTime", None, 0),
                                  int_param(params, "endTime", None, 0), int_param(params, "limit", 500), now)

    def _ep_ticker_24h(self, params, now):
        return self._one_or_all(params, lambda s: self.market.ticker_24h(s, now))

    def _ep_ticker_price(self, params, now):
        return self._one_or_all(params, lambda s: {"symbol": self.market.wire(s),
                                                   "price": fmt(self.market.price(s, now) or 0.0)})

    def _ep_book_ticker(self, params, now):
        def top(s):
            (bp, bq), (ap, aq) = self.market.top_of_book(s, now)
            return {"symbol": self.market.wire(s), "bidPrice": fmt(bp), "bidQty": fmt(bq), "askPrice": fmt(ap),
                    "askQty": fmt(aq)}
        return self._one_or_all(params, top)

    def _ep_depth(self, params, now):
        symbol = self.market.symbol(params.get("symbol"))
        limit = int_param(params, "limit", 100, 1, 5000)
        bids, asks = self.market.book(symbol, now, limit)
        bar = self.market.current_bar(symbol, now) or self.market.last_closed(symbol, now)
        return {"lastUpdateId": (bar.index + 1) if bar else 0,
                "bids": [[fmt(p), fmt(q)] for p, q in bids], "asks": [[fmt(p), fmt(q)] for p, q in asks]}

    def _ep_avg_price(self, params, now):
        symbol = self.market.symbol(params.get("symbol"))
        return {"mins": 5, "price": fmt(self.market.avg_price(symbol, now)), "closeTime": now}

    def _ep_account(self, params, now):
        balances = self.account.balances(now)
        omit = params.get("omitZeroBalances", "").lower() == "true"
        fee = self.account.config
        return {
            "makerCommission": int(fee.maker_bps), "takerCommission": int(fee.taker_bps), "buyerCommission": 0,
            "sellerCommission": 0,
            "commissionRates": {"maker": fmt(fee.maker_bps / 1e4), "taker": fmt(fee.taker_bps / 1e4),
                                "buyer": fmt(0), "seller": fmt(0)},
            "canTrade": True, "canWithdraw": False, "canDeposit": False, "brokered": False,
            "requireSelfTradePrevention": False, "preventSor": False, "updateTime": self.account.update_time,
            "accountType": "SPOT", "permissions": ["SPOT"], "uid": 1,
            "balances": [{"asset": a, "free": fmt(f), "locked": fmt(lk)} for a, (f, lk) in sorted(balances.items())
                         if not (omit and f == 0 and lk == 0)],
        }

    def _ep_new_order(self, params, now):
        order = self.account.place(params, now)
        resp = (params.get("newOrderRespType") or "FULL").upper()
        if resp not in ("ACK", "RESULT", "FULL"):
            resp = "FULL"
        return order_json(order, self.market.wire(order.symbol), "new", resp)

    def _ep_get_order(self, params, now):
        symbol = self.market.symbol(params.get("symbol"))
        order = self.account.find(symbol, params.get("orderId"), params.get("origClientOrderId"), now)
        return order_json(order, self.market.wire(symbol))

    def _ep_cancel_order(self, params, now):
        symbol = self.market.symbol(params.get("symbol"))
        order = self.account.cancel(symbol, params.get("orderId"), params.get("origClientOrderId"), now)
        return order_json(order, self.market.wire(symbol), "cancel", cancel_id=params.get("newClientOrderId"), now=now)

    def _ep_open_orders(self, params, now):
        symbol = self.market.symbol(params["symbol"]) if params.get("symbol") else None
        return [order_json(o, self.market.wire(o.symbol)) for o in self.account.open_orders(symbol, now)]

    def _ep_cancel_open_orders(self, params, now):
        symbol = self.market.symbol(params.get("symbol"))
        orders = self.account.open_orders(symbol, now)
        return [order_json(self.account.cancel(symbol, str(o.order_id), None, now), self.market.wire(symbol),
                           "cancel", now=now) for o in orders]

    def _ep_all_orders(self, params, now):
        symbol = self.market.symbol(params.get("symbol"))
        rows = self.account.all_orders(symbol, now, int_param(params, "orderId", None, 0),
                                       int_param(params, "startTime", None, 0), int_param(params, "endTime", None, 0),
                                       int_param(params, "limit", 500, 1, 1000))
        return [order_json(o, self.market.wire(symbol)) for o in rows]

    def _ep_my_trades(self, params, now):
        symbol = self.market.symbol(params.get("symbol"))
        rows = self.account.my_trades(symbol, now, int_param(params, "fromId", None, 0),
                                      int_param(params, "startTime", None, 0), int_param(params, "endTime", None, 0),
                                      int_param(params, "limit", 500, 1, 1000), int_param(params, "orderId", None, 0))
        return [trade_json(t, self.market.wire(symbol)) for t in rows]

    def _ep_admin_faults(self, params, now):
        """``POST /_harness/faults`` (signed with the exchange's key pair, like any private call):
        ``kind`` = one of the :class:`Faults` kinds (with ``count``, ``path``, ``method``,
        ``delay_s``, ``status``), ``clear`` (disarm all), or ``debit`` with ``fraction`` (take that
        share of every free balance out of the account). Used by ``live --drill``."""
        kind = params.get("kind", "")
        if kind == "clear":
            self.faults.clear()
            return {"cleared": True}
        if kind == "debit":
            fraction = _float_param(params, "fraction", 0.0)
            if not 0 < fraction <= 1:
                raise ApiError(-1100, "Parameter 'fraction' must be in (0, 1].")
            return {"debited": self.account.debit(fraction, now)}
        options: dict = {}
        if "delay_s" in params:
            options["delay_s"] = _float_param(params, "delay_s", 0.0)
        if "status" in params:
            options["status"] = int_param(params, "status", 503, 500, 599)
        try:
            self.faults.inject(kind, int_param(params, "count", 1, 1), path=params.get("path") or None,
                               method=params.get("method") or None, **options)
        except ValueError as exc:
            raise ApiError(-1100, str(exc)) from None
        return {"armed": kind, "count": int_param(params, "count", 1, 1)}


def _float_param(params: dict[str, str], name: str, default: float) -> float:
    try:
        return float(params.get(name, default))
    except ValueError:
        raise ApiError(-1100, f"Illegal characters found in parameter '{name}'.") from None


@dataclass(frozen=True)
class _Route:
    fn: Callable
    signed: bool = False


_NO_FUTURES = _Route(lambda ex, p, now: {"timezone": "UTC", "serverTime": now, "rateLimits": [],
                                          "exchangeFilters": [], "symbols": []})
ROUTES: dict[tuple[str, str], _Route] = {
    ("GET", "ping"): _Route(lambda ex, p, now: {}),
    ("GET", "time"): _Route(lambda ex, p, now: {"serverTime": now}),
    ("GET", "exchangeInfo"): _Route(PaperExchange._ep_exchange_info),
    ("GET", "klines"): _Route(PaperExchange._ep_klines),
    ("GET", "uiKlines"): _Route(PaperExchange._ep_klines),
    ("GET", "ticker/24hr"): _Route(PaperExchange._ep_ticker_24h),
    ("GET", "ticker/price"): _Route(PaperExchange._ep_ticker_price),
    ("GET", "ticker/bookTicker"): _Route(PaperExchange._ep_book_ticker),
    ("GET", "depth"): _Route(PaperExchange._ep_depth),
    ("GET", "avgPrice"): _Route(PaperExchange._ep_avg_price),
    ("GET", "account"): _Route(PaperExchange._ep_account, True),
    ("POST", "order"): _Route(PaperExchange._ep_new_order, True),
    ("GET", "order"): _Route(PaperExchange._ep_get_order, True),
    ("DELETE", "order"): _Route(PaperExchange._ep_cancel_order, True),
    ("GET", "openOrders"): _Route(PaperExchange._ep_open_orders, True),
    ("DELETE", "openOrders"): _Route(PaperExchange._ep_cancel_open_orders, True),
    ("GET", "allOrders"): _Route(PaperExchange._ep_all_orders, True),
    ("GET", "myTrades"): _Route(PaperExchange._ep_my_trades, True),
}
#: Not Binance: the harness's own controls (fault injection for drills), signed, on loopback only.
ADMIN_ROUTES: dict[tuple[str, str], _Route] = {
    ("POST", "/_harness/faults"): _Route(PaperExchange._ep_admin_faults, True),
}


def parse_balances(items) -> dict[str, float]:
    """``["USDT=10000", "BTC=0.5"]`` → ``{"USDT": 10000.0, "BTC": 0.5}`` (a UserError names a bad item)."""
    from harness.errors import UserError

    out: dict[str, float] = {}
    for item in items:
        asset, sep, amount = str(item).partition("=")
        try:
            value = float(amount)
        except ValueError:
            value = -1.0
        if not sep or not asset.strip().isalnum() or not value >= 0 or not math.isfinite(value):
            raise UserError(f"--balance {item!r} is malformed: use ASSET=AMOUNT, e.g. --balance USDT=10000")
        out[asset.strip().upper()] = value
    return out


def choose_exchange(store: Store, symbols: list[str], timeframe: str, exchange: str | None) -> str:
    """The datasets exchange to replay: ``exchange`` if given, else ``binance`` or ``synthetic``
    (whichever records every symbol), else the first exchange that does."""
    def has_all(ex: str) -> bool:
        return all(store.stored_timeframes(ex, s) for s in symbols)

    if exchange is not None:
        return exchange
    candidates = ["binance", "synthetic"] + [e for e in store.exchanges() if e not in ("binance", "synthetic")]
    for ex in candidates:
        if has_all(ex):
            return ex
    recorded = ", ".join(f"{e} {s} {tf}" for e, s, tf in store.series()) or "nothing"
    raise DatasetError(f"no exchange in {store.root} records {', '.join(symbols)} (recorded: {recorded}); "
                       "import or synthesise data first, e.g. python cli.py data synth --symbols BTC/USDT")


def serve(store: Store, config, symbols=None, *, port: int = 8765, speed: float = 1.0,
          balances: dict[str, float] | None = None, api_key: str | None = None, api_secret: str | None = None,
          exchange: str | None = None, timeframe: str = "1m", start: int | None = None, seed: int = 0,
          fee_asset: str = "received", announce: Callable[[str], None] = print,
          stop: threading.Event | None = None) -> None:
    """``exchange serve``: run the paper exchange until SIGINT/SIGTERM (or ``stop`` is set).

    Fees, slippage and the volume cap come from ``config``; keys from the arguments, else the
    config file's ``[execution]``, else ``QT_EXECUTION_BINANCE_API_KEY`` / ``_SECRET``.
    """
    import os
    import signal

    from harness.errors import UserError

    if symbols is None:
        ex = exchange or "binance"
        symbols = sorted({s for e, s, tf in store.series() if e == ex and tf == timeframe})
        if not symbols:
            raise DatasetError(f"nothing recorded under exchange={ex} at {timeframe}: pass --symbols / --exchange")
    symbols = [normalize_symbol(s) for s in symbols]
    exchange = choose_exchange(store, symbols, timeframe, exchange)
    execution = getattr(config, "execution", None)
    key = api_key or _reveal(getattr(execution, "api_key", None)) or os.environ.get("QT_EXECUTION_BINANCE_API_KEY")
    secret = (api_secret or _reveal(getattr(execution, "api_secret", None))
              or os.environ.get("QT_EXECUTION_BINANCE_API_SECRET"))
    paper = PaperExchange(store, symbols, exchange=exchange, timeframe=timeframe, start=start, speed=speed,
                          balances=balances, api_key=key or "", api_secret=secret or "",
                          fill_config=FillConfig.from_config(config) if config is not None else None,
                          fee_asset=fee_asset, seed=seed, port=port)
    try:
        paper.start()
    except OSError as exc:
        raise UserError(f"cannot listen on 127.0.0.1:{port} ({exc.strerror}): choose another --port") from None
    stop = stop or threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    try:
        first = paper.to_exchange_time(paper.start_data)
        announce(f"paper exchange listening on {paper.url}  ({', '.join(symbols)} from exchange={exchange}, "
                 f"{timeframe} bars, speed {speed:g}x; replaying {ms_to_iso(paper.start_data)} as "
                 f"{ms_to_iso(first)}; balances "
                 f"{', '.join(f'{a}={f:g}' for a, (f, _) in paper.account.balances(paper.now()).items() if f)})")
        stop.wait()
    finally:
        paper.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _reveal(value) -> str | None:
    if value is None:
        return None
    return value.reveal() if hasattr(value, "reveal") else str(value)


__all__ = ["PaperExchange", "Faults", "Fault", "ManualClock", "ReplayClock", "parse_balances", "serve",
           "choose_exchange"]
