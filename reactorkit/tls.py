"""TLS on the reactor thread: ``SSLContext.wrap_bio`` between socket and handler.

Theory of operation
-------------------
A TLS listener gives each plain :class:`~reactorkit.Connection` a
:class:`TLSLayer` as its handler. The layer owns an ``ssl.SSLObject`` over two
``MemoryBIO``\\ s: ciphertext from ``data_received`` goes into the incoming
BIO, the handshake and ``SSLObject.read`` turn it into plaintext for the
real handler; the handler's ``write`` goes through ``SSLObject.write`` and
the ciphertext the outgoing BIO collects is written to the connection. No
call blocks, and the connection's write buffer, water marks, lingering close
and failure boundary apply unchanged (to the ciphertext). Plain listeners
never see this module: TLS costs nothing where it is off.

* The handler is created and its ``connection_made`` called only once the
  handshake is complete; a failed or timed-out handshake (``handshake_timeout``)
  is logged once at info with the peer and reason, counted in the
  listener's ``stats.tls_failures``, and closes the connection; the handler
  never hears of it.
* The layer is the handler's :class:`~reactorkit.Transport`; it adds
  ``peer_certificate`` (the verified client certificate with mutual TLS) and
  ``alpn_protocol``.
* ``pause_reading`` stops plaintext delivery at once: records already
  received stay in the BIO (at most one ``max_read`` of ciphertext) and are
  delivered on ``resume_reading``.
* ``close()`` sends close_notify, then closes the connection (lingering).
  A peer's close_notify, or a plain TCP EOF, is the handler's ``eof_received``;
  bytes a peer sends after its close_notify are dropped, never buffered.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import ssl
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast, final

import attrs

from reactorkit.connection import format_peer

if TYPE_CHECKING:
    from reactorkit.connection import Connection
    from reactorkit.handler import Handler
    from reactorkit.reactor import Reactor, TimerHandle
    from reactorkit.transport import Transport

__all__ = [
    "CLIENT_AUTH",
    "DEFAULT_HANDSHAKE_TIMEOUT",
    "EXPIRY_WARNING_DAYS",
    "TLS_VERSIONS",
    "TLSConfig",
    "TLSLayer",
    "check_tls_files",
    "make_server_context",
]

log = logging.getLogger("reactorkit.tls")

DEFAULT_HANDSHAKE_TIMEOUT = 10.0
#: ``check`` warns about a certificate that expires within this many days.
EXPIRY_WARNING_DAYS = 14
TLS_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
CLIENT_AUTH = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}
_READ_SIZE = 65536


@attrs.frozen(kw_only=True)
class TLSConfig:
    """The ``[listen.tls]`` table.

    Attributes:
        cert: PEM file with the certificate (and its chain).
        key: PEM file with the private key (None: the key is in ``cert``).
        ca: PEM file of the CAs that sign client certificates (mutual TLS).
        client_auth: ``"none"``, ``"optional"`` or ``"required"``.
        min_version: ``"1.2"`` or ``"1.3"``.
        alpn: protocols offered in ALPN, most preferred first.
        handshake_timeout: seconds a client has to finish the handshake.
    """

    cert: str
    key: str | None = None
    ca: str | None = None
    client_auth: str = "none"
    min_version: str = "1.2"
    alpn: tuple[str, ...] = ()
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT


def make_server_context(config: TLSConfig) -> ssl.SSLContext:
    """Build the server ``SSLContext`` a listener shares between its connections.

    Raises:
        OSError: a file cannot be read.
        ssl.SSLError: a file is not PEM, or the key does not match the cert.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = TLS_VERSIONS[config.min_version]
    context.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
    # A TCP EOF without close_notify ends the client's data like close_notify
    # does, instead of poisoning the TLS session: what the client sent is
    # still answered (framed protocols such as HTTP detect truncation).
    context.options |= getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
    context.load_cert_chain(config.cert, config.key)
    if config.ca is not None:
        context.load_verify_locations(cafile=config.ca)
    context.verify_mode = CLIENT_AUTH[config.client_auth]
    if config.alpn:
        context.set_alpn_protocols(list(config.alpn))
    return context


def check_tls_files(config: TLSConfig, now: datetime.datetime | None = None) -> tuple[str, ...]:
    """Check what ``run`` will load: readable files, a key that matches, a valid cert.

    Returns:
        Warnings (a certificate expiring within ``EXPIRY_WARNING_DAYS``).

    Raises:
        ValueError: a problem that would stop the listener, in words.
    """
    for field, path in (("cert", config.cert), ("key", config.key), ("ca", config.ca)):
        if path is not None and not os.access(path, os.R_OK):
            raise ValueError(f"{field} file {path!r} cannot be read (missing or no permission)")
    try:
        make_server_context(config)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load the certificate/key: {exc}") from None
    not_after = _not_after(config.cert)
    if not_after is None:
        return ()
    now = now or datetime.datetime.now(datetime.UTC)
    if not_after <= now:
        raise ValueError(f"certificate {config.cert!r} expired on {not_after:%Y-%m-%d}")
    if not_after - now < datetime.timedelta(days=EXPIRY_WARNING_DAYS):
        return (f"certificate {config.cert!r} expires on {not_after:%Y-%m-%d %H:%M} UTC",)
    return ()


def _not_after(path: str) -> datetime.datetime | None:
    # The stdlib decodes a PEM file only through this (documented-as-test)
    # helper; without it, expiry is simply not checked.
    decode = getattr(getattr(ssl, "_ssl", None), "_test_decode_cert", None)
    if decode is None:
        return None
    try:
        text = decode(path)["notAfter"]
    except (OSError, ssl.SSLError, KeyError):
        return None
    return datetime.datetime.fromtimestamp(ssl.cert_time_to_seconds(text), datetime.UTC)


@final
class TLSLayer:
    """The raw connection's handler, and the real handler's transport.

    Args:
        make_handler: builds the real handler once the handshake succeeds.
        context: the listener's server context.
        handshake_timeout: seconds before an unfinished handshake is closed.
        on_failure: called with no argument when a handshake fails (stats).
    """

    def __init__(
        self,
        make_handler: Callable[[], Handler],
        context: ssl.SSLContext,
        handshake_timeout: float,
        on_failure: Callable[[], object] | None = None,
    ) -> None:
        self._make_handler = make_handler
        self._context = context
        self._handshake_timeout = handshake_timeout
        self._on_failure = on_failure
        self._conn: Connection | None = None
        self._inner: Handler | None = None
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._sslobj: ssl.SSLObject | None = None
        self._timer: TimerHandle | None = None
        self._reading = True
        self._eof_told = False
        self._keep_open: bool | None = None
        self._closing = False
        self._failed = False
        self._handshake_done = False
        self.bytes_received = 0
        self.bytes_sent = 0
        #: Set by connection_made, from the connection (the PROXY header's
        #: address is already in ``peername`` by then).
        self.reactor: Reactor
        self.listener: Any = None
        self.peername: Any = None
        self.sockname: Any = None
        #: The raw connection's id, so log lines name the connection the same way.
        self.conn_id: int | None = None

    @property
    def inner_handler(self) -> Handler | None:
        """The real handler, once the handshake made it (log lines name it)."""
        return self._inner

    # -- the raw connection's handler ----------------------------------------

    def connection_made(self, connection: Transport) -> None:
        """Start the handshake and its deadline."""
        self._conn = conn = cast("Connection", connection)
        self.reactor = conn.reactor
        self.listener = conn.listener
        self.peername = conn.peername
        self.sockname = conn.sockname
        self.conn_id = getattr(conn, "conn_id", None)
        self._sslobj = self._context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._timer = conn.reactor.call_later(self._handshake_timeout, self._handshake_expired)

    def data_received(self, data: bytes) -> None:
        """Ciphertext in: advance the handshake, then deliver plaintext."""
        if self._eof_told:
            return  # nothing follows close_notify; buffering it would be unbounded
        self._incoming.write(data)
        if self._inner is None:
            self._handshake()
        else:
            self._deliver()

    def eof_received(self) -> bool | None:
        """TCP EOF: a handshake cut short, or the end of the stream."""
        if self._inner is None:
            self._fail("the client closed the connection during the handshake")
            return False
        self._incoming.write_eof()
        self._deliver()
        if self._eof_told:
            return self._keep_open  # the delivery reached the end and told it
        if not self._reading and self._conn is not None and not self._conn.is_closing():
            # The handler holds reading with plaintext still in the layer:
            # keep the connection; the EOF is told once _deliver reaches it
            # (resume_reading), after what the client sent before it.
            return True
        return self._tell_eof()

    def connection_lost(self, exc: BaseException | None) -> None:
        """Pass the end on to the real handler, if it was ever made."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._inner is not None:
            self._inner.connection_lost(exc)
        elif not self._failed and not self._handshake_done and exc is not None:
            self._fail(f"the connection failed during the handshake: {exc}", close=False)

    def pause_writing(self) -> None:
        """Forward the connection's back-pressure."""
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        """Forward the connection's back-pressure."""
        if self._inner is not None:
            self._inner.resume_writing()

    def shutdown_requested(self) -> None:
        """Forward graceful shutdown; a handshake in progress is just closed."""
        if self._inner is not None:
            self._inner.shutdown_requested()
        elif self._conn is not None:
            self._conn.close()

    # -- handshake -----------------------------------------------------------

    def _handshake(self) -> None:
        assert self._sslobj is not None
        assert self._conn is not None
        try:
            self._sslobj.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except (ssl.SSLError, ValueError) as exc:
            self._fail(_reason(exc))  # logs, counts, then sends OpenSSL's alert
            return
        self._flush()
        self._handshake_done = True  # a handler that fails to build is not a TLS failure
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._inner = inner = self._make_handler()
        inner.connection_made(self)
        if self._incoming.pending or self._sslobj.pending():
            self._deliver()

    def _handshake_expired(self) -> None:
        self._timer = None
        if self._inner is None and not self._failed:
            self._fail(f"no handshake within {self._handshake_timeout:g}s")

    def _fail(self, reason: str, *, close: bool = True) -> None:
        if self._failed:
            return
        self._failed = True
        conn = self._conn
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        listener = conn.listener if conn is not None else None
        log.info(
            "TLS handshake failed on listener %r, peer %s: %s",
            listener.name if listener is not None else None,
            format_peer(conn.peername) if conn is not None else "?",
            reason,
        )
        if self._on_failure is not None:
            self._on_failure()
        # The alert OpenSSL wrote, if any, goes out only now: a client that
        # reads it finds the failure already logged and counted.
        self._flush()
        if close and conn is not None:
            conn.close()

    # -- plaintext -----------------------------------------------------------

    def _deliver(self) -> None:
        sslobj, conn, inner = self._sslobj, self._conn, self._inner
        assert sslobj is not None
        assert conn is not None
        assert inner is not None
        incoming = self._incoming
        while self._reading and not self._eof_told and not conn.is_closing():
            if not incoming.pending and not sslobj.pending() and not incoming.eof:
                # Nothing buffered on either side of OpenSSL: read() would only
                # raise SSLWantReadError, which costs more than this check (it
                # is the usual end of every delivery).
                break
            try:
                chunk = sslobj.read(_READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                chunk = b""
            except ssl.SSLError as exc:
                self._flush()
                log.info(
                    "TLS error on listener %r, peer %s: %s; closing",
                    conn.listener.name if conn.listener is not None else None,
                    format_peer(conn.peername),
                    _reason(exc),
                )
                conn.abort()
                return
            if not chunk:
                # close_notify (read() returns b""), or a TCP EOF without one:
                # either way the end of the client's data; what it sent is
                # still answered.
                if not self._tell_eof():
                    self.close()
                break
            self.bytes_received += len(chunk)
            inner.data_received(chunk)
        self._flush()  # session tickets, key updates, alerts

    def _tell_eof(self) -> bool | None:
        # Once only: a close_notify and the TCP EOF after it are one EOF, and
        # a handler that kept its side open (half-close) keeps it open.
        if self._inner is None:
            return None
        if not self._eof_told:
            self._eof_told = True
            self._keep_open = self._inner.eof_received()
        return self._keep_open

    def _flush(self) -> None:
        data = self._outgoing.read()
        if data and self._conn is not None:
            self._conn.write(data)

    # -- the Transport the real handler sees ----------------------------------

    @property
    def high_water(self) -> int:
        """The connection's high water mark (ciphertext bytes)."""
        assert self._conn is not None
        return self._conn.high_water

    @high_water.setter
    def high_water(self, value: int) -> None:
        assert self._conn is not None
        self._conn.high_water = value

    @property
    def low_water(self) -> int:
        """The connection's low water mark (ciphertext bytes)."""
        assert self._conn is not None
        return self._conn.low_water

    @low_water.setter
    def low_water(self, value: int) -> None:
        assert self._conn is not None
        self._conn.low_water = value

    @property
    def peer_certificate(self) -> dict[str, Any] | None:
        """The client's verified certificate (``getpeercert()``), or None."""
        if self._sslobj is None or self._inner is None:
            return None
        return self._sslobj.getpeercert() or None

    @property
    def alpn_protocol(self) -> str | None:
        """The protocol ALPN negotiated, or None."""
        if self._sslobj is None or self._inner is None:
            return None
        return self._sslobj.selected_alpn_protocol()

    @property
    def is_tls(self) -> bool:
        """True: this connection is encrypted."""
        return True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt and send ``data``; ignored once closing."""
        if not data or self.is_closing():
            return
        assert self._sslobj is not None
        try:
            self._sslobj.write(data)
        except ssl.SSLError as exc:
            assert self._conn is not None
            log.info("TLS write failed, peer %s: %s", format_peer(self.peername), _reason(exc))
            self._conn.abort()
            return
        self.bytes_sent += len(data)
        self._flush()

    def writelines(self, chunks: Iterable[bytes | bytearray | memoryview]) -> None:
        """Write every chunk, in order."""
        for chunk in chunks:
            self.write(chunk)

    def close(self) -> None:
        """Send close_notify, then close the connection (flushing first)."""
        if self._closing or self._conn is None:
            return
        self._closing = True
        if self._sslobj is not None and self._inner is not None:
            # close_notify is written; the peer's is not awaited.
            with contextlib.suppress(ssl.SSLError, ValueError):
                self._sslobj.unwrap()
            self._flush()
        self._conn.close()

    def abort(self) -> None:
        """Close at once, dropping what is buffered."""
        self._closing = True
        if self._conn is not None:
            self._conn.abort()

    def is_closing(self) -> bool:
        """True once closing began on either side."""
        return self._closing or self._conn is None or self._conn.is_closing()

    @property
    def state(self) -> str:
        """The connection's state."""
        assert self._conn is not None
        return self._conn.state

    def pause_reading(self) -> None:
        """Stop delivering plaintext (and reading the socket)."""
        if self._reading:
            self._reading = False
            assert self._conn is not None
            self._conn.pause_reading()

    def resume_reading(self) -> None:
        """Deliver plaintext again, first what is already received."""
        if not self._reading:
            self._reading = True
            conn = self._conn
            assert conn is not None
            conn.resume_reading()
            conn.reactor.call_soon(self._deliver_if_open)

    def _deliver_if_open(self) -> None:
        if self._reading and self._inner is not None and not self.is_closing():
            self._deliver()

    @property
    def is_reading(self) -> bool:
        """True unless paused, at EOF or closing."""
        return self._reading and not self._eof_told and not self.is_closing()

    def get_write_buffer_size(self) -> int:
        """Ciphertext bytes not yet taken by the kernel."""
        assert self._conn is not None
        return self._conn.get_write_buffer_size()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """Set the connection's water marks."""
        assert self._conn is not None
        self._conn.set_write_buffer_limits(high, low)

    def __repr__(self) -> str:
        return f"<TLS {self._conn!r} handshake={'done' if self._inner else 'pending'}>"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    return str(exc) or type(exc).__name__


if TYPE_CHECKING:

    def _is_transport(layer: TLSLayer) -> Transport:
        return layer  # mypy checks TLSLayer against the Transport protocol
