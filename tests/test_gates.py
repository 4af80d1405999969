"""Gates: every comparison, N/A, warn, modes, bad files, the shipped criteria, and `gate` itself."""

from __future__ import annotations

import json

import pytest

from harness.errors import ConfigError
from harness.gates import DEFAULT_GATES, Gate, evaluate, load_gates, parse_gate, verdict_for_run
from harness.journal import Journal, table_from_rows
from harness.model import parse_time

T0 = parse_time("2025-01-01T00:00:00Z")
H = 3_600_000


@pytest.mark.parametrize("op, value, observed, outcome", [
    ("<", 5, 4.9, "PASS"), ("<", 5, 5, "FAIL"), ("<", 5, 5.1, "FAIL"),
    ("<=", 5, 5, "PASS"), ("<=", 5, 5 + 1e-12, "PASS"), ("<=", 5, 5.01, "FAIL"),
    (">", 1, 1.01, "PASS"), (">", 1, 1, "FAIL"), (">", 1, 0.5, "FAIL"),
    (">=", 1, 1, "PASS"), (">=", 1, 1 - 1e-12, "PASS"), (">=", 1, 0.99, "FAIL"),
    ("==", 0, 0, "PASS"), ("==", 0, 1, "FAIL"), ("==", 0.3, 0.1 + 0.2, "PASS"),
    ("!=", 0, 1, "PASS"), ("!=", 0, 0, "FAIL"),
])
def test_every_comparison(op, value, observed, outcome):
    verdict = evaluate({"m": observed}, [Gate("m", op, value)], "replay")
    assert verdict.rows[0].outcome == outcome
    assert verdict.passed is (outcome == "PASS")
    assert verdict.status == ("PASS" if outcome == "PASS" else "FAIL")


def test_not_computable_and_unknown_metrics_are_na_and_block():
    gates = [Gate("sharpe", ">=", 1), Gate("no_such_metric", ">", 0), Gate("trade_count", ">=", 1)]
    verdict = evaluate({"sharpe": None, "trade_count": 5}, gates, "replay")
    assert [r.outcome for r in verdict.rows] == ["N/A", "N/A", "PASS"]
    assert "not computable" in verdict.rows[0].reason and "unknown metric" in verdict.rows[1].reason
    assert not verdict.passed and verdict.status == "FAIL"
    assert "sharpe (N/A)" in verdict.summary and "no_such_metric (N/A)" in verdict.summary


def test_warn_gates_never_fail_the_verdict():
    gates = [Gate("trade_count", ">=", 1), Gate("risk_denials", "<=", 10, severity="warn"),
             Gate("information_coefficient", ">", 0, severity="warn")]
    verdict = evaluate({"trade_count": 3, "risk_denials": 40, "information_coefficient": None}, gates, "replay")
    assert [r.outcome for r in verdict.rows] == ["PASS", "WARN", "N/A"]
    assert verdict.passed and verdict.status == "PASS"
    assert "2 warnings" in verdict.summary and "not blocking" in verdict.summary
    assert verdict.lines()[-1].startswith("verdict: PASS")


def test_modes_select_gates():
    gates = [Gate("days_run", ">=", 10, modes=("live-testnet",)), Gate("kill_switches", "==", 0)]
    replay = evaluate({"days_run": 2, "kill_switches": 0}, gates, "replay")
    assert [r.gate.metric for r in replay.rows] == ["kill_switches"] and replay.passed
    assert [g.metric for g in replay.skipped] == ["days_run"]
    live = evaluate({"days_run": 2, "kill_switches": 0}, gates, "live-testnet")
    assert [r.outcome for r in live.rows] == ["FAIL", "PASS"] and not live.passed


def test_no_applicable_gate_is_not_a_pass():
    verdict = evaluate({"days_run": 20}, [Gate("days_run", ">=", 10, modes=("live-testnet",))], "replay")
    assert not verdict.passed and "no gate applies" in verdict.summary


@pytest.mark.parametrize("body, message", [
    ('[[gates]]\nmetric = "sharpe"\nop = "=>"\nvalue = 1\n', "gates[0] (sharpe): key 'op'"),
    ('[[gates]]\nmetric = "sharpe"\nop = ">="\nvalue = "high"\n', "gates[0] (sharpe): key 'value'"),
    ('[[gates]]\nmetric = "sharpe"\nop = ">="\n', "gates[0] (sharpe): missing key 'value'"),
    ('[[gates]]\nmetric = "sharpe"\nop = ">="\nvalue = 1\nseverity = "fatal"\n', "key 'severity'"),
    ('[[gates]]\nmetric = "sharpe"\nop = ">="\nvalue = 1\nmodes = ["backtest"]\n', "unknown mode 'backtest'"),
    ('[[gates]]\nmetric = "a"\nop = ">="\nvalue = 1\n[[gates]]\nmetric = "b"\nop = ">"\nvalue = 1\nthreshold = 2\n',
     "gates[1] (b): unknown key 'threshold'"),
    ('[[gates]]\nmetric = "sharpe"\nop = ">="\nvalue = true\n', "key 'value'"),
    ("gates = 3\n", "array of tables"),
    ("[gate]\nmetric = 1\n", "unknown top-level key 'gate'"),
    ("[[gates]\n", "not valid TOML"),
])
def test_invalid_gates_files_name_the_gate_and_key(tmp_path, body, message):
    path = tmp_path / "gates.toml"
    path.write_text(body)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        load_gates(path)


def test_missing_gates_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_gates(tmp_path / "absent.toml")


def test_shipped_gates_encode_the_staging_exit_criteria():
    gates = {g.metric: g for g in load_gates(None)}
    assert DEFAULT_GATES.name == "gates.toml"
    assert (gates["days_run"].op, gates["days_run"].value, gates["days_run"].modes) == (">=", 10, ("live-testnet",))
    assert (gates["kill_switches"].op, gates["kill_switches"].value, gates["kill_switches"].modes) == ("==", 0, None)
    assert (gates["error_rate_pct"].op, gates["error_rate_pct"].value) == ("<", 5)
    assert "live-testnet" in gates["error_rate_pct"].modes
    assert (gates["skipped_runs"].op, gates["skipped_runs"].value) == ("==", 0)
    assert "live-testnet" in gates["skipped_runs"].modes
    assert (gates["run_completed"].op, gates["run_completed"].value, gates["run_completed"].modes) == ("==", 1, None)
    for name in ("sharpe", "max_drawdown_pct", "trade_count", "profit_factor"):
        assert gates[name].severity == "block" and gates[name].modes is None and gates[name].why
    from harness.metrics import METRICS

    assert set(gates) <= set(METRICS)           # no typo in the shipped file


def test_parse_gate_defaults():
    gate = parse_gate({"metric": "sharpe", "op": ">=", "value": 1})
    assert gate == Gate("sharpe", ">=", 1.0, None, "block", "")
    assert gate.rule == "sharpe >= 1"


# --------------------------------------------------------------------------------------------
# a journaled run: verdict_for_run and the `gate` command


def write_hand_run(reports, run_id: str, mode: str, equity: list[float], trades: int = 0, kill: bool = False):
    journal = Journal(reports)
    run = {"run_id": run_id, "mode": mode, "strategy": "hand", "symbols": ["BTC/USDT"], "timeframe": "1h",
           "cash": equity[0], "status": "running"}
    rj = {**run, "start": "2025-01-01T00:00:00Z", "end": f"2025-01-01T{len(equity):02d}:00:00Z",
          "bars": len(equity), "exchange": "binance"}
    journal.start_run(run, rj)
    eq = [{"ts": T0 + (i + 1) * H, "cash": v, "positions_value": 0.0, "equity": v, "gross_exposure": 0.0,
           "drawdown_pct": 0.0} for i, v in enumerate(equity)]
    tr = [{"trade_id": f"T{i}", "symbol": "BTC/USDT", "opened_at": T0 + i * 60_000, "closed_at": T0 + i * 60_000 + 1,
           "qty": 1.0, "entry_price": 100.0, "exit_price": 101.0, "pnl": 1.0, "return_pct": 1.0, "fees": 0.0}
          for i in range(trades)]
    events = [{"ts": T0 + H, "kind": "kill_switch", "symbol": "", "detail": "drawdown", "request_id": "",
               "data": json.dumps({"drawdown_pct": 12.0})}] if kill else []
    journal.finish_run(run_id, {"equity": table_from_rows("equity", eq), "trades": table_from_rows("trades", tr),
                                "events": table_from_rows("events", events)}, {"status": "completed"})
    return journal


def test_verdict_for_run_records_the_verdict(tmp_path):
    gates = tmp_path / "g.toml"
    gates.write_text('[[gates]]\nmetric = "kill_switches"\nop = "=="\nvalue = 0\n')
    journal = write_hand_run(tmp_path / "reports", "good-run", "replay", [100, 101, 102, 103])
    write_hand_run(tmp_path / "reports", "bad-run", "replay", [100, 90, 95, 96], kill=True)
    assert verdict_for_run(journal, "good-run", gates).status == "PASS"
    assert verdict_for_run(journal, "bad-run", gates).status == "FAIL"
    verdicts = {r["run_id"]: r["verdict"] for r in journal.list_runs()}
    assert verdicts == {"good-run": "PASS", "bad-run": "FAIL"}


def test_gate_command_exit_codes(workspace, cli):
    reports = workspace / "reports"
    write_hand_run(reports, "pass-run", "replay", [100, 101, 102, 103])
    write_hand_run(reports, "fail-run", "replay", [100, 90, 95, 96], kill=True)
    gates = workspace / "g.toml"
    gates.write_text('[[gates]]\nmetric = "kill_switches"\nop = "=="\nvalue = 0\n'
                     '[[gates]]\nmetric = "trade_count"\nop = ">="\nvalue = 30\nseverity = "warn"\n')

    ok = cli("gate", "pass-run", "--gates", str(gates))
    assert ok.code == 0, ok
    assert "PASS     kill_switches" in ok.stdout and "WARN     trade_count" in ok.stdout
    assert "verdict: PASS" in ok.stdout and "1 warning (warn-only, not blocking)" in ok.stdout

    bad = cli("gate", "fail-run", "--gates", str(gates), "--json")
    assert bad.code == 1, bad
    doc = bad.json()
    assert doc["status"] == "FAIL" and doc["gates"][0]["outcome"] == "FAIL" and doc["gates"][0]["observed"] == 1

    missing = cli("gate", "no-such-run")
    assert missing.code == 2 and missing.stdout == ""
    assert len(missing.stderr.strip().splitlines()) == 1 and "no-such-run" in missing.stderr

    broken = workspace / "broken.toml"
    broken.write_text('[[gates]]\nmetric = "sharpe"\nop = "~"\nvalue = 1\n')
    invalid = cli("gate", "pass-run", "--gates", str(broken))
    assert invalid.code == 2 and "key 'op'" in invalid.stderr and len(invalid.stderr.strip().splitlines()) == 1
