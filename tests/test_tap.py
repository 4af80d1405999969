"""``data record``: the live tap without trading, against an in-process paper exchange."""

from __future__ import annotations

import numpy as np
import pytest

from harness.datasets import Store
from harness.errors import SafetyError
from harness.model import MINUTE_MS
from harness.tap import record_bars
from tests.helpers.live_support import SYMBOL, T0, config_for, paper_exchange, source_bars, write_market


@pytest.fixture
def market(tmp_path):
    return write_market(tmp_path / "datasets", days=2)


def test_record_stores_each_closed_bar_once_as_the_exchange_shows_it(market, tmp_path):
    start = T0 + 600 * MINUTE_MS
    exchange = paper_exchange(market, speed=1200, start=start)
    try:
        out = Store(tmp_path / "tapped")
        (result,) = record_bars(out, config_for(), [SYMBOL], duration_ms=30 * MINUTE_MS, url=exchange.url,
                                say=lambda _: None)
    finally:
        exchange.stop()
    assert result["exchange"] == "binance-paper" and result["missing"] == 0 and result["errors"] == 0
    tapped = out.read("binance-paper", SYMBOL, "1m")
    assert 25 <= len(tapped) <= 31                                      # 30 min at 1200x, give or take a bar
    assert len(tapped) == result["added"]
    assert (np.diff(tapped.ts) == MINUTE_MS).all()                       # contiguous, no duplicates
    offset = exchange.market.offset                                      # the exchange shifts bar times
    source = source_bars(market, int(tapped.ts[0]) - offset, int(tapped.ts[-1]) - offset + MINUTE_MS)
    assert np.array_equal(tapped.ts - offset, source.ts)
    for column in ("open", "high", "low", "close", "volume"):
        assert np.array_equal(getattr(tapped, column), getattr(source, column)), column
    assert out.rules("binance-paper", SYMBOL) is not None                # the exchange's rules beside them


@pytest.mark.parametrize("kwargs, text", [
    ({"url": "https://api.binance.com", "testnet": False}, "refusing exchange URL"),
    ({"url": "http://127.0.0.1:9", "testnet": True}, "not both"),
])
def test_record_refuses_a_non_loopback_url_or_two_targets(tmp_path, kwargs, text):
    with pytest.raises(SafetyError, match=text):
        record_bars(Store(tmp_path / "d"), config_for(), [SYMBOL], duration_ms=MINUTE_MS, say=lambda _: None,
                    **kwargs)
    assert not (tmp_path / "d").exists()
