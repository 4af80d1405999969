"""Looking at runs after the fact: one run's description, and SQL over the journal and the bars."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from harness.errors import JournalError, UserError
from harness.journal import TABLES, Journal


def describe_run(journal: Journal, run_id: str) -> dict[str, Any]:
    """A run's record plus counts per table, risk denials by limit and kill switches."""
    with journal.connect(read_only=True) as con:
        run = journal.run_row(run_id, con)
        rid = run["run_id"]
        counts = {name: con.execute(f'SELECT count(*) FROM "{name}" WHERE run_id = ?', [rid]).fetchone()[0]
                  for name in TABLES}
        denials = con.execute(
            "SELECT coalesce(json_extract_string(data, '$.limit'), '?') AS lim, count(*) FROM events "
            "WHERE run_id = ? AND kind = 'risk_denied' GROUP BY lim ORDER BY lim", [rid]).fetchall()
        kills = con.execute("SELECT ts, detail FROM events WHERE run_id = ? AND kind = 'kill_switch' ORDER BY ts",
                            [rid]).fetchall()
    out = {k: (str(v) if hasattr(v, "isoformat") else v) for k, v in run.items() if k != "summary"}
    out["params"] = json.loads(run["params"]) if run.get("params") else {}
    out["counts"] = counts
    out["risk_denials"] = sum(n for _, n in denials)
    out["risk_denials_by_limit"] = {lim: n for lim, n in denials}
    out["kill_switches"] = [{"ts": str(ts), "detail": detail} for ts, detail in kills]
    out["folder"] = str(journal.run_dir(rid))
    return out


def run_sql(journal: Journal, datasets_dir: str | Path, query: str) -> tuple[list[str], list[tuple]]:
    """Run ``query`` in DuckDB with the journal's tables and ``bars`` as views; read-only."""
    import duckdb

    con = duckdb.connect(":memory:")
    try:
        if journal.db_path.exists():
            _attach(con, journal.db_path)
            for name in ("runs", *TABLES):
                con.execute(f'CREATE VIEW "{name}" AS SELECT * FROM journal."{name}"')
        root = Path(datasets_dir)
        if any(root.glob("exchange=*/symbol=*/timeframe=*/date=*/*.parquet")):
            pattern = str(root / "**" / "*.parquet").replace("'", "''")
            con.execute(f"CREATE VIEW bars AS SELECT * FROM read_parquet('{pattern}', hive_partitioning = true, "
                        "union_by_name = true)")
        try:
            cur = con.execute(query)
        except duckdb.Error as exc:
            first = str(exc).strip().splitlines()[0]
            raise UserError(f"SQL error: {first}") from None
        if cur.description is None:
            return [], []
        return [d[0] for d in cur.description], cur.fetchall()
    finally:
        con.close()


def _attach(con, path: Path, timeout: float = 30.0) -> None:
    import duckdb

    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        try:
            con.execute(f"ATTACH '{str(path).replace(chr(39), chr(39) * 2)}' AS journal (READ_ONLY)")
            return
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                raise JournalError(f"cannot open {path}: {exc}") from None
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
