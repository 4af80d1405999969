"""The journal: every run's orders, fills, trades, equity, events and signals.

Two stores, one truth:

- ``reports/journal.duckdb`` holds every table with a ``run_id`` column and is what SQL,
  ``runs``, ``report`` and ``gate`` read. Writers open it for a moment per batch and close
  it again, so another process (a second replay, ``runs`` during a live run) gets in between;
  both sides retry while DuckDB's file lock is held by someone else.
- ``reports/<run_id>/`` holds ``run.json`` and one Parquet file per table, written atomically
  when a run ends; a live run also keeps its write-ahead log there (``journal.wal``, see
  :class:`harness.recorder.DurableRecorder`). The Parquet files leave out
  ``run_id`` (the folder names the run) and every wall-clock field, so the same replay gives
  byte-identical files.
"""

from __future__ import annotations

import json
import random
import subprocess
import time
import uuid
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute

from harness import atomic
from harness.errors import JournalError, RunNotFound

TS = pa.timestamp("ms", tz="UTC")

SCHEMAS: dict[str, pa.Schema] = {
    "orders": pa.schema([
        ("order_id", pa.string()), ("client_order_id", pa.string()), ("exchange_order_id", pa.string()),
        ("ts", TS), ("symbol", pa.string()), ("side", pa.string()), ("type", pa.string()),
        ("qty", pa.float64()), ("price", pa.float64()), ("stop_price", pa.float64()),
        ("status", pa.string()), ("reason", pa.string()), ("filled_qty", pa.float64()),
        ("avg_price", pa.float64()), ("origin", pa.string()), ("updated_at", TS),
    ]),
    "fills": pa.schema([
        ("fill_id", pa.string()), ("order_id", pa.string()), ("ts", TS), ("symbol", pa.string()),
        ("side", pa.string()), ("qty", pa.float64()), ("price", pa.float64()), ("fee", pa.float64()),
        ("fee_asset", pa.string()), ("liquidity", pa.string()), ("exchange_trade_id", pa.string()),
    ]),
    "trades": pa.schema([
        ("trade_id", pa.string()), ("symbol", pa.string()), ("opened_at", TS), ("closed_at", TS),
        ("qty", pa.float64()), ("entry_price", pa.float64()), ("exit_price", pa.float64()),
        ("pnl", pa.float64()), ("return_pct", pa.float64()), ("fees", pa.float64()),
    ]),
    "equity": pa.schema([
        ("ts", TS), ("cash", pa.float64()), ("positions_value", pa.float64()), ("equity", pa.float64()),
        ("gross_exposure", pa.float64()), ("drawdown_pct", pa.float64()),
    ]),
    "events": pa.schema([
        ("ts", TS), ("kind", pa.string()), ("symbol", pa.string()), ("detail", pa.string()),
        ("request_id", pa.string()), ("data", pa.string()),
    ]),
    "signals": pa.schema([
        ("ts", TS), ("symbol", pa.string()), ("signal", pa.float64()), ("confidence", pa.float64()),
        ("model_version", pa.string()), ("acted", pa.bool_()),
    ]),
}
TABLES = tuple(SCHEMAS)

RUN_COLUMNS: list[tuple[str, str]] = [
    ("run_id", "VARCHAR PRIMARY KEY"), ("mode", "VARCHAR"), ("strategy", "VARCHAR"), ("params", "VARCHAR"),
    ("symbols", "VARCHAR"), ("timeframe", "VARCHAR"), ("start", "TIMESTAMPTZ"), ("end", "TIMESTAMPTZ"),
    ("cash", "DOUBLE"), ("profile", "VARCHAR"), ("config_digest", "VARCHAR"), ("data_fingerprint", "VARCHAR"),
    ("code_version", "VARCHAR"), ("started_at", "TIMESTAMPTZ"), ("finished_at", "TIMESTAMPTZ"),
    ("status", "VARCHAR"), ("exchange", "VARCHAR"), ("synthetic", "BOOLEAN"), ("bars", "BIGINT"),
    ("final_equity", "DOUBLE"), ("return_pct", "DOUBLE"), ("verdict", "VARCHAR"), ("summary", "VARCHAR"),
    ("wal_seq", "BIGINT"),
]
_DUCK_TYPES = {pa.string(): "VARCHAR", pa.float64(): "DOUBLE", TS: "TIMESTAMPTZ", pa.bool_(): "BOOLEAN",
               pa.int64(): "BIGINT"}
LOCK_TIMEOUT_S = 30.0


def now_ms() -> int:
    """Wall-clock time in ms: for ``started_at``-style fields only, never on the simulation path."""
    return int(time.time() * 1000)


def new_run_id(strategy: str, clock_ms: int | None = None) -> str:
    """``20261126T183500Z-sma_cross-1a2b3c``: sortable by start time, unique, readable."""
    stamp = datetime.fromtimestamp((clock_ms or now_ms()) / 1000, tz=UTC).strftime("%Y%m%dT%H%M%SZ")
    safe = "".join(ch if ch.isalnum() or ch in "_-" else "_" for ch in strategy)[:32]
    return f"{stamp}-{safe}-{uuid.uuid4().hex[:6]}"


def code_version() -> str:
    """The git commit of the harness (``+dirty`` with local changes), or the package version."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
                              capture_output=True, text=True, timeout=5)
        if head.returncode == 0:
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=5)
            return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    from importlib.metadata import PackageNotFoundError, version

    try:
        return "v" + version("quantum-trader-harness")
    except PackageNotFoundError:
        return "unknown"


def empty_table(name: str) -> pa.Table:
    return SCHEMAS[name].empty_table()


def table_from_rows(name: str, rows: Iterable[dict[str, Any]]) -> pa.Table:
    """A table of ``name``'s schema from dict rows (times as ms ints; missing keys are null)."""
    schema = SCHEMAS[name]
    rows = list(rows)
    columns = []
    for f in schema:
        values = [r.get(f.name) for r in rows]
        if f.type == TS:
            columns.append(pa.array(values, pa.int64()).cast(TS))
        else:
            columns.append(pa.array(values, f.type))
    return pa.Table.from_arrays(columns, schema=schema)


@dataclass
class RunRecord:
    """Everything the journal holds about one run, as pandas frames (read side)."""

    run: dict[str, Any]
    run_json: dict[str, Any]
    orders: Any
    fills: Any
    trades: Any
    equity: Any
    events: Any
    signals: Any

    @property
    def run_id(self) -> str:
        return self.run["run_id"]


class Journal:
    """Read and write the journal under one ``reports/`` root."""

    def __init__(self, reports_dir: str | Path):
        self.root = Path(reports_dir)
        self.db_path = self.root / "journal.duckdb"
        self._schema_ok = False

    # -- connection handling ----------------------------------------------------------------

    @contextmanager
    def connect(self, read_only: bool = False):
        """A short-lived DuckDB connection, waiting (with jitter) while another process holds the lock."""
        import duckdb

        if read_only and not self.db_path.exists():
            raise RunNotFound(f"no journal at {self.db_path}: run a replay first (python cli.py replay --days N), "
                              "or point --reports-dir / QT_REPORTS_DIR at the reports folder")
        self.root.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        delay = 0.005
        while True:
            try:
                con = duckdb.connect(str(self.db_path), read_only=read_only)
                break
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise JournalError(f"cannot open {self.db_path}: {exc}") from None
                time.sleep(delay * (1 + random.random()))
                delay = min(delay * 2, 0.2)
        try:
            if not read_only and not self._schema_ok:
                self._ensure_schema(con)
                self._schema_ok = True
            yield con
        finally:
            con.close()

    def _ensure_schema(self, con) -> None:
        cols = ", ".join(f'"{n}" {t}' for n, t in RUN_COLUMNS)
        con.execute(f"CREATE TABLE IF NOT EXISTS runs ({cols})")
        for name, kind in RUN_COLUMNS[1:]:           # journals from older versions gain new columns
            con.execute(f'ALTER TABLE runs ADD COLUMN IF NOT EXISTS "{name}" {kind}')
        for name, schema in SCHEMAS.items():
            fields = ", ".join(f'"{f.name}" {_DUCK_TYPES[f.type]}' for f in schema)
            con.execute(f'CREATE TABLE IF NOT EXISTS "{name}" (run_id VARCHAR, {fields})')

    # -- write side -------------------------------------------------------------------------

    def run_dir(self, run_id: str) -> Path:
        return self.root / run_id

    def start_run(self, run: dict[str, Any], run_json: dict[str, Any]) -> Path:
        """Register a run (status ``running``) and write its ``run.json``."""
        folder = self.run_dir(run["run_id"])
        folder.mkdir(parents=True, exist_ok=False)
        self.write_run_json(run["run_id"], run_json)
        with self.connect() as con:
            self._upsert_run(con, run)
        return folder

    def write_run_json(self, run_id: str, data: dict[str, Any]) -> None:
        atomic.write_text(self.run_dir(run_id) / "run.json", json.dumps(data, indent=2, sort_keys=True, default=str))

    def update_run(self, run_id: str, **fields: Any) -> None:
        with self.connect() as con:
            self._update_run(con, run_id, fields)

    def _upsert_run(self, con, run: dict[str, Any]) -> None:
        names = [n for n, _ in RUN_COLUMNS]
        values = [_to_db(n, run.get(n)) for n in names]
        marks = ", ".join("?" for _ in names)
        con.execute(f"INSERT OR REPLACE INTO runs ({', '.join(chr(34) + n + chr(34) for n in names)}) "
                    f"VALUES ({marks})", values)

    def _update_run(self, con, run_id: str, fields: dict[str, Any]) -> None:
        if not fields:
            return
        sets = ", ".join(f'"{k}" = ?' for k in fields)
        con.execute(f"UPDATE runs SET {sets} WHERE run_id = ?", [_to_db(k, v) for k, v in fields.items()] + [run_id])

    def append(self, run_id: str, tables: dict[str, pa.Table], replace: tuple[str, ...] = (),
               run_fields: dict[str, Any] | None = None) -> None:
        """Add rows to the catalog as things happen (live runs), in one transaction.

        ``orders`` rows replace earlier rows of the same order (an order's current state);
        tables named in ``replace`` replace all of the run's rows (e.g. ``trades``, rebuilt
        from the fills); ``run_fields`` update the run's row.
        """
        with self.connect() as con:
            con.execute("BEGIN")
            try:
                for name, table in tables.items():
                    if name in replace:
                        con.execute(f'DELETE FROM "{name}" WHERE run_id = ?', [run_id])
                    if not table.num_rows:
                        continue
                    if name == "orders":
                        self.upsert_orders(run_id, table, con)
                    else:
                        self._insert(con, run_id, name, table)
                if run_fields:
                    self._update_run(con, run_id, run_fields)
                con.execute("COMMIT")
            except Exception:
                con.execute("ROLLBACK")
                raise

    def upsert_orders(self, run_id: str, orders: pa.Table, con=None) -> None:
        """Replace the catalog rows of these orders by their current state (live order tracking)."""
        ids = orders.column("order_id").to_pylist()
        last = {order_id: i for i, order_id in enumerate(ids)}          # a batch may hold several states
        if len(last) < len(ids):
            orders = orders.take(sorted(last.values()))

        def work(c):
            if last:
                c.execute("DELETE FROM orders WHERE run_id = ? AND order_id IN (SELECT unnest(?))",
                          [run_id, list(last)])
                self._insert(c, run_id, "orders", orders)
        if con is not None:
            work(con)
        else:
            with self.connect() as c:
                work(c)

    def _insert(self, con, run_id: str, name: str, table: pa.Table) -> None:
        table = table.cast(SCHEMAS[name])
        with_id = table.add_column(0, "run_id", pa.array([run_id] * table.num_rows, pa.string()))
        con.register("_incoming", with_id)
        try:
            con.execute(f'INSERT INTO "{name}" SELECT * FROM _incoming')
        finally:
            con.unregister("_incoming")

    def finish_run(self, run_id: str, tables: dict[str, pa.Table], run_fields: dict[str, Any],
                   replace: bool = True) -> None:
        """Write the run's Parquet files and catalog rows (replacing earlier ones) and close the run."""
        folder = self.run_dir(run_id)
        for name in TABLES:
            table = tables.get(name, empty_table(name)).cast(SCHEMAS[name])
            atomic.write_parquet(folder / f"{name}.parquet", table)
        with self.connect() as con:
            con.execute("BEGIN")
            try:
                for name in TABLES:
                    if replace:
                        con.execute(f'DELETE FROM "{name}" WHERE run_id = ?', [run_id])
                    table = tables.get(name)
                    if table is not None and table.num_rows:
                        self._insert(con, run_id, name, table)
                self._update_run(con, run_id, run_fields)
                con.execute("COMMIT")
            except Exception:
                con.execute("ROLLBACK")
                raise

    # -- read side --------------------------------------------------------------------------

    def read_tables(self, run_id: str, con=None) -> dict[str, pa.Table]:
        """The run's tables from the catalog, as Arrow tables without ``run_id``, in a stable order."""
        order = {"orders": "ts, order_id", "fills": "ts, fill_id", "trades": "trade_id",
                 "equity": "ts", "events": "ts, kind, symbol", "signals": "ts, symbol"}

        def work(c):
            out = {}
            for name, schema in SCHEMAS.items():
                cols = ", ".join(f'"{f.name}"' for f in schema)
                table = arrow_table(c, f'SELECT {cols} FROM "{name}" WHERE run_id = ? ORDER BY {order[name]}',
                                    [run_id])
                out[name] = table.cast(schema)
            return out
        if con is not None:
            return work(con)
        with self.connect(read_only=True) as c:
            return work(c)

    def run_row(self, run_id: str, con=None) -> dict[str, Any]:
        def work(c):
            cur = c.execute("SELECT * FROM runs WHERE run_id = ?", [run_id])
            found = cur.fetchall()
            row = found[0] if found else None
            if row is None:
                matches = c.execute("SELECT run_id FROM runs WHERE run_id LIKE ? ORDER BY run_id",
                                    [f"%{run_id}%"]).fetchall()
                if len(matches) == 1:
                    return self.run_row(matches[0][0], c)
                hint = f" (did you mean {', '.join(m[0] for m in matches[:3])}?)" if matches else ""
                raise RunNotFound(f"no run {run_id!r} in {self.db_path}{hint}; list runs with: python cli.py runs")
            names = [d[0] for d in cur.description]
            return dict(zip(names, row, strict=True))
        if con is not None:
            return work(con)
        with self.connect(read_only=True) as c:
            return work(c)

    def load(self, run_id: str) -> RunRecord:
        """The whole run, for metrics and reports (a live run's write-ahead log tail included)."""
        with self.connect(read_only=True) as con:
            run = self.run_row(run_id, con)
            tables = self.read_tables(run["run_id"], con)
        tail = read_wal(self.wal_path(run["run_id"]), run.get("wal_seq") or 0)
        if tail:
            tables = merge_wal(tables, tail)
        path = self.run_dir(run["run_id"]) / "run.json"
        run_json = json.loads(path.read_text()) if path.exists() else {}
        frames = {name: _to_pandas(t) for name, t in tables.items()}
        return RunRecord(run=run, run_json=run_json, **frames)

    def wal_path(self, run_id: str) -> Path:
        """The write-ahead log of a live run: every row, as it happens, before the catalog has it."""
        return self.run_dir(run_id) / "journal.wal"

    def apply_wal(self, run_id: str) -> int:
        """Write the rows of the log that the catalog lacks (after a crash); returns how many."""
        run = self.run_row(run_id)
        tail = read_wal(self.wal_path(run_id), run.get("wal_seq") or 0)
        if not tail:
            return 0
        tables = {name: table_from_rows(name, [row for _, t, row in tail if t == name]) for name in SCHEMAS}
        tables.pop("trades")
        self.append(run_id, tables, run_fields={"wal_seq": tail[-1][0]})
        return len(tail)

    def list_runs(self, limit: int | None = None) -> list[dict[str, Any]]:
        if not self.db_path.exists():
            return []
        with self.connect(read_only=True) as con:
            sql = "SELECT * FROM runs ORDER BY started_at DESC, run_id DESC"
            if limit:
                sql += f" LIMIT {int(limit)}"
            cur = con.execute(sql)
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def arrow_table(con, query: str, params: list | None = None) -> pa.Table:
    """A query's result as an Arrow table (DuckDB 2 ``to_arrow_table``, DuckDB 1 ``arrow``)."""
    relation = con.sql(query, params=params)
    fetch = getattr(relation, "to_arrow_table", None) or relation.arrow
    return fetch()


def read_wal(path: Path, after_seq: int = 0) -> list[tuple[int, str, dict[str, Any]]]:
    """(seq, table, row) of each complete line of a write-ahead log with seq > ``after_seq``.

    A torn last line (the process died mid-write) is ignored: its row was not acknowledged.
    """
    if not path.exists():
        return []
    out = []
    with path.open("r", encoding="utf-8") as fh:
        for line in fh:
            if not line.endswith("\n"):
                break
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                break
            if item["seq"] > after_seq:
                out.append((item["seq"], item["table"], item["row"]))
    return out


def merge_wal(tables: dict[str, pa.Table], tail: list[tuple[int, str, dict[str, Any]]]) -> dict[str, pa.Table]:
    """Catalog tables plus the log rows the catalog lacks (orders: the latest state wins)."""
    out = dict(tables)
    for name in ("fills", "events", "signals", "equity"):
        rows = [row for _, t, row in tail if t == name]
        if rows:
            out[name] = pa.concat_tables([out[name], table_from_rows(name, rows)])
    orders = {row["order_id"]: row for _, t, row in tail if t == "orders"}
    if orders:
        kept = out["orders"].filter(pa.compute.invert(pa.compute.is_in(out["orders"].column("order_id"),
                                                                        pa.array(list(orders)))))
        out["orders"] = pa.concat_tables([kept, table_from_rows("orders", orders.values())])
    if any(t == "fills" for _, t, _ in tail):
        from harness.model import Fill, Liquidity, Side
        from harness.recorder import trades_table

        f = out["fills"].to_pylist()
        fills = [Fill(r["fill_id"], r["order_id"], int(r["ts"].timestamp() * 1000), r["symbol"], Side(r["side"]),
                      r["qty"], r["price"], r["fee"], r["fee_asset"], Liquidity(r["liquidity"])) for r in f]
        out["trades"] = trades_table(fills)
    return out


def _to_pandas(table: pa.Table):
    return table.to_pandas()


def _to_db(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in ("start", "end", "started_at", "finished_at") and isinstance(value, int):
        return datetime.fromtimestamp(value / 1000, tz=UTC)
    if isinstance(value, dict | list | tuple) and name not in ("symbols",):
        return json.dumps(value, sort_keys=True, default=str)
    if name == "symbols" and isinstance(value, list | tuple):
        return ",".join(value)
    return value

