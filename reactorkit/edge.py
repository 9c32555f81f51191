"""What a listener does between ``accept()`` and the handler: ACL, PROXY, TLS.

A listener with any of ``allow``/``deny``, ``proxy_protocol`` or
``[listen.tls]`` gets one :class:`Edge`; a listener with none gets None and
its accept path is exactly the plain one. In order:

1. ``admit`` at accept: with the PROXY protocol on, the connecting peer must
   be in ``proxy_from`` (only a trusted balancer may claim another
   address); otherwise the peer must pass the access list. A refused
   connection is closed before any handler code runs, counted in
   ``stats.refused`` and logged (at most one line per 10 s per listener).
2. ``wrap`` builds what the :class:`~reactorkit.Connection` drives: a
   :class:`ProxyLayer` reading the header first (it then sets the
   connection's ``peername``, applies the access list to that address and
   hands the connection to the next layer), a
   :class:`~reactorkit.tls.TLSLayer`, or the handler itself.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast, final

from reactorkit.access import AccessList, RefusalLog
from reactorkit.connection import format_peer
from reactorkit.errors import ProxyProtocolError
from reactorkit.proxyproto import NEED_DATA, ProxyHeader, ProxyParser
from reactorkit.tls import TLSLayer

if TYPE_CHECKING:
    from reactorkit.connection import Connection
    from reactorkit.handler import Handler
    from reactorkit.listener import Listener
    from reactorkit.reactor import TimerHandle
    from reactorkit.transport import Transport

__all__ = ["DEFAULT_PROXY_TIMEOUT", "Edge", "ProxyLayer"]

log = logging.getLogger("reactorkit.edge")

#: Seconds a connection has to send its PROXY header.
DEFAULT_PROXY_TIMEOUT = 5.0


@final
class Edge:
    """A listener's access list, PROXY protocol and TLS settings.

    Args:
        listener: the listener it serves (stats, name, reactor).
        access: the allow/deny lists, or None.
        proxy_protocol: ``"v1"``, ``"v2"``, ``"any"`` or None.
        proxy_from: who may send a PROXY header (required with it).
        proxy_timeout: seconds to wait for the header.
        tls_context: the server context, or None.
        handshake_timeout: seconds a TLS handshake may take.
    """

    def __init__(
        self,
        listener: Listener,
        *,
        access: AccessList | None = None,
        proxy_protocol: str | None = None,
        proxy_from: AccessList | None = None,
        proxy_timeout: float = DEFAULT_PROXY_TIMEOUT,
        tls_context: ssl.SSLContext | None = None,
        handshake_timeout: float = 10.0,
    ) -> None:
        self.listener = listener
        self.access = access
        self.proxy_protocol = proxy_protocol
        self.proxy_from = proxy_from
        self.proxy_timeout = proxy_timeout
        self.tls_context = tls_context
        self.handshake_timeout = handshake_timeout
        self._refusals = RefusalLog(log)

    def admit(self, peer: Any) -> bool:
        """At accept: may this peer connect (or, with PROXY, send a header)?"""
        if self.proxy_protocol is not None:
            assert self.proxy_from is not None
            if not self.proxy_from.admits(peer):
                self.refuse(peer, "not in proxy_from, so it may not send a PROXY header")
                return False
            return True
        if self.access is not None and not self.access.admits(peer):
            self.refuse(peer, "refused by allow/deny")
            return False
        return True

    def refuse(self, peer: Any, why: str) -> None:
        """Count and (rate-limited) log one refused connection."""
        listener = self.listener
        listener.stats.refused += 1
        self._refusals.refused(
            listener.reactor.clock(),
            "listener %r: refused connection from %s: %s",
            listener.name,
            format_peer(peer),
            why,
        )

    def wrap(self, make_handler: Callable[[], Handler]) -> Handler:
        """What the connection should drive: the layers, then the handler."""
        make_next = make_handler
        if self.tls_context is not None:
            context = self.tls_context
            stats = self.listener.stats

            def make_next() -> Handler:
                def failed() -> None:
                    stats.tls_failures += 1

                layer = TLSLayer(make_handler, context, self.handshake_timeout, failed)
                return cast("Handler", layer)

        if self.proxy_protocol is not None:
            return cast("Handler", ProxyLayer(self, make_next))
        return make_next()


@final
class ProxyLayer:
    """Reads the PROXY header, then hands the connection to the next layer.

    It is the connection's handler only until the header is complete: the
    connection's ``peername`` becomes the header's source address (LOCAL
    and UNKNOWN headers, a balancer's health checks, keep the real peer),
    the access list is applied to it, and the connection's handler is
    replaced, so the bytes after the header flow with no extra call.

    Args:
        edge: the listener's settings.
        make_next: builds the next handler (a TLS layer or the real one).
    """

    def __init__(self, edge: Edge, make_next: Callable[[], Handler]) -> None:
        self._edge = edge
        self._make_next = make_next
        self._parser = ProxyParser(edge.proxy_protocol or "any")
        self._conn: Connection | None = None
        self._timer: TimerHandle | None = None
        #: The parsed header (also kept for the log and tests).
        self.header: ProxyHeader | None = None

    def connection_made(self, connection: Transport) -> None:
        """Start the header deadline."""
        self._conn = conn = cast("Connection", connection)
        self._timer = conn.reactor.call_later(self._edge.proxy_timeout, self._expired)

    def data_received(self, data: bytes) -> None:
        """Collect the header; once complete, switch to the next layer."""
        conn = self._conn
        assert conn is not None
        self._parser.feed(data)
        try:
            event = self._parser.next_event()
        except ProxyProtocolError as exc:
            self._drop(f"bad PROXY header: {exc}")
            return
        if event is NEED_DATA:
            return
        assert isinstance(event, ProxyHeader)
        self._cancel_timer()
        self.header = event
        if event.source is not None:
            conn.peername = event.source
        access = self._edge.access
        if access is not None and not access.admits(conn.peername):
            self._edge.refuse(
                conn.peername, "refused by allow/deny (address from the PROXY header)"
            )
            conn.abort()
            return
        handler = self._make_next()
        conn.replace_handler(handler)
        handler.connection_made(conn)
        rest = self._parser.trailing_data
        if rest and not conn.is_closing():
            handler.data_received(rest)

    def eof_received(self) -> bool | None:
        """EOF before the header: nothing to serve."""
        self._drop("the connection closed before a complete PROXY header")
        return False

    def connection_lost(self, exc: BaseException | None) -> None:
        """Stop the deadline."""
        self._cancel_timer()

    def pause_writing(self) -> None:
        """Nothing is written before the header."""

    def resume_writing(self) -> None:
        """Nothing is written before the header."""

    def shutdown_requested(self) -> None:
        """No request yet: close."""
        if self._conn is not None:
            self._conn.close()

    def _expired(self) -> None:
        self._timer = None
        self._drop(f"no PROXY header within {self._edge.proxy_timeout:g}s")

    def _drop(self, reason: str) -> None:
        self._cancel_timer()
        conn = self._conn
        assert conn is not None
        listener = self._edge.listener
        listener.stats.proxy_failures += 1
        log.info(
            "listener %r, peer %s: %s; closing", listener.name, format_peer(conn.peername), reason
        )
        conn.abort()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
