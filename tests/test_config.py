"""Configuration: layers (defaults, file, profile, environment, --set, flags), errors that name the key,
and secrets that never show."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from harness.config import Config, load_config
from harness.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "config" / "config.toml"

BASE = """
[run]
symbols = ["ETHUSDT", "btc/usdt"]
cash = 5000

[fees]
taker_bps = 7.5

[live]
refresh_seconds = 30.0

[strategy.params]
fast = 12

[profiles.cheap.fees]
taker_bps = 1.0
maker_bps = 0.0

[profiles.staging.risk]
max_drawdown_pct = 8.0

[profiles.staging.live]
refresh_seconds = 20.0
"""


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture
def base(tmp_path) -> Path:
    return write(tmp_path, BASE)


# -- layers -----------------------------------------------------------------------------------


def test_defaults_when_no_file_exists(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(env={})
    assert config == Config() and config.source is None and config.profile is None
    assert (config.fees.taker_bps, config.fees.maker_bps, config.slippage.bps) == (10.0, 10.0, 2.0)
    assert config.execution.binance_testnet is True and config.run.symbols == ("BTC/USDT",)


def test_the_shipped_config_file_loads(tmp_path):
    config = load_config(SHIPPED, env={})
    assert config.source == str(SHIPPED) and config.risk.max_drawdown_pct is None
    staging = load_config(SHIPPED, profile="staging", env={})
    assert staging.risk.max_drawdown_pct == 10.0 and staging.risk.max_open_orders == 10


def test_file_then_profile_then_environment_then_set_then_flags(base):
    config = load_config(base, env={})
    assert config.run.symbols == ("ETH/USDT", "BTC/USDT") and config.run.cash == 5000.0
    assert isinstance(config.run.cash, float) and config.fees.taker_bps == 7.5 and config.fees.maker_bps == 10.0
    assert config.strategy.params == {"fast": 12}

    cheap = load_config(base, profile="cheap", env={})
    assert (cheap.fees.taker_bps, cheap.fees.maker_bps, cheap.profile) == (1.0, 0.0, "cheap")

    env = {"QUANTUM_TRADER_REFRESH_SECONDS": "15"}
    assert load_config(base, profile="staging", env={}).live.refresh_seconds == 20.0
    assert load_config(base, profile="staging", env=env).live.refresh_seconds == 15.0
    over = load_config(base, profile="staging", env=env, overrides=["live.refresh_seconds=5"])
    assert over.live.refresh_seconds == 5.0
    flags = load_config(base, env=env, overrides=["live.refresh_seconds=5"], values={"live.refresh_seconds": 2.0})
    assert flags.live.refresh_seconds == 2.0


def test_environment_variables_of_the_trading_stack(base):
    env = {"QT_EXECUTION_EXCHANGE": "binanceus", "QT_EXECUTION_BINANCE_TESTNET": "false",
           "QT_EXECUTION_QUOTE_ASSET": "USDC", "QUANTUM_TRADER_REFRESH_SECONDS": "45",
           "QUANTUM_TRADER_EXECUTION_SECONDS": "300", "QT_EXECUTION_BINANCE_API_KEY": "k",
           "QT_EXECUTION_BINANCE_API_SECRET": "s"}
    config = load_config(base, env=env)
    ex = config.execution
    assert (ex.exchange, ex.binance_testnet, ex.quote_asset) == ("binanceus", False, "USDC")
    assert (config.live.refresh_seconds, config.live.execution_seconds) == (45.0, 300.0)
    assert (ex.api_key.reveal(), ex.api_secret.reveal()) == ("k", "s")
    assert load_config(base, env={"QT_EXECUTION_BINANCE_TESTNET": "", "QT_EXECUTION_EXCHANGE": ""}) == load_config(
        base, env={})                                                    # empty variables are unset


def test_staging_mode_selects_the_staging_profile(base):
    staged = load_config(base, env={"STAGING_MODE": "true"})
    assert staged.staging_mode and staged.profile == "staging" and staged.risk.max_drawdown_pct == 8.0
    chosen = load_config(base, profile="cheap", env={"STAGING_MODE": "1"})
    assert chosen.staging_mode and chosen.profile == "cheap"               # an explicit profile wins
    assert not load_config(base, env={"STAGING_MODE": "off"}).staging_mode
    with pytest.raises(ConfigError, match="STAGING_MODE='sometimes' is not a boolean"):
        load_config(base, env={"STAGING_MODE": "sometimes"})


def test_set_overrides_every_kind_of_key(base):
    config = load_config(base, env={}, overrides=[
        "fees.taker_bps=0", "run.symbols=SOL/USDT,XRPUSDT", "execution.binance_testnet=false",
        "risk.max_open_orders=3", "strategy.params.slow=40", "strategy.params.kind=ema", "live.execution_seconds=none"])
    assert config.fees.taker_bps == 0.0 and config.run.symbols == ("SOL/USDT", "XRP/USDT")
    assert config.execution.binance_testnet is False and config.risk.max_open_orders == 3
    assert config.strategy.params == {"fast": 12, "slow": 40, "kind": "ema"}
    assert config.live.execution_seconds is None


def test_config_is_frozen():
    config = load_config(SHIPPED, env={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.fees.taker_bps = 0.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.run = None  # type: ignore[misc]


# -- errors that name the key -----------------------------------------------------------------


@pytest.mark.parametrize("text, message", [
    ("[fees]\ntaker = 1\n", r"unknown key fees\.taker \(known in \[fees\]: taker_bps, maker_bps\)"),
    ("[feez]\ntaker_bps = 1\n", r"unknown section \[feez\]"),
    ("[fees]\ntaker_bps = 'ten'\n", r"fees\.taker_bps must be a number, not 'ten'"),
    ("[risk]\nmax_open_orders = 2.5\n", r"risk\.max_open_orders must be a whole number, not 2\.5"),
    ("[execution]\nbinance_testnet = 'yes'\n", r"execution\.binance_testnet must be true or false"),
    ("[run]\nsymbols = 'BTC/USDT'\ncash = -1\n", r"run\.cash must be positive, not -1"),
    ("[run]\ntimeframe = '7x'\n", r"run: unknown timeframe '7x'"),
    ("[risk]\nmax_gross_exposure = 2.0\n", r"risk\.max_gross_exposure is a fraction of equity"),
    ("[fees]\n", None),
    ("profiles = 3\n", r"'profiles' must be a table"),
    ("[profiles.x.fees]\nmakr_bps = 1\n", r"\[profiles\.x\]: unknown key fees\.makr_bps"),
    ("[strategy]\nparams = 3\n", r"strategy\.params must be a table"),
])
def test_bad_values_in_the_file_name_the_key(tmp_path, text, message):
    path = write(tmp_path, text)
    if message is None:
        assert load_config(path, env={}).fees.taker_bps == 10.0
        return
    with pytest.raises(ConfigError, match=message):
        load_config(path, profile="x" if "profiles.x" in text else None, env={})


@pytest.mark.parametrize("override, message", [
    ("fees.maker=1", r"--set fees\.maker=1: unknown key fees\.maker"),
    ("nope.key=1", r"unknown section 'nope'"),
    ("fees", r"--set 'fees' is malformed: use section\.key=value"),
    ("fees.taker_bps=cheap", r"fees\.taker_bps must be a number, not 'cheap'"),
    ("execution.binance_testnet=maybe", r"execution\.binance_testnet must be true or false, not 'maybe'"),
])
def test_bad_set_overrides_name_the_key(base, override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(base, env={}, overrides=[override])


def test_bad_environment_values_name_the_key(base):
    with pytest.raises(ConfigError, match="QT_EXECUTION_BINANCE_TESTNET: execution.binance_testnet must be true or false"):
        load_config(base, env={"QT_EXECUTION_BINANCE_TESTNET": "perhaps"})
    with pytest.raises(ConfigError, match=r"live\.refresh_seconds must be a number, not 'soon'"):
        load_config(base, env={"QUANTUM_TRADER_REFRESH_SECONDS": "soon"})
    with pytest.raises(ConfigError, match=r"live\.execution_seconds must be positive"):
        load_config(base, env={"QUANTUM_TRADER_EXECUTION_SECONDS": "-5"})


def test_unknown_profile_lists_the_known_ones(base):
    with pytest.raises(ConfigError, match=r"unknown profile 'prod' \(profiles in .*: cheap, staging\)"):
        load_config(base, profile="prod", env={})


def test_unreadable_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match=r"is not valid TOML"):
        load_config(write(tmp_path, "[run\nsymbols = "), env={})
    (tmp_path / "folder.toml").mkdir()
    with pytest.raises(ConfigError, match=r"cannot read config file .*folder\.toml"):
        load_config(tmp_path / "folder.toml", env={})
    with pytest.raises(ConfigError, match=r"config file .*missing\.toml not found: check --config / QT_CONFIG"):
        load_config(tmp_path / "missing.toml", env={})
    with pytest.raises(ConfigError, match=r"missing\.toml not found"):
        load_config(env={"QT_CONFIG": str(tmp_path / "missing.toml")})
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match=r"binary\.toml is not valid TOML"):
        load_config(binary, env={})


# -- secrets and the digest -------------------------------------------------------------------


def test_secrets_never_show_in_repr_dict_or_digest(tmp_path):
    key, secret = "AKIA-very-visible-key", "s3cr3t-never-print-me"
    path = write(tmp_path, f'[execution]\napi_key = "{key}"\n')
    config = load_config(path, env={"QT_EXECUTION_BINANCE_API_SECRET": secret})
    assert config.execution.api_key.reveal() == key and config.execution.api_secret.reveal() == secret
    for text in (repr(config), str(config), repr(config.execution), f"{config}", f"{config.execution!r}",
                 json.dumps(config.to_dict()), config.digest()):
        assert key not in text and secret not in text
    assert config.to_dict()["execution"]["api_key"] == "***"
    assert config.to_dict(secrets=True)["execution"]["api_secret"] == secret      # only when asked for
    assert config.digest() == load_config(path, env={}).digest() == load_config(env={}, path=write(
        tmp_path, "", "empty.toml")).replace(execution=config.execution).digest()


def test_digest_is_stable_and_follows_what_shapes_a_run(base):
    one, two = load_config(base, env={}), load_config(base, env={})
    assert one.digest() == two.digest() and re.fullmatch(r"[0-9a-f]{16}", one.digest())
    assert load_config(base, env={}, overrides=["fees.taker_bps=1"]).digest() != one.digest()
    assert load_config(base, env={}, overrides=["strategy.params.fast=13"]).digest() != one.digest()
    assert load_config(base, profile="staging", env={}).digest() != one.digest()
