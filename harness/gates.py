"""Promotion gates: data in ``config/gates.toml``, evaluated against a run's metrics.

A gate is a metric, a comparison, a threshold, optionally the run modes it applies to, and a
severity::

    [[gates]]
    metric = "max_drawdown_pct"
    op = "<="                 # one of < <= > >= == !=
    value = 15
    modes = ["replay", "paced", "live-testnet", "live-paper"]   # optional; default all
    severity = "block"        # or "warn": reported, never fails the verdict
    why = "..."               # optional: shown in the report and by `gate`

Outcomes per gate: ``PASS``, ``FAIL`` (a block gate that failed), ``WARN`` (a warn gate that
failed) and ``N/A`` (the metric is unknown or not computable for the run). A block gate that
is N/A fails the verdict: evidence that cannot be computed is missing evidence, and promotion
must never pass silently on it. A warn gate that is N/A is reported and does not fail. A run
with no gate that applies to its mode fails too (nothing was checked). Gates whose ``modes``
leave out the run's mode are listed as not applicable to the mode and do not count.

``==`` and ``!=`` compare with a relative tolerance of 1e-9 (metrics are floats).
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import ConfigError
from harness.metrics import METRICS, Value, format_value

DEFAULT_GATES = Path(__file__).resolve().parent.parent / "config" / "gates.toml"
MODES = ("replay", "paced", "live-testnet", "live-paper")
SEVERITIES = ("block", "warn")
OPS = {
    "<": lambda a, b: a < b and not _close(a, b),
    "<=": lambda a, b: a <= b or _close(a, b),
    ">": lambda a, b: a > b and not _close(a, b),
    ">=": lambda a, b: a >= b or _close(a, b),
    "==": lambda a, b: _close(a, b),
    "!=": lambda a, b: not _close(a, b),
}
_KEYS = {"metric", "op", "value", "modes", "severity", "why"}


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


@dataclass(frozen=True)
class Gate:
    """One promotion criterion: ``metric op value`` for the given modes (None = all)."""

    metric: str
    op: str
    value: float
    modes: tuple[str, ...] | None = None
    severity: str = "block"
    why: str = ""

    def applies_to(self, mode: str) -> bool:
        return self.modes is None or mode in self.modes

    @property
    def rule(self) -> str:
        """``sharpe >= 1`` as text."""
        return f"{self.metric} {self.op} {_number(self.value)}"


@dataclass(frozen=True)
class GateResult:
    """The outcome of one gate for one run."""

    gate: Gate
    observed: Value
    outcome: str                  # PASS | FAIL | WARN | N/A
    reason: str = ""

    @property
    def threshold(self) -> float:
        return self.gate.value

    @property
    def observed_text(self) -> str:
        return format_value(self.gate.metric, self.observed) if self.gate.metric in METRICS else "n/a"

    @property
    def threshold_text(self) -> str:
        return f"{self.gate.op} {_number(self.gate.value)}"

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.gate.metric, "op": self.gate.op, "threshold": self.gate.value,
                "threshold_text": self.threshold_text, "observed": self.observed,
                "observed_text": self.observed_text, "severity": self.gate.severity,
                "outcome": self.outcome, "reason": self.reason, "why": self.gate.why}


@dataclass(frozen=True)
class Verdict:
    """PASS or FAIL for a run, with a row per gate that applies to its mode."""

    mode: str
    rows: tuple[GateResult, ...]
    skipped: tuple[Gate, ...] = field(default=())     # gates for other modes
    source: str = ""

    @property
    def blocking(self) -> tuple[GateResult, ...]:
        """Block gates that failed or could not be evaluated."""
        return tuple(r for r in self.rows if r.gate.severity == "block" and r.outcome in ("FAIL", "N/A"))

    @property
    def warnings(self) -> tuple[GateResult, ...]:
        """Warn gates that failed or could not be evaluated."""
        return tuple(r for r in self.rows if r.gate.severity == "warn" and r.outcome in ("WARN", "N/A"))

    @property
    def passed(self) -> bool:
        return bool(self.rows) and not self.blocking

    @property
    def status(self) -> str:
        return "PASS" if self.passed else "FAIL"

    @property
    def summary(self) -> str:
        """One line: the status and why."""
        if not self.rows:
            return f"FAIL: no gate applies to mode {self.mode}"
        if self.blocking:
            names = ", ".join(f"{r.gate.metric} ({r.outcome})" for r in self.blocking)
            text = f"FAIL: {len(self.blocking)} of {len(self.rows)} gates block promotion: {names}"
        else:
            text = f"PASS: {len(self.rows) - len(self.warnings)} of {len(self.rows)} gates passed"
        if self.warnings:
            text += f"; {len(self.warnings)} warning{'s' if len(self.warnings) > 1 else ''} " \
                    f"(warn-only, not blocking): " + ", ".join(f"{r.gate.metric} ({r.outcome})" for r in self.warnings)
        return text

    def lines(self) -> list[str]:
        """The verdict as the ``gate`` command prints it: a row per gate, then the verdict."""
        width = max([len(r.gate.metric) for r in self.rows] + [6])
        out = [f"  {'OUTCOME':<8} {'GATE':<{width}}  {'THRESHOLD':<11} {'OBSERVED':>14}  SEVERITY  NOTE"]
        for r in self.rows:
            out.append(f"  {r.outcome:<8} {r.gate.metric:<{width}}  {r.threshold_text:<11} {r.observed_text:>14}  "
                       f"{r.gate.severity:<8}  {r.reason}".rstrip())
        if self.skipped:
            out.append(f"  not applicable to mode {self.mode}: " + "; ".join(g.rule for g in self.skipped))
        out.append(f"verdict: {self.summary}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "passed": self.passed, "mode": self.mode, "summary": self.summary,
                "gates_file": self.source, "gates": [r.to_dict() for r in self.rows],
                "not_applicable_to_mode": [g.rule for g in self.skipped]}


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


# --------------------------------------------------------------------------------------------
# loading


def load_gates(path: str | Path | None = None) -> list[Gate]:
    """The gates of a TOML file (default ``config/gates.toml``); ConfigError naming the gate and key."""
    file = Path(path) if path is not None else DEFAULT_GATES
    try:
        raw = tomllib.loads(file.read_text())
    except FileNotFoundError:
        raise ConfigError(f"gates file {file} not found; pass --gates FILE or restore config/gates.toml") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read gates file {file}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"gates file {file} is not valid TOML: {exc}") from None
    extra = set(raw) - {"gates"}
    if extra:
        raise ConfigError(f"{file}: unknown top-level key {sorted(extra)[0]!r}; gates are [[gates]] tables")
    entries = raw.get("gates", [])
    if not isinstance(entries, list):
        raise ConfigError(f"{file}: 'gates' must be an array of tables ([[gates]])")
    return [parse_gate(entry, f"{file}: gates[{i}]") for i, entry in enumerate(entries)]


def parse_gate(entry: Any, where: str = "gate") -> Gate:
    """One gate from a TOML table, validated."""
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be a table")
    name = entry.get("metric")
    label = f"{where} ({name})" if isinstance(name, str) else where
    unknown = set(entry) - _KEYS
    if unknown:
        raise ConfigError(f"{label}: unknown key {sorted(unknown)[0]!r} (allowed: {', '.join(sorted(_KEYS))})")
    for key in ("metric", "op", "value"):
        if key not in entry:
            raise ConfigError(f"{label}: missing key {key!r}")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{label}: key 'metric' must be a metric name")
    op = entry["op"]
    if op not in OPS:
        raise ConfigError(f"{label}: key 'op' is {op!r}; use one of {' '.join(OPS)}")
    value = entry["value"]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{label}: key 'value' must be a finite number, not {value!r}")
    modes = entry.get("modes")
    if modes is not None:
        if not isinstance(modes, list) or not modes or not all(isinstance(m, str) for m in modes):
            raise ConfigError(f"{label}: key 'modes' must be a non-empty list of {', '.join(MODES)}")
        bad = [m for m in modes if m not in MODES]
        if bad:
            raise ConfigError(f"{label}: key 'modes' has unknown mode {bad[0]!r}; use {', '.join(MODES)}")
        modes = tuple(modes)
    severity = entry.get("severity", "block")
    if severity not in SEVERITIES:
        raise ConfigError(f"{label}: key 'severity' is {severity!r}; use block or warn")
    why = entry.get("why", "")
    if not isinstance(why, str):
        raise ConfigError(f"{label}: key 'why' must be text")
    return Gate(name.strip(), op, float(value), modes, severity, why)


# --------------------------------------------------------------------------------------------
# evaluating


def evaluate(metrics: dict[str, Value], gates: list[Gate], mode: str) -> Verdict:
    """Check every gate that applies to ``mode`` against ``metrics``."""
    rows, skipped = [], []
    for gate in gates:
        if not gate.applies_to(mode):
            skipped.append(gate)
            continue
        rows.append(check(gate, metrics))
    return Verdict(mode, tuple(rows), tuple(skipped))


def check(gate: Gate, metrics: dict[str, Value]) -> GateResult:
    """One gate against a metrics dict."""
    if gate.metric not in metrics:
        return GateResult(gate, None, "N/A", f"unknown metric {gate.metric!r}")
    observed = metrics[gate.metric]
    if observed is None or (isinstance(observed, float) and math.isnan(observed)):
        return GateResult(gate, None, "N/A", "not computable for this run")
    if OPS[gate.op](float(observed), gate.value):
        return GateResult(gate, observed, "PASS")
    return GateResult(gate, observed, "FAIL" if gate.severity == "block" else "WARN",
                      f"observed {format_value(gate.metric, observed)}, needs {gate.op} {_number(gate.value)}")


# --------------------------------------------------------------------------------------------
# a journaled run


def default_datasets_dir(journal: Any) -> Path:
    """Where a run's bars are: ``$QT_DATASETS_DIR``, else ``datasets/`` beside the reports folder."""
    env = os.environ.get("QT_DATASETS_DIR")
    return Path(env) if env else Path(journal.root).resolve().parent / "datasets"


def run_prices(record: Any, datasets_dir: str | Path | None):
    """The run's bars (``ts, symbol, open, high, low, close, volume``) from the dataset store,
    or None when they are not there (the report then says so; model metrics become N/A)."""
    from harness.datasets import Store
    from harness.errors import HarnessError
    from harness.metrics import bar_ms, window_ms

    rj = record.run_json or {}
    symbols, exchange, timeframe = rj.get("symbols"), rj.get("exchange"), rj.get("timeframe")
    start, end = window_ms(rj, record.run)
    if not (symbols and exchange and timeframe and datasets_dir) or start is None or end is None:
        return None
    step = bar_ms(rj) or 0
    try:
        frame = Store(datasets_dir).read_frame(exchange, symbols, timeframe, start, end + step)
    except HarnessError:
        return None
    return frame if len(frame) else None


def run_metrics(journal: Any, run_id: str, datasets_dir: str | Path | None = None):
    """(record, prices, metrics) of a journaled run."""
    from harness.errors import RunNotFound
    from harness.metrics import compute

    if not Path(journal.db_path).exists():
        raise RunNotFound(f"no run {run_id!r}: there is no journal at {journal.db_path} yet "
                          f"(run a replay first: python cli.py replay --days N)")
    record = journal.load(run_id)
    prices = run_prices(record, datasets_dir if datasets_dir is not None else default_datasets_dir(journal))
    return record, prices, compute(record, prices)


def verdict_for_run(journal: Any, run_id: str, gates_path: str | Path | None = None,
                    datasets_dir: str | Path | None = None) -> Verdict:
    """Evaluate a journaled run against the gates and record the status in its ``runs`` row."""
    gates = load_gates(gates_path)
    record, _, metrics = run_metrics(journal, run_id, datasets_dir)
    verdict = verdict_from(record, metrics, gates, gates_path)
    journal.update_run(record.run_id, verdict=verdict.status)
    return verdict


def verdict_from(record: Any, metrics: dict[str, Value], gates: list[Gate],
                 gates_path: str | Path | None = None) -> Verdict:
    """The verdict for an already loaded run (no I/O)."""
    mode = (record.run_json or {}).get("mode") or record.run.get("mode") or "replay"
    verdict = evaluate(metrics, gates, mode)
    return Verdict(verdict.mode, verdict.rows, verdict.skipped, str(gates_path or DEFAULT_GATES))
