#!/usr/bin/env python3
"""Quantum Trader staging harness — command line.

Each command parses its options and calls one public function of ``harness``. Heavy imports
happen inside the commands so ``python cli.py --help`` answers instantly.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

import click

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class HarnessGroup(click.Group):
    """Turns the harness's errors into one line on stderr and the documented exit codes."""

    def invoke(self, ctx: click.Context):
        from harness.errors import HarnessError, UserError

        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(EXIT_USAGE)
        except HarnessError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(EXIT_FAIL)
        except (click.exceptions.Exit, click.ClickException, click.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:  # a bug: say so in one line, keep the traceback for QT_DEBUG=1
            if os.environ.get("QT_DEBUG"):
                traceback.print_exc()
            click.echo(f"internal error: {type(exc).__name__}: {exc} (set QT_DEBUG=1 for the traceback)", err=True)
            ctx.exit(EXIT_FAIL)


class Workspace:
    """Where this invocation reads and writes: datasets, reports, config file."""

    def __init__(self, datasets_dir: str, reports_dir: str, config: str | None):
        self.datasets = Path(datasets_dir)
        self.reports = Path(reports_dir)
        self.config = config

    def store(self):
        from harness.datasets import Store

        return Store(self.datasets)

    def journal(self):
        from harness.journal import Journal

        return Journal(self.reports)

    def load_config(self, profile=None, overrides=(), values=None):
        from harness.config import load_config

        return load_config(self.config, profile=profile, overrides=tuple(overrides), values=values)


def emit_json(data) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def parse_params(items: tuple[str, ...]) -> dict:
    """``--param k=v`` pairs; values read as TOML scalars (numbers, booleans, strings)."""
    from harness.config import _parse_scalar
    from harness.errors import StrategyError

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise StrategyError(f"--param {item!r} is malformed: use name=value, e.g. --param fast=10")
        out[key.strip()] = _parse_scalar(value.strip())
    return out


@click.group(cls=HarnessGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--datasets-dir", envvar="QT_DATASETS_DIR", default="datasets", show_default=True,
              help="Recorded market data (env QT_DATASETS_DIR).")
@click.option("--reports-dir", envvar="QT_REPORTS_DIR", default="reports", show_default=True,
              help="Run journals and reports (env QT_REPORTS_DIR).")
@click.option("--config", "config_path", envvar="QT_CONFIG", default=None,
              help="TOML config file (env QT_CONFIG; default config/config.toml).")
@click.pass_context
def cli(ctx: click.Context, datasets_dir: str, reports_dir: str, config_path: str | None) -> None:
    """Quantum Trader staging harness: replay market data through strategies and risk limits,
    trade the Binance spot testnet, and gate promotion on the evidence."""
    ctx.obj = Workspace(datasets_dir, reports_dir, config_path)


# ---------------------------------------------------------------------------------------------
# data


@cli.group(cls=HarnessGroup)
def data() -> None:
    """Recorded market data: synthesise, import, fetch, record, list, check."""


@data.command("synth")
@click.option("--symbols", default="BTC/USDT", show_default=True, help="Comma-separated symbols.")
@click.option("--days", type=click.IntRange(min=1), default=30, show_default=True)
@click.option("--timeframe", default="1m", show_default=True)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--scenario", type=click.Choice(["calm", "trend", "crash", "halt"]), default="calm", show_default=True)
@click.option("--end", default=None, help="Close time of the last bar (ISO-8601, default: today 00:00 UTC).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def data_synth(ws: Workspace, symbols, days, timeframe, seed, scenario, end, as_json) -> None:
    """Generate seeded, realistic synthetic bars under exchange=synthetic."""
    from harness.model import parse_symbols, parse_time
    from harness.sources.synthetic import synth_to_store

    results = synth_to_store(ws.store(), parse_symbols(symbols), days=days, timeframe=timeframe, seed=seed,
                             scenario=scenario, end=None if end is None else parse_time(end))
    if as_json:
        emit_json(results)
    else:
        for r in results:
            click.echo(f"synthetic {r['symbol']} {r['timeframe']} {r['scenario']}: {r['bars']:,} bars "
                       f"{r['first']} .. {r['last']} ({r['added']:,} new)")


@data.command("import")
@click.argument("paths", nargs=-1, required=True)
@click.option("--exchange", default="binance", show_default=True, help="Exchange id to store the bars under.")
@click.option("--symbol", default=None, help="Symbol, when the file name does not say it.")
@click.option("--timeframe", default=None, help="Expected timeframe (checked against the data's spacing).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def data_import(ws: Workspace, paths, exchange, symbol, timeframe, as_json) -> None:
    """Import Binance public-data kline CSV/ZIP, freqtrade feather/json, or OHLCV Parquet/CSV files."""
    from harness.sources.binance_files import import_paths

    results = import_paths(ws.store(), list(paths), exchange=exchange, symbol=symbol, timeframe=timeframe)
    if as_json:
        emit_json(results)
    else:
        for r in results:
            click.echo(f"imported {r['path']}: {r['symbol']} {r['timeframe']} {r['bars']:,} bars "
                       f"{r['first']} .. {r['last']} ({r['added']:,} new, {r['unchanged']:,} already stored)")


def market_source_options(fn):
    """Where ``data fetch`` / ``data record`` read bars: mainnet public data, the testnet or a paper exchange."""
    options = [
        click.option("--symbols", required=True, help="Comma-separated symbols."),
        click.option("--timeframe", default="1m", show_default=True),
        click.option("--testnet", is_flag=True, help="The Binance spot testnet's bars (stored under binance-testnet)."),
        click.option("--exchange-url", default=None,
                     help="A loopback paper exchange's bars, e.g. http://127.0.0.1:8765 (stored under binance-paper)."),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON document."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@data.command("fetch")
@market_source_options
@click.option("--days", type=click.IntRange(min=1), required=True)
@click.option("--exchange", default="binance", show_default=True)
@click.option("--end", default=None, help="End of the window (ISO-8601, default: now).")
@click.pass_obj
def data_fetch(ws: Workspace, symbols, timeframe, testnet, exchange_url, as_json, days, exchange, end) -> None:
    """Fetch history through ccxt (resumes from the last stored bar; stores market rules).

    By default Binance's public mainnet market data, read-only and without keys."""
    from harness.model import parse_symbols, parse_time
    from harness.sources.ccxt_history import fetch_to_store

    results = fetch_to_store(ws.store(), ws.load_config(), parse_symbols(symbols), days=days, timeframe=timeframe,
                             exchange=exchange, end=None if end is None else parse_time(end), url=exchange_url,
                             testnet=testnet)
    if as_json:
        emit_json(results)
    else:
        for r in results:
            click.echo(f"fetched {r['symbol']} {r['timeframe']}: {r['added']:,} new bars, "
                       f"stored {r['first']} .. {r['last']}")


@data.command("record")
@market_source_options
@click.option("--duration", default=None, help="Stop after this long (e.g. 2h; default: until Ctrl-C).")
@click.pass_obj
def data_record(ws: Workspace, symbols, timeframe, testnet, exchange_url, as_json, duration) -> None:
    """Tap live closed bars into datasets/ without trading (Ctrl-C stops; nothing polled is lost).

    By default Binance's public mainnet market data, read-only and without keys."""
    from harness.model import parse_duration, parse_symbols
    from harness.tap import record_bars

    def say(text: str) -> None:
        click.echo(text, err=True)

    results = record_bars(ws.store(), ws.load_config(), parse_symbols(symbols), timeframe=timeframe,
                          duration_ms=None if duration is None else parse_duration(duration), url=exchange_url,
                          testnet=testnet, say=say)
    if as_json:
        emit_json(results)
    else:
        for r in results:
            click.echo(f"recorded {r['symbol']} {r['timeframe']} under {r['exchange']}: {r['added']:,} bars, "
                       f"{r['missing']} missing, last {r['last']}")


@data.command("list")
@click.option("--exchange", default=None, help="Only this exchange id.")
@click.option("--symbols", default=None, help="Only these symbols.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def data_list(ws: Workspace, exchange, symbols, as_json) -> None:
    """What is recorded: symbol, timeframe, first, last, bars, gaps."""
    from harness.model import parse_symbols

    infos = [i.to_dict() for i in ws.store().list(exchange, None if symbols is None else parse_symbols(symbols))]
    if as_json:
        emit_json(infos)
        return
    if not infos:
        click.echo(f"nothing recorded under {ws.datasets}/ — try: python cli.py data synth --days 30")
        return
    from harness.console import table

    click.echo(table(["exchange", "symbol", "tf", "first", "last", "bars", "gaps", "missing"],
                     [[i["exchange"], i["symbol"], i["timeframe"], i["first"], i["last"], f"{i['bars']:,}", i["gaps"],
                       f"{i['missing_bars']:,}"] for i in infos], right={"bars", "gaps", "missing"}))


@data.command("check")
@click.option("--exchange", default=None, help="Only this exchange id.")
@click.option("--symbols", default=None, help="Only these symbols.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def data_check(ws: Workspace, exchange, symbols, as_json) -> None:
    """Quality check: gaps, duplicates, OHLC inconsistencies, non-positive prices, flat runs.

    Exits 1 when a series has an issue."""
    from harness.errors import DatasetError
    from harness.model import parse_symbols

    store = ws.store()
    wanted = None if symbols is None else set(parse_symbols(symbols))
    series = [s for s in store.series() if (exchange is None or s[0] == exchange) and (wanted is None or s[1] in wanted)]
    if not series:
        raise DatasetError(f"nothing recorded under {ws.datasets}/ matches; see python cli.py data list")
    reports = [store.check(*s) for s in series]
    if as_json:
        emit_json(reports)
    else:
        for r in reports:
            verdict = "ok" if r["ok"] else "; ".join(r["issues"])
            click.echo(f"{r['exchange']} {r['symbol']} {r['timeframe']}: {r['bars']:,} bars — {verdict}")
            for a, b in r["gap_spans"][:10]:
                click.echo(f"    gap {a} .. {b}")
    if not all(r["ok"] for r in reports):
        sys.exit(EXIT_FAIL)


# ---------------------------------------------------------------------------------------------
# replay, runs, sql


def strategy_options(fn):
    """Options shared by ``replay`` and ``live``: what to trade and how it is configured."""
    options = [
        click.option("--symbols", default=None, help="Comma-separated symbols (default: run.symbols)."),
        click.option("--timeframe", default=None, help="Bar size, e.g. 1m, 15m, 1h (default: run.timeframe)."),
        click.option("--strategy", default=None, help="Shipped name or path/to/file.py:Class (default: run.strategy)."),
        click.option("--param", "params", multiple=True, metavar="K=V", help="Strategy parameter (repeatable)."),
        click.option("--cash", type=float, default=None, help="Starting cash in the quote asset (default: run.cash)."),
        click.option("--profile", default=None, help="Config profile, e.g. staging."),
        click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
                     help="Override any config key for this run (repeatable)."),
        click.option("--gates", "gates_path", default=None, help="Gates file (default config/gates.toml)."),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON summary on stdout."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def run_config(ws: Workspace, symbols, timeframe, strategy, params, cash, profile, overrides):
    values = {}
    if symbols:
        from harness.model import parse_symbols

        values["run.symbols"] = parse_symbols(symbols)
    if timeframe:
        values["run.timeframe"] = timeframe
    if strategy:
        values["run.strategy"] = strategy
    if cash is not None:
        values["run.cash"] = cash
    config = ws.load_config(profile=profile, overrides=overrides, values=values)
    if params:
        merged = {**config.strategy.params, **parse_params(params)}
        config = config.replace(strategy=type(config.strategy)(params=merged))
    return config


def print_summary(summary: dict) -> None:
    from harness.console import summary_lines

    click.echo("\n".join(summary_lines(summary)))


@cli.command()
@click.option("--days", type=float, required=True, help="Length of the window in days.")
@click.option("--end", default=None, help="End of the window (ISO-8601; default: the last bar recorded).")
@strategy_options
@click.option("--speed", type=float, default=None,
              help="Paced replay through the live code path at N x real time (mode 'paced').")
@click.option("--no-report", is_flag=True, help="Skip the HTML report (the verdict is still computed).")
@click.pass_obj
def replay(ws: Workspace, days, end, symbols, timeframe, strategy, params, cash, profile, overrides,
           gates_path, as_json, speed, no_report) -> None:
    """Replay recorded bars through a strategy, the risk guard and the paper broker into the journal."""
    from harness.model import parse_time

    config = run_config(ws, symbols, timeframe, strategy, params, cash, profile, overrides)
    end_ms = None if end is None else parse_time(end)
    from harness.console import Progress

    progress = Progress("replay")
    if speed is not None:
        from harness.paced import paced_replay

        result = paced_replay(config, ws.store(), ws.journal(), days=days, end=end_ms, speed=speed,
                              report=not no_report, gates_path=gates_path)
    else:
        from harness.engine import replay as run_replay

        result = run_replay(config, ws.store(), ws.journal(), days=days, end=end_ms, progress=progress,
                            report=not no_report, gates_path=gates_path)
    progress.close()
    if as_json:
        emit_json(result.summary)
    else:
        print_summary(result.summary)
    if result.summary.get("status") == "failed":
        sys.exit(EXIT_FAIL)


@cli.command()
@click.option("--testnet", is_flag=True, help="Trade the Binance spot testnet (ccxt sandbox mode).")
@click.option("--exchange-url", default=None, help="Trade a paper exchange on loopback, e.g. http://127.0.0.1:8765.")
@strategy_options
@click.option("--duration", default=None, help="Stop after this long on the exchange's clock, e.g. 10d, 2h, 30m.")
@click.option("--resume", "resume_id", default=None, metavar="RUN_ID",
              help="Continue a live run that stopped (reconciles journal and exchange first).")
@click.option("--warmup", type=click.IntRange(min=0), default=None, help="History bars backfilled (live.warmup_bars).")
@click.option("--status-port", type=click.IntRange(min=0, max=65535), default=None,
              help="Serve /health, /health/scheduler, /metrics ... on 127.0.0.1:PORT.")
@click.option("--log-file", default=None, help="Write JSON log lines to this file instead of stderr.")
@click.option("--alert-webhook", default=None, help="POST each alert as JSON to this URL.")
@click.option("--drill", type=click.Choice(["skipped-run", "error-burst", "low-confidence", "kill-switch"]),
              default=None, help="Inject a fault so its alert can be tested (paper exchange only).")
@click.option("--no-report", is_flag=True, help="Skip the HTML report at the end.")
@click.pass_obj
def live(ws: Workspace, testnet, exchange_url, symbols, timeframe, strategy, params, cash, profile, overrides,
         gates_path, as_json, duration, resume_id, warmup, status_port, log_file, alert_webhook, drill,
         no_report) -> None:
    """Trade live bars through the strategy and the risk guard on the testnet or a paper exchange.

    Refuses to start without --testnet or a loopback --exchange-url: mainnet is never traded.
    SIGINT / SIGTERM cancel open orders and close the run cleanly."""
    from harness.live import LiveOptions, check_live_environment, run_live
    from harness.model import parse_duration

    options = LiveOptions(testnet=testnet, url=exchange_url, resume=resume_id,
                          duration_ms=None if duration is None else parse_duration(duration), warmup_bars=warmup,
                          status_port=status_port,
                          hooks={"report": not no_report, "gates_path": gates_path, "log_file": log_file,
                                 "alert_webhook": alert_webhook, "drill": drill})
    if resume_id:
        from harness.resume import resume_config

        options.resume, config = resume_config(ws.journal(), resume_id, ws.config)
    else:
        config = run_config(ws, symbols, timeframe, strategy, params, cash, profile, overrides)
    check_live_environment(config, options)
    result = run_live(config, ws.store(), ws.journal(), options)
    if as_json:
        emit_json(result.summary)
    else:
        print_summary(result.summary)
    if result.summary.get("status") == "failed":
        sys.exit(EXIT_FAIL)


@cli.group(cls=HarnessGroup, invoke_without_command=True)
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_context
def runs(ctx: click.Context, limit, as_json) -> None:
    """List runs with their status and verdict (newest first); `runs show RUN_ID` for one."""
    if ctx.invoked_subcommand is not None:
        return
    from harness.console import run_brief, table

    rows = [run_brief(r) for r in ctx.obj.journal().list_runs(limit)]
    if as_json:
        emit_json(rows)
        return
    if not rows:
        click.echo(f"no runs in {ctx.obj.reports}/ yet — try: python cli.py replay --days 7")
        return
    columns = ["run_id", "mode", "strategy", "symbols", "status", "return %", "verdict"]
    click.echo(table(columns, [[r["run_id"], r["mode"], r["strategy"], r["symbols"], r["status"],
                                None if r["return_pct"] is None else f"{r['return_pct']:+.2f}", r["verdict"]]
                               for r in rows], right={"return %"}))


@runs.command("show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def runs_show(ws: Workspace, run_id, as_json) -> None:
    """One run: its record, counts, risk denials and kill switches."""
    from harness.runs import describe_run

    info = describe_run(ws.journal(), run_id)
    if as_json:
        emit_json(info)
        return
    for key, value in info.items():
        if isinstance(value, dict | list):
            value = json.dumps(value, default=str)
        click.echo(f"{key:<18} {value}")


@cli.command()
@click.argument("query")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as one JSON document.")
@click.option("--limit", type=int, default=200, show_default=True, help="Rows printed in table form.")
@click.pass_obj
def sql(ws: Workspace, query, as_json, limit) -> None:
    """DuckDB SQL over the journal (runs, orders, fills, trades, equity, events, signals) and `bars`."""
    from harness.runs import run_sql

    columns, rows = run_sql(ws.journal(), ws.datasets, query)
    if as_json:
        emit_json([dict(zip(columns, row, strict=True)) for row in rows])
        return
    from harness.console import table

    click.echo(table([str(c) for c in columns], rows[:limit]))
    if len(rows) > limit:
        click.echo(f"... {len(rows) - limit:,} more rows (use --limit or --json)")


# ---------------------------------------------------------------------------------------------
# evidence: report and gate


@cli.command()
@click.argument("run_id")
@click.option("--vs", "other", default=None, metavar="OTHER_RUN_ID",
              help="Compare with another run over the common window.")
@click.option("--gates", "gates_path", default=None, help="Gates file (default config/gates.toml).")
@click.option("-o", "--output", default=None, help="Where to write the HTML (default reports/RUN_ID/report.html).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def report(ws: Workspace, run_id, other, gates_path, output, as_json) -> None:
    """Write a run's self-contained HTML evaluation report (verdict, metrics, charts, trades)."""
    from harness.report import make_report

    path, verdict = make_report(ws.journal(), run_id, gates_path=gates_path, output=output, vs=other,
                                datasets_dir=ws.datasets)
    if as_json:
        emit_json({"run_id": run_id, "report": str(path), "vs": other, "verdict": verdict.status,
                   "summary": verdict.summary})
    else:
        click.echo(f"report  {path}")
        click.echo(f"verdict {verdict.summary}")


@cli.command()
@click.argument("run_id")
@click.option("--gates", "gates_path", default=None, help="Gates file (default config/gates.toml).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.pass_obj
def gate(ws: Workspace, run_id, gates_path, as_json) -> None:
    """Evaluate a run against the promotion gates: exit 0 on PASS, 1 on FAIL."""
    from harness.gates import verdict_for_run

    journal = ws.journal()
    verdict = verdict_for_run(journal, run_id, gates_path=gates_path, datasets_dir=ws.datasets)
    if as_json:
        emit_json({"run_id": run_id, **verdict.to_dict()})
    else:
        click.echo(f"gate: run {run_id} (mode {verdict.mode}), gates {verdict.source}")
        for line in verdict.lines():
            click.echo(line)
    sys.exit(EXIT_OK if verdict.passed else EXIT_FAIL)


# ---------------------------------------------------------------------------------------------
# exchange


@cli.group(cls=HarnessGroup)
def exchange() -> None:
    """The paper exchange: a Binance-compatible spot REST server on loopback."""


@exchange.command("serve")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="Port on 127.0.0.1 (0 = any free port).")
@click.option("--symbols", default=None, help="Comma-separated symbols (default: all recorded for --exchange).")
@click.option("--speed", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Replay speed: the exchange clock runs N times faster than real time.")
@click.option("--balance", "balances", multiple=True, metavar="ASSET=AMOUNT",
              help="Starting balance, repeatable (default: USDT=10000).")
@click.option("--api-key", envvar="QT_EXECUTION_BINANCE_API_KEY", default=None, show_envvar=True,
              help="The API key clients must send.")
@click.option("--api-secret", envvar="QT_EXECUTION_BINANCE_API_SECRET", default=None, show_envvar=True,
              help="The secret clients sign with.")
@click.option("--exchange", "exchange_id", default=None,
              help="datasets/ exchange id to replay (default: binance, else synthetic).")
@click.option("--timeframe", default="1m", show_default=True, help="Bar timeframe replayed.")
@click.option("--start", default=None, help="Recorded time replayed first (ISO-8601; default: 1 day in).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the synthetic order book.")
@click.option("--fee-asset", type=click.Choice(["received", "quote"]), default="received", show_default=True,
              help="Fees in the asset received (Binance) or always in quote (the paper broker's way).")
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Config override, e.g. --set slippage.bps=0 (fees, slippage, fills).")
@click.pass_obj
def exchange_serve(ws: Workspace, port, symbols, speed, balances, api_key, api_secret, exchange_id, timeframe,
                   start, seed, fee_asset, overrides) -> None:
    """Serve recorded bars as a Binance spot exchange on 127.0.0.1 until Ctrl-C.

    Point any ccxt binance client at it: sandbox mode, then every urls['api'] entry rewritten
    to http://127.0.0.1:PORT (path kept)."""
    from harness.model import parse_symbols, parse_time
    from harness.paper_exchange import parse_balances, serve

    serve(ws.store(), ws.load_config(overrides=overrides), None if symbols is None else list(parse_symbols(symbols)),
          port=port, speed=speed, balances=parse_balances(balances) if balances else None, api_key=api_key,
          api_secret=api_secret, exchange=exchange_id, timeframe=timeframe,
          start=None if start is None else parse_time(start), seed=seed, fee_asset=fee_asset,
          announce=lambda line: click.echo(line))


# ---------------------------------------------------------------------------------------------
# smoke


@cli.command()
@click.option("--url", default="http://127.0.0.1:8787", show_default=True,
              help="The status endpoint of a live run (live --status-port PORT).")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
              help="Seconds to wait for each reply.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def smoke(url, timeout, as_json) -> None:
    """Staging smoke check of a running live session: every status endpoint, fresh timestamps,
    the risk snapshot, not degraded. Exit 0 when all is well, 1 otherwise."""
    from harness.smoke import SUCCESS, smoke_check

    checks = smoke_check(url, timeout_s=timeout)
    failed = [c for c in checks if not c.ok]
    if as_json:
        emit_json({"url": url, "ok": not failed, "checks": [c.to_dict() for c in checks]})
    else:
        for check in checks:
            click.echo(check.line())
        click.echo(SUCCESS if not failed else f"API smoke check failed: {len(failed)} of {len(checks)} checks "
                   f"failed ({'; '.join(c.name for c in failed)}).")
    sys.exit(EXIT_OK if not failed else EXIT_FAIL)


if __name__ == "__main__":
    cli()
