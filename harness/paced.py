"""Paced replay (``replay --speed N``): a replay window run through the live code path.

An in-process paper exchange replays the window at N× real time; the live feed polls it and
the exchange broker trades on it, exactly as ``live --exchange-url`` would. Fees are charged
in the quote asset, like the paper broker, so that at zero slippage a paced replay and a plain
replay of the same window make the same trades. Journal times are the window's own times.
"""

from __future__ import annotations

import secrets

from harness.config import Config
from harness.datasets import Store
from harness.engine import plan_replay
from harness.fills import FillConfig
from harness.journal import Journal
from harness.live import LiveOptions, LiveSession


def paced_replay(config: Config, store: Store, journal: Journal, days: float, end: int | None, speed: float,
                 report: bool = True, gates_path: str | None = None, telemetry=None):
    """Replay ``days`` ending at ``end`` through the live path at ``speed``× real time."""
    from harness.errors import UserError
    from harness.paper_exchange import PaperExchange

    if not speed > 0:
        raise UserError(f"--speed must be positive, not {speed}")
    plan = plan_replay(config, store, days, end)
    key, secret = secrets.token_hex(16), secrets.token_hex(32)     # a private in-process exchange
    quote = plan.symbols[0].split("/")[1]
    exchange = PaperExchange(store, list(plan.symbols), exchange=plan.exchange, timeframe=plan.timeframe,
                             start=plan.start, speed=speed, balances={quote: config.run.cash}, api_key=key,
                             api_secret=secret, fill_config=FillConfig.from_config(config), fee_asset="quote",
                             rules=plan.rules)
    with exchange:
        options = LiveOptions(url=exchange.url, mode="paced", warmup_bars=0, time_offset=exchange.market.offset,
                              stop_at=plan.end, first_bar=plan.start, clock_rate=speed, tap=False,
                              api_key=key, api_secret=secret,
                              hooks={"report": report, "gates_path": gates_path, "telemetry": telemetry,
                                     "before_run": exchange.clock.start})
        session = LiveSession(config.replace(run=_run_section(config, plan)), store, journal, options)
        session.plan = plan
        return session.run()


def _run_section(config: Config, plan):
    import dataclasses

    return dataclasses.replace(config.run, exchange=plan.exchange, symbols=plan.symbols)
