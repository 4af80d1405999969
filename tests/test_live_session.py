"""In-process live sessions against the paper exchange: positions synced on a schedule, and a
fill that comes more than a day after the previous one (DESIGN 3.8; issue 7)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.journal import Journal
from harness.live import LiveOptions, run_live
from tests.helpers.live_support import (
    DAY,
    KEY,
    MINUTE,
    SECRET,
    SYMBOL,
    T0,
    assert_fills_match_trades,
    config_for,
    in_process_view,
    paper_exchange,
    write_market,
)

CYCLE = f"{Path(__file__).resolve().parent / 'helpers' / 'live_strategies.py'}:Cycle"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_market(tmp_path_factory.mktemp("session") / "datasets")


def _run(root: Path, store, speed: float, duration_ms: int, params: dict, timeframe: str = "1m",
         overrides: tuple[str, ...] = ()):
    exchange = paper_exchange(store, speed, start=T0 + DAY, timeframe=timeframe)
    try:
        config = config_for(CYCLE, params=params, timeframe=timeframe, overrides=overrides)
        options = LiveOptions(url=exchange.url, duration_ms=duration_ms, warmup_bars=0, api_key=KEY, api_secret=SECRET,
                              install_signals=False, hooks={"report": False})
        journal = Journal(root / "reports")
        result = run_live(config, store, journal, options)
        return result.summary, journal.load(result.run_id), in_process_view(exchange)
    finally:
        exchange.stop()


def test_positions_are_synced_from_the_exchange_on_a_schedule(tmp_path, store):
    summary, record, (_, _, balances) = _run(tmp_path, store, 3000, 90 * MINUTE, {"period": 4},
                                             overrides=("live.position_sync_seconds=0.25",))
    assert summary["status"] == "completed"
    synced = [json.loads(e.data) for e in record.events.itertuples() if e.kind == "positions_synced"]
    assert len(synced) >= 4, "an initial sync and scheduled ones"
    assert synced[0] == {"cash": 10_000.0, "positions": {SYMBOL: 0.0}}
    assert not [e for e in record.events.itertuples() if e.kind == "position_mismatch"], \
        "fills booked from myTrades agree with the balances, fees in BTC included"
    assert len(record.fills) >= 20
    last = synced[-1]
    assert 0 <= last["positions"][SYMBOL] <= balances["BTC"] + 0.01


def test_a_fill_more_than_a_day_after_the_previous_one_is_booked(tmp_path, store):
    # 1h bars at 60,000x: a buy on the first bar, a sell 28 bars (hours) later, a 32-hour run
    summary, record, (trades, orders, _) = _run(tmp_path, store, 60_000, 32 * 60 * MINUTE,
                                                {"period": 56, "qty": 0.01, "sell_qty": 0.0099}, timeframe="1h")
    assert len(trades) == 2 and trades[1]["time"] - trades[0]["time"] > DAY
    assert_fills_match_trades(record.fills, trades)
