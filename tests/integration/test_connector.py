"""reactor.connect_tcp/connect_unix over real loopback sockets: success, failure, flow control."""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

import reactorkit
from reactorkit.connector import Connector
from reactorkit.testing import run_until


class Recorder(reactorkit.Handler):
    """Records what the connection tells it."""

    def __init__(self) -> None:
        super().__init__()
        self.made = 0
        self.data = bytearray()
        self.lost: list[BaseException | None] = []
        self.paused = 0

    def connection_made(self, connection: reactorkit.Connection) -> None:
        self.connection = connection
        self.made += 1

    def data_received(self, data: bytes) -> None:
        self.data += data

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.append(exc)

    def pause_writing(self) -> None:
        self.paused += 1


@pytest.fixture
def reactor() -> Iterator[reactorkit.Reactor]:
    reactor = reactorkit.Reactor(threads=2)
    yield reactor
    reactor.close()


@pytest.fixture
def server() -> Iterator[socket.socket]:
    sock = socket.create_server(("127.0.0.1", 0))
    sock.settimeout(5)
    yield sock
    sock.close()


def finished(reactor: reactorkit.Reactor, connector: Connector) -> list[Connector]:
    done: list[Connector] = []
    connector.add_done_callback(done.append)
    run_until(reactor, lambda: bool(done))
    return done


def test_connect_tcp_hands_a_listenerless_connection_to_the_handler(
    reactor: reactorkit.Reactor, server: socket.socket
) -> None:
    handler = Recorder()
    connector = reactor.connect_tcp("127.0.0.1", server.getsockname()[1], handler, timeout=5)
    assert not connector.done()
    assert finished(reactor, connector) == [connector]
    connection = connector.result()
    assert connector.exception() is None
    assert handler.made == 1
    assert handler.connection is connection
    assert connection.listener is None
    peer, _ = server.accept()
    with peer:
        peer.settimeout(5)
        connection.write(b"hello")
        assert peer.recv(5) == b"hello"
        peer.sendall(b"back")
        run_until(reactor, lambda: bytes(handler.data) == b"back")
        connection.close()
        assert peer.recv(1) == b""
    run_until(reactor, lambda: handler.lost == [None])


def test_a_host_name_is_resolved_off_the_loop(
    reactor: reactorkit.Reactor, server: socket.socket
) -> None:
    handler = Recorder()
    connector = reactor.connect_tcp("localhost", server.getsockname()[1], handler, timeout=5)
    finished(reactor, connector)
    assert connector.result().peername[1] == server.getsockname()[1]
    connector.result().abort()
    run_until(reactor, lambda: len(handler.lost) == 1)


def test_refused_is_delivered_to_the_caller_and_the_handler_is_never_called(
    reactor: reactorkit.Reactor,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: refuses
        handler = Recorder()
        connector = reactor.connect_tcp("127.0.0.1", port, handler, timeout=5)
        finished(reactor, connector)
    error = connector.exception()
    assert isinstance(error, reactorkit.ConnectError)
    assert isinstance(error, OSError)
    assert error.errno == errno.ECONNREFUSED
    assert error.address == f"127.0.0.1:{port}"
    assert str(error).startswith(f"cannot connect to 127.0.0.1:{port}: ")
    with pytest.raises(reactorkit.ConnectError):
        connector.result()
    assert handler.made == 0
    assert handler.lost == []


def test_an_unresolvable_name_fails_cleanly(reactor: reactorkit.Reactor) -> None:
    connector = reactor.connect_tcp("no-such-host.invalid", 6379, Recorder(), timeout=5)
    finished(reactor, connector)
    error = connector.exception()
    assert isinstance(error, reactorkit.ConnectError)
    assert "cannot resolve" in str(error)


def test_a_connect_that_hangs_times_out(reactor: reactorkit.Reactor) -> None:
    # A listener whose accept queue is full drops SYNs: the connect hangs.
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        address = full.getsockname()
        fillers = []
        try:
            for _ in range(8):
                filler = socket.socket()
                filler.setblocking(False)
                filler.connect_ex(address)
                fillers.append(filler)
            handler = Recorder()
            connector = reactor.connect_tcp(address[0], address[1], handler, timeout=0.3)
            finished(reactor, connector)
        finally:
            for filler in fillers:
                filler.close()
    error = connector.exception()
    assert isinstance(error, reactorkit.ConnectError)
    assert error.errno == errno.ETIMEDOUT
    assert "no connection within 0.3s" in str(error)
    assert handler.made == 0


def test_connect_unix_and_a_missing_path(reactor: reactorkit.Reactor, tmp_path: Path) -> None:
    path = str(tmp_path / "s.sock")
    missing = reactor.connect_unix(path, Recorder(), timeout=5)
    finished(reactor, missing)
    error = missing.exception()
    assert isinstance(error, reactorkit.ConnectError)
    assert error.errno == errno.ENOENT
    assert error.address == f"unix:{path}"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(path)
        server.listen()
        handler = Recorder()
        connector = reactor.connect_unix(path, handler, timeout=5)
        finished(reactor, connector)
        connection = connector.result()
        peer, _ = server.accept()
        with peer:
            peer.settimeout(5)
            connection.write(b"over unix")
            assert peer.recv(9) == b"over unix"
        run_until(reactor, lambda: len(handler.lost) == 1)


def test_flow_control_is_the_inbound_one(
    reactor: reactorkit.Reactor, server: socket.socket
) -> None:
    handler = Recorder()
    connector = reactor.connect_tcp(
        "127.0.0.1", server.getsockname()[1], handler, timeout=5, high_water=64 * 1024
    )
    finished(reactor, connector)
    connection = connector.result()
    peer, _ = server.accept()  # never reads
    with peer:
        for _ in range(256):
            connection.write(b"x" * 65536)
            if handler.paused:
                break
        assert handler.paused == 1
        assert connection.get_write_buffer_size() > 64 * 1024
        connection.abort()
    run_until(reactor, lambda: len(handler.lost) == 1)


def test_cancel_closes_the_socket_and_calls_nothing(
    reactor: reactorkit.Reactor, server: socket.socket
) -> None:
    handler = Recorder()
    connector = reactor.connect_tcp("127.0.0.1", server.getsockname()[1], handler, timeout=5)
    called: list[Connector] = []
    connector.add_done_callback(called.append)
    connector.cancel()
    assert connector.done()
    for _ in range(3):
        reactor.call_soon(reactor.stop)
        reactor.run()
    assert called == []
    assert handler.made == 0
    assert isinstance(connector.exception(), reactorkit.ConnectError)
    assert connector.exception().errno == errno.ECANCELED  # type: ignore[union-attr]


def test_a_handler_that_raises_in_connection_made_loses_only_its_connection(
    reactor: reactorkit.Reactor, server: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(Recorder):
        def connection_made(self, connection: reactorkit.Connection) -> None:
            raise RuntimeError("boom")

    handler = Broken()
    connector = reactor.connect_tcp("127.0.0.1", server.getsockname()[1], handler, timeout=5)
    with caplog.at_level(logging.ERROR, logger="reactorkit.connection"):
        finished(reactor, connector)
        run_until(reactor, lambda: len(handler.lost) == 1)
    assert connector.result().is_closing()
    assert "Broken.connection_made raised" in caplog.text
    # The loop is fine: another connect works.
    other = reactor.connect_tcp("127.0.0.1", server.getsockname()[1], Recorder(), timeout=5)
    finished(reactor, other)
    assert other.exception() is None
    other.result().abort()
    reactor.call_soon(reactor.stop)
    reactor.run()


def test_a_done_callback_that_raises_is_logged_not_propagated(
    reactor: reactorkit.Reactor, server: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    connector = reactor.connect_tcp("127.0.0.1", server.getsockname()[1], Recorder(), timeout=5)

    def bad(connector: Connector) -> None:
        raise ValueError("callback bug")

    connector.add_done_callback(bad)
    with caplog.at_level(logging.ERROR, logger="reactorkit.reactor"):
        finished(reactor, connector)
    assert "callback bug" in caplog.text
    connector.result().abort()  # the connection is still ours to close
    run_until(reactor, lambda: True)
    connector.result().abort()
    reactor.call_soon(reactor.stop)
    reactor.run()


def test_timeout_must_be_positive(reactor: reactorkit.Reactor) -> None:
    with pytest.raises(ValueError, match="connect timeout must be > 0"):
        reactor.connect_tcp("127.0.0.1", 1, Recorder(), timeout=0)
