"""Run configuration: frozen, typed, layered, hashable.

Layers, later ones win: built-in defaults → ``config/config.toml`` → its ``[profiles.NAME]``
table → environment variables → CLI options (``--set section.key=value`` and the named flags).
An unknown key or a value of the wrong type is a :class:`ConfigError` that names the key.
Secrets (the testnet key pair) are held in :class:`Secret`, which never prints its value and
is left out of :meth:`Config.to_dict` and :meth:`Config.digest`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import ConfigError, UserError
from harness.model import normalize_symbol, timeframe_ms


class Secret(str):
    """A string that never shows itself in ``repr``, ``str`` formatting of containers, or logs."""

    def __repr__(self) -> str:
        return "Secret('***')"

    def reveal(self) -> str:
        return str.__str__(self)


@dataclass(frozen=True)
class RunSection:
    """What a run trades: ``[run]``."""

    strategy: str = "sma_cross"
    symbols: tuple[str, ...] = ("BTC/USDT",)
    timeframe: str = "1m"
    cash: float = 10_000.0
    exchange: str = "binance"       # the datasets/ exchange whose bars are replayed


@dataclass(frozen=True)
class FeesSection:
    """Binance spot defaults, in basis points of the traded notional, charged in the quote asset."""

    taker_bps: float = 10.0
    maker_bps: float = 10.0


@dataclass(frozen=True)
class SlippageSection:
    """Adverse move applied to market and stop fills, in basis points."""

    bps: float = 2.0


@dataclass(frozen=True)
class FillsSection:
    """Share of a bar's volume one order may take (percent; 0 turns the cap off)."""

    max_bar_volume_pct: float = 10.0


@dataclass(frozen=True)
class RiskSection:
    """Risk limits (DESIGN 3.6); every one optional. Notionals in the quote asset,
    ``max_gross_exposure`` a fraction of equity (0-1], ``*_pct`` in percent (0-100]."""

    max_order_notional: float | None = None
    max_position_notional: float | None = None
    max_gross_exposure: float | None = None
    max_open_orders: int | None = None
    max_orders_per_minute: int | None = None
    price_band_pct: float | None = None
    max_daily_loss_pct: float | None = None
    max_drawdown_pct: float | None = None


@dataclass(frozen=True)
class ExecutionSection:
    """Where live orders go: ``[execution]`` (env ``QT_EXECUTION_*``)."""

    exchange: str = "binance"
    binance_testnet: bool = True
    quote_asset: str = "USDT"
    api_key: Secret | None = None
    api_secret: Secret | None = None
    recv_window_ms: int = 10_000


@dataclass(frozen=True)
class LiveSection:
    """Live loop timing (env ``QUANTUM_TRADER_REFRESH_SECONDS`` / ``..._EXECUTION_SECONDS``)."""

    refresh_seconds: float = 60.0
    execution_seconds: float | None = None      # unset: rebalance on each closed bar
    warmup_bars: int = 200
    position_sync_seconds: float = 300.0


@dataclass(frozen=True)
class AlertsSection:
    """Alert thresholds (DESIGN 3.8)."""

    min_confidence: float = 0.55
    max_error_rate_pct: float = 5.0
    error_window_seconds: float = 300.0
    stale_data_factor: float = 2.0


@dataclass(frozen=True)
class StrategySection:
    """Parameters passed to the strategy: ``[strategy.params]`` and ``--param k=v``."""

    params: dict[str, Any] = field(default_factory=dict)


SECTIONS: dict[str, type] = {
    "run": RunSection,
    "fees": FeesSection,
    "slippage": SlippageSection,
    "fills": FillsSection,
    "risk": RiskSection,
    "execution": ExecutionSection,
    "live": LiveSection,
    "alerts": AlertsSection,
    "strategy": StrategySection,
}

SECRET_KEYS = {("execution", "api_key"), ("execution", "api_secret")}

# Environment variables honoured (names used by the wider trading stack) → config keys.
ENV_KEYS: dict[str, tuple[str, str]] = {
    "QT_EXECUTION_EXCHANGE": ("execution", "exchange"),
    "QT_EXECUTION_BINANCE_TESTNET": ("execution", "binance_testnet"),
    "QT_EXECUTION_QUOTE_ASSET": ("execution", "quote_asset"),
    "QT_EXECUTION_BINANCE_API_KEY": ("execution", "api_key"),
    "QT_EXECUTION_BINANCE_API_SECRET": ("execution", "api_secret"),
    "QUANTUM_TRADER_REFRESH_SECONDS": ("live", "refresh_seconds"),
    "QUANTUM_TRADER_EXECUTION_SECONDS": ("live", "execution_seconds"),
}


@dataclass(frozen=True)
class Config:
    """The whole configuration of one run. Build it with :func:`load_config`."""

    run: RunSection = field(default_factory=RunSection)
    fees: FeesSection = field(default_factory=FeesSection)
    slippage: SlippageSection = field(default_factory=SlippageSection)
    fills: FillsSection = field(default_factory=FillsSection)
    risk: RiskSection = field(default_factory=RiskSection)
    execution: ExecutionSection = field(default_factory=ExecutionSection)
    live: LiveSection = field(default_factory=LiveSection)
    alerts: AlertsSection = field(default_factory=AlertsSection)
    strategy: StrategySection = field(default_factory=StrategySection)
    profile: str | None = None
    staging_mode: bool = False
    source: str | None = None     # the file it was read from, if any

    def to_dict(self, secrets: bool = False) -> dict[str, Any]:
        """Plain data (JSON-ready); secrets left out unless asked for."""
        out: dict[str, Any] = {}
        for name in SECTIONS:
            section = {}
            for f in dataclasses.fields(getattr(self, name)):
                value = getattr(getattr(self, name), f.name)
                if (name, f.name) in SECRET_KEYS:
                    if not secrets:
                        value = None if value is None else "***"
                    else:
                        value = None if value is None else value.reveal()
                elif isinstance(value, tuple):
                    value = list(value)
                section[f.name] = value
            out[name] = section
        out["profile"] = self.profile
        out["staging_mode"] = self.staging_mode
        return out

    def digest(self) -> str:
        """A short content hash of everything that shapes a run's result (secrets excluded)."""
        data = self.to_dict()
        data["execution"] = {k: v for k, v in data["execution"].items() if k not in ("api_key", "api_secret")}
        blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def __hash__(self) -> int:
        return hash(self.digest())

    def replace(self, **sections: Any) -> Config:
        return dataclasses.replace(self, **sections)


# --------------------------------------------------------------------------------------------
# loading


def load_config(
    path: str | Path | None = None,
    profile: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    values: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> Config:
    """Build a :class:`Config` from defaults, a TOML file, a profile, the environment and overrides.

    ``path`` None means ``$QT_CONFIG`` or ``config/config.toml`` if it exists (a missing
    default file is fine; a missing named file is an error). ``overrides`` are
    ``section.key=value`` strings (``--set``); ``values`` maps ``section.key`` to typed values
    from named CLI flags and wins over everything.
    """
    env = dict(os.environ) if env is None else env
    explicit = path is not None or bool(env.get("QT_CONFIG"))
    file = Path(path if path is not None else env.get("QT_CONFIG") or "config/config.toml")
    raw: dict[str, Any] = {}
    source = None
    if file.exists():
        raw = _read_toml(file)
        source = str(file)
    elif explicit:
        raise ConfigError(f"config file {file} not found: check --config / QT_CONFIG")

    profiles = raw.pop("profiles", {})
    if not isinstance(profiles, dict):
        raise ConfigError(f"{file}: 'profiles' must be a table of [profiles.NAME] sections")
    staging_mode = _env_bool(env, "STAGING_MODE")
    if profile is None and staging_mode and "staging" in profiles:
        profile = "staging"
    layers: list[tuple[str, dict[str, Any]]] = [(str(file), raw)]
    if profile is not None:
        if profile not in profiles:
            known = ", ".join(sorted(profiles)) or "none defined"
            raise ConfigError(f"unknown profile {profile!r} (profiles in {file}: {known})")
        layers.append((f"{file} [profiles.{profile}]", profiles[profile]))

    merged: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for origin, layer in layers:
        for section, table in layer.items():
            if section not in SECTIONS:
                raise ConfigError(f"{origin}: unknown section [{section}] (known: {', '.join(SECTIONS)})")
            if not isinstance(table, dict):
                raise ConfigError(f"{origin}: [{section}] must be a table")
            for key, value in table.items():
                _check_key(section, key, origin)
                if section == "strategy" and key == "params":
                    merged["strategy"].setdefault("params", {}).update(_check_params(value, origin))
                else:
                    merged[section][key] = value

    for var, (section, key) in ENV_KEYS.items():
        if env.get(var, "") != "":
            merged[section][key] = _coerce_text(section, key, env[var], origin=f"environment variable {var}")

    for item in overrides:
        section, key, value = _parse_override(item)
        if section == "strategy" and key.startswith("params."):
            merged["strategy"].setdefault("params", {})[key[len("params."):]] = _parse_scalar(value)
        else:
            merged[section][key] = _coerce_text(section, key, value, origin=f"--set {item}")

    for dotted, value in (values or {}).items():
        section, _, key = dotted.partition(".")
        _check_key(section, key, "option")
        merged[section][key] = value

    built = {name: _build_section(name, merged[name]) for name in SECTIONS}
    config = Config(**built, profile=profile, staging_mode=staging_mode, source=source)
    _validate(config)
    return config


def _read_toml(file: Path) -> dict[str, Any]:
    try:
        with file.open("rb") as fh:
            return tomllib.load(fh)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {file}: {exc.strerror}") from None


def _env_bool(env: dict[str, str], name: str) -> bool:
    value = env.get(name, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"environment variable {name}={env[name]!r} is not a boolean (use true or false)")


def _field_types(section: str) -> dict[str, Any]:
    return typing.get_type_hints(SECTIONS[section])


def _check_key(section: str, key: str, origin: str) -> None:
    if section not in SECTIONS:
        raise ConfigError(f"{origin}: unknown section {section!r} (known: {', '.join(SECTIONS)})")
    if key not in _field_types(section):
        known = ", ".join(_field_types(section))
        raise ConfigError(f"{origin}: unknown key {section}.{key} (known in [{section}]: {known})")


def _check_params(value: Any, origin: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{origin}: strategy.params must be a table of name = value")
    return dict(value)


def _parse_override(item: str) -> tuple[str, str, str]:
    dotted, sep, value = item.partition("=")
    section, dot, key = dotted.strip().partition(".")
    if not sep or not dot or not key:
        raise ConfigError(f"--set {item!r} is malformed: use section.key=value, e.g. --set fees.taker_bps=0")
    if section != "strategy" or not key.startswith("params."):
        _check_key(section, key, f"--set {item}")
    return section, key, value.strip()


def _parse_scalar(text: str) -> Any:
    """A CLI value as TOML would read it, falling back to a plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _coerce_text(section: str, key: str, text: str, origin: str) -> Any:
    hint = _field_types(section)[key]
    base = _unwrap(hint)
    if base in (tuple, list) or typing.get_origin(base) in (tuple, list):
        return [part.strip() for part in text.split(",") if part.strip()]
    if base is bool:
        low = text.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{origin}: {section}.{key} must be true or false, not {text!r}")
    if text.strip().lower() in ("none", "null", "") and _optional(hint):
        return None
    if base in (str, Secret):
        return text
    return _parse_scalar(text)


def _optional(hint: Any) -> bool:
    return type(None) in typing.get_args(hint)


def _unwrap(hint: Any) -> Any:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return hint


def _build_section(name: str, values: dict[str, Any]) -> Any:
    hints = _field_types(name)
    kwargs = {}
    for key, value in values.items():
        kwargs[key] = _typed(name, key, hints[key], value)
    return SECTIONS[name](**kwargs)


def _typed(section: str, key: str, hint: Any, value: Any) -> Any:
    where = f"{section}.{key}"
    if value is None:
        if _optional(hint):
            return None
        raise ConfigError(f"{where} may not be empty")
    base = _unwrap(hint)
    origin = typing.get_origin(base)
    if base is Secret:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string")
        return Secret(value)
    if base is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, not {value!r}")
        return value
    if base is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be a whole number, not {value!r}")
        return value
    if base is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where} must be a number, not {value!r}")
        return float(value)
    if base is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, not {value!r}")
        return value
    if origin is tuple:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} must be a list of strings")
        return tuple(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table")
        return dict(value)
    raise ConfigError(f"{where}: unsupported type {hint}")  # pragma: no cover


def _validate(config: Config) -> None:
    run = config.run
    try:
        symbols = tuple(normalize_symbol(s) for s in run.symbols)
        timeframe_ms(run.timeframe)
    except UserError as exc:
        raise ConfigError(f"run: {exc}") from None
    if not symbols:
        raise ConfigError("run.symbols must name at least one symbol")
    object.__setattr__(run, "symbols", symbols)
    _positive("run.cash", run.cash)
    for key in ("taker_bps", "maker_bps"):
        _non_negative(f"fees.{key}", getattr(config.fees, key))
    _non_negative("slippage.bps", config.slippage.bps)
    pct = config.fills.max_bar_volume_pct
    if not 0 <= pct <= 100:
        raise ConfigError(f"fills.max_bar_volume_pct must be between 0 and 100 (0 turns the cap off), not {pct}")
    from harness.risk import RiskLimits

    RiskLimits.from_config(config.risk)          # the guard's own checks name the key
    _positive("live.refresh_seconds", config.live.refresh_seconds)
    if config.live.execution_seconds is not None:
        _positive("live.execution_seconds", config.live.execution_seconds)
    if not 0 <= config.alerts.min_confidence <= 1:
        raise ConfigError(f"alerts.min_confidence must be between 0 and 1, not {config.alerts.min_confidence}")


def _positive(where: str, value: float) -> None:
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"{where} must be positive, not {value}")


def _non_negative(where: str, value: float) -> None:
    if not value >= 0:
        raise ConfigError(f"{where} must not be negative, not {value}")
