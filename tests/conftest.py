"""Shared fixtures: real Binance data from ../shared, a scratch workspace, CLI runners."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("QT_SHARED_DATA", ROOT.parent / "shared" / "data" / "binance"))
BTC_1M = SHARED_DATA / "klines_1m" / "BTCUSDT_20250520_20250818.parquet"
ETH_1M = SHARED_DATA / "klines_1m" / "ETHUSDT_20250520_20250818.parquet"


def need_shared() -> Path:
    if not BTC_1M.exists():
        pytest.skip(f"real Binance data not found at {SHARED_DATA} (../shared is absent in a plain clone; CI has it)")
    return SHARED_DATA


@pytest.fixture
def shared_data() -> Path:
    return need_shared()


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> Path:
    """An empty working directory with datasets/ and reports/; env pointing at them."""
    (tmp_path / "datasets").mkdir()
    (tmp_path / "reports").mkdir()
    monkeypatch.setenv("QT_DATASETS_DIR", str(tmp_path / "datasets"))
    monkeypatch.setenv("QT_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("QT_CONFIG", str(ROOT / "config" / "config.toml"))
    for var in ("STAGING_MODE", "QT_EXECUTION_BINANCE_API_KEY", "QT_EXECUTION_BINANCE_API_SECRET",
                "QUANTUM_TRADER_REFRESH_SECONDS", "QUANTUM_TRADER_EXECUTION_SECONDS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


class CliResult:
    def __init__(self, code: int, stdout: str, stderr: str):
        self.code, self.stdout, self.stderr = code, stdout, stderr

    def json(self):
        return json.loads(self.stdout)

    def __repr__(self) -> str:
        return f"CliResult(code={self.code}, stdout={self.stdout[-2000:]!r}, stderr={self.stderr[-2000:]!r})"


@pytest.fixture
def cli():
    """Run ``cli.py`` in a subprocess, exactly as a user would; returns a CliResult."""

    def run(*args: str, timeout: float = 300, env: dict | None = None) -> CliResult:
        full_env = {**os.environ, **(env or {})}
        proc = subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True, text=True,
                              timeout=timeout, env=full_env)
        return CliResult(proc.returncode, proc.stdout, proc.stderr)

    return run
