"""The paper exchange beyond the ccxt contract: its clock and time shift, the volume cap, the
signature checks, fault injection, clients that disconnect, determinism, and ``exchange serve``."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import ccxt
import pytest

from harness import fills
from harness.errors import SafetyError
from harness.fills import FillConfig
from harness.model import OrderType, Side
from harness.paper_exchange import PaperExchange, parse_balances
from harness.paper_market import ManualClock, ReplayClock
from tests.conftest import ROOT
from tests.exchange_support import (
    BTC_RULES,
    KEY,
    MINUTE,
    SECRET,
    START,
    bar_at,
    ccxt_client,
    make_exchange,
    make_store,
)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("paper") / "datasets")


@pytest.fixture
def paper(store):
    ex = make_exchange(store)
    yield ex
    ex.stop()


class FakeReal:
    """A stand-in for time.time()."""

    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


def raw(paper, method: str, path: str, params: dict | None = None, signed: bool = False, key: str = KEY,
        secret: str = SECRET, timeout: float = 5.0) -> tuple[int, object]:
    """One request made by hand (no ccxt): (status, JSON body)."""
    query = "&".join(f"{k}={v}" for k, v in (params or {}).items())
    headers = {}
    if signed:
        query += ("&" if query else "") + f"timestamp={int(time.time() * 1000)}"
        query += "&signature=" + hmac.new(secret.encode(), query.encode(), hashlib.sha256).hexdigest()
        headers["X-MBX-APIKEY"] = key
    request = urllib.request.Request(f"{paper.url}{path}?{query}", method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


# -- the clock ------------------------------------------------------------------------------------


def test_replay_clock_runs_speed_times_real_time_from_start():
    real = FakeReal(1000.0)
    clock = ReplayClock(5_000_000, speed=60, real=real)
    real.now += 10
    assert clock.now_ms() == 5_000_000                   # not started: frozen
    clock.start()
    real.now += 1.5
    assert clock.now_ms() == 5_000_000 + 90_000


def test_bars_are_shifted_so_the_start_bar_is_the_present_minute(store):
    real = FakeReal(1_800_000_000.25 + 42)               # 42.25 s into a minute
    with PaperExchange(store, ["BTC/USDT"], start=START, api_key=KEY, api_secret=SECRET, real_clock=real,
                       speed=60) as paper:
        present = int(real.now * 1000) - int(real.now * 1000) % MINUTE
        assert paper.to_exchange_time(START) == present
        status, rows = raw(paper, "GET", "/api/v3/klines", {"symbol": "BTCUSDT", "interval": "1m", "limit": 2})
        previous = bar_at(store, "BTC/USDT", START - MINUTE)
        assert rows[-1][0] == present - MINUTE and float(rows[-1][4]) == pytest.approx(previous.close)
        real.now += 1.0                                  # one real second at 60x: one more bar closes
        _, rows = raw(paper, "GET", "/api/v3/klines", {"symbol": "BTCUSDT", "interval": "1m", "limit": 1})
        assert rows[-1][0] == present
        _, server = raw(paper, "GET", "/api/v3/time")
        assert server["serverTime"] == int(1_800_000_042_250 + 60_000)


def test_start_outside_the_recording_is_a_clear_error(store):
    from harness.errors import DatasetError

    with pytest.raises(DatasetError, match="outside the recorded bars"):
        PaperExchange(store, ["BTC/USDT"], start=START + 40 * 86_400_000, api_key=KEY, api_secret=SECRET)


def test_only_loopback_and_only_with_keys(store):
    with pytest.raises(SafetyError, match="loopback"):
        PaperExchange(store, ["BTC/USDT"], host="0.0.0.0", api_key=KEY, api_secret=SECRET)
    with pytest.raises(SafetyError, match="key pair"):
        PaperExchange(store, ["BTC/USDT"])


# -- fills ----------------------------------------------------------------------------------------


def test_a_market_order_beyond_the_volume_cap_fills_over_the_next_bars(store):
    with make_exchange(store, balances={"USDT": 1_000_000.0}) as paper:
        client = ccxt_client(paper.url)
        bars = [bar_at(store, "BTC/USDT", START + i * MINUTE) for i in range(6)]
        want = round(sum(b.volume for b in bars[:3]) * 0.1 + 0.1, 5)       # more than three bars' caps
        order = client.create_order("BTC/USDT", "market", "buy", want)
        cfg = FillConfig(slippage_bps=2.0, max_bar_volume_pct=10.0)
        first, _ = fills.match(OrderType.MARKET, Side.BUY, want, bars[0].open, bars[0].high, bars[0].low,
                               bars[0].volume, cfg, BTC_RULES)
        assert order["status"] == "open" and order["filled"] == pytest.approx(first.qty)
        assert client.fetch_balance()["USDT"]["used"] > 0
        paper.clock.set(START + 3 * MINUTE)
        trades = client.fetch_my_trades("BTC/USDT")
        assert [t["price"] for t in trades] == pytest.approx(
            [fills.slipped(b.open, Side.BUY, cfg, BTC_RULES) for b in bars[:3]])
        assert [t["timestamp"] for t in trades] == [START + 5_000, START + 2 * MINUTE, START + 3 * MINUTE]
        paper.clock.set(START + 6 * MINUTE)
        done = client.fetch_order(order["id"], "BTC/USDT")
        assert done["status"] == "closed" and done["filled"] == pytest.approx(want)
        assert client.fetch_balance()["USDT"]["used"] == 0


def test_same_data_same_requests_same_answers(store):
    def session() -> list:
        with make_exchange(store) as paper:
            client = ccxt_client(paper.url)
            out = [client.create_order("BTC/USDT", "market", "buy", 0.05, params={"newClientOrderId": "a"})["info"]]
            client.create_order("BTC/USDT", "limit", "sell", 0.05, round(bar_at(store, "BTC/USDT", START).open + 30),
                                params={"newClientOrderId": "b"})
            paper.clock.set(START + 90 * MINUTE)
            out.append([t["info"] for t in client.fetch_my_trades("BTC/USDT")])
            out.append(client.fetch_balance()["info"]["balances"])
            out.append(client.fetch_order_book("BTC/USDT", 10))
            out.append(client.fetch_ohlcv("BTC/USDT", "15m", limit=4))
            for item in out[-2:]:
                if isinstance(item, dict):
                    item.pop("timestamp", None), item.pop("datetime", None)
            return out

    assert session() == session()


# -- signatures -----------------------------------------------------------------------------------


def test_signed_request_checks(paper):
    assert raw(paper, "GET", "/api/v3/account", signed=True)[0] == 200
    status, body = raw(paper, "GET", "/api/v3/account")
    assert (status, body["code"]) == (401, -2014)
    status, body = raw(paper, "GET", "/api/v3/account", {"timestamp": int(time.time() * 1000)}, signed=False)
    assert body["code"] == -2014
    request = urllib.request.Request(f"{paper.url}/api/v3/account?timestamp=1", headers={"X-MBX-APIKEY": KEY})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=5)
    assert json.loads(info.value.read())["code"] == -1102                     # no signature
    status, body = raw(paper, "GET", "/api/v3/account", {"recvWindow": 70_000}, signed=True)
    assert (status, body["code"]) == (400, -1131)
    query = f"timestamp={int(time.time() * 1000) + 5_000}"                     # from the future
    signature = hmac.new(SECRET.encode(), query.encode(), hashlib.sha256).hexdigest()
    request = urllib.request.Request(f"{paper.url}/api/v3/account?{query}&signature={signature}",
                                     headers={"X-MBX-APIKEY": KEY})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=5)
    assert json.loads(info.value.read()) == {"code": -1021, "msg": "Timestamp for this request was 1000ms ahead "
                                                                   "of the server's time."}


def test_unknown_path_is_a_json_404(paper):
    assert raw(paper, "GET", "/api/v3/nope") == (404, {"code": -1020, "msg": "This operation is not supported."})
    assert raw(paper, "PUT", "/api/v3/order")[0] == 404
    assert raw(paper, "GET", "/sapi/v1/capital/config/getall")[0] == 404


# -- faults and misbehaving clients -----------------------------------------------------------------


def test_fault_kinds_reply_as_binance_does(paper):
    for kind, status, code in (("error", 503, -1001), ("rate_limit", 429, -1003), ("ban", 418, -1003)):
        paper.faults.inject(kind, count=2, path="ticker/price")
        assert raw(paper, "GET", "/api/v3/time")[0] == 200                      # another path: untouched
        replies = [raw(paper, "GET", "/api/v3/ticker/price", {"symbol": "BTCUSDT"}) for _ in range(3)]
        assert [(s, b.get("code")) for s, b in replies] == [(status, code), (status, code), (200, None)]
    paper.faults.inject("reject")
    status, body = raw(paper, "POST", "/api/v3/order", {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET",
                                                        "quantity": "0.01"}, signed=True)
    assert (status, body["code"]) == (400, -2010) and paper.account.orders == {}
    assert paper.faults.served == {"error": 2, "rate_limit": 2, "ban": 2, "reject": 1}


def test_timeout_and_disconnect_faults(paper):
    paper.faults.inject("timeout", count=1, path="time", delay_s=1.0)
    started = time.perf_counter()
    with pytest.raises(TimeoutError):                                       # the reply is held back
        raw(paper, "GET", "/api/v3/time", timeout=0.3)
    assert time.perf_counter() - started < 1.0
    assert raw(paper, "GET", "/api/v3/ping")[0] == 200                      # others are served meanwhile
    paper.faults.inject("disconnect", count=1)
    with pytest.raises(http.client.RemoteDisconnected):                      # closed without a reply
        raw(paper, "GET", "/api/v3/time")
    assert raw(paper, "GET", "/api/v3/time")[0] == 200


def test_clients_that_disconnect_mid_request_do_not_break_the_server(paper):
    client = ccxt_client(paper.url)
    client.load_markets()
    port = paper.port
    for payload in (b"POST /api/v3/order HTTP/1.1\r\nHost: x\r\nContent-Length: 400\r\n\r\nsymbol=BTC",  # short body
                    b"GET /api/v3/klines?symbol=BTCUSDT&interval=1m HTTP/1.1\r\nHost: x\r\n",        # half headers
                    b"GARBAGE\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(payload)
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:                       # reset mid-reply
        sock.sendall(b"GET /api/v3/exchangeInfo HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    paper.faults.inject("timeout", count=1, path="account", delay_s=0.5)      # client gone before the reply
    with pytest.raises(ccxt.RequestTimeout):
        _timeout_client(paper.url).fetch_balance()
    time.sleep(0.6)
    assert client.fetch_balance()["USDT"]["free"] == 10_000
    assert client.create_order("BTC/USDT", "market", "buy", 0.01)["status"] == "closed"


def _timeout_client(url: str) -> ccxt.binance:
    client = ccxt_client(url)
    client.timeout = 200
    return client


def test_a_bug_costs_one_request_a_500_not_the_server(paper, monkeypatch):
    from harness import paper_exchange

    broken = paper_exchange._Route(lambda ex, p, now: 1 / 0)
    monkeypatch.setitem(paper_exchange.ROUTES, ("GET", "ping"), broken)
    assert raw(paper, "GET", "/api/v3/ping") == (500, {"code": -1000, "msg": "An unknown error occurred while "
                                                                              "processing the request."})
    assert raw(paper, "GET", "/api/v3/time")[0] == 200


def test_parse_balances():
    assert parse_balances(["USDT=10000", "btc=0.5"]) == {"USDT": 10_000.0, "BTC": 0.5}
    from harness.errors import UserError

    for bad in ("USDT", "USDT=-1", "=5", "USDT=abc", "US DT=1"):
        with pytest.raises(UserError, match="--balance"):
            parse_balances([bad])


# -- exchange serve ---------------------------------------------------------------------------------

def readme_client() -> str:
    """The ccxt snippet the README shows (so the README cannot drift from what works)."""
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- paper-exchange-client:", 1)[1].split("```python\n", 1)[1]
    return block.split("```", 1)[0]


README_CLIENT = readme_client()


def test_exchange_serve_and_the_readme_client(workspace, tmp_path):
    make_store(workspace / "datasets")
    env = {**os.environ, "QT_EXECUTION_BINANCE_API_KEY": "paper-key", "QT_EXECUTION_BINANCE_API_SECRET": "paper-secret"}
    server = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "exchange", "serve", "--port", "0", "--symbols",
                               "BTC/USDT", "--balance", "USDT=10000"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env)
    try:
        ready, _, _ = select.select([server.stdout], [], [], 60)             # bounded: never wait forever
        line = server.stdout.readline() if ready else ""
        assert "paper exchange listening on http://127.0.0.1:" in line, line
        url = line.split("listening on ")[1].split()[0]
        script = tmp_path / "client.py"
        script.write_text(README_CLIENT.replace("http://127.0.0.1:8765", url))
        run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        lines = run.stdout.splitlines()
        assert len(json.loads(lines[0].replace("'", '"'))) == 3
        assert lines[1] == "{'BTC': 0.0, 'USDT': 10000.0}"
        assert lines[2].startswith("closed ")
        assert "'BTC': 0.00999" in lines[3]
        assert lines[4].startswith("refused:") and "-1022" in lines[4]
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            _, errors = server.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.communicate()
            raise
    assert server.returncode == 0 and "Traceback" not in errors


@pytest.mark.parametrize("args, env, text", [
    (["--symbols", "DOGE/USDT"], {"QT_EXECUTION_BINANCE_API_KEY": "k", "QT_EXECUTION_BINANCE_API_SECRET": "s"},
     "no exchange"),
    (["--symbols", "BTC/USDT"], {}, "key pair"),
    (["--symbols", "BTC/USDT", "--balance", "USDT"], {"QT_EXECUTION_BINANCE_API_KEY": "k",
                                                      "QT_EXECUTION_BINANCE_API_SECRET": "s"}, "--balance"),
])
def test_exchange_serve_refusals_are_one_line(workspace, cli, args, env, text):
    make_store(workspace / "datasets")
    result = cli("exchange", "serve", "--port", "0", *args, env=env, timeout=60)
    assert result.code == 2 and text in result.stderr and result.stderr.count("\n") == 1, result


def test_manual_clock_never_runs_backwards():
    clock = ManualClock(1000)
    clock.advance(5)
    with pytest.raises(ValueError):
        clock.set(10)
