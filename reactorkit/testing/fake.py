"""In-memory test doubles: a fake clock and a fake connection (no sockets).

:class:`FakeConnection` implements :class:`reactorkit.Transport`, as the real
:class:`reactorkit.Connection` does (mypy checks both), and keeps the real
one's ordering: ``connection_lost`` arrives on a later reactor pass than the
``close()``/``abort()`` that caused it (run :func:`run_once` or
:meth:`FakeConnection.settle` to deliver it), and after :meth:`feed_eof`
nothing more is read.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from reactorkit.connection import DEFAULT_HIGH_WATER, DEFAULT_LOW_WATER
from reactorkit.handler import Handler
from reactorkit.reactor import Reactor

if TYPE_CHECKING:
    from reactorkit.transport import Transport

__all__ = ["FakeClock", "FakeConnection", "run_once", "run_until"]


class FakeClock:
    """A clock that only moves when told to; pass it as ``Reactor(clock=...)``.

    Args:
        start: the initial time in seconds.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward (timers fire on the next reactor pass)."""
        if seconds < 0:
            raise ValueError(f"time only moves forward, got {seconds!r}")
        self.now += seconds


def run_once(reactor: Reactor) -> None:
    """Run one reactor pass: due timers and ready callbacks, without blocking."""
    reactor.call_soon(reactor.stop)
    reactor.run()


def run_until(reactor: Reactor, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Run reactor passes until ``predicate()`` is true (e.g. a thread's result arrived).

    Raises:
        TimeoutError: ``predicate`` stayed false for ``timeout`` real seconds.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        reactor.call_soon(reactor.stop)
        reactor.run()
        if not predicate():
            time.sleep(0.001)  # waiting for a worker thread, not for time to pass


class FakeConnection:
    """A connection with no socket: what a handler writes is kept in memory.

    It offers the same methods a handler uses on a real
    :class:`reactorkit.Connection` (``write``, ``close``, ``abort``,
    ``pause_reading``, ``is_closing``...) plus test controls: :meth:`feed`,
    :meth:`feed_eof`, :meth:`take`, :meth:`block_writes`, :meth:`drain` and
    :meth:`settle`. Unlike the real connection it lets a handler's exception
    propagate to the test that fed it.

    Args:
        handler: the handler under test; ``connection_made`` is called at once.
        reactor: defaults to a new reactor on a :class:`FakeClock`
            (``self.clock``).
        listener: what ``connection.listener`` returns (None by default).
        peername: the fake peer address.
        peer_certificate, alpn_protocol, is_tls: what a TLS connection
            would report (``getpeercert()`` dict, negotiated protocol).
    """

    def __init__(
        self,
        handler: Handler,
        *,
        reactor: Reactor | None = None,
        listener: Any = None,
        peername: Any = ("127.0.0.1", 54321),
        sockname: Any = ("127.0.0.1", 7007),
        start: bool = True,
        peer_certificate: dict[str, Any] | None = None,
        alpn_protocol: str | None = None,
        is_tls: bool = False,
    ) -> None:
        if reactor is None:
            self.clock: FakeClock | None = FakeClock()
            reactor = Reactor(clock=self.clock, threads=2)
            # Our own reactor: nothing else holds it, so it is freed (and
            # its descriptors closed, see Reactor) with us, or with the
            # cycle our handler's pending callbacks make with it.
        else:
            self.clock = None
        self.reactor = reactor
        self.handler = handler
        self.listener = listener
        self.peername = peername
        self.sockname = sockname
        self.peer_certificate = peer_certificate
        self.alpn_protocol = alpn_protocol
        self.is_tls = is_tls
        self.fileno = -1
        self.high_water = DEFAULT_HIGH_WATER
        self.low_water = DEFAULT_LOW_WATER
        self.written = bytearray()
        self.bytes_received = 0
        self.bytes_sent = 0
        self.last_activity = reactor.time
        self.closed = False
        self.aborted = False
        self.eof = False
        self.lost: list[BaseException | None] = []
        self._reading = True
        self._closing = False
        self._writes_blocked = False
        self._pending = bytearray()
        self._writing_paused = False
        if start:
            self.handler.connection_made(self)

    # -- the Connection API a handler uses ---------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or not data:
            return
        if self._writes_blocked:
            self._pending += data
            if not self._writing_paused and len(self._pending) > self.high_water:
                self._writing_paused = True
                self.handler.pause_writing()
        else:
            self.written += data
            self.bytes_sent += len(data)

    def writelines(self, chunks: Iterable[bytes | bytearray | memoryview]) -> None:
        for chunk in chunks:
            self.write(chunk)

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if not self._pending:
            self._lose(None)

    def abort(self) -> None:
        if self.closed:
            return
        self.aborted = True
        self._pending.clear()
        self._closing = True
        self._lose(None)

    def is_closing(self) -> bool:
        return self._closing

    @property
    def state(self) -> str:
        if self.closed:
            return "closed"
        return "closing" if self._closing else "open"

    def pause_reading(self) -> None:
        self._reading = False

    def resume_reading(self) -> None:
        self._reading = True

    @property
    def is_reading(self) -> bool:
        return self._reading and not self._closing and not self.eof

    def get_write_buffer_size(self) -> int:
        return len(self._pending)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.high_water = self.high_water if high is None else high
        self.low_water = self.high_water // 4 if low is None else low

    # -- test controls -----------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Deliver ``data`` to the handler as if it arrived from the peer.

        Raises:
            AssertionError: the handler paused reading or the connection is closed.
        """
        assert not self.closed, "feeding a closed connection"
        assert not self.eof, "feeding after feed_eof(): the real connection reads nothing more"
        assert self._reading, "feeding while the handler paused reading"
        self.bytes_received += len(data)
        self.handler.data_received(data)

    def feed_eof(self) -> None:
        """Signal that the peer shut down its sending side; reading stops."""
        self.eof = True
        if not self.handler.eof_received():
            self.close()

    def settle(self) -> None:
        """Run one reactor pass: deliver ``connection_lost`` and other queued callbacks."""
        run_once(self.reactor)

    def take(self) -> bytes:
        """Return what the handler wrote since the last call, and forget it."""
        data = bytes(self.written)
        self.written.clear()
        return data

    def value(self) -> bytes:
        """Return everything written so far (without forgetting it)."""
        return bytes(self.written)

    def block_writes(self) -> None:
        """Pretend the peer stopped reading: writes buffer, water marks apply."""
        self._writes_blocked = True

    def drain(self) -> None:
        """Pretend the peer read everything buffered; resumes writing."""
        self._writes_blocked = False
        self.written += self._pending
        self.bytes_sent += len(self._pending)
        self._pending.clear()
        if self._writing_paused:
            self._writing_paused = False
            self.handler.resume_writing()
        if self._closing and not self.closed:
            self._lose(None)

    def advance(self, seconds: float) -> None:
        """Advance the fake clock and run the timers that came due."""
        if self.clock is None:
            raise RuntimeError("advance() needs the FakeConnection's own FakeClock")
        self.clock.advance(seconds)
        run_once(self.reactor)

    def _lose(self, exc: BaseException | None) -> None:
        if self.closed:
            return
        self.closed = True
        # As the real connection: told on the next pass, never inside close().
        self.reactor.call_soon(self._deliver_lost, exc)

    def _deliver_lost(self, exc: BaseException | None) -> None:
        self.lost.append(exc)
        self.handler.connection_lost(exc)

    def __repr__(self) -> str:
        return (
            f"<FakeConnection peer={self.peername} state={self.state} written={len(self.written)}>"
        )


if TYPE_CHECKING:

    def _is_transport(connection: FakeConnection) -> Transport:
        return connection  # mypy checks the fake against the Transport protocol
