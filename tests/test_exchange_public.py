"""The read-only mainnet market-data client: it can GET public market data and nothing else.

No test here reaches the network: every refused request fails in the guard, before a socket
is opened, and the allowed shapes are checked on the guard function itself.
"""

from __future__ import annotations

import pytest

from harness import errors
from harness.exchange import ExchangeClient, check_market_data_request


@pytest.fixture
def public(monkeypatch):
    monkeypatch.setenv("QT_EXECUTION_BINANCE_API_KEY", "k-should-not-be-used")
    monkeypatch.setenv("QT_EXECUTION_BINANCE_API_SECRET", "s-should-not-be-used")
    return ExchangeClient(public=True, testnet=False)


def test_public_client_holds_no_keys_and_stores_under_binance(public):
    assert public.mode == "public" and public.dataset_id == "binance"
    assert not public._ccxt.apiKey and not public._ccxt.secret
    assert public._ccxt.enableRateLimit                      # a real endpoint: ccxt's limiter stays on


@pytest.mark.parametrize("url", [
    "https://api.binance.com/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=500",
    "https://api.binance.com/api/v3/exchangeInfo",
    "https://data-api.binance.vision/api/v3/time",
])
def test_public_market_data_gets_pass_the_guard(url):
    check_market_data_request(url, "GET", {})


@pytest.mark.parametrize("url, method, headers", [
    ("https://api.binance.com/api/v3/order", "POST", {}),                                  # an order
    ("https://api.binance.com/api/v3/order?symbol=BTCUSDT", "GET", {}),                    # private path
    ("https://api.binance.com/api/v3/account?timestamp=1&signature=ab", "GET", {}),        # signed
    ("https://api.binance.com/api/v3/klines?symbol=BTCUSDT", "GET", {"X-MBX-APIKEY": "k"}),  # keyed
    ("https://api.binance.com/sapi/v1/capital/config/getall", "GET", {}),                  # sapi
    ("https://fapi.binance.com/fapi/v1/klines", "GET", {}),                                # futures host
    ("http://api.binance.com/api/v3/klines", "GET", {}),                                   # not TLS
    ("https://api.binance.com.evil.example/api/v3/klines", "GET", {}),                     # look-alike host
    ("https://api.binance.com/api/v3/klines", "DELETE", {}),
])
def test_everything_else_is_refused(url, method, headers):
    with pytest.raises(errors.SafetyError, match="market data only"):
        check_market_data_request(url, method, headers)


def test_the_public_client_cannot_trade_or_read_the_account(public):
    with pytest.raises(errors.SafetyError, match="cannot trade"):
        public.create_order("BTC/USDT", "buy", "market", 0.001, client_order_id="x")
    public._markets_loaded = True                             # skip exchangeInfo: no network in tests
    public._ccxt.set_markets([{"id": "BTCUSDT", "symbol": "BTC/USDT", "base": "BTC", "quote": "USDT",
                               "baseId": "BTC", "quoteId": "USDT", "type": "spot", "spot": True, "active": True,
                               "precision": {}, "limits": {}, "info": {}}])    # so a call gets past the symbol
    for call in (lambda: public.fetch_balances(), lambda: public.cancel_order("BTC/USDT", client_order_id="x"),
                 lambda: public.fetch_open_orders("BTC/USDT"), lambda: public.fetch_my_trades("BTC/USDT")):
        with pytest.raises(errors.SafetyError, match="cannot read the account"):      # refused in this process
            call()
    assert public.stats() == {}, "a request went out"


def test_a_public_client_is_refused_when_a_url_or_the_testnet_is_asked():
    assert ExchangeClient(public=True, testnet=True).mode == "testnet"
    with pytest.raises(errors.SafetyError):
        ExchangeClient(public=True, url="https://api.binance.com")
