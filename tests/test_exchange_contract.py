"""The paper exchange's contract, driven by the real, unmodified ccxt binance client on loopback.

This suite is the spec of what the paper exchange speaks: a ccxt upgrade that changes a request
or how a response is read must fail here, not in a staging run. The clock is manual, so every
fill is known in advance; exchange time equals recorded time (no shift).
"""

from __future__ import annotations

import ccxt
import pytest

from harness import fills
from harness.fills import FillConfig
from harness.model import OrderType, Side
from tests.exchange_support import (
    BTC_RULES,
    GAP,
    KEY,
    MINUTE,
    SECRET,
    START,
    bar_at,
    ccxt_client,
    make_exchange,
    make_store,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("contract") / "datasets")


@pytest.fixture
def paper(store):
    ex = make_exchange(store)
    yield ex
    ex.stop()


@pytest.fixture
def client(paper):
    return ccxt_client(paper.url)


def test_ccxt_is_the_pinned_minor_version():
    assert ccxt.__version__.startswith("4.5."), ccxt.__version__


# -- public endpoints ---------------------------------------------------------------------------


def test_load_markets_reads_the_rules_snapshot(client, paper):
    paper.record = True
    markets = client.load_markets()
    assert [r[:2] for r in paper.request_log] == [("GET", "exchangeInfo")]
    market = markets["BTC/USDT"]
    assert market["spot"] and market["active"]
    assert market["precision"]["amount"] == BTC_RULES.lot_step
    assert market["precision"]["price"] == BTC_RULES.tick_size
    assert market["limits"]["amount"]["min"] == BTC_RULES.min_qty
    assert market["limits"]["cost"]["min"] == BTC_RULES.min_notional
    assert set(markets) == {"BTC/USDT", "ETH/USDT"}


def test_a_plain_client_loading_every_market_type_gets_the_spot_markets(paper):
    plain = ccxt.binance({"apiKey": KEY, "secret": SECRET})
    plain.set_sandbox_mode(True)
    from urllib.parse import urlsplit

    plain.urls["api"] = {k: paper.url + urlsplit(v).path for k, v in plain.urls["api"].items()}
    assert set(plain.load_markets()) == {"BTC/USDT", "ETH/USDT"}


def test_time_and_ping_follow_the_exchange_clock(client, paper):
    assert client.fetch_time() == START + 5_000
    paper.clock.advance(61_000)
    assert client.fetch_time() == START + 66_000
    assert client.publicGetPing() == {}


def test_klines_are_closed_bars_with_the_recorded_values(client, paper, store):
    paper.clock.set(START + 10 * MINUTE + 30_000)         # bar START+10m is in progress
    rows = client.fetch_ohlcv("BTC/USDT", "1m", limit=3)
    assert [r[0] for r in rows] == [START + 7 * MINUTE, START + 8 * MINUTE, START + 9 * MINUTE]
    recorded = bar_at(store, "BTC/USDT", START + 9 * MINUTE)
    assert rows[-1][1:] == pytest.approx([recorded.open, recorded.high, recorded.low, recorded.close,
                                          recorded.volume])
    since = client.fetch_ohlcv("BTC/USDT", "1m", since=START - 2 * MINUTE, limit=5)
    assert [r[0] for r in since] == [START + (i - 2) * MINUTE for i in range(5)]


def test_klines_request_shape_is_pinned(client, paper):
    paper.record = True
    client.load_markets()
    paper.request_log.clear()
    rows = client.fetch_ohlcv("BTC/USDT", "1m", since=START - 600 * MINUTE)
    assert paper.request_log == [("GET", "klines", ("interval", "limit", "startTime", "symbol"))]
    assert len(rows) == 500                                # ccxt asks for 500 bars a page


def test_klines_of_coarser_intervals_are_resampled_closed_buckets(client, paper, store):
    paper.clock.set(START + 17 * MINUTE)
    rows = client.fetch_ohlcv("BTC/USDT", "5m", limit=2)
    assert [r[0] for r in rows] == [START + 5 * MINUTE, START + 10 * MINUTE]
    bars = store.read("binance", "BTC/USDT", "1m", START + 10 * MINUTE, START + 15 * MINUTE)
    assert rows[-1][1:] == pytest.approx([bars.open[0], bars.high.max(), bars.low.min(), bars.close[-1],
                                          bars.volume.sum()])


def test_tickers_book_and_average_price(client, paper, store):
    client.load_markets()
    current = bar_at(store, "BTC/USDT", START)
    ticker = client.fetch_ticker("BTC/USDT")
    assert ticker["last"] == pytest.approx(current.open)
    assert ticker["bid"] < ticker["last"] < ticker["ask"]
    prices = client.fetch_last_prices(["BTC/USDT", "ETH/USDT"])
    assert prices["BTC/USDT"]["price"] == pytest.approx(current.open)
    tops = client.fetch_bids_asks(["BTC/USDT"])
    assert tops["BTC/USDT"]["bid"] == ticker["bid"] and tops["BTC/USDT"]["ask"] == ticker["ask"]
    book = client.fetch_order_book("BTC/USDT", 20)
    assert len(book["bids"]) == len(book["asks"]) == 20
    assert book["bids"][0][0] == ticker["bid"] and book["asks"][0][0] == ticker["ask"]
    assert all(a[0] > b[0] for a, b in zip(book["bids"], book["bids"][1:], strict=False))
    avg = client.publicGetAvgPrice({"symbol": "BTCUSDT"})
    assert avg["mins"] == 5 and float(avg["price"]) > 0
    assert len(client.fetch_tickers(["BTC/USDT", "ETH/USDT"])) == 2


# -- orders and the account ---------------------------------------------------------------------


def test_market_buy_fills_at_the_open_of_the_bar_in_progress_with_slippage(client, paper, store):
    client.load_markets()
    bar = bar_at(store, "BTC/USDT", START)
    expected = fills.slipped(bar.open, Side.BUY, FillConfig(slippage_bps=2.0), BTC_RULES)
    order = client.create_order("BTC/USDT", "market", "buy", 0.01, params={"newClientOrderId": "buy-1"})
    assert order["status"] == "closed" and order["filled"] == 0.01 and order["clientOrderId"] == "buy-1"
    assert order["average"] == pytest.approx(expected)
    assert order["fee"] == {"currency": "BTC", "cost": pytest.approx(0.00001)}     # 10 bps, in the base received
    trades = client.fetch_my_trades("BTC/USDT")
    assert len(trades) == 1 and trades[0]["order"] == order["id"] and trades[0]["takerOrMaker"] == "taker"
    assert trades[0]["timestamp"] == START + 5_000
    balance = client.fetch_balance()
    assert balance["BTC"]["free"] == pytest.approx(0.5 + 0.01 - 0.00001)
    assert balance["USDT"]["free"] == pytest.approx(10_000 - 0.01 * expected, abs=1e-6)


def test_market_sell_pays_the_fee_in_quote(client, paper, store):
    client.load_markets()
    bar = bar_at(store, "BTC/USDT", START)
    price = fills.slipped(bar.open, Side.SELL, FillConfig(slippage_bps=2.0), BTC_RULES)
    order = client.create_order("BTC/USDT", "market", "sell", 0.1)
    assert order["fee"]["currency"] == "USDT"
    assert order["fee"]["cost"] == pytest.approx(round(0.1 * price * 0.001, 8))
    balance = client.fetch_balance()
    assert balance["BTC"]["total"] == pytest.approx(0.4)
    assert balance["USDT"]["total"] == pytest.approx(10_000 + 0.1 * price * 0.999, abs=1e-6)


def test_market_buy_by_quote_order_qty(client, paper, store):
    client.load_markets()
    order = client.create_order("BTC/USDT", "market", "buy", None, params={"quoteOrderQty": 1000})
    assert order["cost"] <= 1000 and order["cost"] > 999 - order["average"] * BTC_RULES.lot_step
    assert order["filled"] == pytest.approx(fills.round_qty(1000 / order["average"], BTC_RULES))


def test_fees_in_quote_when_asked(store):
    with make_exchange(store, fee_asset="quote") as paper:
        client = ccxt_client(paper.url)
        order = client.create_order("BTC/USDT", "market", "buy", 0.01)
        assert order["fee"]["currency"] == "USDT"
        assert client.fetch_balance()["BTC"]["total"] == pytest.approx(0.51)


def test_resting_limit_order_locks_funds_and_fills_when_a_bar_crosses_it(client, paper, store):
    client.load_markets()
    bars = store.read("binance", "BTC/USDT", "1m", START, START + 200 * MINUTE)
    # the first later bar whose low trades through a price below every low so far
    limit = round(float(bars.low[0]) - 0.01 * 50, 2)
    crossing = next(i for i in range(1, len(bars)) if bars.low[i] < limit and bars.open[i] > limit)
    assert all(bars.low[j] >= limit for j in range(crossing)), "pick a limit nothing before crosses"
    order = client.create_order("BTC/USDT", "limit", "buy", 0.02, limit, params={"newClientOrderId": "lim-1"})
    assert order["status"] == "open"
    locked = client.fetch_balance()["USDT"]["used"]
    assert locked == pytest.approx(0.02 * limit)
    assert [o["id"] for o in client.fetch_open_orders("BTC/USDT")] == [order["id"]]
    paper.clock.set(int(bars.ts[crossing]) + 30_000)                # the crossing bar is in progress
    assert client.fetch_order(order["id"], "BTC/USDT")["status"] == "open"
    paper.clock.set(int(bars.ts[crossing]) + MINUTE)                # ... and now it has closed
    done = client.fetch_order(None, "BTC/USDT", params={"origClientOrderId": "lim-1"})
    assert done["status"] == "closed" and done["filled"] == 0.02 and done["average"] == pytest.approx(limit)
    trade = client.fetch_my_trades("BTC/USDT")[-1]
    assert trade["takerOrMaker"] == "maker" and trade["price"] == limit
    assert trade["timestamp"] == int(bars.ts[crossing]) + MINUTE
    balance = client.fetch_balance()
    assert balance["USDT"]["used"] == 0 and balance["USDT"]["free"] == pytest.approx(10_000 - 0.02 * limit)
    assert balance["BTC"]["free"] == pytest.approx(0.5 + 0.02 * 0.999)
    assert client.fetch_open_orders("BTC/USDT") == []


def test_limit_order_fills_at_the_open_when_a_bar_gaps_through_it(client, paper, store):
    client.load_markets()
    bars = store.read("binance", "BTC/USDT", "1m", START, START + 3 * MINUTE)
    limit = round(float(bars.open[1]) + 100, 2)          # a sell limit far above: never; a buy above: at once
    assert bars.open[0] < limit                           # the bar in progress opened under the limit
    order = client.create_order("BTC/USDT", "limit", "buy", 0.01, limit)
    paper.clock.set(START + MINUTE)
    done = client.fetch_order(order["id"], "BTC/USDT")
    # at the bar's open (better than the limit, no slippage on a limit), as a maker
    assert done["status"] == "closed" and done["filled"] == 0.01
    assert done["average"] == float(bars.open[0])
    (trade,) = client.fetch_my_trades("BTC/USDT")
    assert trade["price"] == float(bars.open[0]) and trade["takerOrMaker"] == "maker"


def test_stop_loss_sell_triggers_like_the_paper_broker(client, paper, store):
    client.load_markets()
    bars = store.read("binance", "BTC/USDT", "1m", START, START + 100 * MINUTE)
    stop = round(float(bars.low[:5].min()) - 20, 2)
    hit = next(i for i in range(len(bars)) if bars.low[i] <= stop)
    order = client.create_order("BTC/USDT", "STOP_LOSS", "sell", 0.05, params={"stopPrice": stop})
    assert order["status"] == "open" and client.fetch_balance()["BTC"]["used"] == pytest.approx(0.05)
    paper.clock.set(int(bars.ts[hit]) + MINUTE)
    done = client.fetch_order(order["id"], "BTC/USDT")
    plan, _ = fills.match(OrderType.STOP, Side.SELL, 0.05, *map(float, (bars.open[hit], bars.high[hit], bars.low[hit],
                          bars.volume[hit])), FillConfig(slippage_bps=2.0), BTC_RULES, stop_price=stop)
    assert done["status"] == "closed" and done["average"] == pytest.approx(plan.price)


def test_cancel_releases_the_lock(client, paper):
    client.load_markets()
    order = client.create_order("BTC/USDT", "limit", "sell", 0.2, 99_999.99)
    assert client.fetch_balance()["BTC"]["used"] == pytest.approx(0.2)
    canceled = client.cancel_order(order["id"], "BTC/USDT")
    assert canceled["status"] == "canceled"
    assert client.fetch_balance()["BTC"]["used"] == 0
    with pytest.raises(ccxt.OrderNotFound):
        client.cancel_order(order["id"], "BTC/USDT")          # -2011: not open any more
    assert [o["status"] for o in client.fetch_orders("BTC/USDT")] == ["canceled"]


def test_order_request_shape_is_pinned(client, paper):
    client.load_markets()
    paper.record = True
    client.create_order("BTC/USDT", "limit", "buy", 0.01, 50_000, params={"newClientOrderId": "shape-1"})
    client.create_order("BTC/USDT", "market", "buy", 0.01, params={"newClientOrderId": "shape-2"})
    assert paper.request_log == [
        ("POST", "order", ("newClientOrderId", "newOrderRespType", "price", "quantity", "recvWindow", "side",
                           "signature", "symbol", "timeInForce", "timestamp", "type")),
        ("POST", "order", ("newClientOrderId", "newOrderRespType", "quantity", "recvWindow", "side", "signature",
                           "symbol", "timestamp", "type")),
    ]


def test_balances_and_my_trades_stay_consistent_over_a_sequence_of_orders(client, paper):
    client.load_markets()
    start = client.fetch_balance()["total"]
    client.create_order("BTC/USDT", "market", "buy", 0.03)
    client.create_order("ETH/USDT", "market", "buy", 0.5)
    paper.clock.advance(3 * MINUTE)
    client.create_order("BTC/USDT", "market", "sell", 0.02)
    client.create_order("BTC/USDT", "limit", "sell", 0.01, 99_999)            # rests: locks BTC
    client.create_order("ETH/USDT", "market", "sell", 0.25)
    paper.clock.advance(5 * MINUTE)
    client.create_order("ETH/USDT", "limit", "buy", 0.1, 100)                 # rests: locks USDT
    expected = dict(start)
    for symbol in ("BTC/USDT", "ETH/USDT"):
        base, quote = symbol.split("/")
        expected.setdefault(base, 0.0)
        for t in client.fetch_my_trades(symbol):
            sign = 1 if t["side"] == "buy" else -1
            expected[base] += sign * t["amount"]
            expected[quote] -= sign * t["cost"]
            expected[t["fee"]["currency"]] -= t["fee"]["cost"]
    total = client.fetch_balance()["total"]
    for asset, value in expected.items():
        assert total[asset] == pytest.approx(value, abs=1e-7), asset
    used = client.fetch_balance()["used"]
    assert used["BTC"] == pytest.approx(0.01) and used["USDT"] == pytest.approx(10.0)
    assert len(client.fetch_open_orders("BTC/USDT")) == 1 and len(client.fetch_open_orders("ETH/USDT")) == 1


# -- refusals --------------------------------------------------------------------------------------


def test_wrong_secret_or_key_is_an_authentication_error(paper):
    with pytest.raises(ccxt.AuthenticationError, match="-1022"):
        ccxt_client(paper.url, secret="not-the-secret").fetch_balance()
    with pytest.raises(ccxt.AuthenticationError, match="-2015"):
        ccxt_client(paper.url, key="not-the-key").fetch_balance()


def test_clock_skew_is_invalid_nonce(client):
    client.options["timeDifference"] = 3_600_000            # the client signs with a clock an hour behind
    with pytest.raises(ccxt.InvalidNonce, match="-1021"):
        client.fetch_balance()


def test_insufficient_balance(client):
    client.load_markets()
    with pytest.raises(ccxt.InsufficientFunds):
        client.create_order("BTC/USDT", "market", "buy", 1.0)            # ~60k USDT with 10k
    with pytest.raises(ccxt.InsufficientFunds):
        client.create_order("BTC/USDT", "market", "sell", 0.6)           # 0.5 BTC held
    assert client.fetch_balance()["USDT"]["free"] == 10_000


@pytest.mark.parametrize("params, exc, text", [
    ({"quantity": "0.000001"}, ccxt.InvalidOrder, "Filter failure: LOT_SIZE"),             # below min qty
    ({"quantity": "0.012345"}, ccxt.InvalidOrder, "Filter failure: LOT_SIZE"),             # off the lot step
    ({"price": "50000.005"}, ccxt.InvalidOrder, "Filter failure: PRICE_FILTER"),           # off the tick
    ({"quantity": "0.00005"}, ccxt.BadRequest, "Filter failure: NOTIONAL"),                # 2.5 USDT < 5
])
def test_filter_failures(client, params, exc, text):
    client.load_markets()
    # params win over ccxt's own rounding, so the raw values reach the exchange
    with pytest.raises(exc, match=text):
        client.create_order("BTC/USDT", "limit", "buy", 0.01, 50_000, params=params)


def test_min_notional_arrives_as_bad_request_not_invalid_order(client):
    client.load_markets()
    with pytest.raises(ccxt.BadRequest) as info:
        client.create_order("BTC/USDT", "market", "buy", 0.00005)
    assert not isinstance(info.value, ccxt.InvalidOrder) and "-1013" in str(info.value)


def test_unknown_order_is_order_not_found(client):
    client.load_markets()
    with pytest.raises(ccxt.OrderNotFound, match="-2013"):
        client.fetch_order("424242", "BTC/USDT")
    with pytest.raises(ccxt.OrderNotFound, match="-2013"):
        client.fetch_order(None, "BTC/USDT", params={"origClientOrderId": "never-sent"})
    with pytest.raises(ccxt.OrderNotFound, match="-2011"):
        client.cancel_order("424242", "BTC/USDT")


def test_duplicate_client_order_id_of_an_open_order(client):
    client.load_markets()
    client.create_order("BTC/USDT", "limit", "buy", 0.01, 50_000, params={"newClientOrderId": "dup-1"})
    with pytest.raises(ccxt.InvalidOrder, match="Duplicate order sent"):
        client.create_order("BTC/USDT", "limit", "buy", 0.01, 50_000, params={"newClientOrderId": "dup-1"})
    assert len(client.fetch_open_orders("BTC/USDT")) == 1


@pytest.mark.parametrize("params, code, exc", [
    ({"symbol": "NOPEUSDT"}, -1121, ccxt.BadSymbol),
    ({"quantity": "0"}, -1013, ccxt.BadRequest),                 # "Invalid quantity."
    ({"quantity": "-1"}, -1100, ccxt.BadRequest),                # illegal characters
    ({"quantity": "1e-3"}, -1100, ccxt.BadRequest),
    ({"price": "0"}, -1013, ccxt.BadRequest),                    # "Invalid price."
    ({"side": "SIDEWAYS"}, -1117, ccxt.BadRequest),
    ({"type": "TRAILING"}, -1116, ccxt.BadRequest),
    ({"timeInForce": None}, -1102, ccxt.BadRequest),             # mandatory parameter missing
    ({"bogus": "1"}, -1104, ccxt.BadRequest),                    # a parameter the server does not read
    ({"newClientOrderId": "has spaces!"}, -1100, ccxt.BadRequest),
])
def test_malformed_order_parameters_get_binance_errors(client, paper, params, code, exc):
    base = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.01",
            "price": "50000"}
    request = {k: v for k, v in {**base, **params}.items() if v is not None}
    with pytest.raises(exc, match=str(code)):
        client.privatePostOrder(request)
    assert paper.account.orders == {}


def test_unknown_symbol_on_public_endpoints(client):
    with pytest.raises(ccxt.BadSymbol, match="-1121"):
        client.publicGetKlines({"symbol": "NOPEUSDT", "interval": "1m"})
    with pytest.raises(ccxt.BadRequest, match="-1120"):
        client.publicGetKlines({"symbol": "BTCUSDT", "interval": "7m"})


def test_an_order_on_a_halted_minute_is_market_closed(client, paper, store):
    client.load_markets()
    paper.clock.set(GAP[0] + 5_000)
    info = client.publicGetExchangeInfo()
    assert {s["symbol"]: s["status"] for s in info["symbols"]} == {"BTCUSDT": "BREAK", "ETHUSDT": "TRADING"}
    with pytest.raises(ccxt.MarketClosed, match="Market is closed"):
        client.create_order("BTC/USDT", "market", "buy", 0.01)
    client.create_order("ETH/USDT", "market", "buy", 0.01)              # the other symbol trades on
    assert client.fetch_ohlcv("BTC/USDT", "1m", limit=1)[0][0] == GAP[0] - MINUTE
    paper.clock.set(GAP[1] + 1)
    assert client.create_order("BTC/USDT", "market", "buy", 0.01)["status"] == "closed"
