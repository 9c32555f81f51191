"""Connector: a non-blocking outbound connect that hands over a :class:`Connection`.

Theory of operation
-------------------
* :func:`connect_tcp` resolves the host (a numeric address at once, a name
  on the reactor's thread pool, since ``getaddrinfo`` blocks), then tries each
  address in turn with a non-blocking ``connect``: ``EINPROGRESS`` registers
  the socket for ``EVENT_WRITE``, and writability plus ``SO_ERROR`` says how
  it went. :func:`connect_unix` does the same for a UNIX socket path.
* One timer bounds the whole attempt (resolution included); when it fires
  the socket is closed and the attempt fails with ``ETIMEDOUT``.
* On success the connected socket goes to an ordinary
  :class:`~reactorkit.connection.Connection` with ``listener=None``: the
  same write buffering, water marks and close/abort as accepted
  connections, one code path. The handler's ``connection_made`` runs first,
  then the done-callbacks.
* Failure is never raised into the loop: it is a
  :class:`~reactorkit.errors.ConnectError` delivered to the done-callbacks
  (and kept for :meth:`Connector.exception`); the handler is never called.
  Done-callbacks always run on a later loop pass than the call that started
  the connect, and an exception they raise is logged, not propagated.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, final

from reactorkit.connection import (
    DEFAULT_HIGH_WATER,
    DEFAULT_LOW_WATER,
    DEFAULT_MAX_READ,
    Connection,
)
from reactorkit.errors import ConnectError, ReactorStateError

if TYPE_CHECKING:
    from reactorkit.handler import Handler
    from reactorkit.reactor import Future, Reactor, TimerHandle

__all__ = ["DEFAULT_CONNECT_TIMEOUT", "Connector", "connect_tcp", "connect_unix"]

log = logging.getLogger("reactorkit.connector")

#: Seconds a connect may take, name resolution included, unless told otherwise.
DEFAULT_CONNECT_TIMEOUT = 10.0

_EVENT_WRITE = 2  # selectors.EVENT_WRITE
_IN_PROGRESS = (errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR)

AddrInfo = tuple[int, int, int, Any]  # family, type, proto, sockaddr

# States, in order.
_RESOLVING = "resolving"
_CONNECTING = "connecting"
_DONE = "done"


@final
class Connector:
    """One outbound connect in progress; made by :func:`connect_tcp` / :func:`connect_unix`.

    Args:
        reactor: the reactor that runs it.
        handler: the handler the connection will feed once connected.
        address: what is being connected to, for messages (``host:port`` or a path).
        timeout: seconds before the attempt fails with ``ETIMEDOUT``.
        connection_kwargs: ``high_water``, ``low_water``, ``max_read`` for the
            :class:`Connection`.
    """

    __slots__ = (
        "_callbacks",
        "_candidates",
        "_connection",
        "_connection_kwargs",
        "_exception",
        "_handler",
        "_last_error",
        "_sock",
        "_state",
        "_timer",
        "address",
        "reactor",
    )

    def __init__(
        self,
        reactor: Reactor,
        handler: Handler,
        address: str,
        *,
        timeout: float,
        connection_kwargs: dict[str, int],
    ) -> None:
        if timeout <= 0:
            raise ValueError(f"connect timeout must be > 0 seconds, got {timeout!r}")
        self.reactor = reactor
        self.address = address
        self._handler = handler
        self._connection_kwargs = connection_kwargs
        self._state = _RESOLVING
        self._candidates: list[AddrInfo] = []
        self._sock: socket.socket | None = None
        self._last_error: OSError | None = None
        self._connection: Connection | None = None
        self._exception: ConnectError | None = None
        self._callbacks: list[Callable[[Connector], object]] = []
        self._timer: TimerHandle | None = reactor.call_later(timeout, self._timed_out, timeout)

    # -- the caller's side -------------------------------------------------

    def done(self) -> bool:
        """True once connected, failed or cancelled."""
        return self._state is _DONE

    def result(self) -> Connection:
        """The connected :class:`Connection`.

        Raises:
            ConnectError: the connect failed (or was cancelled).
            ReactorStateError: it has not finished yet.
        """
        if self._state is not _DONE:
            raise ReactorStateError(f"connect to {self.address} has not finished yet")
        if self._exception is not None:
            raise self._exception
        assert self._connection is not None
        return self._connection

    def exception(self) -> ConnectError | None:
        """The failure, or None once connected.

        Raises:
            ReactorStateError: it has not finished yet.
        """
        if self._state is not _DONE:
            raise ReactorStateError(f"connect to {self.address} has not finished yet")
        return self._exception

    def add_done_callback(self, callback: Callable[[Connector], object]) -> None:
        """Call ``callback(connector)`` on the reactor thread once done.

        It runs on a later loop pass, even when the connector is already done;
        it is not called at all after :meth:`cancel`.
        """
        if self._state is _DONE:
            self.reactor.call_soon(callback, self)
        else:
            self._callbacks.append(callback)

    def cancel(self) -> None:
        """Give up: close the socket, and call no done-callback. A no-op once done."""
        if self._state is _DONE:
            return
        self._callbacks.clear()
        self._fail(ConnectError(errno.ECANCELED, self.address, "connect cancelled"))

    # -- connecting --------------------------------------------------------

    def _resolved(self, infos: list[AddrInfo]) -> None:
        if self._state is not _RESOLVING:
            return  # timed out or cancelled while resolving
        self._state = _CONNECTING
        self._candidates = list(infos)
        self._try_next()

    def _resolve_done(self, future: Future[list[AddrInfo]]) -> None:
        error = future.exception()
        if error is not None:
            if self._state is _RESOLVING:
                reason = getattr(error, "strerror", None) or str(error)
                self._fail(
                    ConnectError(errno.EHOSTUNREACH, self.address, f"cannot resolve: {reason}")
                )
            return
        self._resolved(future.result())

    def _try_next(self) -> None:
        while self._candidates:
            family, type_, proto, sockaddr = self._candidates.pop(0)
            try:
                sock = socket.socket(family, type_, proto)
            except OSError as exc:
                self._last_error = exc
                continue
            sock.setblocking(False)
            code = sock.connect_ex(sockaddr)
            if code == 0:
                self._sock = sock
                self._connected()
                return
            # A UNIX socket's EAGAIN is a full backlog, not a connect in progress.
            if code in _IN_PROGRESS and not (family == socket.AF_UNIX and code == errno.EAGAIN):
                self._sock = sock
                self.reactor.register(sock, _EVENT_WRITE, self._write_ready)
                return
            sock.close()
            self._last_error = OSError(code, os.strerror(code))
        self._fail_with_last_error()

    def _write_ready(self, mask: int) -> None:
        sock = self._sock
        if sock is None or self._state is not _CONNECTING:
            return
        self.reactor.unregister(sock)
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code == 0:
            self._connected()
            return
        sock.close()
        self._sock = None
        self._last_error = OSError(code, os.strerror(code))
        self._try_next()

    def _connected(self) -> None:
        sock = self._sock
        assert sock is not None
        self._sock = None
        if sock.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._cancel_timer()
        self._state = _DONE
        limits = self._connection_kwargs
        connection = Connection(
            self.reactor,
            sock,
            self._handler,
            high_water=limits.get("high_water", DEFAULT_HIGH_WATER),
            low_water=limits.get("low_water", DEFAULT_LOW_WATER),
            max_read=limits.get("max_read", DEFAULT_MAX_READ),
        )
        self._connection = connection
        connection.start()
        self._deliver()

    # -- failing -----------------------------------------------------------

    def _timed_out(self, timeout: float) -> None:
        self._timer = None
        if self._state is not _DONE:
            self._fail(
                ConnectError(errno.ETIMEDOUT, self.address, f"no connection within {timeout:g}s")
            )

    def _fail_with_last_error(self) -> None:
        error = self._last_error
        if error is None:
            self._fail(ConnectError(errno.EHOSTUNREACH, self.address, "no address to try"))
            return
        self._fail(ConnectError(error.errno, self.address, error.strerror or str(error)))

    def _fail(self, error: ConnectError) -> None:
        self._state = _DONE
        self._cancel_timer()
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.reactor.unregister(sock)
            sock.close()
        self._exception = error
        self._deliver()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _deliver(self) -> None:
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            self.reactor.call_soon(callback, self)

    def __repr__(self) -> str:
        if self._state is _DONE:
            state = "failed" if self._exception is not None else "connected"
        else:
            state = self._state
        return f"<Connector {self.address} {state}>"


def connect_tcp(
    reactor: Reactor,
    host: str,
    port: int,
    handler: Handler,
    *,
    timeout: float = DEFAULT_CONNECT_TIMEOUT,
    high_water: int | None = None,
    low_water: int | None = None,
    max_read: int | None = None,
) -> Connector:
    """Start connecting to ``host:port``; ``handler`` gets the connection once up.

    A numeric address is used as is; a host name is resolved on the reactor's
    thread pool. Every address it resolves to is tried in turn.

    Args:
        reactor: the reactor that runs the connection.
        host: an IPv4/IPv6 address or a host name.
        port: the TCP port.
        handler: the protocol handler; its ``connection_made`` runs on success.
        timeout: seconds for the whole attempt, resolution included.
        high_water, low_water, max_read: as for an accepted :class:`Connection`.

    Returns:
        A :class:`Connector`; its done-callbacks learn how it went.
    """
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    connector = Connector(
        reactor,
        handler,
        address,
        timeout=timeout,
        connection_kwargs=_connection_kwargs(high_water, low_water, max_read),
    )
    try:
        infos = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
        )
    except socket.gaierror:
        reactor.run_in_thread(_resolve, host, port).add_done_callback(connector._resolve_done)
    else:
        # Not at once: the caller gets the connector before any callback runs.
        reactor.call_soon(connector._resolved, [(f, t, p, a) for f, t, p, _, a in infos])
    return connector


def connect_unix(
    reactor: Reactor,
    path: str,
    handler: Handler,
    *,
    timeout: float = DEFAULT_CONNECT_TIMEOUT,
    high_water: int | None = None,
    low_water: int | None = None,
    max_read: int | None = None,
) -> Connector:
    """Start connecting to the UNIX socket at ``path``; see :func:`connect_tcp`."""
    connector = Connector(
        reactor,
        handler,
        f"unix:{path}",
        timeout=timeout,
        connection_kwargs=_connection_kwargs(high_water, low_water, max_read),
    )
    reactor.call_soon(connector._resolved, [(socket.AF_UNIX, socket.SOCK_STREAM, 0, path)])
    return connector


def _resolve(host: str, port: int) -> list[AddrInfo]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [(family, type_, proto, sockaddr) for family, type_, proto, _, sockaddr in infos]


def _connection_kwargs(
    high_water: int | None, low_water: int | None, max_read: int | None
) -> dict[str, int]:
    kwargs: dict[str, int] = {}
    if high_water is not None:
        kwargs["high_water"] = high_water
    if low_water is not None:
        kwargs["low_water"] = low_water
    if max_read is not None:
        kwargs["max_read"] = max_read
    return kwargs
