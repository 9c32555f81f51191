"""Lifecycle and observation hooks, called by a real server, and graceful shutdown."""

from __future__ import annotations

import threading

import reactorkit
from reactorkit.testing import serve
from tests.helpers import connect, recv_until_closed


class Observer:
    """A plugin that records every lifecycle and observation hook."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self.lost = threading.Event()

    @reactorkit.hookimpl
    def reactorkit_configure(self, config: reactorkit.Config) -> None:
        self.calls.append(("configure", config.path))

    @reactorkit.hookimpl
    def reactorkit_reactor_started(self, reactor: reactorkit.Reactor) -> None:
        self.calls.append(("started", reactor.is_running))

    @reactorkit.hookimpl
    def reactorkit_reactor_stopping(self, reactor: reactorkit.Reactor) -> None:
        self.calls.append(("stopping", reactor.is_running))

    @reactorkit.hookimpl
    def reactorkit_connection_made(
        self, listener: reactorkit.Listener, connection: reactorkit.Connection
    ) -> None:
        self.calls.append(("made", (listener.name, connection.state)))

    @reactorkit.hookimpl
    def reactorkit_connection_lost(
        self,
        listener: reactorkit.Listener,
        connection: reactorkit.Connection,
        reason: BaseException | None,
    ) -> None:
        self.calls.append(("lost", (listener.name, connection.bytes_received, reason)))
        self.lost.set()


def test_lifecycle_and_observation_hooks_are_called_in_order() -> None:
    observer = Observer()
    with serve(handler="echo", plugins=[observer]) as srv, connect(srv.address()) as sock:
        sock.sendall(b"12345")
        assert sock.recv(5) == b"12345"
        sock.close()
        assert observer.lost.wait(5)
    names = [name for name, _ in observer.calls]
    assert names == ["configure", "started", "made", "lost", "stopping"]
    assert dict(observer.calls)["configure"] == "<test config>"
    assert dict(observer.calls)["made"] == ("echo", "open")
    assert dict(observer.calls)["lost"] == ("echo", 5, None)
    assert dict(observer.calls)["stopping"] is True


def test_graceful_shutdown_closes_idle_connections_and_stops() -> None:
    with serve(handler="echo") as srv:
        sock = connect(srv.address())
        sock.sendall(b"hi")
        assert sock.recv(2) == b"hi"
        srv.stop()
        assert recv_until_closed(sock) == b""
        assert not srv.thread.is_alive()
        sock.close()


def test_shutdown_requested_is_called_on_every_handler() -> None:
    told = threading.Event()

    class Polite(reactorkit.Handler):
        def shutdown_requested(self) -> None:
            self.connection.write(b"bye\r\n")
            told.set()
            self.connection.close()

    kind = reactorkit.HandlerType(name="polite", handler=Polite)
    with serve(handler=kind) as srv:
        sock = connect(srv.address())
        srv.call(lambda: None)  # the accept has been processed once this returns
        srv.stop()
        assert told.is_set()
        assert recv_until_closed(sock) == b"bye\r\n"
        sock.close()


def test_listener_stats_count_connections_and_bytes() -> None:
    with serve(handler="echo") as srv:
        for payload in (b"abc", b"defgh"):
            with connect(srv.address()) as sock:
                sock.sendall(payload)
                assert sock.recv(10) == payload
        listener = srv.listeners["echo"]

        def settled() -> tuple[int, int, int, int]:
            return (
                listener.stats.total_connections,
                listener.open_connections,
                listener.bytes_received,
                listener.bytes_sent,
            )

        # The second close may still be in flight; the totals are final either way.
        total, _, received, sent = srv.call(settled)
        assert (total, received, sent) == (2, 8, 8)
