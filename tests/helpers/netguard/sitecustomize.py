"""Loaded by a test's subprocess (``PYTHONPATH`` names this folder): when ``QT_TEST_NET_LOG``
names a file, every name lookup and every socket connect is written there, one line each,
and refused, so a test can prove that a command sent nothing anywhere."""

import os

_LOG = os.environ.get("QT_TEST_NET_LOG")

if _LOG:
    import socket

    def _note(what: str) -> None:
        with open(_LOG, "a", encoding="utf-8") as fh:
            fh.write(what + "\n")

    _getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        _note(f"getaddrinfo {host}:{port}")
        raise socket.gaierror(socket.EAI_NONAME, "name lookups are refused in this test")

    def connect(self, address):
        _note(f"connect {address}")
        raise ConnectionRefusedError("connections are refused in this test")

    def connect_ex(self, address):
        _note(f"connect_ex {address}")
        return 111

    socket.getaddrinfo = getaddrinfo
    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex
