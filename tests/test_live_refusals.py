"""``live`` refuses to start without a safe target or its keys (DESIGN 3.8; issue 7): one line on
stderr, exit 2, no traceback — and nothing sent anywhere.

"Nothing sent" is proven, not assumed: each command runs with ``tests/helpers/netguard`` on its
``PYTHONPATH``, which writes down (and refuses) every name lookup and socket connect the process
attempts. A control case that does start shows the guard sees the attempt through the CLI.
Each case runs in its own empty workspace, which must stay empty: no run, no journal, no data.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.errors import SafetyError
from harness.exchange import ExchangeClient
from harness.journal import Journal
from harness.live import LiveOptions, check_target
from tests.helpers.live_support import KEY, SECRET, cli, live_env

NETGUARD = Path(__file__).resolve().parent / "helpers" / "netguard"
LOOPBACK = "http://127.0.0.1:8765"


@dataclass(frozen=True)
class Case:
    args: tuple[str, ...]
    says: str                              # a fragment the one line must hold (what to do)
    key: str | None = KEY
    secret: str | None = SECRET
    env: tuple[tuple[str, str], ...] = ()
    journal: bool = False                  # start with an (empty) journal in the workspace


CASES = {
    "no target": Case(("--symbols", "BTC/USDT"), "--testnet"),
    "testnet and url": Case(("--testnet", "--exchange-url", LOOPBACK), "not both"),
    "mainnet url": Case(("--exchange-url", "https://api.binance.com"), "api.binance.com"),
    "userinfo hiding the host": Case(("--exchange-url", "http://127.0.0.1@api.binance.com/"), "api.binance.com"),
    "no keys": Case(("--exchange-url", LOOPBACK), "QT_EXECUTION_BINANCE_API_KEY", key=None, secret=None),
    "key without secret": Case(("--exchange-url", LOOPBACK), "QT_EXECUTION_BINANCE_API_SECRET", secret=None),
    "testnet disabled in the environment": Case(("--testnet",), "QT_EXECUTION_BINANCE_TESTNET",
                                                env=(("QT_EXECUTION_BINANCE_TESTNET", "false"),)),
    "resume of an unknown run": Case(("--exchange-url", LOOPBACK, "--resume", "no-such-run"), "no-such-run",
                                     journal=True),
}
# More targets that must be refused, checked without a process (the same function the command calls first).
REFUSED_URLS = ["https://api.binance.com:443/api/v3", "http://10.0.0.5:8765", "http://127.0.0.1.nip.io:8765",
                "http://localhost.binance.com", "http://testnet.binance.vision", "ftp://127.0.0.1:8765",
                "https://api1.binance.com", "http://[::ffff:8.8.8.8]:80", "127.0.0.1:8765"]
CONTROL = Case(("--exchange-url", "http://127.0.0.1:9"), "")      # a valid start: it does try to connect
NO_JOURNAL = Case(("--exchange-url", LOOPBACK, "--resume", "no-such-run"), "no-such-run")


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    network: list[str]
    written: list[str]


def _run(root: Path, case: Case) -> Outcome:
    root.mkdir(parents=True)
    (root / "datasets").mkdir()
    (root / "reports").mkdir()
    if case.journal:
        with Journal(root / "reports").connect():
            pass
    before = {p for p in root.rglob("*")}
    log = root.parent / f"{root.name}.net"
    env = live_env(root, key=case.key, secret=case.secret, PYTHONPATH=str(NETGUARD), QT_TEST_NET_LOG=str(log),
                   **dict(case.env))
    proc = cli(env, "live", "--strategy", "sma_cross", *case.args, timeout=60, cwd=root)
    network = log.read_text().splitlines() if log.exists() else []
    written = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p not in before)
    return Outcome(proc.returncode, proc.stdout, proc.stderr, network, written)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, Outcome]:
    base = tmp_path_factory.mktemp("refusals")
    cases = {**CASES, "control": CONTROL, "resume without a journal": NO_JOURNAL}
    with ThreadPoolExecutor(4) as pool:
        futures = {name: pool.submit(_run, base / f"case{i}", case) for i, (name, case) in enumerate(cases.items())}
        return {name: f.result() for name, f in futures.items()}


@pytest.mark.parametrize("name", list(CASES))
def test_live_refuses_with_one_line_and_exit_2(outcomes, name):
    out = outcomes[name]
    assert out.code == 2, out
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert "Traceback" not in out.stderr
    assert CASES[name].says in lines[0], lines[0]


@pytest.mark.parametrize("name", list(CASES))
def test_a_refused_start_sends_nothing_and_writes_nothing(outcomes, name):
    out = outcomes[name]
    assert out.network == [], f"{name}: the process tried to reach {out.network}"
    assert out.written == [], f"{name}: the process wrote {out.written}"


def test_refusals_never_echo_the_secrets(outcomes):
    for name, out in outcomes.items():
        assert KEY not in out.stderr + out.stdout and SECRET not in out.stderr + out.stdout, name


def test_the_network_guard_sees_a_start_that_is_allowed(outcomes):
    """The control: a loopback target with keys does start, tries to connect (seen by the guard,
    refused by it), and fails as an unreachable exchange — exit 1, one line."""
    out = outcomes["control"]
    assert any("127.0.0.1" in line and "9" in line for line in out.network), out.network
    assert out.code == 1, out
    last = out.stderr.strip().splitlines()[-1]            # JSON log lines of the retries come before it
    assert last.startswith("error: ") and "127.0.0.1:9" in last and "Traceback" not in out.stderr, out.stderr


@pytest.mark.parametrize("url", REFUSED_URLS)
def test_non_loopback_targets_are_refused_before_anything_is_built(url):
    with pytest.raises(SafetyError):
        check_target(LiveOptions(url=url))
    with pytest.raises(SafetyError):
        ExchangeClient(url=url, api_key=KEY, api_secret=SECRET)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8765", "http://localhost:8765/", "http://[::1]:8765"])
def test_loopback_targets_are_accepted(url):
    check_target(LiveOptions(url=url))
    assert ExchangeClient(url=url, api_key=KEY, api_secret=SECRET).mode == "loopback"


def test_resume_without_a_journal_is_a_usage_error(outcomes):
    out = outcomes["resume without a journal"]
    assert out.network == [] and out.written == []
    assert out.code == 2, out
    assert "no-such-run" in out.stderr
