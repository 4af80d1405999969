"""The evaluation report: one self-contained HTML file per run (or per pair of runs with ``vs``).

:func:`write_report` loads a run from the journal (and its bars from the dataset store),
computes its metrics and verdict, draws the charts (:mod:`harness.charts`) and renders
``templates/report.html.j2``. Everything the template shows is prepared here as text: the
template only lays it out. The file needs nothing but itself: CSS inline, charts inline SVG,
no scripts, no external references, so it opens offline and can be archived as evidence.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from harness import atomic, charts
from harness import metrics as mx
from harness.gates import Verdict, default_datasets_dir, load_gates, run_metrics, run_prices, verdict_from
from harness.model import DAY_MS

TRADES_HEAD = TRADES_TAIL = 250      # trades listed at each end of a longer list
EVENTS_MAX = 500                     # risk events / alerts listed before a count
TEMPLATE = "report.html.j2"

METRIC_GROUPS: list[tuple[str, list[str]]] = [
    ("Performance", ["total_return_pct", "annualised_return_pct", "volatility_pct", "sharpe", "sortino", "calmar",
                     "start_equity", "final_equity"]),
    ("Risk", ["max_drawdown_pct", "max_drawdown_duration_days", "risk_denials", "kill_switches"]),
    ("Trades", ["trade_count", "open_trades", "win_rate_pct", "profit_factor", "avg_win", "avg_loss",
                "avg_trade_return_pct", "expectancy"]),
    ("Exposure and costs", ["exposure_time_pct", "avg_gross_exposure_pct", "max_gross_exposure_pct", "turnover",
                            "fees_paid", "orders", "fills", "order_rejections"]),
    ("Operations", ["run_completed", "days_run", "exchange_errors", "error_rate_pct", "skipped_runs", "alerts"]),
    ("Data", ["data_coverage_pct", "missing_bars"]),
    ("Model", ["signals", "hit_rate_pct", "information_coefficient", "calibration_error_pct", "mean_confidence"]),
]
KEY_FIGURES = ("total_return_pct", "sharpe", "max_drawdown_pct", "trade_count", "win_rate_pct", "profit_factor")
RISK_KINDS = ("risk_denied", "kill_switch", "order_rejected", "exchange_error", "position_mismatch")


def write_report(journal: Any, run_id: str, gates_path: str | Path | None = None, output: str | Path | None = None,
                 vs: str | None = None, datasets_dir: str | Path | None = None) -> Path:
    """Write the run's report (default ``reports/<run_id>/report.html``; with ``vs``,
    ``reports/<run_id>/report-vs-<other>.html``) and return its path."""
    return make_report(journal, run_id, gates_path, output, vs, datasets_dir)[0]


def make_report(journal: Any, run_id: str, gates_path: str | Path | None = None, output: str | Path | None = None,
                vs: str | None = None, datasets_dir: str | Path | None = None) -> tuple[Path, Verdict]:
    """:func:`write_report`, also returning the verdict shown in the report (the journal is not changed)."""
    gates = load_gates(gates_path)
    datasets = Path(datasets_dir) if datasets_dir is not None else default_datasets_dir(journal)
    record, prices, metrics = run_metrics(journal, run_id, datasets)
    verdict = verdict_from(record, metrics, gates, gates_path)
    other = None
    if vs is not None:
        other_record = journal.load(vs)
        other = (other_record, run_prices(other_record, datasets))
    html = render_report(record, prices, metrics, verdict, other=other)
    if output is not None:
        path = Path(output)
    elif other is not None:
        path = journal.run_dir(record.run_id) / f"report-vs-{other[0].run_id}.html"
    else:
        path = journal.run_dir(record.run_id) / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, html)
    return path, verdict


def render_report(record: Any, prices: pd.DataFrame | None, metrics: dict[str, Any], verdict: Verdict,
                  other: tuple[Any, pd.DataFrame | None] | None = None) -> str:
    """The report's HTML for a loaded run (no file I/O besides the template)."""
    context = build_context(record, prices, metrics, verdict, other)
    return _template().render(**context)


@functools.cache
def _template() -> Any:
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("harness", "templates"),
                             autoescape=jinja2.select_autoescape(["html", "j2"]), trim_blocks=True,
                             lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    return env.get_template(TEMPLATE)


# --------------------------------------------------------------------------------------------
# the context: everything as display text


def build_context(record: Any, prices: pd.DataFrame | None, metrics: dict[str, Any], verdict: Verdict,
                  other: tuple[Any, pd.DataFrame | None] | None = None) -> dict[str, Any]:
    """Every value the template shows, formatted; charts as SVG markup."""
    from markupsafe import Markup

    rj = record.run_json or {}
    step = mx.bar_ms(rj, record.equity) or 60_000
    sections = [("run", "Run"), ("verdict", "Verdict"), ("metrics", "Metrics"), ("charts", "Charts"),
                ("trades", "Trades"), ("risk", "Risk events"), ("data", "Data quality"), ("model", "Model"),
                ("alerts", "Alerts"), ("config", "Configuration")]
    if other is not None:
        sections.insert(4, ("comparison", "Comparison"))
    ctx: dict[str, Any] = {
        "title": f"Run {record.run_id}", "sections": sections, "header": header(record),
        "synthetic": bool(rj.get("synthetic") or rj.get("exchange") == "synthetic"),
        "verdict": verdict_view(verdict), "key_figures": [metric_cell(n, metrics) for n in KEY_FIGURES],
        "metric_groups": [{"title": t, "cells": [metric_cell(n, metrics, verdict) for n in names]}
                          for t, names in METRIC_GROUPS],
        "charts": {k: Markup(v) for k, v in run_charts(record, prices, metrics).items()},
        "price_charts": [{"symbol": s, "svg": Markup(v)} for s, v in price_charts(record, prices, step)],
        "prices_note": "" if prices is not None else
        "Bars for this window were not found in the dataset store; prices are drawn from the fills.",
        "trades": trades_view(record.trades),
        "risk": events_view(record.events, RISK_KINDS),
        "risk_by_limit": denials_by_limit(record.events),
        "data": data_view(record, metrics),
        "model": model_view(record, prices, metrics, step),
        "alerts": alerts_view(record.events),
        "config": config_view(rj),
        "comparison": comparison_view(record, prices, other[0], other[1], step) if other is not None else None,
    }
    return ctx


def header(record: Any) -> dict[str, Any]:
    """The run's identity: what ran, on what, with which code and config."""
    rj, run = record.run_json or {}, record.run or {}
    start, end = mx.window_ms(rj, run)
    params = rj.get("params", run.get("params")) or {}
    if isinstance(params, str):
        params = json.loads(params or "{}")
    symbols = rj.get("symbols") or str(run.get("symbols") or "").split(",")
    span = f" ({fmt_days((end - start) / DAY_MS)})" if start is not None and end is not None else ""
    rows = [
        ("Strategy", rj.get("strategy") or run.get("strategy") or "—"),
        ("Parameters", ", ".join(f"{k}={json.dumps(v) if isinstance(v, str) else v}"
                                 for k, v in sorted(params.items())) or "defaults"),
        ("Symbols", ", ".join(symbols)),
        ("Timeframe", rj.get("timeframe") or run.get("timeframe") or "—"),
        ("Window", f"{fmt_time(start)} → {fmt_time(end)}{span}"),
        ("Data", f"{rj.get('exchange') or run.get('exchange') or '—'}, {fmt_int(rj.get('bars'))} bars"),
        ("Data fingerprint", rj.get("data_fingerprint") or run.get("data_fingerprint") or "—"),
        ("Config digest", rj.get("config_digest") or run.get("config_digest") or "—"),
        ("Code version", rj.get("code_version") or run.get("code_version") or "—"),
        ("Profile", rj.get("profile") or run.get("profile") or "none"),
        ("Started / finished", f"{rj.get('started_at') or '—'} / {rj.get('finished_at') or '—'}"),
    ]
    mono = {"Data fingerprint", "Config digest", "Code version"}
    return {"run_id": record.run_id, "mode": rj.get("mode") or run.get("mode") or "—",
            "status": rj.get("status") or run.get("status") or "—",
            "rows": [{"label": k, "value": str(v), "mono": k in mono} for k, v in rows],
            "notes": [str(n) for n in rj.get("notes") or []], "error": rj.get("error") or ""}


def verdict_view(verdict: Verdict) -> dict[str, Any]:
    """The verdict banner and the gate table rows (the same text ``gate`` prints)."""
    return {"status": verdict.status, "passed": verdict.passed, "summary": verdict.summary,
            "mode": verdict.mode, "source": verdict.source,
            "rows": [{"metric": r.gate.metric, "label": mx.METRICS.get(r.gate.metric, (r.gate.metric, ""))[0],
                      "threshold": r.threshold_text, "observed": r.observed_text, "severity": r.gate.severity,
                      "outcome": r.outcome, "css": outcome_css(r.outcome), "note": r.reason or r.gate.why,
                      "why": r.gate.why}
                     for r in verdict.rows],
            "skipped": [f"{g.rule} (only {', '.join(g.modes or ())})" for g in verdict.skipped]}


def outcome_css(outcome: str) -> str:
    return {"PASS": "pass", "FAIL": "fail", "WARN": "warn", "N/A": "na"}.get(outcome, "na")


def metric_cell(name: str, metrics: dict[str, Any], verdict: Verdict | None = None) -> dict[str, Any]:
    label = mx.METRICS[name][0]
    gate = None
    if verdict is not None:
        for r in verdict.rows:
            if r.gate.metric == name:
                gate = {"outcome": r.outcome, "css": outcome_css(r.outcome), "rule": r.threshold_text}
    return {"name": name, "label": label, "value": mx.format_value(name, metrics.get(name)), "gate": gate}


# --------------------------------------------------------------------------------------------
# charts


def run_charts(record: Any, prices: pd.DataFrame | None, metrics: dict[str, Any]) -> dict[str, str]:
    """equity (with drawdown), exposure, trade returns, daily returns."""
    eq = record.equity
    ts = mx.ms(eq["ts"]) if eq is not None and not eq.empty else np.empty(0, dtype=np.int64)
    values = eq["equity"].to_numpy(dtype=float) if len(ts) else np.empty(0)
    gross = eq["gross_exposure"].fillna(0.0).to_numpy(dtype=float) * 100.0 if len(ts) else np.empty(0)
    daily = mx.daily_returns_pct(eq, metrics.get("start_equity")) if len(ts) else pd.Series(dtype=float)
    closed = mx.closed_trades(record.trades)
    days_ms = mx.ms(pd.Series(daily.index)) if len(daily) else np.empty(0, dtype=np.int64)
    return {
        "equity": charts.equity_drawdown(ts, values, mx.drawdown_pct(values), metrics.get("start_equity")),
        "exposure": charts.exposure(ts, gross),
        "trade_returns": charts.trade_returns(closed["return_pct"].to_numpy(dtype=float)),
        "daily_returns": charts.daily_returns(days_ms, daily.to_numpy(dtype=float)),
    }


def price_charts(record: Any, prices: pd.DataFrame | None, step: int) -> list[tuple[str, str]]:
    """One chart per symbol: close (from the store, else from the fills) with entries and exits."""
    symbols = (record.run_json or {}).get("symbols") or sorted(set(record.trades.get("symbol", [])))
    trades = record.trades if record.trades is not None else pd.DataFrame()
    out = []
    for i, symbol in enumerate(symbols):
        if prices is not None:
            px = prices[prices["symbol"] == symbol]
            ts, close = mx.ms(px["ts"]) + step, px["close"].to_numpy(dtype=float)    # drawn at bar close
        elif record.fills is not None and not record.fills.empty:
            fx = record.fills[record.fills["symbol"] == symbol]
            ts, close = mx.ms(fx["ts"]), fx["price"].to_numpy(dtype=float)
        else:
            ts, close = np.empty(0, dtype=np.int64), np.empty(0)
        tr = trades[trades["symbol"] == symbol] if not trades.empty else trades
        entries = (mx.ms(tr["opened_at"]), tr["entry_price"].to_numpy(dtype=float)) if not tr.empty else \
            (np.empty(0, dtype=np.int64), np.empty(0))
        done = tr[tr["closed_at"].notna()] if not tr.empty else tr
        exits = (mx.ms(done["closed_at"]), done["exit_price"].to_numpy(dtype=float)) if not done.empty else \
            (np.empty(0, dtype=np.int64), np.empty(0))
        out.append((symbol, charts.price_with_trades(symbol, ts, close, entries, exits, f"price-{i}")))
    return out


# --------------------------------------------------------------------------------------------
# tables


def trades_view(trades: pd.DataFrame | None) -> dict[str, Any]:
    """The first and last trades as text rows, and how many were left out."""
    if trades is None or trades.empty:
        return {"count": 0, "count_text": "0", "head": [], "tail": [], "omitted": ""}
    n = len(trades)
    rows = trades.sort_values(["opened_at", "trade_id"], kind="stable")
    if n > TRADES_HEAD + TRADES_TAIL:
        head, tail = rows.iloc[:TRADES_HEAD], rows.iloc[-TRADES_TAIL:]
        omitted = f"… {n - TRADES_HEAD - TRADES_TAIL:,} trades not listed (showing the first {TRADES_HEAD} " \
                  f"and the last {TRADES_TAIL} of {n:,}) …"
    else:
        head, tail, omitted = rows, rows.iloc[0:0], ""
    return {"count": n, "count_text": f"{n:,}", "head": [_trade_row(r) for r in head.itertuples()],
            "tail": [_trade_row(r) for r in tail.itertuples()], "omitted": omitted}


def _trade_row(t: Any) -> dict[str, str]:
    opened, closed = mx.time_ms(t.opened_at), mx.time_ms(t.closed_at)
    pnl = None if t.pnl is None or pd.isna(t.pnl) else float(t.pnl)
    return {"id": str(t.trade_id), "symbol": str(t.symbol), "opened": fmt_time(opened),
            "closed": fmt_time(closed) if closed is not None else "open",
            "held": fmt_duration(closed - opened) if closed is not None and opened is not None else "—",
            "qty": fmt_num(t.qty, 6), "entry": fmt_num(t.entry_price, 2), "exit": fmt_num(t.exit_price, 2),
            "pnl": fmt_num(pnl, 2), "ret": fmt_pct(t.return_pct), "fees": fmt_num(t.fees, 2),
            "css": "" if pnl is None else ("pos" if pnl > 0 else "neg" if pnl < 0 else "")}


def events_view(events: pd.DataFrame | None, kinds: tuple[str, ...]) -> dict[str, Any]:
    """Events of these kinds as text rows (at most EVENTS_MAX) and their total."""
    if events is None or events.empty:
        return {"count": 0, "count_text": "0", "rows": [], "omitted": ""}
    chosen = events[events["kind"].isin(kinds)]
    n = len(chosen)
    rows = [{"ts": fmt_time(mx.time_ms(e.ts)), "kind": str(e.kind), "symbol": str(e.symbol or ""),
             "detail": _event_text(e.detail, e.data)} for e in chosen.iloc[:EVENTS_MAX].itertuples()]
    omitted = f"… {n - EVENTS_MAX:,} more not listed (first {EVENTS_MAX} of {n:,}) …" if n > EVENTS_MAX else ""
    return {"count": n, "count_text": f"{n:,}", "rows": rows, "omitted": omitted}


def _event_text(detail: Any, data: Any) -> str:
    parts = [str(detail)] if detail else []
    fields = mx.event_data(data)
    if fields:
        parts.append(", ".join(f"{k}={_short(v)}" for k, v in fields.items()))
    return " — ".join(parts) or "—"


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.6g}"
    text = json.dumps(value, default=str) if isinstance(value, dict | list) else str(value)
    return text if len(text) <= 120 else text[:117] + "…"


def denials_by_limit(events: pd.DataFrame | None) -> list[dict[str, str]]:
    """Risk denials counted per limit."""
    if events is None or events.empty:
        return []
    denied = events[events["kind"] == "risk_denied"]
    counts: dict[str, int] = {}
    for raw in denied["data"]:
        limit = str(mx.event_data(raw).get("limit", "?"))
        counts[limit] = counts.get(limit, 0) + 1
    return [{"limit": k, "count": f"{v:,}"} for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def alerts_view(events: pd.DataFrame | None) -> dict[str, Any]:
    """Alerts that fired: a row each, and a summary per rule."""
    view = {"count": 0, "count_text": "0", "rows": [], "omitted": "", "rules": []}
    if events is None or events.empty:
        return view
    alerts = events[events["kind"] == "alert"]
    rules: dict[str, dict[str, Any]] = {}
    rows = []
    for e in alerts.itertuples():
        data = mx.event_data(e.data)
        rule = str(data.get("rule", "?"))
        entry = rules.setdefault(rule, {"rule": rule, "n": 0, "severity": str(data.get("severity", "")),
                                        "first": fmt_time(mx.time_ms(e.ts))})
        entry["n"] += 1
        if len(rows) < EVENTS_MAX:
            rows.append({"ts": fmt_time(mx.time_ms(e.ts)), "rule": rule, "severity": str(data.get("severity", "")),
                         "symbol": str(e.symbol or ""), "message": str(data.get("message") or e.detail or "")})
    n = len(alerts)
    view.update(count=n, count_text=f"{n:,}", rows=rows,
                omitted=f"… {n - EVENTS_MAX:,} more not listed …" if n > EVENTS_MAX else "",
                rules=[{**r, "n": f"{r['n']:,}"} for r in sorted(rules.values(), key=lambda r: r["rule"])])
    return view


def data_view(record: Any, metrics: dict[str, Any]) -> dict[str, Any]:
    """Per-symbol quality of the window's bars, coverage, and journaled data gaps."""
    quality = (record.run_json or {}).get("data_quality") or {}
    rows = []
    for symbol, q in sorted(quality.items()):
        rows.append({"symbol": symbol, "bars": fmt_int(q.get("bars")), "first": str(q.get("first") or "—"),
                     "last": str(q.get("last") or "—"), "gaps": fmt_int(q.get("gaps")),
                     "missing": fmt_int(q.get("missing_bars")), "duplicates": fmt_int(q.get("duplicates")),
                     "ohlc": fmt_int(q.get("ohlc_inconsistent")), "flat": fmt_int(len(q.get("identical_close_runs") or [])),
                     "issues": "; ".join(q.get("issues") or []) or "none", "ok": bool(q.get("ok", True))})
    return {"coverage": mx.format_value("data_coverage_pct", metrics.get("data_coverage_pct")),
            "missing": mx.format_value("missing_bars", metrics.get("missing_bars")), "rows": rows,
            "gaps": events_view(record.events, ("data_gap",))}


def model_view(record: Any, prices: pd.DataFrame | None, metrics: dict[str, Any], step: int) -> dict[str, Any]:
    """Hit rate, IC, calibration table and chart, when the run recorded signals."""
    from markupsafe import Markup

    signals = record.signals
    if signals is None or signals.empty:
        return {"present": False}
    outcomes = mx.signal_outcomes(signals, prices, step)
    buckets = mx.calibration(outcomes)
    versions = sorted({str(v) for v in signals["model_version"].dropna()})
    return {"present": True, "versions": ", ".join(versions) or "—",
            "cells": [metric_cell(n, metrics) for n in ("signals", "hit_rate_pct", "information_coefficient",
                                                         "calibration_error_pct", "mean_confidence")],
            "acted": fmt_int(int(signals["acted"].fillna(False).sum())),
            "buckets": [{"range": f"{b['lo']:.1f} – {b['hi']:.1f}", "count": f"{b['count']:,}",
                         "confidence": f"{100 * b['mean_confidence']:.1f}%", "hit": f"{b['hit_rate_pct']:.1f}%"}
                        for b in buckets],
            "chart": Markup(charts.calibration(buckets)),
            "no_prices": prices is None}


def config_view(rj: dict[str, Any]) -> dict[str, Any]:
    """The run's configuration (secrets are masked in run.json already) and active risk limits."""
    config = rj.get("config") or {}
    sections = []
    for name, body in config.items():
        if isinstance(body, dict):
            sections.append({"name": name, "rows": [{"key": k, "value": _config_value(v)} for k, v in body.items()]})
    scalars = [{"key": k, "value": _config_value(v)} for k, v in config.items() if not isinstance(v, dict)]
    if scalars:
        sections.append({"name": "profile", "rows": scalars})
    limits = [{"key": k, "value": _config_value(v)} for k, v in sorted((rj.get("risk_limits") or {}).items())]
    return {"sections": sections, "limits": limits}


def _config_value(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


# --------------------------------------------------------------------------------------------
# two runs side by side


def comparison_view(a: Any, prices_a: pd.DataFrame | None, b: Any, prices_b: pd.DataFrame | None,
                    step: int) -> dict[str, Any]:
    """Metrics of both runs over their common window, their equity overlaid, trades matched."""
    from markupsafe import Markup

    a_start, a_end = mx.window_ms(a.run_json or {}, a.run)
    b_start, b_end = mx.window_ms(b.run_json or {}, b.run)
    view: dict[str, Any] = {"other_id": b.run_id, "other_mode": (b.run_json or {}).get("mode") or b.run.get("mode"),
                            "other_strategy": (b.run_json or {}).get("strategy") or b.run.get("strategy") or "—"}
    if None in (a_start, a_end, b_start, b_end) or max(a_start, b_start) >= min(a_end, b_end):
        view.update(common=False, window=f"{fmt_time(a_start)} → {fmt_time(a_end)} vs "
                                         f"{fmt_time(b_start)} → {fmt_time(b_end)}")
        return view
    start, end = max(a_start, b_start), min(a_end, b_end)
    ca, cb = clip(a, start, end), clip(b, start, end)
    ma, mb = mx.compute(ca, prices_a), mx.compute(cb, prices_b)
    rows = [{"label": mx.METRICS[n][0], "name": n, "a": mx.format_value(n, ma[n]), "b": mx.format_value(n, mb[n]),
             "delta": format_delta(n, ma[n], mb[n])} for n in mx.METRICS if n not in ("data_coverage_pct", "missing_bars")]
    series = []
    for label, rec in ((f"this run ({a.run_id})", ca), (f"other ({b.run_id})", cb)):
        eq = rec.equity
        if eq is not None and not eq.empty:
            v = eq["equity"].to_numpy(dtype=float)
            series.append((label, mx.ms(eq["ts"]), (v / v[0] - 1.0) * 100.0))
    matched, only_a, only_b = match_trades(ca.trades, cb.trades, tolerance_ms=step)
    entry = matched["entry_diff_bps"].dropna().to_numpy(dtype=float) if not matched.empty else np.empty(0)
    view.update(
        common=True, window=f"{fmt_time(start)} → {fmt_time(end)} ({fmt_days((end - start) / DAY_MS)})",
        rows=rows, chart=Markup(charts.equity_overlay(series)), tolerance=fmt_duration(step),
        matched=[{"symbol": str(r.symbol), "opened_a": fmt_time(mx.time_ms(r.opened_a)),
                  "opened_b": fmt_time(mx.time_ms(r.opened_b)), "entry_a": fmt_num(r.entry_a, 2),
                  "entry_b": fmt_num(r.entry_b, 2), "entry_bps": fmt_bps(r.entry_diff_bps),
                  "exit_a": fmt_num(r.exit_a, 2), "exit_b": fmt_num(r.exit_b, 2), "exit_bps": fmt_bps(r.exit_diff_bps)}
                 for r in matched.iloc[:EVENTS_MAX].itertuples()],
        matched_count=f"{len(matched):,}",
        matched_omitted=f"… {len(matched) - EVENTS_MAX:,} more matched trades not listed …"
        if len(matched) > EVENTS_MAX else "",
        entry_bps_mean=fmt_bps(float(entry.mean())) if len(entry) else "n/a",
        entry_bps_abs_median=fmt_bps(float(np.median(np.abs(entry)))) if len(entry) else "n/a",
        only_a=trades_view(only_a), only_b=trades_view(only_b))
    return view


def clip(record: Any, start: int, end: int) -> Any:
    """The part of a run inside ``[start, end)`` (ms): rows by ``ts``, trades by ``opened_at``.

    The window in ``run_json`` becomes the clipped one; for comparing two runs on common ground."""
    def cut(frame: pd.DataFrame | None, column: str = "ts") -> pd.DataFrame | None:
        if frame is None or frame.empty:
            return frame
        t = mx.ms(frame[column])
        return frame[(t >= start) & (t < end)].reset_index(drop=True)

    rj = dict(record.run_json or {})
    first = pd.Timestamp(start, unit="ms", tz="UTC").isoformat()
    last = pd.Timestamp(end, unit="ms", tz="UTC").isoformat()
    rj.update(start=first, end=last)
    eq = cut(record.equity)
    if eq is not None and not eq.empty:
        rj["cash"] = float(eq["equity"].iloc[0])
    rj.pop("bars", None)
    rj.pop("data_quality", None)
    return replace(record, run_json=rj, orders=cut(record.orders), fills=cut(record.fills),
                   trades=cut(record.trades, "opened_at"), equity=eq, events=cut(record.events),
                   signals=cut(record.signals))


def match_trades(a: pd.DataFrame, b: pd.DataFrame, tolerance_ms: int
                 ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Pair the trades of two runs by symbol and opening time (closest first, within tolerance).

    Returns (matched, only_a, only_b); ``matched`` carries both sides' times and prices and the
    entry/exit price differences of b against a in basis points."""
    a = a.reset_index(drop=True) if a is not None else pd.DataFrame()
    b = b.reset_index(drop=True) if b is not None else pd.DataFrame()
    pairs: list[tuple[int, int, int]] = []
    if not a.empty and not b.empty:
        ta, tb = mx.ms(a["opened_at"]), mx.ms(b["opened_at"])
        for symbol in sorted(set(a["symbol"]) & set(b["symbol"])):
            ia = np.flatnonzero((a["symbol"] == symbol).to_numpy())
            ib = np.flatnonzero((b["symbol"] == symbol).to_numpy())
            order = np.argsort(tb[ib], kind="stable")
            ib, sorted_tb = ib[order], tb[ib][order]
            for i in ia:
                lo = np.searchsorted(sorted_tb, ta[i] - tolerance_ms, "left")
                hi = np.searchsorted(sorted_tb, ta[i] + tolerance_ms, "right")
                pairs.extend((abs(int(sorted_tb[k] - ta[i])), int(i), int(ib[k])) for k in range(lo, hi))
    pairs.sort()
    used_a: set[int] = set()
    used_b: set[int] = set()
    rows = []
    for _, i, j in pairs:
        if i in used_a or j in used_b:
            continue
        used_a.add(i)
        used_b.add(j)
        ra, rb = a.iloc[i], b.iloc[j]
        rows.append({"symbol": ra["symbol"], "opened_a": ra["opened_at"], "opened_b": rb["opened_at"],
                     "entry_a": ra["entry_price"], "entry_b": rb["entry_price"],
                     "entry_diff_bps": _bps(ra["entry_price"], rb["entry_price"]),
                     "exit_a": ra["exit_price"], "exit_b": rb["exit_price"],
                     "exit_diff_bps": _bps(ra["exit_price"], rb["exit_price"]),
                     "pnl_a": ra["pnl"], "pnl_b": rb["pnl"]})
    matched = pd.DataFrame(rows, columns=["symbol", "opened_a", "opened_b", "entry_a", "entry_b", "entry_diff_bps",
                                          "exit_a", "exit_b", "exit_diff_bps", "pnl_a", "pnl_b"])
    if not matched.empty:
        matched = matched.sort_values(["opened_a", "symbol"], kind="stable", ignore_index=True)
    only_a = a.drop(index=sorted(used_a)) if not a.empty else a
    only_b = b.drop(index=sorted(used_b)) if not b.empty else b
    return matched, only_a.reset_index(drop=True), only_b.reset_index(drop=True)


def _bps(a: Any, b: Any) -> float | None:
    if a is None or b is None or pd.isna(a) or pd.isna(b) or not a:
        return None
    return (float(b) / float(a) - 1.0) * 1e4


def format_delta(name: str, a: Any, b: Any) -> str:
    """``b - a`` in the metric's unit, signed; percentage metrics differ in percentage points."""
    if a is None or b is None or not all(math.isfinite(float(x)) for x in (a, b)):
        return "—"
    d = float(b) - float(a)
    kind = mx.METRICS.get(name, ("", "number"))[1]
    if kind == "int":
        return f"{int(round(d)):+,}"
    if kind in ("pct", "pp"):
        return f"{d:+,.2f} pp"
    if kind == "days":
        return f"{d:+,.2f} d"
    if kind == "ratio":
        return f"{d:+,.3f}"
    return f"{d:+,.2f}"


# --------------------------------------------------------------------------------------------
# formatting


def fmt_time(ts_ms: int | None) -> str:
    if ts_ms is None:
        return "—"
    return pd.Timestamp(int(ts_ms), unit="ms", tz="UTC").strftime("%Y-%m-%d %H:%M UTC")


def fmt_days(days: float) -> str:
    return f"{days:,.2f} days" if days % 1 else f"{int(days):,} days"


def fmt_duration(duration_ms: int | None) -> str:
    if duration_ms is None:
        return "—"
    minutes = int(duration_ms // 60_000)
    d, rest = divmod(minutes, 1440)
    h, m = divmod(rest, 60)
    if d:
        return f"{d}d {h}h"
    if h:
        return f"{h}h {m:02d}m"
    return f"{m}m" if m else f"{int(duration_ms // 1000)}s"


def fmt_num(value: Any, places: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or pd.isna(value):
        return "—"
    return f"{float(value):,.{places}f}"


def fmt_int(value: Any) -> str:
    return "—" if value is None else f"{int(value):,}"


def fmt_pct(value: Any) -> str:
    return "—" if value is None or pd.isna(value) else f"{float(value):+,.2f}%"


def fmt_bps(value: Any) -> str:
    return "—" if value is None or pd.isna(value) else f"{float(value):+,.1f} bps"
