"""Echo over real sockets: integrity, flow control, IPv6, UNIX, limits, idle timeout."""

from __future__ import annotations

import contextlib
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

        def server_side() -> tuple[bool, int, int, int]:
            (conn,) = srv.listeners["echo"].connections
            return (
                conn.is_reading,
                conn.get_write_buffer_size(),
                conn.high_water + conn.max_read,
                conn.bytes_received,
            )

        # Keep sending without reading until the server pauses reading.
        deadline = time.monotonic() + 20
        while not srv.call(lambda: len(srv.listeners["echo"].connections)):
            assert time.monotonic() < deadline, "the server never accepted"
            time.sleep(0.005)  # waiting for the server thread's accept, not for time
        while srv.call(server_side)[0]:
            assert time.monotonic() < deadline, "the server never paused reading"
            _, writable, _ = select.select([], [sock], [], 0.05)
            if writable:
                with contextlib.suppress(BlockingIOError):
                    sent += sock.send(chunk)
        _, buffered, bound, received = srv.call(server_side)
        assert buffered <= bound
        # While paused, more sending is not read: the buffer stays bounded.
        for _ in range(20):
            _, writable, _ = select.select([], [sock], [], 0.01)
            if writable:
                with contextlib.suppress(BlockingIOError):
                    sent += sock.send(chunk)
        reading, buffered, bound, received_later = srv.call(server_side)
        assert not reading
        assert buffered <= bound
        assert received_later == received
        # Counted while the connection is still open (the metrics' reads_paused).
        assert srv.call(lambda: srv.listeners["echo"].reads_paused) >= 1
        # Once the client reads, the echo resumes (the server reads again too).
        sock.setblocking(True)
        sock.settimeout(5)
        got = 0
        while got < received:
            data = sock.recv(1 << 20)
            assert data
            assert set(data) == {ord("x")}
            got += len(data)


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
