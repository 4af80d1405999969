"""The report opens in a real browser: headless Chromium renders it without a console error."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from harness.report import make_report
from tests.bench.bench_report import build_run

pytestmark = pytest.mark.browser
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CONSOLE = re.compile(r":CONSOLE[:(]|Uncaught|Refused to|net::ERR_")


def chromium() -> str:
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no Chromium binary on PATH (Debian: apt-get install -y chromium); the browser check needs one")


def render(browser: str, page: Path, shot: Path, profile: Path) -> tuple[int, str]:
    """Screenshot ``page`` with networking off; returns (exit code, Chromium's log)."""
    args = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={profile}", "--enable-logging=stderr",
            "--v=0", "--hide-scrollbars", f"--screenshot={shot}", "--window-size=1280,2000", page.as_uri()]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=90,
                          env={**os.environ, "HOME": str(profile)})
    return proc.returncode, proc.stderr + proc.stdout


def console_errors(log: str) -> list[str]:
    return [line for line in log.splitlines() if CONSOLE.search(line)]


def test_report_renders_in_chromium(tmp_path):
    browser = chromium()
    # the detector itself must see a broken page, or its silence below would prove nothing
    broken = tmp_path / "broken.html"
    broken.write_text("<!DOCTYPE html><html><body><p>x</p><script>no_such_function()</script></body></html>")
    code, log = render(browser, broken, tmp_path / "broken.png", tmp_path / "profile-a")
    assert code == 0, log[-2000:]
    assert any("no_such_function" in line for line in console_errors(log)), log[-2000:]

    journal = build_run(tmp_path / "reports", "browser-run", days=2, trades=300, signals=True,
                        datasets=tmp_path / "datasets")
    report, _ = make_report(journal, "browser-run", datasets_dir=tmp_path / "datasets")
    shot = tmp_path / "report.png"
    code, log = render(browser, report, shot, tmp_path / "profile-b")
    assert code == 0, log[-2000:]
    assert console_errors(log) == []

    import matplotlib.image as mpimg

    assert shot.exists() and shot.stat().st_size > 20_000
    pixels = mpimg.imread(shot)
    assert pixels.shape[:2] == (2000, 1280)
    ink = (pixels[..., :3].mean(axis=2) < 0.6).mean(axis=1)      # share of dark pixels per row
    assert (ink > 0.01).sum() > 300, "the screenshot is (nearly) blank"
    red = (pixels[..., 0] > 0.7) & (pixels[..., 1] < 0.3) & (pixels[..., 2] < 0.3)
    assert red.sum() > 500, "the FAIL verdict banner is not visible in the first screen"
    keep = os.environ.get("QT_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)
