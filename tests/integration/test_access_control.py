"""allow/deny over real sockets: 127.0.0.1 vs 127.0.0.2 and ::1, refused before any handler code."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

import pytest

import reactorkit
from reactorkit.testing import serve
from tests.helpers import TIMEOUT, connect, recv_until_closed

HANDLERS_MADE: list[Any] = []


class CountingEcho(reactorkit.Handler):
    def __init__(self, state: Any = None) -> None:
        super().__init__(state)
        HANDLERS_MADE.append(self)

    def data_received(self, data: bytes) -> None:
        self.connection.write(data)


COUNTING = reactorkit.HandlerType(name="counting-echo", handler=CountingEcho)


def connect_from(source: str, address: Any) -> socket.socket:
    """A client whose source address is ``source`` (any 127.x.y.z works on Linux)."""
    return socket.create_connection(address[:2], timeout=TIMEOUT, source_address=(source, 0))


def refused(sock: socket.socket) -> bool:
    """True if the server closed without a byte, even after we sent something."""
    with sock:
        try:
            sock.sendall(b"hello\n")
        except (BrokenPipeError, ConnectionResetError):
            return True
        return recv_until_closed(sock) == b""


def test_allow_list_admits_only_listed_addresses(caplog: pytest.LogCaptureFixture) -> None:
    HANDLERS_MADE.clear()
    caplog.set_level(logging.WARNING, logger="reactorkit.edge")
    with serve(handler=COUNTING, allow=["127.0.0.1/32"]) as srv:
        address = srv.address()
        assert refused(connect_from("127.0.0.2", address))
        assert HANDLERS_MADE == []  # no handler code ran for the refused peer
        with connect_from("127.0.0.1", address) as sock:
            sock.sendall(b"ping")
            assert sock.recv(10) == b"ping"
        listener = next(iter(srv.listeners.values()))
        stats = listener.stats
        assert stats.refused == 1
        assert stats.total_connections == 1
    assert len(HANDLERS_MADE) == 1
    assert "refused connection from 127.0.0.2:" in caplog.text


def test_deny_wins_and_refusals_are_logged_at_a_bounded_rate(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="reactorkit.edge")
    with serve(handler="echo", allow=["127.0.0.0/8"], deny=["127.0.0.3"]) as srv:
        address = srv.address()
        for _ in range(20):
            assert refused(connect_from("127.0.0.3", address))
        with connect_from("127.0.0.4", address) as sock:
            sock.sendall(b"ok")
            assert sock.recv(10) == b"ok"
        listener = next(iter(srv.listeners.values()))
        assert listener.stats.refused == 20
    lines = [r for r in caplog.records if "refused connection" in r.getMessage()]
    assert len(lines) == 1  # 20 refusals within the interval: one line


def test_ipv6_deny_refuses_loopback() -> None:
    with serve(handler="echo", host="::1", deny=["::1/128"]) as srv:
        assert refused(connect(srv.address()))
    with (
        serve(handler="echo", host="::1", allow=["::1"], deny=["127.0.0.0/8"]) as srv,
        connect(srv.address()) as sock,
    ):
        sock.sendall(b"six")
        assert sock.recv(10) == b"six"


def test_unix_listener_ignores_the_lists(tmp_path: Path) -> None:
    path = str(tmp_path / "e.sock")
    with (
        serve(handler="echo", path=path, allow=["10.0.0.0/8"]) as srv,
        connect(srv.address()) as sock,
    ):
        sock.sendall(b"unix")
        assert sock.recv(10) == b"unix"


def test_acl_through_the_cli(run_server: Any, tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        '[[listen]]\nname = "admin"\nhandler = "echo"\nport = 0\n'
        'allow = ["127.0.0.1"]\ndeny = ["127.0.0.2/32"]\n'
    )
    server = run_server("run", str(config))
    server.wait_serving(1)
    address = server.tcp("admin")
    assert refused(connect_from("127.0.0.2", address))
    with connect_from("127.0.0.1", address) as sock:
        sock.sendall(b"ping")
        assert sock.recv(10) == b"ping"
    code, log = server.terminate()
    assert code == 0
    assert "listener 'admin': refused connection from 127.0.0.2:" in log
