"""The [risk] section: malformed values fail loudly naming the key; the shipped staging profile
is complete, documented and lets a fraction-0.95 strategy enter."""

from __future__ import annotations

import re

import pytest

from harness.config import load_config
from harness.errors import ConfigError
from harness.model import OrderIntent, OrderType, Side
from harness.risk import RiskGuard, RiskLimits, RiskState
from tests.conftest import ROOT

SHIPPED = ROOT / "config" / "config.toml"

MALFORMED = [
    ("max_order_notional = -100.0", "risk.max_order_notional"),            # negative
    ("max_position_notional = 0.0", "risk.max_position_notional"),         # zero is not a limit
    ("max_open_orders = -1", "risk.max_open_orders"),
    ("max_leverage = 2.0", "risk.max_leverage"),                            # unknown key
    ("max_gross_exposure = 1.5", "risk.max_gross_exposure"),               # fraction above 1
    ("max_daily_loss_pct = 150.0", "risk.max_daily_loss_pct"),             # percentage above 100
    ("max_drawdown_pct = 100.5", "risk.max_drawdown_pct"),
    ("price_band_pct = -5.0", "risk.price_band_pct"),
    ('max_order_notional = "2000"', "risk.max_order_notional"),            # wrong type
    ("max_orders_per_minute = 2.5", "risk.max_orders_per_minute"),
    ("max_open_orders = true", "risk.max_open_orders"),
    ("max_order_notional = nan", "risk.max_order_notional"),
]


def write(tmp_path, text: str):
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("line, key", MALFORMED)
def test_malformed_risk_section_names_the_key(tmp_path, line, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        load_config(write(tmp_path, f"[risk]\n{line}\n"), env={})


@pytest.mark.parametrize("line, key", MALFORMED[:6])
def test_malformed_profile_risk_section_names_the_key(tmp_path, line, key):
    path = write(tmp_path, f"[risk]\n\n[profiles.staging.risk]\n{line}\n")
    load_config(path, env={})                                           # the profile is not used yet
    with pytest.raises(ConfigError, match=re.escape(key)):
        load_config(path, profile="staging", env={})


@pytest.mark.parametrize("override, key", [
    ("risk.max_gross_exposure=1.5", "risk.max_gross_exposure"),
    ("risk.max_drawdown_pct=101", "risk.max_drawdown_pct"),
    ("risk.max_open_orders=-3", "risk.max_open_orders"),
    ("risk.max_open_orders=ten", "risk.max_open_orders"),
    ("risk.max_leverage=2", "risk.max_leverage"),
])
def test_malformed_risk_override_names_the_key(override, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        load_config(SHIPPED, profile="staging", overrides=(override,), env={})


def test_overrides_can_change_or_clear_a_staging_limit():
    config = load_config(SHIPPED, profile="staging", env={},
                         overrides=("risk.max_gross_exposure=0.5", "risk.max_drawdown_pct=none"))
    limits = RiskLimits.from_config(config.risk)
    assert limits.max_gross_exposure == 0.5 and limits.max_drawdown_pct is None


def test_infinite_limit_is_refused_when_the_config_loads(tmp_path):
    with pytest.raises(ConfigError, match="risk.max_order_notional"):
        load_config(write(tmp_path, "[risk]\nmax_order_notional = inf\n"), env={})


def test_infinite_limit_is_refused_when_the_limits_are_built():
    with pytest.raises(ConfigError, match="risk.max_order_notional"):
        RiskLimits(max_order_notional=float("inf"))


def test_base_layer_has_no_limits_and_staging_sets_all_of_them():
    assert RiskLimits.from_config(load_config(SHIPPED, env={}).risk).active() == {}
    staging = RiskLimits.from_config(load_config(SHIPPED, profile="staging", env={}).risk)
    assert set(staging.active()) == {"max_order_notional", "max_position_notional", "max_gross_exposure",
                                     "max_open_orders", "max_orders_per_minute", "price_band_pct",
                                     "max_daily_loss_pct", "max_drawdown_pct"}


def test_every_staging_limit_is_documented_in_a_comment():
    text = SHIPPED.read_text()
    table = text[text.index("[profiles.staging.risk]"):].split("\n[", 1)[0]
    assignments = [line for line in table.splitlines() if re.match(r"^\s*\w+\s*=", line)]
    assert len(assignments) == 8
    for line in assignments:
        assert re.search(r"#\s*\S.{10,}", line), f"undocumented staging limit: {line}"


@pytest.mark.parametrize("equity", [10_000.0, 9_000.0, 12_500.0])
def test_staging_lets_a_fraction_095_entry_through(equity):
    """What sma_cross sends on a calm day: 0.95 of equity after a 10 bps fee, at market."""
    limits = RiskLimits.from_config(load_config(SHIPPED, profile="staging", env={}).risk)
    state = RiskState(limits)
    state.on_equity(1_750_000_000_000, equity)
    price = 104_321.5
    intent = OrderIntent("BTC/USDT", Side.BUY, OrderType.MARKET, 0.95 * equity / (price * 1.001),
                         1_750_000_060_000, price)
    book = state.book(ts=intent.ts, cash=equity, equity=equity, positions={}, prices={"BTC/USDT": price})
    assert RiskGuard(limits).check(intent, book).approved
    # ... while a second one on another symbol would over-commit the account
    second = OrderIntent("ETH/USDT", Side.BUY, OrderType.MARKET, 0.95 * equity / (2_500.0 * 1.001),
                         intent.ts, 2_500.0)
    held = state.book(ts=intent.ts, cash=equity * 0.05, equity=equity, positions={"BTC/USDT": intent.qty},
                      prices={"BTC/USDT": price, "ETH/USDT": 2_500.0})
    assert RiskGuard(limits).check(second, held).limit == "max_gross_exposure"


@pytest.mark.parametrize("args, key", [
    (("--set", "risk.max_gross_exposure=1.5"), "risk.max_gross_exposure"),
    (("--set", "risk.max_orders_per_minute=-1"), "risk.max_orders_per_minute"),
])
def test_cli_replay_refuses_a_malformed_risk_limit(workspace, cli, args, key):
    result = cli("replay", "--days", "1", "--symbols", "BTC/USDT", *args, "--json")
    assert result.code == 2, result
    assert key in result.stderr and "Traceback" not in result.stderr, result
    assert result.stdout == "", result


def test_cli_replay_refuses_a_malformed_config_file(workspace, cli):
    (workspace / "bad.toml").write_text("[risk]\nmax_leverage = 3.0\n")
    result = cli("--config", str(workspace / "bad.toml"), "replay", "--days", "1", "--json")
    assert result.code == 2, result
    assert "risk.max_leverage" in result.stderr and "Traceback" not in result.stderr, result
