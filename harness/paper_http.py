"""The paper exchange's transport: a threaded HTTP server on loopback, request parsing, faults.

The server is :class:`http.server.ThreadingHTTPServer` with keep-alive (HTTP/1.1), Nagle's
algorithm off and a ``Content-Length`` on every reply, which brings a loopback request to about
a millisecond. A client that goes away mid-request costs only its own connection.

:class:`Faults` arms trouble for the next N requests, optionally for one endpoint:
``timeout`` (the reply is held back ``delay_s``; with ``before=True`` the request waits before
it is executed), ``error`` (a 5xx), ``rate_limit`` (429), ``ban`` (418), ``reject`` (a new
order refused with -2010) and ``disconnect`` (the connection is closed without a reply).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl

from harness.paper_market import ApiError

log = logging.getLogger("harness.paper_exchange")

FAULT_KINDS = ("timeout", "error", "rate_limit", "ban", "reject", "disconnect")


@dataclass
class Fault:
    """One injected fault, armed for the next ``remaining`` matching requests."""

    kind: str
    remaining: int
    path: str | None = None          # endpoint name such as "order" or "klines"; None = any
    method: str | None = None
    delay_s: float = 15.0            # timeout: how long the reply is held back
    before: bool = False             # timeout: hold the request back before executing it
    status: int = 503                # error: the HTTP status
    code: int | None = None
    msg: str | None = None


class Faults:
    """Fault injection for drills and tests (thread-safe)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._armed: list[Fault] = []
        self.served: dict[str, int] = {}

    def inject(self, kind: str, count: int = 1, path: str | None = None, method: str | None = None,
               **options) -> Fault:
        """Arm ``kind`` for the next ``count`` requests to ``path`` (e.g. ``"order"``), or to any path."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; one of {', '.join(FAULT_KINDS)}")
        if kind == "reject":
            path, method = path or "order", method or "POST"
        fault = Fault(kind, int(count), endpoint_name(path) if path else None, method and method.upper(), **options)
        with self._lock:
            self._armed.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._armed.clear()

    def take(self, method: str, name: str) -> Fault | None:
        with self._lock:
            for fault in self._armed:
                if (fault.path in (None, name)) and (fault.method in (None, method)):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._armed.remove(fault)
                    self.served[fault.kind] = self.served.get(fault.kind, 0) + 1
                    return fault
        return None


def endpoint_name(path: str) -> str:
    path = path.split("?", 1)[0]
    for prefix in ("/api/v3/", "/api/v1/"):
        if path.startswith(prefix):
            return path[len(prefix):]
    return path.strip("/")


def parse_params(query: str, body: bytes) -> dict[str, str]:
    params: dict[str, str] = {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True) + parse_qsl(body.decode(), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        raise ApiError(-1100, "Illegal characters found in a parameter.") from None
    for key, value in pairs:
        if key in params:
            raise ApiError(-1101, f"Duplicate values for parameter '{key}'.")
        params[key] = value
    return params


def without_signature(raw: bytes) -> bytes:
    if not raw:
        return b""
    return b"&".join(p for p in raw.split(b"&") if not p.startswith(b"signature="))


def fault_reply(fault: Fault, method: str, name: str) -> tuple[int, object, dict]:
    if fault.kind == "disconnect":
        return 0, None, {}
    if fault.kind == "rate_limit":
        return 429, {"code": fault.code or -1003, "msg": fault.msg or "Too much request weight used; current limit "
                     "is 6000 request weight per 1 MINUTE. Please use WebSocket Streams for live updates to avoid "
                     "polling the API."}, {"Retry-After": "1"}
    if fault.kind == "ban":
        return 418, {"code": fault.code or -1003, "msg": fault.msg or "Way too much request weight used; IP banned "
                     "until 1. Please use WebSocket Streams for live updates to avoid bans."}, {"Retry-After": "1"}
    if fault.kind == "reject":
        return 400, {"code": fault.code or -2010, "msg": fault.msg or "Order rejected by the paper exchange."}, {}
    return fault.status, {"code": fault.code or -1001,
                          "msg": fault.msg or "Internal error; unable to process your request. Please try again."}, {}


class HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64
    exchange: object          # the PaperExchange it serves (has handle())

    def handle_error(self, request, client_address) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):       # a client that went away: nothing to report
            return
        log.exception("paper exchange: unexpected error from %s", client_address)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = 60
    server: HttpServer

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def log_message(self, format: str, *args) -> None:
        """Request lines at debug level, without their query (signed requests carry a signature)."""
        log.debug("%s %s %s", self.command, self.path.split("?", 1)[0], " ".join(str(a) for a in args[1:]))

    def _serve(self, method: str) -> None:
        path, _, query = self.path.partition("?")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self._reply(400, {"code": -1100, "msg": "Illegal characters found in header 'Content-Length'."}, {})
            self.close_connection = True
            return
        body = self.rfile.read(length) if length else b""
        if len(body) < length:             # the client went away mid-request
            self.close_connection = True
            return
        status, payload, headers = self.server.exchange.handle(method, path, query, body, self.headers)
        if payload is None:
            self.close_connection = True
            return
        self._reply(status, payload, headers)

    def _reply(self, status: int, payload: object, headers: dict) -> None:
        data = json.dumps(payload, separators=(",", ":")).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json;charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            self.close_connection = True
