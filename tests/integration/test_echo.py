"""Echo over real sockets: integrity, flow control, IPv6, UNIX, limits, idle timeout."""

from __future__ import annotations

import os
import select
import socket
import threading
import time

import pytest

import reactorkit
from reactorkit.testing import serve
from tests.helpers import connect, recv_until_closed


def echo_roundtrip(sock: socket.socket, payload: bytes) -> bytes:
    received = bytearray()

    def reader() -> None:
        while len(received) < len(payload):
            chunk = sock.recv(65536)
            if not chunk:
                break
            received.extend(chunk)

    thread = threading.Thread(target=reader)
    thread.start()
    sock.sendall(payload)
    thread.join(30)
    return bytes(received)


def test_echo_small_message() -> None:
    with serve(handler="echo") as srv, connect(srv.address()) as sock:
        sock.sendall(b"hello\r\n")
        assert sock.recv(100) == b"hello\r\n"


def test_four_mebibytes_echoed_intact() -> None:
    payload = os.urandom(4 * 1024 * 1024)
    with serve(handler="echo") as srv, connect(srv.address()) as sock:
        assert echo_roundtrip(sock, payload) == payload


def test_client_that_never_reads_pauses_reading_and_bounds_the_buffer() -> None:
    with serve(handler="echo") as srv, connect(srv.address()) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.setblocking(False)
        chunk = b"x" * 65536
        sent = 0
        deadline = time.monotonic() + 20
        # Send until the server stops taking bytes: it has paused reading.
        while time.monotonic() < deadline:
            _, writable, _ = select.select([], [sock], [], 0.5)
            if not writable:
                break
            try:
                sent += sock.send(chunk)
            except BlockingIOError:
                continue
        else:
            pytest.fail("the server kept reading from a client that never reads")
        (conn,) = srv.call(lambda: list(srv.listeners["echo"].connections))
        state = srv.call(lambda: (conn.is_reading, conn.get_write_buffer_size()))
        assert state[0] is False, "reading was not paused"
        assert state[1] <= conn.high_water + conn.max_read
        assert sent > conn.high_water  # the scenario really pushed past the mark
        # Once the client reads, everything comes back, in order.
        sock.setblocking(True)
        sock.settimeout(5)
        received = 0
        while received < sent:
            data = sock.recv(1 << 20)
            assert data
            assert set(data) == {ord("x")}
            received += len(data)
        assert received == sent


def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 support in this Python build")
    try:
        probe = socket.socket(socket.AF_INET6)
        probe.bind(("::1", 0))
        probe.close()
    except OSError:
        pytest.skip("::1 is not configured on this machine")
    with serve(handler="echo", host="::1") as srv:
        host, port = srv.address()[:2]
        assert host == "::1"
        with socket.create_connection(("::1", port), timeout=5) as sock:
            sock.sendall(b"v6")
            assert sock.recv(10) == b"v6"


def test_unix_socket(tmp_path) -> None:
    path = str(tmp_path / "echo.sock")
    with serve(handler="echo", path=path) as srv:
        assert srv.address() == path
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(path)
            sock.sendall(b"unix")
            assert sock.recv(10) == b"unix"
    assert not os.path.exists(path), "the socket file is removed on shutdown"


def test_max_connections_holds_and_resumes() -> None:
    with serve(handler="echo", max_connections=2) as srv:
        first, second = connect(srv.address()), connect(srv.address())
        for sock in (first, second):
            sock.sendall(b"hi")
            assert sock.recv(10) == b"hi"
        third = connect(srv.address())  # completes in the kernel backlog...
        third.sendall(b"waiting")
        third.settimeout(0.3)
        with pytest.raises(TimeoutError):
            third.recv(10)  # ...but is not accepted, so nothing echoes
        assert srv.call(lambda: srv.listeners["echo"].open_connections) == 2
        first.close()
        third.settimeout(5)
        assert third.recv(10) == b"waiting"  # accepted once a slot freed up
        second.close()
        third.close()


def test_idle_connection_is_closed_after_idle_timeout() -> None:
    with serve(handler="echo", idle_timeout=0.2) as srv, connect(srv.address()) as sock:
        sock.sendall(b"a")
        assert sock.recv(1) == b"a"
        started = time.monotonic()
        assert recv_until_closed(sock) == b""
        assert time.monotonic() - started >= 0.15


class _Explodes(reactorkit.Handler):
    def data_received(self, data: bytes) -> None:
        if data.startswith(b"boom"):
            raise RuntimeError("handler bug on purpose")
        self.connection.write(data)


def test_handler_exception_closes_only_its_connection(caplog) -> None:
    kind = reactorkit.HandlerType(name="explodes", handler=_Explodes)
    with serve(handler=kind) as srv:
        good, bad = connect(srv.address()), connect(srv.address())
        bad.sendall(b"boom")
        assert recv_until_closed(bad) == b""
        good.sendall(b"still fine")
        assert good.recv(100) == b"still fine"
        assert srv.call(lambda: srv.listeners["explodes"].stats.errors) == 1
        good.close()
        bad.close()
    assert "handler bug on purpose" in caplog.text
    assert "'explodes'" in caplog.text
