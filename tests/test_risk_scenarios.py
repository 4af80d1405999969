"""Risk limits in whole replays on a synthetic crash (``data synth --scenario crash``).

A strategy that keeps buying meets the position limit; buy-and-hold through the crash meets
the drawdown kill switch; a burst of orders every bar meets the order-rate limit. Each is run
through ``python cli.py`` as a user would, and judged on the journal.
"""

from __future__ import annotations

import json

import duckdb
import pytest

from tests.helpers.market import HELPERS

STRATS = HELPERS / "risk_strategies.py"


@pytest.fixture(scope="module")
def crash(tmp_path_factory):
    """Ten days of synthetic 1m BTC/USDT bars with a crash, written by the CLI."""
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    root = tmp_path_factory.mktemp("crash")
    env = {**os.environ, "QT_DATASETS_DIR": str(root / "datasets"), "QT_CONFIG": str(ROOT / "config" / "config.toml")}
    proc = subprocess.run([sys.executable, str(ROOT / "cli.py"), "data", "synth", "--symbols", "BTC/USDT",
                           "--days", "10", "--scenario", "crash", "--seed", "11", "--end", "2026-01-01"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return root


def replay(cli, crash, tmp_path, strategy: str, *sets: str, days: str = "10"):
    args = ["--datasets-dir", str(crash / "datasets"), "--reports-dir", str(tmp_path / "reports"), "replay",
            "--days", days, "--symbols", "BTC/USDT", "--strategy", f"{STRATS}:{strategy}",
            "--set", "run.exchange=synthetic", "--no-report", "--json"]
    for item in sets:
        args += ["--set", item]
    result = cli(*args)
    assert result.code == 0, result
    summary = result.json()
    con = duckdb.connect(str(tmp_path / "reports" / "journal.duckdb"), read_only=True)
    try:
        def rows(sql):
            cur = con.execute(sql, [summary["run_id"]])
            names = [d[0] for d in cur.description]
            return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        tables = {name: rows(f"select * from {name} where run_id = ? order by all") for name in
                  ("orders", "fills", "events", "equity")}
    finally:
        con.close()
    return summary, tables


def test_keep_buying_meets_the_position_limit(cli, crash, tmp_path):
    limit = 5_000.0
    summary, t = replay(cli, crash, tmp_path, "KeepBuying", f"risk.max_position_notional={limit}", days="2")
    denials = [e for e in t["events"] if e["kind"] == "risk_denied"]
    assert summary["risk_denials_by_limit"].get("max_position_notional", 0) == len(denials) > 100
    for event in denials:                                    # each denial says what it saw and the limit
        data = json.loads(event["data"])
        assert data["limit"] == "max_position_notional" and data["threshold"] == limit
        assert data["observed"] > limit and "max_position_notional" in event["detail"]
    rejected = [o for o in t["orders"] if o["status"] == "rejected"]
    assert len(rejected) == len(denials) and all(o["reason"].startswith("risk: ") for o in rejected)
    held = 0.0
    for fill in t["fills"]:                                  # never a fill that takes the holding past it
        held += fill["qty"] if fill["side"] == "buy" else -fill["qty"]
        assert held * fill["price"] <= limit * 1.01          # 1%: the order was judged at the previous close
    assert held > 0


def test_drawdown_kill_switch_flattens_and_halts(cli, crash, tmp_path):
    summary, t = replay(cli, crash, tmp_path, "BuyAndHold", "risk.max_drawdown_pct=10")
    assert summary["status"] == "halted" and summary["kill_switch"] is True
    (kill,) = [e for e in t["events"] if e["kind"] == "kill_switch"]
    info = json.loads(kill["data"])
    assert info["drawdown_pct"] >= 10 and info["threshold"] == 10
    guard = [o for o in t["orders"] if o["origin"] == "guard"]
    assert guard and all(o["side"] == "sell" and o["status"] == "filled" for o in guard)
    held = sum(f["qty"] if f["side"] == "buy" else -f["qty"] for f in t["fills"])
    assert held == pytest.approx(0.0, abs=1e-9)              # flat
    last = t["equity"][-1]
    assert last["positions_value"] == pytest.approx(0.0, abs=1e-6)
    # the strategy tries three buy-backs after the halt (tests/helpers/risk_strategies.py): all refused
    after = [o for o in t["orders"] if o["ts"] >= kill["ts"] and o["side"] == "buy"]
    assert len(after) == 3, after
    assert all(o["status"] == "rejected" and o["reason"].startswith("risk: halted") for o in after), after
    assert not [f for f in t["fills"] if f["side"] == "buy" and f["ts"] >= kill["ts"]]
    halted = [json.loads(e["data"]) for e in t["events"] if e["kind"] == "risk_denied"]
    assert [d["limit"] for d in halted] == ["halted"] * 3 and summary["risk_denials"] == 3


def test_order_rate_limit_holds_under_a_burst_every_bar(cli, crash, tmp_path):
    summary, t = replay(cli, crash, tmp_path, "Burst", "risk.max_orders_per_minute=2", "run.cash=100000",
                        days="1")
    accepted = sorted(o["ts"] for o in t["orders"] if o["status"] != "rejected")
    assert len(accepted) >= 2 * 1000
    for i in range(len(accepted)):                           # any rolling minute holds at most two
        window = [ts for ts in accepted[i:i + 3] if (ts - accepted[i]).total_seconds() < 60]
        assert len(window) <= 2
    assert summary["risk_denials_by_limit"] == {"max_orders_per_minute": summary["risk_denials"]}
    assert summary["risk_denials"] >= 1000
