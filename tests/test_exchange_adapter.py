"""The exchange adapter (harness/exchange.py) against the paper exchange on loopback:
endpoint safety, error translation, retries of temporary errors only, no doubled orders,
secrets kept out of errors and logs, and the harness-typed results."""

from __future__ import annotations

import logging

import pytest

from harness import errors
from harness.config import load_config
from harness.exchange import ExchangeClient, check_endpoint, request_id_var
from harness.model import Liquidity, OrderStatus, OrderType, Side
from tests.exchange_support import BTC_RULES, KEY, MINUTE, SECRET, START, make_exchange, make_store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("adapter") / "datasets")


@pytest.fixture
def paper(store):
    ex = make_exchange(store)
    yield ex
    ex.stop()


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps():
    return Sleeps()


@pytest.fixture
def client(paper, sleeps):
    return ExchangeClient(url=paper.url, api_key=KEY, api_secret=SECRET, retries=3, backoff_s=0.01, sleep=sleeps,
                          timeout_s=2)


# -- where a client may connect ---------------------------------------------------------------------


@pytest.mark.parametrize("url", ["https://api.binance.com", "https://api.binance.us/api/v3", "http://10.0.0.7:8765",
                                 "http://example.com:8765", "ftp://127.0.0.1:21", "127.0.0.1:8765",
                                 "http://testnet.binance.vision", "https://api.binance.com@127.0.0.1.evil.com"])
def test_refuses_anything_but_testnet_or_loopback(url):
    with pytest.raises(errors.SafetyError):
        ExchangeClient(url=url)


def test_refuses_mainnet_when_the_testnet_is_off():
    config = load_config(env={"QT_EXECUTION_BINANCE_TESTNET": "false"}, path=None)
    with pytest.raises(errors.SafetyError, match="mainnet"):
        ExchangeClient(config)


@pytest.mark.parametrize("url", ["http://127.0.0.1:1", "http://localhost:8765", "http://[::1]:8765"])
def test_loopback_is_allowed(url):
    assert check_endpoint(url) == "loopback"
    client = ExchangeClient(url=url)
    assert client.mode == "loopback" and not client._ccxt.enableRateLimit
    assert all(v.startswith(url) for v in client._ccxt.urls["api"].values())


def test_testnet_client_points_only_at_testnet_hosts_with_the_rate_limiter_on():
    client = ExchangeClient(testnet=True)
    assert client.mode == "testnet" and client._ccxt.enableRateLimit
    hosts = {v.split("/")[2] for v in client._ccxt.urls["api"].values()}
    assert hosts <= {"testnet.binance.vision", "testnet.binancefuture.com"}
    assert client._ccxt.options["adjustForTimeDifference"] is True
    assert client.dataset_id == "binance-testnet"


def test_every_request_is_checked_even_if_the_urls_are_tampered_with(client):
    client._ccxt.urls["api"]["public"] = "https://api.binance.com/api/v3"
    with pytest.raises(errors.SafetyError):
        client.server_time()


# -- harness-typed results ----------------------------------------------------------------------------


def test_market_data(client, paper):
    assert client.server_time() == paper.now()
    rules = client.load_rules(["BTC/USDT"])
    assert rules == {"BTC/USDT": BTC_RULES}
    bars = client.fetch_bars("BTC/USDT", "1m", since=START - 10 * MINUTE, limit=10)
    assert len(bars) == 10 and bars.ts[0] == START - 10 * MINUTE and bars.symbol == "BTC/USDT"
    closed = client.fetch_closed_bars("BTC/USDT", "1m", since=START - 10 * MINUTE, limit=10, now=START - MINUTE)
    assert len(closed) == 9
    with pytest.raises(errors.UserError, match="unknown symbol"):
        client.load_rules(["DOGE/USDT"])


def test_orders_balances_and_trades(client, paper):
    order = client.create_order("BTC/USDT", Side.BUY, OrderType.MARKET, 0.01, client_order_id="qt-1")
    assert order.client_order_id == "qt-1" and order.status is OrderStatus.FILLED and order.filled_qty == 0.01
    assert order.exchange_order_id == "1" and order.type is OrderType.MARKET
    limit = client.create_order("BTC/USDT", "buy", "limit", 0.02, 50_000.0, client_order_id="qt-2")
    assert limit.status is OrderStatus.NEW and limit.price == 50_000.0
    assert client.fetch_balances()["USDT"][1] == pytest.approx(1000.0)
    assert [o.client_order_id for o in client.fetch_open_orders("BTC/USDT")] == ["qt-2"]
    assert [o.client_order_id for o in client.fetch_open_orders()] == ["qt-2"]            # every symbol
    assert client.fetch_order("BTC/USDT", client_order_id="qt-2").exchange_order_id == limit.exchange_order_id
    canceled = client.cancel_order("BTC/USDT", client_order_id="qt-2")
    assert canceled.status is OrderStatus.CANCELED and canceled.client_order_id == "qt-2"
    fills = client.fetch_my_trades("BTC/USDT", since=START)
    assert len(fills) == 1
    fill = fills[0]
    assert (fill.fill_id, fill.order_id, fill.side, fill.qty, fill.fee_asset, fill.liquidity) == \
        ("1", "1", Side.BUY, 0.01, "BTC", Liquidity.TAKER)
    assert fill.fee == pytest.approx(0.00001)
    stop = client.create_order("BTC/USDT", "sell", "stop", 0.01, stop_price=40_000.0, client_order_id="qt-3")
    assert stop.type is OrderType.STOP and stop.stop_price == 40_000.0 and stop.status is OrderStatus.NEW
    quote = client.create_order("ETH/USDT", "buy", "market", 0, quote_qty=100.0, client_order_id="qt-4")
    assert quote.status is OrderStatus.FILLED and quote.filled_qty > 0


# -- error translation ---------------------------------------------------------------------------------


def test_error_translation(client, paper, sleeps):
    with pytest.raises(errors.OrderRejected) as info:                     # -2010 insufficient balance
        client.create_order("BTC/USDT", "buy", "market", 1.0)
    assert info.value.code == -2010
    with pytest.raises(errors.OrderRejected, match="NOTIONAL") as info:    # BadRequest in ccxt
        client.create_order("BTC/USDT", "buy", "market", 0.00005)
    assert info.value.code == -1013
    with pytest.raises(errors.OrderNotFound):
        client.fetch_order("BTC/USDT", order_id="999")
    with pytest.raises(errors.OrderNotFound):
        client.cancel_order("BTC/USDT", client_order_id="nope")
    paper.clock.set(START + 125 * MINUTE)                                 # the halt
    with pytest.raises(errors.OrderRejected, match="Market is closed"):
        client.create_order("BTC/USDT", "buy", "market", 0.01)
    assert sleeps == []                                                   # none of these was retried


def test_bad_secret_is_authentication_failed_and_a_user_error(paper):
    client = ExchangeClient(url=paper.url, api_key=KEY, api_secret="wrong-secret-value", sleep=lambda s: None)
    with pytest.raises(errors.AuthenticationFailed) as info:
        client.fetch_balances()
    assert isinstance(info.value, errors.UserError) and info.value.code == -1022


def test_clock_skew_is_not_retried(client, sleeps):
    client._markets()
    client._ccxt.options["timeDifference"] = 3_600_000
    with pytest.raises(errors.ExchangeError, match="clock skew") as info:
        client.fetch_balances()
    assert info.value.code == -1021 and not isinstance(info.value, errors.TemporaryExchangeError)
    assert sleeps == []


@pytest.mark.parametrize("kind", ["error", "rate_limit", "ban", "disconnect"])
def test_temporary_errors_are_retried_with_backoff(client, paper, sleeps, kind):
    client._markets()
    paper.faults.inject(kind, count=2, path="account")
    assert "USDT" in client.fetch_balances()
    assert sleeps == [0.01, 0.02]                                         # exponential backoff
    assert client.stats()["GET /api/v3/account"] == {"requests": 3, "errors": 2}


def test_retries_give_up_with_a_temporary_error(client, paper, sleeps):
    client._markets()
    paper.faults.inject("error", count=10, path="time")
    with pytest.raises(errors.TemporaryExchangeError):
        client.server_time()
    assert len(sleeps) == 3


def test_a_permanent_error_is_sent_once(client, paper):
    client._markets()
    paper.faults.inject("reject", count=5)
    with pytest.raises(errors.OrderRejected, match="-2010"):
        client.create_order("BTC/USDT", "buy", "market", 0.01, client_order_id="once")
    assert paper.faults.served == {"reject": 1}


def test_a_timed_out_order_is_looked_up_not_sent_twice(paper, sleeps):
    client = ExchangeClient(url=paper.url, api_key=KEY, api_secret=SECRET, retries=3, backoff_s=0.01,
                            sleep=sleeps, timeout_s=0.5)
    client._markets()
    paper.faults.inject("timeout", count=1, path="order", method="POST", delay_s=2.0)   # executed, reply lost
    order = client.create_order("BTC/USDT", "buy", "market", 0.01, client_order_id="slow-1")
    assert order.client_order_id == "slow-1" and order.status is OrderStatus.FILLED
    assert len(paper.account.orders) == 1 and len(paper.account.trades) == 1
    assert client.stats()["POST /api/v3/order"] == {"requests": 1, "errors": 1}


def test_an_order_lost_before_the_exchange_saw_it_is_resent_once(client, paper):
    client._markets()
    paper.faults.inject("disconnect", count=1, path="order", method="POST")            # never executed
    order = client.create_order("BTC/USDT", "buy", "market", 0.01, client_order_id="lost-1")
    assert order.status is OrderStatus.FILLED
    assert [o.client_order_id for o in paper.account.orders.values()] == ["lost-1"]


def test_a_lookup_that_fails_is_retried_before_any_resend(client, paper):
    client._markets()
    paper.faults.inject("error", count=1, path="order", method="POST")
    paper.faults.inject("error", count=2, path="order", method="GET")
    order = client.create_order("BTC/USDT", "buy", "market", 0.01, client_order_id="flaky-1")
    assert order.status is OrderStatus.FILLED and len(paper.account.orders) == 1


# -- secrets and telemetry -----------------------------------------------------------------------------


def test_secrets_never_reach_errors_logs_or_events(paper, caplog, sleeps):
    events = []
    secret = "s3cr3t-never-shown-0000"
    client = ExchangeClient(url=paper.url, api_key=KEY, api_secret=secret, observer=events.append, sleep=sleeps,
                            retries=1, backoff_s=0)
    caplog.set_level(logging.DEBUG)
    paper.faults.inject("error", count=1, path="account")
    with pytest.raises(errors.AuthenticationFailed) as info:
        client.fetch_balances()
    assert len(events) >= 2 and all(e.error for e in events if not e.ok)       # the fault and the refusal
    for text in [str(info.value), repr(client), caplog.text] + [e.error for e in events]:
        assert secret not in text and KEY not in text
    own = [r.getMessage() for r in caplog.records if r.name.startswith("harness")]
    for text in [str(info.value)] + [e.error for e in events] + own:       # urllib3's own debug lines aside
        assert "signature=" not in text.replace("signature=…", "")


def test_observer_sees_each_request_with_the_callers_request_id(client, paper):
    events = []
    client.observer = events.append
    token = request_id_var.set("job-42")
    try:
        client.server_time()
        client.fetch_balances()
    finally:
        request_id_var.reset(token)
    assert [e.endpoint for e in events] == ["GET /api/v3/time", "GET /api/v3/exchangeInfo", "GET /api/v3/account"]
    assert {e.request_id for e in events} == {"job-42"} and all(e.ok for e in events)
    with client.request_id("job-43"):
        client.server_time()
    assert events[-1].request_id == "job-43" and events[-1].duration_ms >= 0
