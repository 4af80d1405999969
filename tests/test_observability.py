"""Observability units: alert rules, job book, alert delivery, JSON logs, status views and server,
the smoke check, the paper exchange's fault endpoint and drill refusals (loopback only, fast)."""

from __future__ import annotations

import io
import json
import math
import re
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from harness.alerts import AlertManager, AlertRules, Condition, RuleInputs, Webhook
from harness.errors import ConfigError, HarnessError, SafetyError
from harness.jobs import EXECUTION, MARKET_DATA, SUMMARY_RUNS, JobBook, JobRun
from harness.logs import LogContext, structured_logging
from harness.smoke import SUCCESS, smoke_check
from harness.status_server import StatusServer, health_view, metrics_text, prices_view, signals_view
from tests.exchange_support import KEY, SECRET, make_exchange, make_store

T = 1_800_000_000.0               # a wall-clock moment (epoch seconds)
EX = 1_790_000_040_000            # an exchange-clock moment (ms)
MIN = 60_000


# -- receivers -------------------------------------------------------------------------------------


class Receiver:
    """A loopback HTTP server that records POSTed JSON bodies (the alert webhook in tests)."""

    def __init__(self):
        bodies = self.bodies = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                bodies.append(json.loads(self.rfile.read(n)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def wait(self, n: int, timeout: float = 10.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.bodies) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.bodies

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


# -- alert rules -----------------------------------------------------------------------------------

RULES = AlertRules(min_confidence=0.55, max_error_rate_pct=5.0, error_window_seconds=300, stale_data_factor=2.0)


@pytest.mark.parametrize("inputs, fired", [
    (RuleInputs(), []),
    (RuleInputs(overdue={MARKET_DATA: 2.5}, intervals={MARKET_DATA: 1.0}), ["skipped_run"]),
    (RuleInputs(requests=100, errors=5), []),                       # 5% is not over 5%
    (RuleInputs(requests=100, errors=6), ["error_rate"]),
    (RuleInputs(requests=9, errors=9), []),                          # too few requests to say
    (RuleInputs(requests=20, errors=1), []),                         # one hiccup is not a burst
    (RuleInputs(confidences={"BTC/USDT": [0.5] * 4}), []),           # too few signals
    (RuleInputs(confidences={"BTC/USDT": [0.5] * 5}), ["low_confidence"]),
    (RuleInputs(confidences={"BTC/USDT": [0.1] * 5 + [0.9] * 20}), []),   # only the last 20 count
    (RuleInputs(kill_switch="max_drawdown_pct 12% >= 10%"), ["kill_switch"]),
    (RuleInputs(mismatches={"BTC/USDT": "journal 1, exchange 0.8"}), ["position_mismatch"]),
    (RuleInputs(bar_age_ms={"BTC/USDT": 2 * MIN}, timeframe_ms=MIN), []),
    (RuleInputs(bar_age_ms={"BTC/USDT": 2 * MIN + 1}, timeframe_ms=MIN), ["stale_data"]),
    (RuleInputs(bar_age_ms={"BTC/USDT": 2 * MIN + 1}, timeframe_ms=MIN, stale_floor_ms=3 * MIN), []),  # fast replay
])
def test_alert_rules(inputs, fired):
    conditions = RULES.evaluate(inputs)
    assert [c.rule for c in conditions] == fired
    for c in conditions:
        assert c.severity == ("warning" if c.rule == "stale_data" else "critical") and c.message


# -- job book --------------------------------------------------------------------------------------


def test_job_book_counts_skipped_runs_and_summarises_successes():
    now = [T]
    book = JobBook({MARKET_DATA: lambda: 1.0, EXECUTION: lambda: 60.0}, clock=lambda: now[0])
    assert book.missed() == [] and book.overdue() == {}       # not watching yet
    book.start_watch()
    rows = book.record(JobRun(MARKET_DATA, T, 10.0, request_id="md-1"))
    assert [r["runs"] for r in rows] == [1]                    # the first run is journaled at once
    now[0] = T + 2.0
    assert book.missed() == [] and book.overdue() == {}        # exactly two intervals: not yet
    now[0] = T + 2.1
    assert book.missed() == [(MARKET_DATA, pytest.approx(T + 1.01))]
    assert set(book.overdue()) == {MARKET_DATA}
    assert book.missed() == []                                 # counted once
    now[0] = T + 4.5
    assert [job for job, _ in book.missed()] == [MARKET_DATA, MARKET_DATA]
    view = book.view()[MARKET_DATA]
    assert view["skipped_runs"] == 3 and view["overdue"] and view["last_request_id"] == "md-1"
    rows = book.record(JobRun(MARKET_DATA, now[0], 5.0, error="klines: 503"))
    assert rows == [{"job": MARKET_DATA, "started_at": rows[0]["started_at"], "duration_ms": 5.0,
                     "outcome": "error", "error": "klines: 503", "request_id": ""}]
    assert book.view()[MARKET_DATA]["consecutive_failures"] == 1
    out = []
    for i in range(SUMMARY_RUNS):
        out += book.record(JobRun(MARKET_DATA, now[0] + i * 0.01, 2.0 + i))
    assert len(out) == 1 and out[0]["runs"] == SUMMARY_RUNS and out[0]["max_duration_ms"] == 2.0 + SUMMARY_RUNS - 1
    assert book.view()[MARKET_DATA]["consecutive_failures"] == 0 and not book.view()[MARKET_DATA]["overdue"]
    book.record(JobRun(MARKET_DATA, now[0] + 1, 3.0))
    assert [r["runs"] for r in book.due_summaries(force=True)] == [1] and book.due_summaries(force=True) == []


# -- alert delivery, logs --------------------------------------------------------------------------


def parse_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_alert_manager_journals_logs_posts_once_and_resolves(receiver):
    journaled = []
    stream = io.StringIO()
    webhook = Webhook(receiver.url, timeout_s=2)
    manager = AlertManager(lambda c, data: journaled.append(data), webhook, lambda: {"run_id": "r1"},
                           drill=lambda: "error-burst")
    burst = Condition("error_rate", "error_rate", "exchange error rate 20% > 5%")
    with structured_logging(LogContext("r1", "staging"), stream=stream):
        assert manager.update([burst]) == [burst]
        assert manager.update([burst]) == []                     # still active: not fired again
        assert [a["rule"] for a in manager.active()] == ["error_rate"]
        assert manager.wait_fired("error_rate", 1.0)
        manager.update([])
        webhook.close()
    assert manager.active() == [] and manager.fired == {"error_rate": 1}
    assert journaled == [{"rule": "error_rate", "severity": "critical", "drill": "error-burst",
                          "message": "exchange error rate 20% > 5% [drill error-burst]"}]
    posted = receiver.wait(2)
    assert [(b["state"], b["rule"], b["run_id"], b["drill"]) for b in posted] == [
        ("firing", "error_rate", "r1", "error-burst"), ("resolved", "error_rate", "r1", "error-burst")]
    lines = parse_lines(stream.getvalue())
    assert [(x["event"], x["level"]) for x in lines] == [("alert", "warning"), ("alert_resolved", "info")]
    assert lines[0]["rule"] == "error_rate" and lines[0]["run_id"] == "r1" and lines[0]["profile"] == "staging"


def test_webhook_never_blocks_on_a_dead_receiver():
    webhook = Webhook("http://127.0.0.1:9/hook", timeout_s=0.5)         # nothing listens on port 9
    started = time.monotonic()
    for i in range(5):
        webhook.post({"rule": "kill_switch", "i": i})
    assert time.monotonic() - started < 0.1
    webhook.close(wait_s=5)
    assert webhook.failed == 5 and webhook.sent == 0
    with pytest.raises(HarnessError, match="alert-webhook"):
        Webhook("ftp://example.com/x")


def test_json_log_lines_carry_the_context_and_never_a_secret():
    import logging

    from harness.exchange import request_id_var

    stream = io.StringIO()
    secret = "s3cr3t-VALUE-0123456789"
    context = LogContext(profile="staging")
    with structured_logging(context, secrets=(KEY, secret), stream=stream):
        logging.getLogger("harness.live").info("starting")
        context.run_id = "run-1"
        token = request_id_var.set("md-000001")
        logging.getLogger("harness.exchange").warning("retrying with key %s and %s", KEY, secret,
                                                      extra={"event": "exchange_request", "symbol": "BTC/USDT",
                                                             "data": {"endpoint": "GET /api/v3/klines"}})
        request_id_var.reset(token)
        logging.getLogger("harness.live").debug("hidden at info level")
    logging.getLogger("harness.live").warning("after the block: not captured")
    text = stream.getvalue()
    assert KEY not in text and secret not in text
    first, second = parse_lines(text)
    for line in (first, second):
        assert {"ts", "level", "event", "run_id", "request_id", "symbol", "profile"} <= set(line)
        assert line["ts"].endswith("Z") and line["profile"] == "staging"
    assert first["run_id"] is None and first["event"] == "log" and first["request_id"] == ""
    assert second == {**second, "run_id": "run-1", "request_id": "md-000001", "symbol": "BTC/USDT",
                      "event": "exchange_request", "level": "warning", "endpoint": "GET /api/v3/klines",
                      "message": "retrying with key *** and ***"}


# -- status views and server -------------------------------------------------------------------------


def job_view(name: str, completed_ago: float, interval: float = 1.0) -> dict:
    return {"job": name, "interval_seconds": interval, "last_start": None,
            "last_completion": _iso(T - completed_ago), "last_duration_ms": 3.0, "last_outcome": "ok",
            "last_error": None, "last_request_id": "x", "runs": 10, "failures": 0, "consecutive_failures": 0,
            "skipped_runs": 0, "next_due": _iso(T + interval), "overdue": completed_ago > 2 * interval, "recent": []}


def _iso(seconds: float) -> str:
    from harness.logs import iso_from_epoch

    return iso_from_epoch(seconds)


def fake_state(**changes) -> dict:
    """What Telemetry.state() returns for a healthy run at 60x: a bar closed 0.5 s ago (real)."""
    state = {
        "identity": {"run_id": "run-1", "mode": "live-paper", "profile": "staging", "strategy": "signal_follower",
                     "symbols": ["BTC/USDT"], "timeframe": "1m"},
        "attached": True, "finished": False, "started": T - 30, "now": T, "exchange_now": EX, "clock_rate": 60.0,
        "time_offset": 0, "timeframe_ms": MIN,
        "snapshot": {"equity": 10_010.0, "cash": 510.0, "gross_exposure": 0.949, "positions": {"BTC/USDT": 0.16},
                     "open_orders": 0, "positions_synced": True, "last_sync": EX - 10 * MIN, "halted": False,
                     "last_open": {"BTC/USDT": EX - 30_000 - MIN}, "prices": {"BTC/USDT": 59_000.5}},
        "jobs": {MARKET_DATA: job_view(MARKET_DATA, 0.5), EXECUTION: job_view(EXECUTION, 0.5)},
        "alerts": [], "fired": {},
        "signals": [{"ts": EX - 70_000 - i * MIN, "symbol": "BTC/USDT", "signal": 0.1 * i, "confidence": 0.6,
                     "model_version": "m1", "acted": False} for i in reversed(range(8))],
        "requests": {"total": 100, "errors": 1, "window_requests": 100, "window_errors": 1, "window_seconds": 300.0},
        "drill": None,
    }
    state.update(changes)
    return state


class FakeTelemetry:
    def __init__(self, state: dict):
        self.current = state

    def state(self) -> dict:
        return self.current


def test_views_of_a_healthy_run():
    state = fake_state()
    health = health_view(state)
    assert health["status"] == "ok" and health["reasons"] == []
    assert health["run_id"] == "run-1" and health["mode"] == "live-paper" and health["profile"] == "staging"
    assert health["last_bar"] == {"BTC/USDT": _ms(EX - 30_000)}
    assert health["last_bar_age_seconds"]["BTC/USDT"] == pytest.approx(0.5)
    execution = health["scheduler"]["execution"]
    assert execution["gross_exposure"] == 0.949 and execution["positions_synced"] is True
    assert health["scheduler"]["market_data"]["job"] == MARKET_DATA and "recent" not in execution
    assert prices_view(state, "BTCUSDT") == {"symbol": "BTC/USDT", "wire_symbol": "BTCUSDT", "price": 59_000.5,
                                             "time": _ms(EX - 30_000), "age_seconds": pytest.approx(0.5)}
    latest = signals_view(state, "5", None)
    assert latest["count"] == 5 and [s["signal"] for s in latest["signals"]] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    assert latest["signals"][0]["ts"] == _ms(EX - 70_000)
    text = metrics_text(state)
    assert "qt_health_ok 1" in text and 'qt_gross_exposure 0.949' in text
    assert f'qt_job_runs_total{{job="{EXECUTION}"}} 10' in text and 'qt_signal_confidence{symbol="BTC/USDT"} 0.6' in text
    assert_exposition_format(text)


NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*"'
SAMPLE = re.compile(rf"({NAME})(?:\{{{LABEL}(?:,{LABEL})*\}})? (\S+)")


def assert_exposition_format(text: str) -> None:
    """Prometheus text format 0.0.4: ``# HELP`` / ``# TYPE`` lines, then ``name{label="v",...} value``
    samples of a declared metric with a finite value."""
    typed, samples = set(), 0
    for line in text.splitlines():
        if line.startswith("#"):
            comment = re.fullmatch(rf"# (HELP|TYPE) ({NAME}) (.+)", line)
            assert comment, line
            if comment[1] == "TYPE":
                assert comment[3] in ("counter", "gauge"), line
                typed.add(comment[2])
            continue
        sample = SAMPLE.fullmatch(line)
        assert sample, f"not a sample line: {line!r}"
        assert sample[1] in typed, f"a sample before its # TYPE line: {line!r}"
        assert math.isfinite(float(sample[2])), line
        samples += 1
    assert samples >= 10, text


def _ms(ms: int) -> str:
    from harness.model import ms_to_iso

    return ms_to_iso(ms)


def test_health_is_degraded_with_reasons():
    alert = {"rule": "skipped_run", "severity": "critical", "message": "market-data-refresh has not completed",
             "symbol": "", "since": _iso(T - 1)}
    state = fake_state(alerts=[alert])
    state["snapshot"]["positions_synced"] = False
    health = health_view(state)
    assert health["status"] == "degraded"
    assert health["reasons"] == ["skipped_run: market-data-refresh has not completed",
                                 "positions not synced with the exchange"]
    assert health_view(fake_state(attached=False, snapshot={}))["reasons"][0].startswith("run starting")


def get(url: str) -> tuple[int, str, object]:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            body = reply.read().decode()
            return reply.status, reply.headers.get("Content-Type"), body
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers.get("Content-Type"), exc.read().decode()


def test_status_server_endpoints_and_errors():
    server = StatusServer(FakeTelemetry(fake_state()), port=0).start()
    try:
        base = server.url
        for path in ("/health", "/health/scheduler", "/api/prices/latest?symbol=BTCUSDT",
                     "/api/prices/latest", "/api/ai/signals/latest?limit=5"):
            status, kind, body = get(base + path)
            assert status == 200 and kind == "application/json", path
            json.loads(body)
        status, kind, body = get(base + "/metrics")
        assert status == 200 and kind.startswith("text/plain") and "qt_health_ok 1" in body
        for path, code in (("/nope", 404), ("/api/ai/signals/latest?limit=0", 400),
                           ("/api/ai/signals/latest?limit=abc", 400), ("/api/prices/latest?symbol=ETHUSDT", 400),
                           ("/api/prices/latest?symbol=%%%", 400)):
            status, kind, body = get(base + path)
            assert (status, kind) == (code, "application/json") and json.loads(body)["error"], path
        request = urllib.request.Request(base + "/health", data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        refused.value.close()
        assert refused.value.code == 405
    finally:
        server.stop()
    taken = StatusServer(FakeTelemetry(fake_state()), port=0)
    try:
        with pytest.raises(HarnessError, match="cannot listen on 127.0.0.1"):
            StatusServer(FakeTelemetry(fake_state()), port=taken.port)
    finally:
        taken.stop()


# -- smoke -----------------------------------------------------------------------------------------


@pytest.fixture
def status():
    telemetry = FakeTelemetry(fake_state())
    server = StatusServer(telemetry, port=0).start()
    yield telemetry, server.url
    server.stop()


def test_smoke_passes_on_a_healthy_run(status, cli):
    telemetry, url = status
    checks = smoke_check(url)
    assert all(c.ok for c in checks), [c.line() for c in checks if not c.ok]
    names = {c.name for c in checks}
    assert {"GET /health", "GET /health/scheduler", "GET /api/prices/latest?symbol=BTCUSDT",
            "GET /api/ai/signals/latest?limit=5", "GET /metrics", "scheduler.execution.gross_exposure",
            "scheduler.execution.positions_synced", f"{MARKET_DATA} last completion", "BTC/USDT last bar"} <= names
    result = cli("smoke", "--url", url, timeout=60)
    assert result.code == 0, result
    assert result.stdout.strip().splitlines()[-1] == SUCCESS


@pytest.mark.parametrize("change, failing", [
    ({"alerts": [{"rule": "skipped_run", "message": "market-data-refresh has not completed for 3.0s"}]},
     "health status: degraded — skipped_run: market-data-refresh has not completed for 3.0s"),
    ({"jobs": {MARKET_DATA: job_view(MARKET_DATA, 2.5), EXECUTION: job_view(EXECUTION, 0.5)}},
     f"{MARKET_DATA} last completion: 2.50s old (limit 2.00s)"),
    ({"exchange_now": EX + 90_000}, "BTC/USDT last bar: 2.00s old (limit 2.00s)"),
])
def test_smoke_fails_with_the_reason(status, cli, change, failing):
    telemetry, url = status
    telemetry.current = fake_state(**change)
    result = cli("smoke", "--url", url, timeout=60)
    assert result.code == 1, result
    assert f"FAIL  {failing}" in result.stdout.splitlines()
    assert result.stdout.strip().splitlines()[-1].startswith("API smoke check failed:")
    assert SUCCESS not in result.stdout


def test_smoke_needs_the_risk_snapshot(status):
    telemetry, url = status
    state = fake_state()
    del state["snapshot"]["gross_exposure"]
    telemetry.current = state
    failed = {c.name: c.detail for c in smoke_check(url) if not c.ok}
    assert failed == {"scheduler.execution.gross_exposure": "missing"}


def test_smoke_against_nothing_is_one_clear_line(cli):
    import socket

    with socket.socket() as s:                         # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = cli("smoke", "--url", f"http://127.0.0.1:{port}", timeout=60)
    assert result.code == 1 and result.stdout == ""
    assert result.stderr.strip().count("\n") == 0 and "cannot reach the status endpoint" in result.stderr
    assert cli("smoke", "--url", "not a url", timeout=60).code == 2


# -- the paper exchange's fault endpoint, drill refusals -------------------------------------------


def test_paper_exchange_faults_over_http(tmp_path):
    import ccxt

    from harness.drills import FaultClient
    from harness.errors import ExchangeError
    from tests.exchange_support import ccxt_client

    with make_exchange(make_store(tmp_path)) as ex:
        faults = FaultClient(ex.url, KEY, SECRET)
        assert faults.inject("error", path="klines", count=2, status=503) == {"armed": "error", "count": 2}
        client = ccxt_client(ex.url)
        for _ in range(2):
            with pytest.raises(ccxt.OperationFailed):
                client.fetch_ohlcv("BTC/USDT", "1m", limit=2)
        assert len(client.fetch_ohlcv("BTC/USDT", "1m", limit=2)) == 2
        faults.inject("error", count=5)
        faults.inject("clear")                                       # the admin call itself never meets a fault
        assert client.fetch_time() > 0
        before = client.fetch_balance()["free"]
        assert faults.inject("debit", fraction=0.25) == {"debited": {"BTC": 0.125, "USDT": 2500.0}}
        after = client.fetch_balance()["free"]
        assert after["USDT"] == pytest.approx(before["USDT"] * 0.75) and after["BTC"] == pytest.approx(0.375)
        with pytest.raises(ExchangeError, match="-1022"):
            FaultClient(ex.url, KEY, "wrong-secret").inject("clear")
        with pytest.raises(ExchangeError, match="-2015"):
            FaultClient(ex.url, "wrong-key", SECRET).inject("clear")
        with pytest.raises(ExchangeError, match="HTTP 400"):
            faults.inject("meltdown")
        with pytest.raises(ExchangeError, match="HTTP 400"):
            faults.inject("debit", fraction=2)
        unsigned = urllib.request.Request(ex.url + "/_harness/faults", data=b"kind=clear", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(unsigned, timeout=5)
        refused.value.close()
        assert refused.value.code == 401


def test_drill_refusals():
    from harness.config import load_config
    from harness.drills import check_drill
    from harness.live import LiveOptions

    config = load_config(None, values={"run.symbols": ["BTC/USDT"]})
    check_drill(None, config, LiveOptions(testnet=True))
    with pytest.raises(SafetyError, match="cannot run against the testnet"):
        check_drill("error-burst", config, LiveOptions(testnet=True))
    with pytest.raises(ConfigError, match="max_drawdown_pct"):
        check_drill("kill-switch", config.replace(risk=type(config.risk)()), LiveOptions(url="http://127.0.0.1:8765"))
    check_drill("skipped-run", config, LiveOptions(url="http://127.0.0.1:8765"))


def test_live_drill_with_testnet_refuses_in_one_line(workspace, cli):
    env = {"QT_EXECUTION_BINANCE_API_KEY": KEY, "QT_EXECUTION_BINANCE_API_SECRET": SECRET}
    result = cli("live", "--testnet", "--symbols", "BTC/USDT", "--drill", "skipped-run", env=env, timeout=60)
    assert result.code == 2 and result.stdout == ""
    assert result.stderr.strip().count("\n") == 0 and "--drill skipped-run" in result.stderr
    assert not list((workspace / "reports").glob("*/journal.wal"))              # nothing started
