"""The staging smoke check (``python cli.py smoke --url URL``) of a live run's status endpoint.

It calls every endpoint of :mod:`harness.status_server` and checks: HTTP 200 and a readable
body; ``/health`` not degraded; ``scheduler.execution.gross_exposure`` and
``scheduler.execution.positions_synced`` present (and positions synced); every job's last
completion, every symbol's last bar and the latest price younger than two intervals — the
job's own interval from ``/health/scheduler`` for completions, the market-data interval or the
bar (whichever is longer) for bar times, which are read on the exchange's clock.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from harness.errors import HarnessError, UserError

SUCCESS = "API smoke check completed successfully."


@dataclass(frozen=True)
class Check:
    """One smoke check: what was checked, whether it passed, what was seen."""

    name: str
    ok: bool
    detail: str = ""

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'}  {self.name}" + (f": {self.detail}" if self.detail else "")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Client:
    def __init__(self, url: str, timeout_s: float):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UserError(f"--url must look like http://127.0.0.1:8787, not {url!r}")
        self.url, self.timeout_s = url.rstrip("/"), timeout_s
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with self._opener.open(self.url + path, timeout=self.timeout_s) as reply:
                return reply.status, reply.read()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.read()
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise HarnessError(f"cannot reach the status endpoint at {self.url} ({reason}): is a live run serving "
                               "--status-port there?") from None


def _time(text: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(text))
    except ValueError:
        return None


def _json(checks: list[Check], name: str, status: int, body: bytes) -> Any:
    if status != 200:
        checks.append(Check(name, False, f"HTTP {status} {body[:200].decode(errors='replace')}"))
        return None
    try:
        data = json.loads(body)
    except ValueError:
        checks.append(Check(name, False, "HTTP 200 but the body is not JSON"))
        return None
    checks.append(Check(name, True, "HTTP 200"))
    return data


def _fresh(checks: list[Check], name: str, age: float | None, limit: float) -> None:
    if age is None:
        checks.append(Check(name, False, "no timestamp yet"))
    else:
        checks.append(Check(name, age < limit, f"{age:.2f}s old (limit {limit:.2f}s)"))


def smoke_check(url: str, timeout_s: float = 5.0) -> list[Check]:
    """Run every check against the status endpoint at ``url``; raises HarnessError if unreachable."""
    client = _Client(url, timeout_s)
    checks: list[Check] = []
    health = _json(checks, "GET /health", *client.get("/health"))
    scheduler = _json(checks, "GET /health/scheduler", *client.get("/health/scheduler"))
    symbols: list[str] = []
    if health is not None:
        status = health.get("status")
        reasons = "; ".join(health.get("reasons") or [])
        checks.append(Check("health status", status == "ok", f"{status}" + (f" — {reasons}" if reasons else "")))
        execution = (health.get("scheduler") or {}).get("execution") or {}
        gross = execution.get("gross_exposure")
        checks.append(Check("scheduler.execution.gross_exposure", isinstance(gross, int | float),
                            "missing" if gross is None else f"{gross:.4f}" if isinstance(gross, int | float)
                            else f"not a number: {gross!r}"))
        synced = execution.get("positions_synced")
        checks.append(Check("scheduler.execution.positions_synced", synced is True,
                            "missing" if synced is None else str(synced).lower()))
        symbols = list(health.get("symbols") or [])
    if scheduler is not None:
        now = _time(scheduler.get("now"))
        exchange_now = _time(scheduler.get("exchange_time"))
        rate = float(scheduler.get("clock_rate") or 1.0)
        jobs = scheduler.get("jobs") or {}
        for name, job in sorted(jobs.items()):
            done = _time(job.get("last_completion"))
            age = (now - done).total_seconds() if now and done else None
            _fresh(checks, f"{name} last completion", age, 2 * float(job.get("interval_seconds") or 0))
        md = jobs.get("market-data-refresh") or {}
        bar_limit = 2 * max(float(md.get("interval_seconds") or 0), float(scheduler.get("bar_seconds") or 0))

        def bar_age(stamp: Any) -> float | None:
            t = _time(stamp)
            return None if t is None or exchange_now is None else (exchange_now - t).total_seconds() / rate

        for symbol, stamp in sorted(((health or {}).get("last_bar") or {}).items()):
            _fresh(checks, f"{symbol} last bar", bar_age(stamp), bar_limit)
        for symbol in symbols[:1] or [""]:
            query = f"?symbol={symbol.replace('/', '')}" if symbol else ""
            price = _json(checks, f"GET /api/prices/latest{query}", *client.get(f"/api/prices/latest{query}"))
            if price is not None and symbol:
                value = price.get("price")
                checks.append(Check(f"{symbol} latest price", isinstance(value, int | float) and value > 0,
                                    f"{value}"))
                _fresh(checks, f"{symbol} latest price time", bar_age(price.get("time")), bar_limit)
    signals = _json(checks, "GET /api/ai/signals/latest?limit=5", *client.get("/api/ai/signals/latest?limit=5"))
    if signals is not None:
        rows = signals.get("signals")
        good = isinstance(rows, list) and all(_time(r.get("ts")) and "confidence" in r for r in rows)
        checks.append(Check("signals", good, f"{len(rows)} latest" if isinstance(rows, list) else "no list"))
    status, body = client.get("/metrics")
    text = body.decode(errors="replace")
    checks.append(Check("GET /metrics", status == 200 and "qt_health_ok" in text,
                        f"HTTP {status}, {len(text.splitlines())} lines"))
    return checks
