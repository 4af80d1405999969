"""The HTML report: parsed section by section, from a real-data replay and from hand-made runs."""

from __future__ import annotations

import os
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from harness.journal import Journal
from harness.report import METRIC_GROUPS, TRADES_HEAD, TRADES_TAIL, make_report, write_report
from tests.bench.bench_report import build_run
from tests.conftest import BTC_1M, ROOT, need_shared

SECTIONS = ("run", "verdict", "metrics", "charts", "trades", "risk", "data", "model", "alerts", "config")
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Page(HTMLParser):
    """What the tests look at: sections, SVGs and their content, tables as cell texts, every tag
    and attribute (to hunt for external resources)."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.sections: dict[str, dict] = {}
        self.svgs: list[dict] = []
        self.tables: dict[str, list[list[str]]] = {}
        self.tags: list[tuple[str, dict]] = []
        self.styles: list[str] = []
        self._section: str | None = None
        self._svg: dict | None = None
        self._svg_depth = 0
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._in_style = False
        self.text_by_section: dict[str, list[str]] = {}
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "section":
            self._section = a.get("id")
            self.sections[self._section] = {"svgs": 0}
            self.text_by_section[self._section] = []
        if tag == "svg":
            self._svg = {"section": self._section, "viewBox": a.get("viewbox"), "elements": 0, "paths": 0, "texts": 0}
            self.svgs.append(self._svg)
            if self._section:
                self.sections[self._section]["svgs"] += 1
        elif self._svg is not None:
            self._svg["elements"] += 1
            self._svg["paths"] += tag in ("path", "use")
            self._svg["texts"] += tag == "text"
        if tag == "table":
            self._table = a.get("id") or f"table-{len(self.tables)}"
            self.tables[self._table] = []
        if tag == "tr" and self._table:
            self._row = []
        if tag in ("td", "th") and self._row is not None:
            self._cell = []
        if tag == "style":
            self._in_style = True

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if self._svg is not None and tag == "svg":
            self._svg = None

    def handle_endtag(self, tag):
        if tag == "svg":
            self._svg = None
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" | ".join(c for c in self._cell if c))
            self._cell = None
        if tag == "tr" and self._row is not None and self._table:
            self.tables[self._table].append(self._row)
            self._row = None
        if tag == "table":
            self._table = None
        if tag == "section":
            self._section = None
        if tag == "style":
            self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.styles.append(data)
        text = data.strip()
        if not text:
            return
        if self._cell is not None:
            self._cell.append(text)
        if self._section:
            self.text_by_section[self._section].append(text)

    def text(self, section: str) -> str:
        return " ".join(self.text_by_section.get(section, []))


def assert_self_contained(html: str, page: Page) -> None:
    """No http(s) reference anywhere, no scripts, no external stylesheets, images or frames."""
    assert not re.search(r"https?://", html, re.I)
    for tag, attrs in page.tags:
        assert tag not in ("script", "iframe", "object", "embed", "img", "base", "audio", "video"), tag
        if tag == "link":
            assert attrs.get("rel") == "icon" and attrs.get("href", "").startswith("data:"), attrs
        for key, value in attrs.items():
            if key in ("src", "href", "xlink:href", "action", "data", "poster", "srcset") and value:
                assert value.startswith(("#", "data:")), (tag, key, value)
            if key == "style" and value:
                assert "url(" not in value or "url(#" in value, value
    css = "".join(page.styles)
    assert "@import" not in css and not re.search(r"url\((?!#)", css)


def assert_charts_have_content(page: Page, section: str, expected: int) -> None:
    charts = [s for s in page.svgs if s["section"] == section]
    assert len(charts) == expected
    for svg in charts:
        assert svg["viewBox"] and svg["elements"] > 20 and svg["paths"] > 0 and svg["texts"] > 0, svg


# --------------------------------------------------------------------------------------------
# a real replay


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, request):
    """BTC/USDT 1m from the shared data: imported, replayed for 14 days (sma_cross) and for 7 days
    (signal_follower, a model-driven strategy); both through cli.py as a user would."""
    need_shared()
    import subprocess
    import sys

    from tests.conftest import CliResult

    work = tmp_path_factory.mktemp("report-real")
    env = {**os.environ, "QT_DATASETS_DIR": str(work / "datasets"), "QT_REPORTS_DIR": str(work / "reports"),
           "QT_CONFIG": str(ROOT / "config" / "config.toml")}

    def cli(*args: str) -> CliResult:
        proc = subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True, text=True,
                              timeout=300, env=env, cwd=work)
        return CliResult(proc.returncode, proc.stdout, proc.stderr)

    imported = cli("data", "import", str(BTC_1M))
    assert imported.code == 0, imported
    sma = cli("replay", "--days", "14", "--symbols", "BTC/USDT", "--strategy", "sma_cross", "--no-report", "--json")
    assert sma.code == 0, sma
    model = cli("replay", "--days", "7", "--symbols", "BTC/USDT", "--strategy", "signal_follower", "--no-report",
                "--json")
    return {"work": work, "cli": cli, "sma": sma.json()["run_id"], "model": model}


def test_real_replay_report_and_gate_agree(real_run):
    cli, run_id = real_run["cli"], real_run["sma"]
    made = cli("report", run_id, "--json")
    assert made.code == 0, made
    path = Path(made.json()["report"])
    assert path == real_run["work"] / "reports" / run_id / "report.html"
    gate = cli("gate", run_id, "--json")
    assert gate.code in (0, 1), gate
    verdict = gate.json()
    assert gate.code == (0 if verdict["status"] == "PASS" else 1)
    assert made.json()["verdict"] == verdict["status"]

    html = path.read_text()
    page = Page(html)
    for section in SECTIONS:
        assert section in page.sections, section
    assert "comparison" not in page.sections
    assert_self_contained(html, page)
    assert_charts_have_content(page, "charts", 5)       # equity+drawdown, exposure, BTC/USDT price, 2 histograms

    rows = page.tables["gate-table"][1:]
    from_report = [(r[0].split(" | ")[0], r[1], r[2], r[3], r[4]) for r in rows]
    from_gate = [(g["metric"], g["threshold_text"], g["observed_text"], g["severity"], g["outcome"])
                 for g in verdict["gates"]]
    assert from_report == from_gate and len(from_gate) >= 5
    assert verdict["status"] in page.text("verdict").split()[:3]

    header = page.text("run")
    assert run_id in header and "sma_cross" in header and "BTC/USDT" in header and "fast=10" in header
    assert "Synthetic data" not in html
    trades = page.tables[[k for k in page.tables if page.tables[k] and page.tables[k][0][:2] == ["Trade", "Symbol"]][0]]
    summary = cli("runs", "show", run_id, "--json")
    assert summary.code == 0, summary
    journaled = summary.json()["counts"]["trades"]
    assert journaled > 0
    assert len(trades) - 1 == min(journaled, TRADES_HEAD + TRADES_TAIL + 1)     # + the "not listed" row
    assert "100.00%" in page.text("data")                 # the shared file has no gaps
    assert "no model signals" in page.text("model")


def test_real_replay_compared_with_itself(real_run):
    journal = Journal(real_run["work"] / "reports")
    run_id = real_run["sma"]
    out = real_run["work"] / "vs.html"
    path = write_report(journal, run_id, vs=run_id, output=out, datasets_dir=real_run["work"] / "datasets")
    html = path.read_text()
    page = Page(html)
    assert "comparison" in page.sections
    assert_self_contained(html, page)
    assert_charts_have_content(page, "comparison", 1)
    text = page.text("comparison")
    record = journal.load(run_id)
    closed = int(record.trades["closed_at"].notna().sum())
    assert f"{closed:,} trades matched" in text
    assert "mean +0.0 bps" in text and "Only in this run (0)" in text and "Only in the other run (0)" in text


def test_real_model_run_has_model_evaluation(real_run):
    replayed = real_run["model"]
    assert replayed.code == 0, replayed                   # a failed replay is a failure, not a skip
    journal = Journal(real_run["work"] / "reports")
    path, verdict = make_report(journal, replayed.json()["run_id"], datasets_dir=real_run["work"] / "datasets")
    page = Page(path.read_text())
    model = page.text("model")
    assert "Model version(s)" in model and "Hit rate" in model and "Information coefficient" in model
    assert_charts_have_content(page, "model", 1)
    assert re.search(r"\d+\.\d\d% Hit rate \(signal sign\)", model), model      # computed, not n/a
    assert re.search(r"-?\d\.\d{3} Information coefficient", model), model
    buckets = [t for t in page.tables.values() if t and t[0][0] == "Confidence"][0]
    assert len(buckets) > 1                                # at least one confidence bucket with outcomes


# --------------------------------------------------------------------------------------------
# hand-made runs (no engine, no shared data)


def test_hand_made_run_every_section(tmp_path):
    journal = build_run(tmp_path / "reports", "rich", days=2, trades=700, signals=True, mode="live-testnet",
                        datasets=tmp_path / "datasets")
    path, verdict = make_report(journal, "rich", datasets_dir=tmp_path / "datasets")
    html = path.read_text()
    page = Page(html)
    assert all(s in page.sections for s in SECTIONS)
    assert_self_contained(html, page)
    assert_charts_have_content(page, "charts", 5)
    assert_charts_have_content(page, "model", 1)
    assert f"200 trades not listed (showing the first {TRADES_HEAD} and the last {TRADES_TAIL} of 700)" in html
    trade_rows = [t for t in page.tables.values() if t and t[0][:2] == ["Trade", "Symbol"]][0]
    assert len(trade_rows) == 1 + TRADES_HEAD + 1 + TRADES_TAIL
    assert trade_rows[1][0] == "T000001" and trade_rows[-1][0] == "T000700"
    risk = page.text("risk")
    assert "max_order_notional" in risk and "order_rejected" in risk and "exchange_error" in risk
    alerts = page.text("alerts")
    assert "error_rate" in alerts and "low_confidence" in alerts and "critical" in alerts
    assert "data_gap" not in risk and "missing=3" in page.text("data")
    config = page.text("config")
    assert "taker_bps" in config and "max_drawdown_pct" in config and "***" in config
    # live-testnet gates apply: one day run fails days_run >= 10, the error rate comes from exchange_stats
    gates = {r[0].split(" | ")[0]: r for r in page.tables["gate-table"][1:]}
    assert gates["days_run"][4] == "FAIL" and gates["error_rate_pct"][2] == "0.75%"
    assert gates["skipped_runs"][4] == "N/A"               # no scheduler telemetry journaled: not a pass
    assert verdict.status == "FAIL" and "FAIL" in page.text("verdict")


def test_metrics_table_lists_every_metric(tmp_path):
    from harness.metrics import METRICS

    grouped = [n for _, names in METRIC_GROUPS for n in names]
    assert sorted(grouped) == sorted(METRICS) and len(grouped) == len(set(grouped))
    journal = build_run(tmp_path / "reports", "plain", days=0.5, trades=5, events=False)
    page = Page(write_report(journal, "plain", datasets_dir=tmp_path / "none").read_text())
    text = page.text("metrics")
    assert all(name in text for name in METRICS)
    assert "prices are drawn from the fills" in page.text("charts")


def test_synthetic_banner(tmp_path):
    journal = build_run(tmp_path / "reports", "synth", days=0.5, trades=3, synthetic=True)
    html = write_report(journal, "synth", datasets_dir=tmp_path / "none").read_text()
    assert "Synthetic data." in html and 'class="banner synthetic"' in html


def test_empty_run_renders(tmp_path):
    from harness.journal import table_from_rows

    journal = Journal(tmp_path / "reports")
    run = {"run_id": "empty", "mode": "replay", "strategy": "x", "symbols": ["BTC/USDT"], "timeframe": "1m",
           "cash": 100.0, "status": "running"}
    journal.start_run(run, {**run, "start": "2025-01-01T00:00:00Z", "end": "2025-01-01T01:00:00Z"})
    journal.finish_run("empty", {"equity": table_from_rows("equity", [])}, {"status": "failed"})
    html = write_report(journal, "empty", datasets_dir=tmp_path / "none").read_text()
    page = Page(html)
    assert all(s in page.sections for s in SECTIONS)
    assert "The run made no trades." in html and "FAIL" in page.text("verdict")
    assert_self_contained(html, page)


def test_unknown_run_is_a_user_error(tmp_path):
    from harness.errors import RunNotFound

    journal = build_run(tmp_path / "reports", "known", days=0.1, trades=1, events=False)
    with pytest.raises(RunNotFound):
        write_report(journal, "unknown")
    with pytest.raises(RunNotFound):
        write_report(Journal(tmp_path / "elsewhere"), "unknown")


def test_template_only_renders():
    """STYLE.md point 9: no arithmetic in the template's expressions."""
    text = (ROOT / "harness" / "templates" / "report.html.j2").read_text()
    for expr in re.findall(r"{{(.*?)}}|{%(.*?)%}", text, re.S):
        body = "".join(expr)
        body = re.sub(r"'[^']*'|\"[^\"]*\"", "''", body)          # string literals may hold anything
        assert not re.search(r"[+*/%]|\s-\s|\bsum\b|\bround\b", body), body
