"""The status endpoint of a live run (``live --status-port PORT``, 127.0.0.1 only).

=================================  ===========================================================
GET /health                        ``status`` ok|degraded with ``reasons``; run id, mode, profile,
                                   uptime; last bar time per symbol; equity, ``gross_exposure``,
                                   ``positions_synced``, open orders; active alerts; ``scheduler``
                                   with ``market_data`` and ``execution`` (the latter carrying
                                   ``gross_exposure`` and ``positions_synced``)
GET /health/scheduler              every job: last start, last completion, duration, consecutive
                                   failures, next due, interval, skipped runs, recent runs
GET /api/prices/latest?symbol=S    last close and its bar's close time (all symbols without S)
GET /api/ai/signals/latest?limit=N the latest model signals with confidence (newest first)
GET /metrics                       the same numbers in Prometheus text format
=================================  ===========================================================

Times are ISO-8601 UTC. Bar and signal times are on the exchange's clock (``exchange_time``),
which a paper exchange at ``--speed N`` runs N× faster than the wall clock (``now``); ages are
given in real seconds. Unknown paths answer 404 and bad parameters 400, with a JSON body.

The views are pure functions of :meth:`harness.telemetry.Telemetry.state`, a copy taken under a
lock, so serving never reads the trading thread's objects and never holds it up.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from harness.errors import UserError
from harness.jobs import EXECUTION, MARKET_DATA
from harness.logs import iso_from_epoch
from harness.model import ms_to_iso, normalize_symbol

log = logging.getLogger("harness.status_server")

ENDPOINTS = ("/health", "/health/scheduler", "/api/prices/latest", "/api/ai/signals/latest", "/metrics")
MAX_SIGNALS = 1000


class BadRequest(ValueError):
    """A parameter the endpoint cannot use (HTTP 400)."""


def _ms_iso(ms: float | None) -> str | None:
    return None if ms is None else ms_to_iso(int(ms))


def _age_s(state: dict[str, Any], data_ms: int | None) -> float | None:
    """Real seconds since ``data_ms`` (exchange clock, minus the paced-replay offset)."""
    now = state.get("exchange_now")
    if data_ms is None or now is None:
        return None
    return round((now - state["time_offset"] - data_ms) / 1000 / max(state["clock_rate"], 1e-6), 3)


def _last_close_ms(state: dict[str, Any]) -> dict[str, int]:
    snap = state["snapshot"]
    return {sym: int(op) + state["timeframe_ms"] - state["time_offset"]
            for sym, op in (snap.get("last_open") or {}).items()}


def _job(view: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (view or {}).items() if k != "recent"}


def health_view(state: dict[str, Any]) -> dict[str, Any]:
    """``GET /health``."""
    snap, ident = state["snapshot"], state["identity"]
    reasons = []
    if not state["attached"]:
        reasons.append("run starting: connecting to the exchange and warming up")
    if state["finished"]:
        reasons.append("run stopped")
    reasons.extend(f"{a['rule']}: {a['message']}" for a in state["alerts"])
    if state["attached"] and not snap.get("positions_synced"):
        reasons.append("positions not synced with the exchange")
    if state["attached"] and not state["finished"]:
        reasons.extend(f"starting: no {name} run has completed yet" for name, job in sorted(state["jobs"].items())
                       if not job.get("last_completion"))
    closes = _last_close_ms(state)
    exchange_now = state.get("exchange_now")
    account = {"equity": snap.get("equity"), "gross_exposure": snap.get("gross_exposure"),
               "positions_synced": snap.get("positions_synced"), "open_orders": snap.get("open_orders")}
    return {
        "status": "degraded" if reasons else "ok", "reasons": reasons, **ident,
        "started_at": iso_from_epoch(state["started"]), "uptime_seconds": round(state["now"] - state["started"], 3),
        "now": iso_from_epoch(state["now"]),
        "exchange_time": None if exchange_now is None else _ms_iso(exchange_now - state["time_offset"]),
        "clock_rate": round(state["clock_rate"], 4),
        "last_bar": {sym: _ms_iso(ms) for sym, ms in sorted(closes.items())},
        "last_bar_age_seconds": {sym: _age_s(state, ms) for sym, ms in sorted(closes.items())},
        **account, "cash": snap.get("cash"), "positions": snap.get("positions", {}),
        "last_position_sync": _ms_iso(snap.get("last_sync")), "halted": snap.get("halted"),
        "alerts": state["alerts"], "alerts_fired": state["fired"], "exchange": state["requests"],
        "drill": state["drill"],
        "scheduler": {"market_data": _job(state["jobs"].get(MARKET_DATA)),
                      "execution": {**_job(state["jobs"].get(EXECUTION)), **account}},
    }


def scheduler_view(state: dict[str, Any]) -> dict[str, Any]:
    """``GET /health/scheduler``."""
    now = state.get("exchange_now")
    return {"now": iso_from_epoch(state["now"]),
            "exchange_time": None if now is None else _ms_iso(now - state["time_offset"]),
            "clock_rate": round(state["clock_rate"], 4),
            "bar_seconds": round(state["timeframe_ms"] / 1000 / max(state["clock_rate"], 1e-6), 3),
            "jobs": state["jobs"]}


def _symbols(state: dict[str, Any], raw: str | None) -> list[str]:
    traded = state["identity"]["symbols"]
    if raw is None:
        return list(traded)
    try:
        symbol = normalize_symbol(raw)
    except (UserError, ValueError):
        raise BadRequest(f"cannot read symbol {raw!r}: use e.g. BTCUSDT or BTC/USDT") from None
    if symbol not in traded:
        raise BadRequest(f"symbol {raw!r} is not traded by this run ({', '.join(traded) or 'none yet'})")
    return [symbol]


def prices_view(state: dict[str, Any], symbol: str | None) -> dict[str, Any]:
    """``GET /api/prices/latest[?symbol=S]``: one symbol's last close, or every symbol's."""
    closes = _last_close_ms(state)
    prices = state["snapshot"].get("prices") or {}
    rows = [{"symbol": s, "wire_symbol": s.replace("/", ""), "price": prices.get(s), "time": _ms_iso(closes.get(s)),
             "age_seconds": _age_s(state, closes.get(s))} for s in _symbols(state, symbol)]
    return rows[0] if symbol is not None else {"prices": rows}


def signals_view(state: dict[str, Any], limit: str | None, symbol: str | None) -> dict[str, Any]:
    """``GET /api/ai/signals/latest?limit=N[&symbol=S]``: newest first."""
    try:
        n = 5 if limit is None else int(limit)
    except ValueError:
        n = -1
    if not 1 <= n <= MAX_SIGNALS:
        raise BadRequest(f"limit must be a whole number from 1 to {MAX_SIGNALS}, not {limit!r}")
    wanted = set(_symbols(state, symbol))
    rows = [r for r in reversed(state["signals"]) if r["symbol"] in wanted][:n]
    return {"count": len(rows), "signals": [{**r, "ts": _ms_iso(r["ts"])} for r in rows]}


def metrics_text(state: dict[str, Any]) -> str:
    """``GET /metrics`` in the Prometheus text exposition format (0.0.4)."""
    health = health_view(state)
    out: list[str] = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[dict[str, str], Any]]) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            if value is None:
                continue
            text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            out.append(f"{name}{{{text}}} {float(value):.10g}" if text else f"{name} {float(value):.10g}")

    ident = state["identity"]
    metric("qt_run_info", "gauge", "The run this process serves.",
           [({"run_id": ident["run_id"] or "", "mode": ident["mode"] or "", "profile": ident["profile"] or "",
              "strategy": ident["strategy"] or ""}, 1)])
    metric("qt_health_ok", "gauge", "1 when /health says ok, 0 when degraded.", [({}, health["status"] == "ok")])
    metric("qt_uptime_seconds", "gauge", "Seconds since the run's telemetry started.", [({}, health["uptime_seconds"])])
    metric("qt_equity", "gauge", "Account equity in the quote asset.", [({}, health["equity"])])
    metric("qt_gross_exposure", "gauge", "Sum of absolute position values over equity.", [({}, health["gross_exposure"])])
    metric("qt_positions_synced", "gauge", "1 once positions are synced from exchange balances.",
           [({}, health["positions_synced"])])
    metric("qt_open_orders", "gauge", "Orders open on the exchange.", [({}, health["open_orders"])])
    metric("qt_halted", "gauge", "1 once the kill switch has fired.", [({}, health["halted"])])
    closes = _last_close_ms(state)
    metric("qt_last_bar_timestamp_seconds", "gauge", "Close time of the last bar (exchange clock).",
           [({"symbol": s}, ms / 1000) for s, ms in sorted(closes.items())])
    metric("qt_last_bar_age_seconds", "gauge", "Real seconds since the last bar closed.",
           [({"symbol": s}, a) for s, a in sorted(health["last_bar_age_seconds"].items())])
    metric("qt_last_price", "gauge", "Last close.",
           [({"symbol": s}, p) for s, p in sorted((state["snapshot"].get("prices") or {}).items())])
    jobs = state["jobs"]
    for name, kind, key, help_text in (
            ("qt_job_runs_total", "counter", "runs", "Runs of the job."),
            ("qt_job_failures_total", "counter", "failures", "Runs that failed."),
            ("qt_job_skipped_runs_total", "counter", "skipped_runs", "Runs that were due and did not complete."),
            ("qt_job_consecutive_failures", "gauge", "consecutive_failures", "Failures since the last success."),
            ("qt_job_interval_seconds", "gauge", "interval_seconds", "Interval the job must keep."),
            ("qt_job_overdue", "gauge", "overdue", "1 when the job has not completed within twice its interval.")):
        metric(name, kind, help_text, [({"job": j}, v[key]) for j, v in sorted(jobs.items())])
    metric("qt_job_last_duration_seconds", "gauge", "Duration of the job's last run.",
           [({"job": j}, None if v["last_duration_ms"] is None else v["last_duration_ms"] / 1000)
            for j, v in sorted(jobs.items())])
    req = state["requests"]
    metric("qt_exchange_requests_total", "counter", "HTTP requests to the exchange.", [({}, req["total"])])
    metric("qt_exchange_errors_total", "counter", "HTTP requests to the exchange that failed.", [({}, req["errors"])])
    rate = 100.0 * req["window_errors"] / req["window_requests"] if req["window_requests"] else 0.0
    metric("qt_exchange_error_rate_pct", "gauge", "Error rate over the alert window.", [({}, rate)])
    active: dict[str, int] = {}
    for a in state["alerts"]:
        active[a["rule"]] = active.get(a["rule"], 0) + 1
    rules = sorted(set(active) | set(state["fired"]))
    metric("qt_alerts_active", "gauge", "Alerts active now.", [({"rule": r}, active.get(r, 0)) for r in rules])
    metric("qt_alerts_fired_total", "counter", "Alerts fired since the run started.",
           [({"rule": r}, state["fired"].get(r, 0)) for r in rules])
    latest: dict[str, float] = {}
    for row in state["signals"]:
        latest[row["symbol"]] = row["confidence"]
    metric("qt_signal_confidence", "gauge", "Confidence of the latest model signal.",
           [({"symbol": s}, c) for s, c in sorted(latest.items())])
    return "\n".join(out) + "\n"


def _label(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    telemetry: Any


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        path = parts.path.rstrip("/") or "/"
        params = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        try:
            state = self.server.telemetry.state()
            if path == "/health":
                self._json(200, health_view(state))
            elif path == "/health/scheduler":
                self._json(200, scheduler_view(state))
            elif path == "/api/prices/latest":
                self._json(200, prices_view(state, params.get("symbol")))
            elif path == "/api/ai/signals/latest":
                self._json(200, signals_view(state, params.get("limit"), params.get("symbol")))
            elif path == "/metrics":
                self._reply(200, metrics_text(state).encode(), "text/plain; version=0.0.4; charset=utf-8")
            else:
                self._json(404, {"error": f"no such endpoint: {parts.path}", "endpoints": list(ENDPOINTS)})
        except BadRequest as exc:
            self._json(400, {"error": str(exc)})
        except Exception as exc:        # a bug costs one request a 500, never the run
            log.exception("status endpoint failed on %s", parts.path)
            self._json(500, {"error": f"internal error: {type(exc).__name__}"})

    def _refuse(self) -> None:
        self._json(405, {"error": f"{self.command} is not allowed: the status endpoint is read-only (GET)"})

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse

    def _json(self, status: int, body: Any) -> None:
        self._reply(status, json.dumps(body, default=str).encode(), "application/json")

    def _reply(self, status: int, data: bytes, content_type: str) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            self.close_connection = True

    def log_message(self, format: str, *args) -> None:
        log.debug("status %s", format % args, extra={"event": "status_request"})


class StatusServer:
    """Serves the views of a telemetry on ``127.0.0.1:port`` (0 = any free port) from a thread."""

    def __init__(self, telemetry, port: int = 0, host: str = "127.0.0.1"):
        try:
            self._server = _Server((host, int(port)), _Handler)
        except OSError as exc:
            raise UserError(f"cannot listen on {host}:{port} for --status-port ({exc.strerror}): "
                            "choose another port") from None
        self._server.telemetry = telemetry
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> StatusServer:
        """Serve from a daemon thread; returns self."""
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"status-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port; safe to call twice."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5)
            self._thread = None
        self._server.server_close()
