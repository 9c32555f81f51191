"""The reactorkit pytest plugin, registered through the ``pytest11`` entry point.

Installing reactorkit makes these fixtures available in every test suite:

``reactorkit_server``
    A factory that starts a real server on an ephemeral port in a
    background thread (see :func:`reactorkit.testing.serve`) and stops it
    in teardown::

        def test_daytime(reactorkit_server):
            server = reactorkit_server(handler="daytime")
            with socket.create_connection(server.address(), timeout=5) as sock:
                assert sock.recv(100).endswith(b"\\r\\n")

``fake_connection``
    A factory of :class:`reactorkit.testing.FakeConnection`: drive a
    handler without sockets::

        def test_echo(fake_connection):
            conn = fake_connection(EchoHandler())
            conn.feed(b"hi")
            assert conn.take() == b"hi"

``fake_clock``
    A :class:`reactorkit.testing.FakeClock`, for a ``Reactor(clock=...)``
    of your own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from reactorkit.handler import Handler
from reactorkit.testing.fake import FakeClock, FakeConnection
from reactorkit.testing.server import RunningServer, serve

__all__ = ["fake_clock", "fake_connection", "reactorkit_server"]


@pytest.fixture
def fake_clock() -> FakeClock:
    """A clock that moves only when told to (``advance(seconds)``)."""
    return FakeClock()


@pytest.fixture
def fake_connection() -> Iterator[Callable[..., FakeConnection]]:
    """``fake_connection(handler, **kwargs)`` -> a started :class:`FakeConnection`."""
    made: list[FakeConnection] = []

    def make(handler: Handler, **kwargs: Any) -> FakeConnection:
        connection = FakeConnection(handler, **kwargs)
        made.append(connection)
        return connection

    yield make
    for connection in made:
        if connection.clock is not None and not connection.reactor.is_running:
            connection.reactor.close()


@pytest.fixture
def reactorkit_server() -> Iterator[Callable[..., RunningServer]]:
    """``reactorkit_server(config=None, *, handler=..., options=..., **listen)``.

    Starts a real server (ports default to 0) and returns its
    :class:`~reactorkit.testing.RunningServer`; every server started is
    stopped in teardown. Arguments are those of :func:`reactorkit.testing.serve`.
    """
    with contextlib.ExitStack() as stack:

        def start(*args: Any, **kwargs: Any) -> RunningServer:
            return stack.enter_context(serve(*args, **kwargs))

        yield start
