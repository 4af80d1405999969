"""Small synthetic markets written with the real store, and in-process replays of them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from harness.bars import Bars
from harness.config import load_config
from harness.datasets import Store
from harness.engine import plan_replay, run_replay
from harness.journal import TABLES, Journal
from harness.model import DAY_MS, MINUTE_MS, MarketRules, parse_time

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "config.toml"
HELPERS = Path(__file__).resolve().parent
SCRIPTED = f"{HELPERS / 'scripted.py'}:Scripted"
EXCHANGE = "testex"
T0 = parse_time("2024-03-01")          # a UTC midnight: the first bar's open


def bars_from_rows(symbol: str, rows: list[tuple], start: int = T0, step: int = MINUTE_MS,
                   timeframe: str = "1m") -> Bars:
    """Bars from ``(open, high, low, close, volume)`` rows, one ``step`` apart from ``start``."""
    arr = np.array(rows, dtype=np.float64).reshape(-1, 5)
    ts = start + np.arange(len(arr), dtype=np.int64) * step
    return Bars(symbol, timeframe, ts, arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3], arr[:, 4])


def random_walk(symbol: str, n: int, seed: int, start: int = T0, price: float = 100.0,
                volume: float = 50.0, step: int = MINUTE_MS, timeframe: str = "1m") -> Bars:
    """A seeded random walk with consistent OHLC (open = previous close) and varying volume."""
    rng = np.random.default_rng(seed)
    close = price * np.exp(np.cumsum(rng.normal(0, 0.002, n)))
    open_ = np.r_[price, close[:-1]]
    wiggle = np.abs(rng.normal(0, 0.001, (2, n))) * close
    high = np.maximum(open_, close) + wiggle[0]
    low = np.minimum(open_, close) - wiggle[1]
    vol = volume * (0.5 + rng.random(n))
    ts = start + np.arange(n, dtype=np.int64) * step
    return Bars(symbol, timeframe, ts, open_.round(2), high.round(2) + 0.01, low.round(2) - 0.01,
                close.round(2), vol.round(3))


RULES = MarketRules("BTC/USDT", lot_step=0.001, tick_size=0.01, min_qty=0.001, min_notional=5.0)


def write_market(datasets: Path, series: list[Bars], rules: dict[str, MarketRules] | None = None,
                 exchange: str = EXCHANGE) -> Store:
    """Store the series (and a rules snapshot taken before them) under ``datasets``."""
    store = Store(datasets)
    for bars in series:
        store.write(exchange, bars)
    if rules:
        first = min(int(b.ts[0]) for b in series)
        store.save_rules(exchange, rules, taken_at=first - DAY_MS, source="test")
    return store


def config_for(strategy: str = SCRIPTED, symbols: tuple[str, ...] = ("BTC/USDT",), timeframe: str = "1m",
               cash: float = 10_000.0, params: dict | None = None, overrides: tuple[str, ...] = (),
               exchange: str = EXCHANGE, profile: str | None = None):
    """A run configuration through the real loader (config file, --set overrides, named values)."""
    values = {"run.strategy": strategy, "run.symbols": symbols, "run.timeframe": timeframe, "run.cash": cash,
              "run.exchange": exchange}
    if params is not None:
        values["strategy.params"] = params
    return load_config(CONFIG, profile=profile, overrides=overrides, values=values, env={})


@dataclass
class Run:
    """A finished in-process replay and its journal files."""

    run_id: str
    summary: dict
    folder: Path
    journal: Journal

    def table(self, name: str):
        return pq.read_table(self.folder / f"{name}.parquet").to_pandas()

    def rows(self, name: str) -> list[dict]:
        return pq.read_table(self.folder / f"{name}.parquet").to_pylist()

    @property
    def run_json(self) -> dict:
        return json.loads((self.folder / "run.json").read_text())


def replay(store: Store, reports: Path, config, days: float, end: int | None = None) -> Run:
    """plan_replay + run_replay (no HTML report), as the ``replay`` command does."""
    journal = Journal(reports)
    result = run_replay(plan_replay(config, store, days, end), journal, report=False)
    return Run(result.run_id, result.summary, journal.run_dir(result.run_id), journal)


def scripted_replay(tmp: Path, series: list[Bars], script: list[dict], rules=None, cash: float = 10_000.0,
                    overrides: tuple[str, ...] = (), log: bool = True) -> tuple[Run, list[dict]]:
    """Write ``series``, replay the scripted strategy over all of it; returns the run and its notifications."""
    store = write_market(tmp / "datasets", series, rules)
    log_path = tmp / "notifications.jsonl"
    params = {"script": json.dumps(script), "log": str(log_path) if log else ""}
    symbols = tuple(b.symbol for b in series)
    step = int(series[0].ts[1] - series[0].ts[0]) if len(series[0]) > 1 else MINUTE_MS
    days = len(series[0]) * step / DAY_MS
    run = replay(store, tmp / "reports", config_for(symbols=symbols, cash=cash, params=params,
                                                    timeframe=series[0].timeframe, overrides=overrides), days)
    seen = [json.loads(line) for line in log_path.read_text().splitlines()] if log and log_path.exists() else []
    return run, seen


def parquet_bytes(folder: Path) -> dict[str, bytes]:
    return {name: (folder / f"{name}.parquet").read_bytes() for name in TABLES}


@dataclass
class BrokerRun:
    """A replay through the real feed, strategy and paper broker, without the journal (fast)."""

    tables: dict
    broker: object
    seen: list[dict]

    def rows(self, name: str) -> list[dict]:
        return self.tables[name].to_pylist()


def broker_replay(tmp: Path, series: list[Bars], script: list[dict], rules=None, cash: float = 10_000.0,
                  overrides: tuple[str, ...] = ()) -> BrokerRun:
    """The wiring of ``engine.run_replay`` up to the recorder's tables, for scenario tables of fills."""
    from harness.brokers.paper import PaperBroker
    from harness.engine import build_cerebro
    from harness.fills import FillConfig
    from harness.recorder import Recorder
    from harness.risk import RiskLimits

    store = write_market(tmp / "datasets", series, rules)
    log_path = tmp / "notifications.jsonl"
    log_path.unlink(missing_ok=True)
    params = {"script": json.dumps(script), "log": str(log_path)}
    config = config_for(symbols=tuple(b.symbol for b in series), cash=cash, params=params, overrides=overrides,
                        timeframe=series[0].timeframe)
    step = int(series[0].ts[1] - series[0].ts[0])
    plan = plan_replay(config, store, len(series[0]) * step / DAY_MS)
    recorder = Recorder()
    broker = PaperBroker(config.run.cash, dict(plan.rules), FillConfig.from_config(config),
                         limits=RiskLimits.from_config(config.risk), recorder=recorder, quote_asset="USDT")
    cerebro, feeds = build_cerebro(plan, broker, recorder, "replay")
    broker.attach(feeds)
    cerebro.run()
    seen = [json.loads(line) for line in log_path.read_text().splitlines()] if log_path.exists() else []
    return BrokerRun(recorder.tables(), broker, seen)
