"""Listener: a bound socket, its accept loop, its limits and its connections.

* Binds TCP (IPv4 or IPv6, from ``host``/``port``; port 0 picks a free port)
  or a UNIX socket (``path``). ``address`` is the real bound address.
* Accepts at most ``ACCEPT_BATCH`` connections per readiness event, so one
  busy listener cannot starve the connections it already has.
* ``max_connections``: at the limit the listening socket is unregistered, so
  new clients wait in the kernel's backlog instead of being accepted and
  dropped; accepting resumes as soon as one connection closes.
* EMFILE/ENFILE (out of file descriptors): logged once per episode,
  accepting pauses for ``EMFILE_BACKOFF`` seconds, then retries by itself,
  or sooner, as soon as one of its connections closes and frees a descriptor.
  Other accept errors (ECONNABORTED, EPROTO, a peer gone before accept) are
  logged at debug and accepting goes on, as asyncio does.
* The accept path is a failure boundary: a handler whose ``__init__`` or
  ``connection_made`` raises, or a ``reactorkit_connection_made`` hook that
  raises, costs that one connection (or that one hook call) and a log line
  naming the plugin; the loop and the other connections never notice.
* Idle connections are swept by one periodic timer per listener, comparing
  each connection's ``last_activity`` stamp, never a timer per event.
* ``close(drain_backlog=True)`` (graceful shutdown) first accepts the
  clients already waiting in the kernel's queue, so they are served like the
  connections in flight instead of being reset when the socket closes.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import stat
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, final

import attrs

from reactorkit.access import AccessList, parse_networks
from reactorkit.connection import DEFAULT_LINGER_TIMEOUT, Connection, format_peer
from reactorkit.edge import DEFAULT_PROXY_TIMEOUT, Edge
from reactorkit.observe import limit_closed
from reactorkit.tls import make_server_context

if TYPE_CHECKING:
    from reactorkit.handler import Handler, HandlerType
    from reactorkit.plugins import Plugins
    from reactorkit.reactor import Reactor, TimerHandle
    from reactorkit.tls import TLSConfig

__all__ = [
    "ACCEPT_BATCH",
    "DEFAULT_BACKLOG",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_CONNECTIONS",
    "EMFILE_BACKOFF",
    "Listener",
    "ListenerStats",
    "bind_socket",
    "format_address",
]

log = logging.getLogger("reactorkit.listener")

DEFAULT_BACKLOG = 128
DEFAULT_MAX_CONNECTIONS = 1024
DEFAULT_IDLE_TIMEOUT = 300.0
ACCEPT_BATCH = 64
EMFILE_BACKOFF = 0.5

#: Distinct peer host strings a listener shares between connections at most.
_MAX_HOSTS_SHARED = 1024

_OUT_OF_FDS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


@attrs.define(eq=False)
class ListenerStats:
    """Counters a listener keeps (the line-command ``STATS`` reads them)."""

    total_connections: int = 0
    errors: int = 0
    #: Connections closed at accept by allow/deny or proxy_from.
    refused: int = 0
    #: TLS handshakes that failed or timed out.
    tls_failures: int = 0
    #: Connections closed for a missing, late or malformed PROXY header.
    proxy_failures: int = 0
    closed_bytes_received: int = 0
    closed_bytes_sent: int = 0
    #: Times accepting paused at max_connections (clients wait in the backlog).
    accept_paused: int = 0
    #: Times a closed connection's reading was paused (flow control); see
    #: :attr:`Listener.reads_paused` for the total with the open ones.
    reads_paused: int = 0
    #: Connections closed by each limit (see :func:`reactorkit.observe.limit_closed`).
    closed_by_limit: dict[str, int] = attrs.Factory(dict)


def bind_socket(
    *,
    host: str | None,
    port: int | None,
    path: str | None,
    backlog: int,
    reuse_port: bool = False,
) -> socket.socket:
    """Create, bind and listen on a non-blocking socket.

    Args:
        host, port: a TCP address; port 0 picks a free port.
        path: a UNIX socket path instead (a stale socket file is replaced).
        backlog: the kernel's accept queue length.
        reuse_port: set ``SO_REUSEPORT`` (TCP only), so several sockets can
            listen on one port and the kernel spreads connections among them.

    Raises:
        OSError: the address cannot be bound (in use, not permitted...).
    """
    if path is not None:
        _remove_stale_unix_socket(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(path)
        except BaseException:
            sock.close()
            raise
    else:
        if host is None or port is None:
            raise ValueError("bind_socket() needs host and port, or path")
        infos = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE | socket.AI_NUMERICSERV
        )
        family, type_, proto, _, sockaddr = infos[0]
        sock = socket.socket(family, type_, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(sockaddr)
        except BaseException:
            sock.close()
            raise
    try:
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _remove_stale_unix_socket(path: str) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # nobody answers: a leftover from a crashed server
    else:
        raise OSError(errno.EADDRINUSE, f"{path} is in use by another server")
    finally:
        probe.close()


def format_address(address: Any) -> str:
    """``127.0.0.1:7007``, ``[::1]:7007`` or ``unix:/run/x.sock``."""
    if isinstance(address, str):
        return f"unix:{address}"
    return format_peer(address)


@final
class Listener:
    """A listening socket bound to one handler type.

    Args:
        reactor: the reactor that runs it.
        name: the listener's name from the config.
        handler_type: what to build per connection.
        options: the handler type's options object.
        plugins: the loaded :class:`~reactorkit.plugins.Plugins`, for handler
            types that collect contributions (``listener.plugins.collect(...)``
            for commands, routes) and for the per-connection observation hooks.
        sock: a bound, listening, non-blocking socket (see :func:`bind_socket`).
        max_connections: open connections above which accepting pauses.
        idle_timeout: seconds without I/O before a connection is closed; 0 = never.
        high_water, low_water, max_read: passed to each :class:`Connection`.
        plugin: who provides the handler type, for log lines
            (``"plugin 'echo' (reactorkit 0.1.0)"``).
        allow, deny: CIDR strings; see :mod:`reactorkit.access`.
        proxy_protocol: ``"v1"``, ``"v2"``, ``"any"`` or None (off).
        proxy_from: CIDR strings of who may send a PROXY header.
        proxy_timeout: seconds a connection has to send the header.
        tls: a :class:`~reactorkit.tls.TLSConfig`, or None (plain TCP).
    """

    def __init__(
        self,
        reactor: Reactor,
        *,
        name: str,
        handler_type: HandlerType,
        options: Any,
        sock: socket.socket,
        plugins: Plugins | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        high_water: int | None = None,
        low_water: int | None = None,
        max_read: int | None = None,
        plugin: str | None = None,
        allow: Sequence[str] = (),
        deny: Sequence[str] = (),
        proxy_protocol: str | None = None,
        proxy_from: Sequence[str] = (),
        proxy_timeout: float | None = None,
        tls: TLSConfig | None = None,
    ) -> None:
        self.reactor = reactor
        self.name = name
        #: Who provides the handler type, named in every error log line.
        self.plugin = plugin or f"module {getattr(handler_type.handler, '__module__', '?')!r}"
        self.handler_type = handler_type
        self.options = options
        self.plugins = plugins
        self.hook = plugins.hook if plugins is not None else None
        self.sock = sock
        self.address = sock.getsockname()
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.stats = ListenerStats()
        #: The open connections, in accept order (a dict used as an ordered
        #: set: at 10 000 entries it costs 29 bytes each, a set 52).
        self.connections: dict[Connection, None] = {}
        # Peer host strings seen lately, so connections from one address
        # share one string (see _connection_accepted).
        self._hosts: dict[str, str] = {}
        self._conn_kwargs: dict[str, Any] = {
            "on_lost": self._connection_closed,
            "linger_timeout": DEFAULT_LINGER_TIMEOUT,
        }
        if high_water is not None:
            self._conn_kwargs["high_water"] = high_water
        if low_water is not None:
            self._conn_kwargs["low_water"] = low_water
        if max_read is not None:
            self._conn_kwargs["max_read"] = max_read
        self._accepting = False
        self._closed = False
        #: True once :meth:`close` has begun: a connection accepted from the
        #: backlog then is served its last (http-lite: ``Connection: close``).
        self.closing = False
        self._backoff: TimerHandle | None = None
        self._sweeper: TimerHandle | None = None
        self._out_of_fds_logged = False
        #: Unlink a UNIX socket's path on close; False for a socket inherited
        #: from a supervisor or systemd, which outlives this listener.
        self.owns_path = True
        self._observe = self.hook is not None and bool(
            self.hook.reactorkit_connection_made.get_hookimpls()
            or self.hook.reactorkit_connection_lost.get_hookimpls()
        )
        #: ACL, PROXY protocol and TLS, or None when the listener uses none.
        self.edge: Edge | None = None
        if allow or deny or proxy_protocol or tls is not None:
            self.edge = _make_edge(
                self, allow, deny, proxy_protocol, proxy_from, proxy_timeout, tls
            )
        #: The shared state every handler of this listener receives.
        self.state = handler_type.state(self)

    # -- public ------------------------------------------------------------

    @property
    def open_connections(self) -> int:
        """Connections currently open."""
        return len(self.connections)

    @property
    def bytes_received(self) -> int:
        """Bytes read over the listener's life, open connections included."""
        return self.stats.closed_bytes_received + sum(c.bytes_received for c in self.connections)

    @property
    def bytes_sent(self) -> int:
        """Bytes written over the listener's life, open connections included."""
        return self.stats.closed_bytes_sent + sum(c.bytes_sent for c in self.connections)

    @property
    def reads_paused(self) -> int:
        """Times a connection's reading paused (flow control), open connections included."""
        return self.stats.reads_paused + sum(c.reads_paused for c in self.connections)

    @property
    def is_closed(self) -> bool:
        """True once :meth:`close` was called (no more accepting)."""
        return self._closed

    def start(self) -> None:
        """Begin accepting, and sweeping idle connections if a timeout is set."""
        self._resume_accepting()
        if self.idle_timeout > 0:
            self._schedule_sweep()

    def close(self, *, drain_backlog: bool = False) -> list[Connection]:
        """Stop accepting and close the listening socket. Open connections stay.

        Args:
            drain_backlog: first accept every client already waiting in the
                kernel's accept queue (they would be reset by the close) and
                read what each has already sent; graceful shutdown serves
                them like the connections in flight.

        Returns:
            The connections the drain accepted.
        """
        if self._closed:
            return []
        self.closing = True
        drained = self._drain_backlog() if drain_backlog else []
        self._closed = True
        self._pause_accepting()
        for timer in (self._backoff, self._sweeper):
            if timer is not None:
                timer.cancel()
        if self.idle_timeout > 0 and self.connections:
            self._schedule_sweep()  # connections still draining keep their timeout
        path = self.address if isinstance(self.address, str) and self.owns_path else None
        self.sock.close()
        if path:
            with contextlib.suppress(OSError):
                os.unlink(path)
        return drained

    def _drain_backlog(self) -> list[Connection]:
        drained: list[Connection] = []
        # The kernel caps the queue at SOMAXCONN; the bound keeps a flood
        # arriving during the drain from holding shutdown here.
        for _ in range(socket.SOMAXCONN + ACCEPT_BATCH):
            try:
                sock, peer = self.sock.accept()
            except OSError:
                break  # empty (EAGAIN), or nothing more can be accepted now
            connection = self._connection_accepted(sock, peer)
            if connection is not None:
                drained.append(connection)
        for connection in drained:
            connection._read_now()
        if drained:
            log.info(
                "listener %r: accepted %d queued clients to serve them", self.name, len(drained)
            )
        return drained

    # -- accepting ---------------------------------------------------------

    def _pause_accepting(self) -> None:
        if self._accepting:
            self._accepting = False
            self.reactor.unregister(self.sock)

    def _resume_accepting(self) -> None:
        if not self._accepting and not self._closed and self._backoff is None:
            self._accepting = True
            self.reactor.register(self.sock, 1, self._accept_ready)

    def _accept_ready(self, mask: int) -> None:
        if not self._accepting:
            return  # closed or paused by a callback earlier in this select() batch
        for _ in range(ACCEPT_BATCH):
            if len(self.connections) >= self.max_connections:
                self.stats.accept_paused += 1
                self._pause_accepting()
                return
            try:
                sock, peer = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _OUT_OF_FDS:
                    self._out_of_fds(exc)
                else:
                    # The peer reset before accept (ECONNABORTED), a protocol
                    # error (EPROTO)...: that client is gone, the next is not.
                    log.debug("listener %r: accept failed: %s", self.name, exc)
                return
            self._out_of_fds_logged = False
            self._connection_accepted(sock, peer)
            if not self._accepting:
                return  # a handler closed this listener

    def callback_failed(self, callback: Any, exc: BaseException) -> None:
        """The accept callback raised (a bug below the handlers): log it, keep serving."""
        log.error("listener %r: %r raised; accepting goes on", self.name, callback, exc_info=exc)

    def _out_of_fds(self, exc: OSError) -> None:
        if not self._out_of_fds_logged:
            self._out_of_fds_logged = True
            log.error(
                "listener %r: cannot accept: %s; pausing accepts for %.1fs at a time "
                "until descriptors free up (raise the limit with `ulimit -n`)",
                self.name,
                exc.strerror,
                EMFILE_BACKOFF,
            )
        self._pause_accepting()
        self._backoff = self.reactor.call_later(EMFILE_BACKOFF, self._backoff_over)

    def _backoff_over(self) -> None:
        self._backoff = None
        if len(self.connections) < self.max_connections:
            self._resume_accepting()

    def _connection_accepted(self, sock: socket.socket, peer: Any) -> Connection | None:
        if type(peer) is tuple:
            # Many connections come from one address (a proxy, a NAT, a load
            # test); they share one host string instead of 58 bytes each.
            host = peer[0]
            known = self._hosts.get(host)
            if known is None:
                if len(self._hosts) >= _MAX_HOSTS_SHARED:
                    self._hosts.clear()
                self._hosts[host] = host
            elif known is not host:
                peer = (known, *peer[1:])
        edge = self.edge
        if edge is not None and not edge.admit(peer):
            sock.close()  # before any handler code runs
            return None
        try:
            sock.setblocking(False)
            if sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if edge is None:
                handler = self.handler_type.handler(self.state)
            else:
                handler = edge.wrap(self._make_handler)
        except BaseException as exc:
            sock.close()
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            self.stats.errors += 1
            log.error(
                "listener %r (%s): creating the handler for peer %s raised; closed that connection",
                self.name,
                self.plugin,
                format_peer(peer),
                exc_info=exc,
            )
            return None
        connection = Connection(
            self.reactor, sock, handler, listener=self, peername=peer, **self._conn_kwargs
        )
        self.connections[connection] = None
        self.stats.total_connections += 1
        if self._observe:
            assert self.plugins is not None
            self.plugins.notify("reactorkit_connection_made", listener=self, connection=connection)
        connection.start()
        return connection

    def _make_handler(self) -> Handler:
        return self.handler_type.handler(self.state)

    def _connection_closed(self, connection: Connection, exc: BaseException | None) -> None:
        # The connection's on_lost: its socket is closed and its handler told.
        # Bookkeeping first, so a raising hook cannot leave the listener stuck.
        self.connections.pop(connection, None)
        self.stats.closed_bytes_received += connection.bytes_received
        self.stats.closed_bytes_sent += connection.bytes_sent
        self.stats.reads_paused += connection.reads_paused
        if exc is not None and not isinstance(exc, OSError):
            self.stats.errors += 1  # the handler (or a callback it scheduled) raised
        if self._backoff is not None and not self._closed:
            # Out of descriptors until now: this close freed one.
            self._backoff.cancel()
            self._backoff = None
        if not self._accepting and len(self.connections) < self.max_connections:
            self._resume_accepting()
        if self._observe:
            assert self.plugins is not None
            self.plugins.notify(
                "reactorkit_connection_lost", listener=self, connection=connection, reason=exc
            )

    # -- idle sweep --------------------------------------------------------

    def _schedule_sweep(self) -> None:
        interval = min(max(self.idle_timeout / 4, 0.05), 5.0)
        self._sweeper = self.reactor.call_later(interval, self._sweep)

    def _sweep(self) -> None:
        deadline = self.reactor.clock() - self.idle_timeout
        for connection in [c for c in self.connections if c.last_activity <= deadline]:
            limit_closed(connection, "idle", f"no I/O for {self.idle_timeout:g}s")
            if connection.get_write_buffer_size():
                connection.abort()  # the peer is not reading: nothing will drain
            else:
                connection.close()
        if not self._closed or self.connections:
            self._schedule_sweep()

    def __repr__(self) -> str:
        return (
            f"<Listener {self.name!r} {self.handler_type.name} on "
            f"{format_address(self.address)} open={len(self.connections)}>"
        )


def _with_alpn(tls: TLSConfig, listener: Listener) -> TLSConfig:
    # A listener's own alpn wins; without one, the handler type's (issue 14).
    if tls.alpn or not listener.handler_type.alpn:
        return tls
    return attrs.evolve(tls, alpn=listener.handler_type.alpn)


def _make_edge(
    listener: Listener,
    allow: Sequence[str],
    deny: Sequence[str],
    proxy_protocol: str | None,
    proxy_from: Sequence[str],
    proxy_timeout: float | None,
    tls: TLSConfig | None,
) -> Edge:
    access = AccessList(parse_networks(allow), parse_networks(deny)) if allow or deny else None
    if proxy_protocol is not None and not proxy_from:
        raise ValueError("proxy_protocol needs proxy_from: the addresses trusted to send it")
    return Edge(
        listener,
        access=access,
        proxy_protocol=proxy_protocol,
        proxy_from=AccessList(parse_networks(proxy_from)) if proxy_protocol else None,
        proxy_timeout=DEFAULT_PROXY_TIMEOUT if proxy_timeout is None else proxy_timeout,
        tls_context=make_server_context(_with_alpn(tls, listener)) if tls is not None else None,
        handshake_timeout=tls.handshake_timeout if tls is not None else 10.0,
    )
