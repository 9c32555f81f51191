"""Issue 15's lean hot path attacked: the reactor's promises still hold on real sockets."""

from __future__ import annotations

import os
import selectors
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import reactorkit
from reactorkit import HandlerType
from reactorkit.handlers.echo import EchoHandler
from reactorkit.reactor import Reactor
from reactorkit.testing import serve
from tests.helpers import ServerProcess, child_env, connect, recv_until_closed

SELECTORS: dict[str, Callable[[], selectors.BaseSelector | None]] = {
    "epoll-poller": lambda: None,  # the default: reactorkit.poller.EpollPoller
    "selectors-epoll": selectors.EpollSelector,
    "selectors-poll": selectors.PollSelector,
}


@pytest.mark.parametrize("kind", sorted(SELECTORS))
def test_a_descriptor_closed_and_reused_in_one_batch_gets_no_stale_event(kind: str) -> None:
    # Callback A closes B, whose read event is in the same batch, and registers
    # a new socket that takes B's descriptor number (as an accept would).
    # B's stale event must reach neither B's callback nor the newcomer's: the
    # newcomer has nothing to read, and a plugin reading a blocking descriptor
    # only when told it is ready would hang the loop.
    reactor = Reactor(selector=SELECTORS[kind]())
    a_r, a_w = socket.socketpair()
    b_r, b_w = socket.socketpair()
    c_r, c_w = socket.socketpair()
    opened = [a_r, a_w, b_w, c_r, c_w]
    for sock in [*opened, b_r]:
        sock.settimeout(5.0)
    calls: list[Any] = []

    def on_a(mask: int) -> None:
        a_r.recv(100)
        calls.append("a")
        fd = b_r.fileno()
        reactor.unregister(b_r)
        b_r.close()
        os.dup2(c_r.fileno(), fd)  # the lowest free number, as accept() picks
        newcomer = socket.socket(fileno=fd)
        opened.append(newcomer)
        reactor.register(newcomer, selectors.EVENT_READ, lambda m: calls.append(("newcomer", m)))

    try:
        reactor.register(a_r, selectors.EVENT_READ, on_a)
        reactor.register(b_r, selectors.EVENT_READ, lambda m: calls.append(("b", m)))
        a_w.send(b"a")  # ready first: A's event comes before B's in the batch
        b_w.send(b"b")
        reactor.stop()  # one pass
        reactor.run()
        assert calls == ["a"]
        # The newcomer is watched all the same: data for it arrives.
        c_w.send(b"c")
        reactor.stop()
        reactor.run()
        assert calls == ["a", ("newcomer", selectors.EVENT_READ)]
    finally:
        reactor.close()
        for sock in opened:
            sock.close()


class LocalAddressAudit:
    """A plugin that logs each connection's local address once it is closed."""

    def __init__(self) -> None:
        self.closed = threading.Event()
        self.seen: list[Any] = []

    @reactorkit.hookimpl
    def reactorkit_connection_lost(self, listener: Any, connection: Any, reason: Any) -> None:
        self.seen.append(connection.sockname)
        self.closed.set()


@pytest.mark.parametrize("how", ["client closes", "client resets"])
def test_the_local_address_is_known_after_the_connection_closed(how: str) -> None:
    # Issue 15 made sockname lazy; Transport and docs/hooks.md still promise it
    # to connection_lost (hook and handler), which run once the socket is closed.
    audit = LocalAddressAudit()
    with serve(handler="echo", plugins=[audit]) as srv:
        with connect(srv.address()) as sock:
            sock.sendall(b"x")
            assert sock.recv(10) == b"x"
            if how == "client resets":
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        assert audit.closed.wait(5.0)
        assert audit.seen == [srv.address()]


def test_a_socket_closed_without_unregistering_does_not_cost_the_next_client(caplog) -> None:
    # A careless plugin registers its own socket and closes it without
    # unregistering. epoll forgets a closed descriptor by itself; the
    # poller's table must not keep it, or the next accept that gets its
    # number cannot register, is never served, and holds a connection slot.
    with serve(handler="echo") as srv:
        reactor = next(iter(srv.listeners.values())).reactor
        client = socket.socket()  # made first: the accept gets the freed number
        client.settimeout(5.0)

        def careless() -> int:
            mine, other = socket.socketpair()
            reactor.register(mine, selectors.EVENT_READ, lambda mask: None)
            fd = mine.fileno()
            mine.close()
            other.close()
            return fd

        stale = srv.call(careless)
        with client:
            client.connect(srv.address())
            client.sendall(b"served")
            assert client.recv(100) == b"served"
            fds = srv.call(lambda: [c.fileno for c in srv.listeners["echo"].connections])
        assert fds == [stale]  # the attack happened: the client got the stale number
    assert "already registered" not in caplog.text


class ShoutingEcho(EchoHandler):
    """A third-party echo variant: overrides data_received."""

    def data_received(self, data: bytes) -> None:
        self.connection.write(data.upper())


class CountingEcho(EchoHandler):
    """Another: counts, then echoes through the base class."""

    def connection_made(self, connection: reactorkit.Transport) -> None:
        super().connection_made(connection)
        self.count = 0

    def data_received(self, data: bytes) -> None:
        self.count += len(data)
        super().data_received(b"%d:" % self.count + data)


@pytest.mark.parametrize(
    ("handler", "expected"), [(ShoutingEcho, b"ABC"), (CountingEcho, b"3:abc")]
)
def test_a_subclass_of_the_echo_handler_keeps_its_data_received(
    handler: type[EchoHandler], expected: bytes
) -> None:
    # EchoHandler binds connection.write as its data_received (issue 15's hot
    # path); that must not shadow a subclass's own method.
    kind = HandlerType(name="echo-variant", handler=handler, description="a subclass")
    with serve(handler=kind, entry_points=False) as srv, connect(srv.address()) as sock:
        sock.sendall(b"abc")
        got = b""
        while len(got) < len(expected):
            chunk = sock.recv(100)
            assert chunk
            got += chunk
        assert got == expected


THIRD_PARTY_PLUGIN = """
import logging

import reactorkit
from reactorkit.handlers.echo import EchoHandler

log = logging.getLogger("shout_plugin")


class ShoutingEcho(EchoHandler):
    def data_received(self, data):
        self.connection.write(data.upper())


@reactorkit.hookimpl
def reactorkit_handler_types():
    return [reactorkit.HandlerType(name="shout", handler=ShoutingEcho, description="loud")]


@reactorkit.hookimpl
def reactorkit_connection_lost(listener, connection, reason):
    log.warning("closed: local address %s:%s", *connection.sockname)
"""

THIRD_PARTY_CONFIG = """
[reactor]
plugins = ["shout_plugin"]

[[listen]]
name = "shout"
handler = "shout"
host = "127.0.0.1"
port = 0
"""


def test_a_third_party_echo_subclass_and_sockname_hook_through_reactorkit_run(
    tmp_path: Path, run_server: Any
) -> None:
    (tmp_path / "shout_plugin.py").write_text(THIRD_PARTY_PLUGIN)
    config = tmp_path / "shout.toml"
    config.write_text(THIRD_PARTY_CONFIG)
    proc: ServerProcess = run_server("run", str(config), env=child_env(PYTHONPATH=str(tmp_path)))
    proc.wait_serving(1)
    proc.keep_reading_log()
    address = proc.tcp("shout")
    with connect(address) as sock:
        sock.sendall(b"abc")
        sock.shutdown(socket.SHUT_WR)
        assert recv_until_closed(sock) == b"ABC"
    code, log = proc.terminate()
    assert code == 0, log
    assert f"closed: local address {address[0]}:{address[1]}" in log
