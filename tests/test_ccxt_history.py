"""``data fetch`` (harness/sources/ccxt_history.py) against the paper exchange on loopback:
pagination, resume from the last stored bar, closed bars only, the rules snapshot, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness.datasets import Store
from harness.exchange import ExchangeClient
from harness.model import DAY_MS, ms_to_iso
from harness.sources.ccxt_history import fetch_to_store
from tests.exchange_support import BTC_RULES, KEY, MINUTE, SECRET, START, make_exchange, make_store


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("history-source") / "datasets")


@pytest.fixture
def paper(source):
    ex = make_exchange(source, at=START + 600 * MINUTE + 20_000)      # bar START+600m in progress
    yield ex
    ex.stop()


def klines_requests(paper) -> list[tuple]:
    return [r for r in paper.request_log if r[1] == "klines"]


def test_fetch_paginates_stores_closed_bars_and_rules(tmp_path, paper, source):
    paper.record = True
    store = Store(tmp_path / "datasets")
    [result] = fetch_to_store(store, None, ["BTC/USDT"], days=1, url=paper.url)
    assert result["exchange"] == "binance-paper" and result["symbol"] == "BTC/USDT"
    first, end = START + 600 * MINUTE - DAY_MS, START + 600 * MINUTE
    expected = source.read("binance", "BTC/USDT", "1m", first, end)       # exchange time = recorded time here
    stored = store.read("binance-paper", "BTC/USDT", "1m")
    assert len(stored) == len(expected) == 1430 == result["added"] == result["fetched"]     # 10-minute halt inside
    np.testing.assert_array_equal(stored.ts, expected.ts)
    np.testing.assert_allclose(stored.close, expected.close)
    assert result["first"] == ms_to_iso(first) and result["last"] == ms_to_iso(end - MINUTE)
    assert len(klines_requests(paper)) >= 3                                # 1440 bars in pages of 500
    assert store.rules("binance-paper", "BTC/USDT") == BTC_RULES
    assert "binance" not in store.exchanges()                              # never mixed with mainnet data


def test_fetch_resumes_after_the_last_stored_bar(tmp_path, paper):
    store = Store(tmp_path / "datasets")
    fetch_to_store(store, None, ["BTC/USDT", "ETH/USDT"], days=1, url=paper.url)
    paper.clock.advance(7 * MINUTE)
    paper.record = True
    results = fetch_to_store(store, None, ["BTC/USDT", "ETH/USDT"], days=1, url=paper.url)
    assert [r["added"] for r in results] == [7, 7]
    assert len(klines_requests(paper)) == 2                                # one short page each
    assert results[0]["last"] == ms_to_iso(START + 606 * MINUTE)
    again = fetch_to_store(store, None, ["BTC/USDT"], days=1, url=paper.url)
    assert again[0]["added"] == 0


def test_fetch_keeps_only_closed_bars_and_respects_end(tmp_path, paper):
    store = Store(tmp_path / "datasets")
    client = ExchangeClient(url=paper.url, api_key=KEY, api_secret=SECRET)
    [result] = fetch_to_store(store, None, ["ETH/USDT"], days=1, end=START + 300 * MINUTE + 30_000, client=client)
    assert result["last"] == ms_to_iso(START + 299 * MINUTE)
    bars = store.read("binance-paper", "ETH/USDT", "1m")
    assert int(bars.ts[-1]) + MINUTE <= client.server_time()


def test_unknown_symbol_is_a_clear_error(tmp_path, paper):
    from harness.errors import UserError

    with pytest.raises(UserError, match="unknown symbol DOGE/USDT"):
        fetch_to_store(Store(tmp_path / "d"), None, ["DOGE/USDT"], days=1, url=paper.url)


def test_cli_data_fetch_from_the_paper_exchange(workspace, cli, paper):
    result = cli("data", "fetch", "--symbols", "BTC/USDT", "--days", "1", "--exchange-url", paper.url, "--json",
                 timeout=60)
    assert result.code == 0, result
    [row] = result.json()
    assert row["exchange"] == "binance-paper" and row["added"] == 1430
    listed = cli("data", "list", "--json").json()
    assert [(r["exchange"], r["bars"], r["gaps"]) for r in listed] == [("binance-paper", 1430, 1)]


def test_cli_data_fetch_refuses_a_non_loopback_url(workspace, cli):
    result = cli("data", "fetch", "--symbols", "BTC/USDT", "--days", "1", "--exchange-url", "http://example.com:8765",
                 timeout=60)
    assert result.code == 2 and result.stderr.count("\n") == 1 and "refusing" in result.stderr
    assert json.dumps(result.stdout) == '""'
