"""What the CLI prints for people: tables, run summaries, a progress bar (machines get ``--json``)."""

from __future__ import annotations

import sys
import time
from typing import Any


def cell(value: Any) -> str:
    """A value as a table shows it: floats to ten significant digits, None as blank."""
    if isinstance(value, float):
        return f"{value:.10g}"
    return "" if value is None else str(value)


def table(columns: list[str], rows: list[list[Any]] | list[tuple], right: set[str] = frozenset()) -> str:
    """Rows under a header, each column as wide as its widest cell; ``right`` columns right-aligned."""
    texts = [[cell(v) for v in row] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in texts)]) for i, c in enumerate(columns)]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if c in right else v.ljust(w)
                         for v, w, c in zip(values, widths, columns, strict=True)).rstrip()

    return "\n".join([line(list(columns)), *(line(r) for r in texts)])


def summary_lines(s: dict[str, Any]) -> list[str]:
    """A replay or live run's summary, a few lines long."""
    out = [f"{s['mode']} {s['run_id']}  {s['strategy']} {s['params']}"]
    synthetic = "  [SYNTHETIC DATA]" if s.get("synthetic") else ""
    out.append(f"  window   {s['start']} .. {s['end']}  {', '.join(s['symbols'])} {s['timeframe']}  "
               f"{s['bars']:,} bars from exchange={s['exchange']}{synthetic}")
    out.append(f"  orders   {s['orders']:,}   fills {s['fills']:,}   trades {s['trades']:,}   fees {s['fees']:,.2f}")
    sharpe = "n/a" if s.get("sharpe") is None else f"{s['sharpe']:.2f}"
    if s.get("final_equity") is not None:
        out.append(f"  equity   {s['final_equity']:,.2f}  return {s['return_pct']:+.2f}%  "
                   f"max drawdown {s['max_drawdown_pct']:.2f}%  sharpe {sharpe}")
    if s.get("risk_denials"):
        by = ", ".join(f"{k} {v}" for k, v in s["risk_denials_by_limit"].items())
        out.append(f"  risk     {s['risk_denials']} denials ({by})")
    if s.get("kill_switch"):
        out.append("  risk     KILL SWITCH fired: positions flattened, run halted")
    if s.get("verdict"):
        out.append(f"  verdict  {s['verdict']}   (python cli.py gate {s['run_id']})")
    if s.get("report"):
        out.append(f"  report   {s['report']}")
    if s.get("bars_per_s"):
        out.append(f"  speed    {s['bars_per_s']:,} bars/s ({s['elapsed_s']:.2f} s)")
    latency = s.get("latency_ms") or {}
    if latency.get("n"):
        out.append(f"  latency  bar seen -> order sent p50 {latency['p50']:.1f} ms, p99 {latency['p99']:.1f} ms "
                   f"({latency['n']} orders)")
    return out


def run_brief(r: dict[str, Any]) -> dict[str, Any]:
    """One row of ``runs``: what tells runs apart."""
    return {"run_id": r["run_id"], "mode": r["mode"], "strategy": r["strategy"], "symbols": r["symbols"],
            "timeframe": r["timeframe"], "start": str(r["start"]), "end": str(r["end"]), "status": r["status"],
            "final_equity": r["final_equity"], "return_pct": r["return_pct"], "verdict": r["verdict"],
            "synthetic": r["synthetic"], "started_at": str(r["started_at"])}


class Progress:
    """A progress bar on stderr, shown once a run has taken more than two seconds (TTY only)."""

    def __init__(self, label: str, enabled: bool | None = None):
        self.label = label
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.started, self.shown = time.monotonic(), False

    def __call__(self, done: int, total: int) -> None:
        elapsed = time.monotonic() - self.started
        if not self.enabled or elapsed < 2.0:
            return
        self.shown = True
        frac = done / total if total else 1.0
        rate = done / elapsed if elapsed else 0
        sys.stderr.write(f"\r{self.label} [{'#' * int(frac * 30):<30}] {frac:6.1%} {done:,}/{total:,} bars "
                         f"{rate:,.0f} bars/s")
        sys.stderr.flush()

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\n")
