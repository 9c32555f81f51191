"""http-lite's promises on real sockets: bounded memory, no request lost at EOF or shutdown."""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import reactorkit
from reactorkit.testing import RunningServer, serve
from tests.helpers import PeakHeld, child_env, connect, recv_until_closed

GATE = threading.Event()
STARTED = threading.Event()
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


def slow(request: reactorkit.Request) -> str:
    STARTED.set()
    assert GATE.wait(5)
    return "slow done"


def echo(request: reactorkit.Request) -> bytes:
    return request.body


class Routes:
    @reactorkit.hookimpl
    def reactorkit_http_routes(self) -> list[reactorkit.Route]:
        return [
            reactorkit.Route(method="GET", path="/slow", function=slow, blocking=True),
            reactorkit.Route(method="POST", path="/echo", function=echo),
        ]


@pytest.fixture
def web() -> Iterator[RunningServer]:
    GATE.clear()
    STARTED.clear()
    with serve(handler="http-lite", plugins=[Routes()], shutdown_timeout=5) as srv:
        yield srv
    GATE.set()


def bodies(reply: bytes) -> list[bytes]:
    out = []
    while reply:
        head, _, rest = reply.partition(b"\r\n\r\n")
        size = int(re.search(rb"content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
        out.append(rest[:size])
        reply = rest[size:]
    return out


THREE = (
    b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
    + HEALTHZ
    + b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nthird"
)


def handler_state(srv: RunningServer) -> dict[str, Any]:
    deadline = time.monotonic() + 5
    while (state := srv.call(_read_state, srv)) is None:
        # Not accepted yet, or an earlier helper connection still lingering.
        assert time.monotonic() < deadline, "no single open http-lite connection"
    return state


def _read_state(srv: RunningServer) -> dict[str, Any] | None:
    open_ = [c for c in srv.listeners["http-lite"].connections if not c.is_closing()]
    if len(open_) != 1:
        return None
    (connection,) = open_
    handler: Any = connection.handler
    return {
        "buffered": connection.get_write_buffer_size(),
        "high_water": connection.high_water,
        "max_read": connection.max_read,
        "reading": connection.is_reading,
        "queued": len(handler._out.queue),
        "unparsed": handler._core.buffered,
    }


def wait_for(srv: RunningServer, predicate: Any, timeout: float = 5.0) -> dict[str, Any]:
    """Poll the reactor (each poll is a round trip through it) until ``predicate(state)``."""
    deadline = time.monotonic() + timeout
    while True:
        state = handler_state(srv)
        if predicate(state):
            return state
        assert time.monotonic() < deadline, state


def test_ten_thousand_pipelined_requests_in_one_send_are_answered_in_order(
    web: RunningServer,
) -> None:
    # One sendall of 10 000 requests, bodiless and with bodies in turn, the
    # client reading all along: every one answered, once, in order.
    count = 10_000
    parts = [
        HEALTHZ
        if i % 2
        else b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%d" % (len(b"%d" % i), i)
        for i in range(count)
    ]
    last = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with connect(web.address(), timeout=30) as sock:
        sender = threading.Thread(target=sock.sendall, args=(b"".join(parts) + last,))
        sender.start()
        reply = recv_until_closed(sock)
        sender.join(30)
    assert not sender.is_alive()
    expected = [b"ok\n" if i % 2 else b"%d" % i for i in range(count)]
    assert bodies(reply) == [*expected, b"ok\n"]


# -- issue 9 item 7: nothing fully received is lost --------------------------


def test_half_close_behind_a_blocking_route_answers_all_three_in_order(
    web: RunningServer,
) -> None:
    with connect(web.address()) as sock:
        sock.sendall(THREE)
        sock.shutdown(socket.SHUT_WR)
        assert STARTED.wait(5)
        GATE.set()
        reply = recv_until_closed(sock)
    assert bodies(reply) == [b"slow done", b"ok\n", b"third"]


def test_graceful_shutdown_behind_a_blocking_route_answers_all_three(web: RunningServer) -> None:
    with connect(web.address()) as sock:
        sock.sendall(THREE)
        assert STARTED.wait(5)
        wait_for(web, lambda s: s["queued"] == 2)  # the other two were read
        web.reactor.call_soon_threadsafe(web.server.shutdown)
        wait_for(web, lambda s: not s["reading"])
        GATE.set()
        reply = recv_until_closed(sock)
    # /healthz says 503 once shutdown began: answered all the same, in order.
    assert bodies(reply) == [b"slow done", b"shutting down\n", b"third"]
    last = reply.rsplit(b"HTTP/1.1 ", 1)[1]
    assert b"connection: close\r\n" in last
    assert reply.count(b"connection: close") == 1


SLOW_PLUGIN = """
import reactorkit

def slow(request):
    with open({fifo!r}) as gate:  # blocks until the test opens the FIFO for writing
        gate.read()
    return "slow done"

def echo(request):
    return request.body

@reactorkit.hookimpl
def reactorkit_http_routes():
    return [
        reactorkit.Route(method="GET", path="/slow", function=slow, blocking=True),
        reactorkit.Route(method="POST", path="/echo", function=echo),
    ]
"""


def test_sigterm_behind_a_blocking_route_answers_all_three_and_exits_0(
    tmp_path: Path, run_server: Any
) -> None:
    fifo = tmp_path / "gate"
    os.mkfifo(fifo)
    (tmp_path / "rk_slow_routes.py").write_text(SLOW_PLUGIN.format(fifo=str(fifo)))
    config = tmp_path / "reactorkit.toml"
    config.write_text(
        textwrap.dedent("""
            [reactor]
            plugins = ["rk_slow_routes"]
            shutdown_timeout = 10

            [[listen]]
            name = "web"
            handler = "http-lite"
            host = "127.0.0.1"
            port = 0
        """)
    )
    server = run_server("run", str(config), env=child_env(PYTHONPATH=str(tmp_path)))
    server.wait_serving(1)
    with connect(server.tcp("web")) as sock:
        sock.sendall(THREE)
        # Opening the FIFO for writing returns once the route opened it: it runs.
        gate = os.open(fifo, os.O_WRONLY)
        server.proc.send_signal(signal.SIGTERM)
        # The signal is handled on the reactor thread; the reply is not there yet.
        readable, _, _ = select.select([sock], [], [], 0.2)
        assert not readable
        os.close(gate)
        reply = recv_until_closed(sock)
    code, log = server.wait_exit()
    assert bodies(reply) == [b"slow done", b"shutting down\n", b"third"], log
    assert b"connection: close\r\n" in reply.rsplit(b"HTTP/1.1 ", 1)[1]
    assert code == 0, log


# -- issue 9 item 6: a client that never reads cannot grow the server --------


def _http_held(conn: Any) -> int:
    # Unsent output plus input not yet parsed into requests.
    return conn.get_write_buffer_size() + conn.handler._core.buffered  # type: ignore[no-any-return]


@pytest.mark.slow
def test_a_client_that_never_reads_keeps_the_server_bounded(web: RunningServer) -> None:
    one_response = len(_healthz_response(web))
    held = PeakHeld(web, _http_held)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect(web.address())
    sock.setblocking(False)
    batch = HEALTHZ * 100
    sent = 0
    peak = 0
    state: dict[str, Any] = {}
    try:
        # The kernel's send buffer (MBs on loopback) fills before the server's
        # own does: generous, for a loaded machine.
        deadline = time.monotonic() + 60
        for rounds in range(200_000):
            assert time.monotonic() < deadline, "the server kept reading for 60 s"
            _, writable, _ = select.select([], [sock], [], 0.5)
            if not writable:
                break  # the server stopped reading: both windows are full
            try:
                sent += sock.send(batch[sent % len(batch) :])
            except BlockingIOError:
                continue
            if rounds % 20 == 0:
                state = handler_state(web)
                peak = max(peak, state["buffered"])
        state = handler_state(web)
        peak = max(peak, state["buffered"])
        assert not state["reading"]
        # The promise: high water + one read + one response, whatever the
        # client does, for output and unparsed input together, every pass.
        bound = state["high_water"] + state["max_read"] + one_response
        assert peak <= state["high_water"] + one_response, (peak, state)
        assert held.stop() <= bound, (held.peak, state)
        assert held.passes > 10
        assert state["queued"] <= 32  # max_pending
        assert state["unparsed"] <= state["max_read"]
        # Once the client reads, every complete request it sent is answered.
        expected = sent // len(HEALTHZ)
        sock.setblocking(True)
        marker = b"HTTP/1.1 200 OK"
        got = 0
        tail = b""
        while got < expected:
            chunk = sock.recv(1 << 20)
            assert chunk, f"closed after {got} of {expected} responses"
            data = tail + chunk  # the tail is shorter than the marker: no double count
            got += data.count(marker)
            tail = data[-(len(marker) - 1) :]
        assert got == expected
    finally:
        sock.close()


def _healthz_response(srv: RunningServer) -> bytes:
    with connect(srv.address()) as sock:
        sock.sendall(HEALTHZ.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
        return recv_until_closed(sock)


# -- issue 9 item 10: the error reaches a client that is still sending -------


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n", 413),
        (b"GET /" + b"a" * 9000, 414),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 20000, 431),
    ],
    ids=["413", "414", "431"],
)
def test_error_response_reaches_a_client_that_keeps_writing(
    web: RunningServer, head: bytes, status: int
) -> None:
    sock = connect(web.address())
    stop = threading.Event()

    def keep_writing() -> None:
        junk = b"z" * 65536
        try:
            sock.sendall(head)
            for _ in range(512):  # at most 32 MiB
                if stop.is_set():
                    return
                sock.sendall(junk)
        except OSError:
            pass  # the server closed: expected once it answered

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        reply = b""
        while b"\r\n\r\n" not in reply or not _complete(reply):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    finally:
        stop.set()
        writer.join(10)
        sock.close()
    assert reply.startswith(b"HTTP/1.1 %d " % status), reply[:100]
    assert _complete(reply)


def _complete(reply: bytes) -> bool:
    head, _, body = reply.partition(b"\r\n\r\n")
    match = re.search(rb"content-length: (\d+)", head)
    return match is not None and len(body) >= int(match.group(1))
