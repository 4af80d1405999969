"""Observability end to end: live runs against a loopback paper exchange with the status server,
the smoke check, every drill (alert journaled, posted to a loopback webhook, in the report),
JSON logs with their fields, and no secret in logs, journal or report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from harness.config import load_config
from harness.datasets import Store
from harness.drills import FaultClient
from harness.journal import Journal
from harness.live import LiveOptions, run_live
from harness.metrics import compute, event_data
from harness.model import parse_duration
from harness.paper_exchange import PaperExchange
from harness.smoke import SUCCESS
from harness.sources.synthetic import synth_to_store
from harness.telemetry import live_telemetry
from tests.conftest import ROOT
from tests.exchange_support import KEY, SECRET
from tests.test_observability import Receiver

FIELDS = {"ts", "level", "event", "run_id", "request_id", "symbol", "profile"}


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def store(workspace) -> Store:
    store = Store(workspace / "datasets")
    synth_to_store(store, ["BTC/USDT"], days=2, seed=11)
    return store


def paper(store: Store, speed: float) -> PaperExchange:
    return PaperExchange(store, ["BTC/USDT"], exchange="synthetic", speed=speed, api_key=KEY, api_secret=SECRET,
                         balances={"USDT": 10_000.0})


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return json.loads(reply.read())


def wait_for(predicate, timeout: float, what: str, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def log_lines(path: Path) -> list[dict]:
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    assert lines, f"no log lines in {path}"
    for line in lines:
        assert FIELDS <= set(line), line
    return lines


def assert_no_secret(*paths: Path) -> None:
    for root in paths:
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        for path in files:
            data = path.read_bytes()
            assert KEY.encode() not in data and SECRET.encode() not in data, f"a secret in {path}"


# -- the live command, the status server and the smoke check -----------------------------------------


def test_live_status_smoke_then_a_stopped_data_job_degrades(store, workspace, cli):
    log_file = workspace / "live.log"
    env = {**os.environ, "QT_EXECUTION_BINANCE_API_KEY": KEY, "QT_EXECUTION_BINANCE_API_SECRET": SECRET}
    with paper(store, speed=60) as ex:
        proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "live", "--exchange-url", ex.url,
                                 "--symbols", "BTC/USDT", "--strategy", "sma_cross", "--duration", "60m",
                                 "--warmup", "40", "--status-port", "0", "--log-file", str(log_file), "--no-report"],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            def status_url():
                if proc.poll() is not None:
                    raise AssertionError(f"live exited early: {proc.communicate()}")
                for line in log_file.read_text().splitlines() if log_file.exists() else ():
                    if '"event": "status_server"' in line:
                        return json.loads(line)["url"]
                return None

            url = wait_for(status_url, 30, "the status server's address in the log")
            wait_for(lambda: get_json(url + "/health")["status"] == "ok", 20, "/health ok")
            ok = cli("smoke", "--url", url, timeout=60)
            assert ok.code == 0, ok
            assert ok.stdout.strip().splitlines()[-1] == SUCCESS
            assert "ok    scheduler.execution.positions_synced: true" in ok.stdout

            FaultClient(ex.url, KEY, SECRET).inject("timeout", path="klines", count=1, delay_s=6)   # the data job hangs

            def stalled():
                health = get_json(url + "/health")
                return health["status"] == "degraded" and any(
                    r.startswith("skipped_run: market-data-refresh has not completed") for r in health["reasons"])

            wait_for(stalled, 5, "/health degraded by the stalled data job")
            failed = cli("smoke", "--url", url, timeout=60)
            assert failed.code == 1, failed
            reasons = [x for x in failed.stdout.splitlines() if x.startswith("FAIL  health status: degraded — ")]
            assert reasons and "skipped_run: market-data-refresh has not completed" in reasons[0]
            assert any(x.startswith("FAIL  market-data-refresh last completion") for x in failed.stdout.splitlines())
            assert failed.stdout.strip().splitlines()[-1].startswith("API smoke check failed:")
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert err == "" and "live-paper" in out               # logs went to the file, the summary to stdout
    lines = log_lines(log_file)
    run_id = lines[-1]["run_id"]
    assert run_id and {x["run_id"] for x in lines[2:]} == {run_id}
    jobs = [x for x in lines if x["event"] == "job"]
    assert {x["job"] for x in jobs} == {"market-data-refresh", "execution-rebalance"}
    assert all(x["request_id"].startswith(("md-", "ex-")) for x in jobs)
    assert any(x["event"] == "alert" and x["rule"] == "skipped_run" for x in lines)
    events = Journal(workspace / "reports").load(run_id).events
    kinds = events["kind"].value_counts()
    assert kinds["skipped_run"] >= 1 and kinds["alert"] >= 1 and kinds["job"] >= 4
    assert_no_secret(log_file, workspace / "reports")


# -- drills ------------------------------------------------------------------------------------------


def stop_after_drill(telemetry, extra_s: float = 0.5, timeout: float = 60.0) -> None:
    """End the run once its drill has an outcome (the kill switch ends it by itself)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        drill, session = telemetry.drill, telemetry.session
        if drill is not None and drill.outcome in ("fired", "not fired", "failed"):
            time.sleep(extra_s)
            session.stop_requested.set()
            return
        if telemetry.finished:
            return
        time.sleep(0.05)


@pytest.mark.parametrize("drill, rule", [("skipped-run", "skipped_run"), ("error-burst", "error_rate"),
                                         ("low-confidence", "low_confidence"), ("kill-switch", "kill_switch")])
def test_drill_fires_journals_posts_and_reports_its_alert(drill, rule, store, workspace, receiver):
    values = {"run.symbols": ["BTC/USDT"], "run.strategy": "sma_cross", "risk.max_drawdown_pct": 10.0}
    config = load_config(ROOT / "config" / "config.toml", profile="staging", values=values)
    log_file = workspace / "live.log"
    journal = Journal(workspace / "reports")
    with paper(store, speed=120) as ex:
        options = LiveOptions(url=ex.url, duration_ms=parse_duration("60m"), warmup_bars=40, status_port=0,
                              api_key=KEY, api_secret=SECRET, install_signals=False,
                              hooks={"log_file": str(log_file), "alert_webhook": receiver.url, "drill": drill})
        telemetry = live_telemetry(config, options)
        stopper = threading.Thread(target=stop_after_drill, args=(telemetry,), daemon=True)
        stopper.start()
        result = run_live(config, store, journal, options)
        stopper.join(5)
    run_id = result.run_id
    assert telemetry.drill.outcome == "fired"
    assert result.summary["status"] == ("halted" if drill == "kill-switch" else "completed")

    record = journal.load(run_id)
    events = record.events
    alerts = [event_data(d) for d in events[events["kind"] == "alert"]["data"]]
    mine = [a for a in alerts if a["rule"] == rule]
    assert mine and mine[0]["severity"] == "critical" and mine[0]["drill"] == drill
    assert mine[0]["message"].endswith(f"[drill {drill}]")
    outcomes = [event_data(d)["outcome"] for d in events[events["kind"] == "drill"]["data"]]
    assert outcomes == ["injected", "fired"]

    posted = receiver.wait(1)
    assert any(b["rule"] == rule and b["state"] == "firing" and b["run_id"] == run_id and b["drill"] == drill
               for b in posted), posted

    html = (workspace / "reports" / run_id / "report.html").read_text()
    section = html[html.index('<section id="alerts">'):]
    section = section[:section.index("</section>")]
    assert f"<code>{rule}</code>" in section and f"[drill {drill}]" in section

    metrics = compute(record)
    assert metrics["alerts"] >= 1
    if drill == "skipped-run":
        assert metrics["skipped_runs"] >= 1
    if drill == "error-burst":
        assert metrics["error_rate_pct"] > 0
    if drill == "kill-switch":
        assert metrics["kill_switches"] == 1

    lines = log_lines(log_file)
    assert any(x["event"] == "alert" and x["rule"] == rule and x["level"] == "warning" for x in lines)
    assert {x["profile"] for x in lines} == {"staging"}
    runs = {x["request_id"][:3] for x in lines if x["event"] == "job"}
    assert runs == {"md-", "ex-"}                         # each job run carries its own request id
    assert all(x["symbol"] == "BTC/USDT" for x in lines if x["event"] in ("order", "fill"))
    assert_no_secret(log_file, workspace / "reports")
