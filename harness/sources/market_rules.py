"""Market rules known without asking an exchange: a table of Binance spot filters for the
common pairs, and rules inferred from the decimals of recorded prices and volumes.

Sources that cannot ask the exchange (file import, the synthesiser) store one of these as the
data's rules snapshot, labelled with where it came from.
"""

from __future__ import annotations

import numpy as np

from harness.bars import Bars
from harness.model import MarketRules, base_quote, normalize_symbol

# Binance spot filters (PRICE_FILTER tickSize, LOT_SIZE stepSize, NOTIONAL minNotional).
BINANCE_SPOT: dict[str, tuple[float, float, float]] = {
    "BTC/USDT": (0.01, 0.00001, 5.0),
    "ETH/USDT": (0.01, 0.0001, 5.0),
    "BNB/USDT": (0.01, 0.001, 5.0),
    "SOL/USDT": (0.01, 0.001, 5.0),
    "XRP/USDT": (0.0001, 0.1, 5.0),
}
BINANCE_SOURCE = "Binance spot filters known to the harness (harness.sources.market_rules)"
INFERRED_SOURCE = "inferred from the decimals of the recorded prices and volumes"
STABLE_QUOTES = ("USDT", "USDC", "FDUSD", "BUSD", "TUSD", "USDP", "DAI")
MAX_DECIMALS = 8


def make_rules(symbol: str, tick_size: float, lot_step: float, min_notional: float) -> MarketRules:
    """Rules with the minimum quantity at one lot step (asset precisions: Binance's usual 8)."""
    return MarketRules(symbol=normalize_symbol(symbol), lot_step=lot_step, tick_size=tick_size,
                       min_qty=lot_step, min_notional=min_notional)


def known_binance_rules(symbol: str) -> MarketRules | None:
    """Binance spot rules for a pair in :data:`BINANCE_SPOT`, else None."""
    entry = BINANCE_SPOT.get(normalize_symbol(symbol))
    return None if entry is None else make_rules(symbol, *entry)


def infer_rules(bars: Bars) -> MarketRules:
    """Rules whose tick and lot step are the finest decimals the data uses (at most 8 places);
    min notional 5 for a stable-coin quote (Binance's usual), else none."""
    prices = np.concatenate([bars.open, bars.high, bars.low, bars.close])
    tick = 10.0 ** -decimals_used(prices)
    step = 10.0 ** -decimals_used(bars.volume)
    _, quote = base_quote(bars.symbol)
    return make_rules(bars.symbol, tick, step, 5.0 if quote in STABLE_QUOTES else 0.0)


def rules_for(exchange: str, bars: Bars) -> tuple[MarketRules, str]:
    """The best offline rules for ``bars`` and a label saying where they came from."""
    if exchange == "binance":
        known = known_binance_rules(bars.symbol)
        if known is not None:
            return known, BINANCE_SOURCE
    return infer_rules(bars), INFERRED_SOURCE


def decimals_used(values: np.ndarray) -> int:
    """The fewest decimal places (0..8) that write every value exactly (to float precision)."""
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    if len(values) > 20_000:        # the decimals of 20k values say as much as those of all
        values = values[:: len(values) // 20_000]
    for d in range(MAX_DECIMALS + 1):
        scaled = values * 10.0 ** d
        if np.all(np.abs(scaled - np.round(scaled)) <= 1e-12 * np.maximum(1.0, np.abs(scaled))):
            return d
    return MAX_DECIMALS

