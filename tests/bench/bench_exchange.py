"""Paper exchange throughput: POST order and GET klines from a plain ccxt client on loopback.

The server runs as ``python cli.py exchange serve`` in its own process (as a user runs it);
the client is ccxt's binance in sandbox mode with every API URL rewritten to it.
"""

from __future__ import annotations

import os
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.bench.common import line

ROOT = Path(__file__).resolve().parents[2]
ORDERS = 600
KLINES = 300


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))]


def _timed(fn, n: int) -> list[float]:
    out = []
    for i in range(n):
        start = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - start) * 1000)
    return out


def _report(name: str, ms: list[float]) -> None:
    line(f"{name}: requests/s (sequential)", 1000 * len(ms) / sum(ms), "req/s")
    line(f"{name}: p50 latency", statistics.median(ms), "ms")
    line(f"{name}: p99 latency", _percentile(ms, 99), "ms", "(aim < 5 ms for an order)" if "order" in name else "")


def run() -> None:
    from tests.exchange_support import ccxt_client, make_store

    with tempfile.TemporaryDirectory() as tmp:
        make_store(Path(tmp) / "datasets")
        env = {**os.environ, "QT_DATASETS_DIR": str(Path(tmp) / "datasets"),
               "QT_EXECUTION_BINANCE_API_KEY": "bench-key", "QT_EXECUTION_BINANCE_API_SECRET": "bench-secret"}
        server = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "exchange", "serve", "--port", "0",
                                   "--symbols", "BTC/USDT", "--exchange", "binance", "--balance", "USDT=100000000",
                                   "--balance", "BTC=1000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, env=env, cwd=tmp)
        try:
            ready, _, _ = select.select([server.stdout], [], [], 60)
            if not ready:
                raise RuntimeError("exchange serve did not start within 60 s")
            url = server.stdout.readline().split("listening on ")[1].split()[0]
            client = ccxt_client(url, key="bench-key", secret="bench-secret")
            client.load_markets()
            for _ in range(20):                                                  # warm up connections
                client.fetch_time()
            order_ms = _timed(lambda i: client.create_order("BTC/USDT", "market", "buy" if i % 2 else "sell",
                                                            0.001), ORDERS)
            limit_ms = _timed(lambda i: client.create_order("BTC/USDT", "limit", "buy", 0.001, 10_000.0), ORDERS // 3)
            klines_ms = _timed(lambda i: client.fetch_ohlcv("BTC/USDT", "1m"), KLINES)
            time_ms = _timed(lambda i: client.fetch_time(), KLINES)
        finally:
            server.send_signal(signal.SIGTERM)
            server.communicate(timeout=10)
    _report("POST order (market, ccxt)", order_ms)
    _report("POST order (market, server only, in-process)", _server_only())
    _report("POST order (limit, resting)", limit_ms)
    _report("GET klines (500 x 1m, ccxt)", klines_ms)
    _report("GET time (floor: ccxt + HTTP)", time_ms)


def _server_only() -> list[float]:
    """The exchange's own cost of an order: signature check, validation, fill (no HTTP, no ccxt)."""
    import hashlib
    import hmac

    from tests.exchange_support import KEY, SECRET, make_exchange, make_store

    with tempfile.TemporaryDirectory() as tmp:
        paper = make_exchange(make_store(Path(tmp) / "datasets"), balances={"USDT": 1e8, "BTC": 1000.0})
        try:
            def send(i: int) -> None:
                query = (f"symbol=BTCUSDT&side={'BUY' if i % 2 else 'SELL'}&type=MARKET&quantity=0.001"
                         f"&newClientOrderId=b{i}&timestamp={int(time.time() * 1000)}&recvWindow=10000")
                query += "&signature=" + hmac.new(SECRET.encode(), query.encode(), hashlib.sha256).hexdigest()
                status, _, _ = paper.handle("POST", "/api/v3/order", "", query.encode(), {"X-MBX-APIKEY": KEY})
                assert status == 200
            return _timed(send, ORDERS)
        finally:
            paper.stop()


if __name__ == "__main__":
    run()
