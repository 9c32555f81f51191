"""Connection: a non-blocking socket transport between the reactor and a handler.

Theory of operation
-------------------
* One registration per connection, of its descriptor (the ``fileno`` int
  it holds anyway, so the poller's table key costs nothing more), whose
  callback is the connection's bound ``_on_event``; the events asked for are recomputed by
  ``_update_events`` only when reading is paused or resumed, EOF arrives, or
  the write buffer becomes empty or non-empty.
* Reading: ``EVENT_READ`` while reading is wanted. Each readiness event does
  one read of up to ``max_read`` bytes and hands the bytes to the
  handler. An empty read is EOF: the handler's ``eof_received`` decides
  between half-close (return True) and close.
* Bytes move with ``os.read``/``os.write`` on that descriptor, not the
  socket's ``recv``/``send`` methods: the same system calls (``read(2)`` on
  a stream socket is ``recv(2)`` without flags) without the argument tuple
  and format parsing the socket methods cost on every call (about 500 CPU
  instructions each). The descriptor number is only used while the state is
  not closed, and the connection closes its socket only in ``_finish``,
  after setting the state: a number reused by a later accept is never read
  or written through this connection.
* Writing: ``write()`` sends at once when nothing is buffered and
  keeps only the unsent tail (a ``memoryview`` slice, no copy) in a deque.
  ``EVENT_WRITE`` is registered only while that deque is non-empty. Above
  ``high_water`` buffered bytes the handler's ``pause_writing`` is called;
  once the buffer drains to ``low_water``, ``resume_writing``.
* Activity is stamped from ``reactor.time`` (read once per loop pass), never
  by pushing a timer per event; the listener sweeps idle connections.
  A completed write is activity too: a client that only listens is not idle.
* ``close()`` stops reading, flushes what is buffered, then closes in stages
  (a lingering close, as nginx does): shut the write side down, read and
  discard what the peer still sends until its EOF or ``linger_timeout``, then
  close. Closing a socket with unread input makes the kernel send RST, which
  can destroy a response (a 413, a ``-ERR line too long``) still on its way.
  ``abort()`` drops the buffer and closes at once. Either way the handler's
  ``connection_lost`` is delivered on the next loop pass, never from inside
  the handler's own callback: for a lingering close as soon as lingering
  starts (the handler can do nothing more with it), otherwise once the
  socket is closed. The ``on_lost`` callback (the listener's bookkeeping:
  ``max_connections``, the observation hooks) runs when the socket is
  really closed.
* The failure boundary: every handler callback runs with this connection as
  ``reactor.current_owner``, so timers, ready callbacks and
  ``run_in_thread`` results the handler schedules remember it. An exception
  from any of them, or from the handler callback itself, is logged with the
  callback, listener, plugin and peer, and aborts only this connection
  (``connection_lost`` receives the exception). ``KeyboardInterrupt`` and
  ``SystemExit`` propagate.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import itertools
import logging
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, final

from reactorkit.handler import Handler

if TYPE_CHECKING:
    from reactorkit.listener import Listener
    from reactorkit.reactor import Reactor, TimerHandle
    from reactorkit.transport import Transport

__all__ = [
    "DEFAULT_HIGH_WATER",
    "DEFAULT_LINGER_TIMEOUT",
    "DEFAULT_LOW_WATER",
    "DEFAULT_MAX_READ",
    "Connection",
    "format_peer",
]

log = logging.getLogger("reactorkit.connection")

DEFAULT_MAX_READ = 65536
DEFAULT_HIGH_WATER = 64 * 1024
DEFAULT_LOW_WATER = 16 * 1024
#: Seconds a closing connection keeps discarding the peer's input before it
#: closes anyway (nginx's lingering close; see the theory of operation).
DEFAULT_LINGER_TIMEOUT = 2.0

_EVENT_READ = 1  # selectors.EVENT_READ
_EVENT_WRITE = 2  # selectors.EVENT_WRITE
_TRY_AGAIN = (BlockingIOError, InterruptedError)
# The socket's bytes move through these (see the theory of operation).
_read = os.read
_write = os.write
# What a handler raises that is not its own failure but the process's: every
# other BaseException (asyncio.CancelledError, GeneratorExit, a plugin's own
# subclass) is a handler bug like any Exception, as in the reactor's guard.
_PROCESS_EXITS = (KeyboardInterrupt, SystemExit)
_CONN_IDS = itertools.count(1)  # conn_id: names one connection in every log line

# The shared, always-empty buffer of connections that never had to buffer.
# maxlen=0 makes a stray append a no-op instead of shared state.
_NO_BUFFER: collections.deque[bytes | memoryview] = collections.deque(maxlen=0)

# peername's port slot when the address is not a (host, port) pair.
_WHOLE: Any = object()

# States, in order.
_OPEN = "open"
_CLOSING = "closing"
_LINGERING = "lingering"
_CLOSED = "closed"


@final
class Connection:
    """One accepted socket, owned by the reactor thread.

    Handlers receive it in ``connection_made`` and use ``write``, ``close``,
    ``abort``, ``pause_reading``, ``resume_reading``; the rest is read-only
    information (``peername``, ``sockname``, ``bytes_received``,
    ``bytes_sent``, ``listener``, ``reactor``). Handlers should rely only on
    :class:`reactorkit.Transport`, which the test double implements too.

    Args:
        reactor: the reactor that runs it.
        sock: a connected socket (made non-blocking by the caller).
        handler: the protocol handler to feed.
        listener: the listener that accepted it, or None (outbound, tests).
        peername: the peer address if already known (accept returns it).
        max_read, high_water, low_water: see the module docstring.
        linger_timeout: the most seconds a close spends discarding input;
            0 (the default, for outbound connections) closes at once.
            Listeners pass :data:`DEFAULT_LINGER_TIMEOUT`: lingering
            protects a server's last response.
        on_lost: called as ``on_lost(connection, exc)`` after the handler's
            ``connection_lost`` (the owner's bookkeeping: the listener's).
    """

    __slots__ = (
        "__weakref__",
        "_buffer",
        "_buffer_size",
        "_eof",
        "_events",
        "_handler",
        "_handler_told",
        "_linger_timer",
        "_on_event_cb",
        "_on_lost",
        "_peer",
        "_peer_port",
        "_reading",
        "_sock",
        "_sockname",
        "_state",
        "_writing_paused",
        "bytes_received",
        "bytes_sent",
        "conn_id",
        "fileno",
        "high_water",
        "last_activity",
        "linger_timeout",
        "listener",
        "low_water",
        "max_read",
        "reactor",
        "reads_paused",
    )

    # Unset until sockname is first read (see the property).
    _sockname: Any

    def __init__(
        self,
        reactor: Reactor,
        sock: socket.socket,
        handler: Handler,
        *,
        listener: Listener | None = None,
        peername: Any = None,
        max_read: int = DEFAULT_MAX_READ,
        high_water: int = DEFAULT_HIGH_WATER,
        low_water: int = DEFAULT_LOW_WATER,
        linger_timeout: float = 0.0,
        on_lost: Callable[[Connection, BaseException | None], object] | None = None,
    ) -> None:
        self.reactor = reactor
        self.conn_id = next(_CONN_IDS)
        self._sock = sock
        self._handler = handler
        self.listener = listener
        self.fileno = sock.fileno()
        self.peername = peername if peername is not None else _safe_name(sock.getpeername)
        self.max_read = max_read
        self.high_water = high_water
        self.low_water = low_water
        self.linger_timeout = linger_timeout
        self._on_lost = on_lost
        self._linger_timer: TimerHandle | None = None
        self._handler_told = False
        self.bytes_received = 0
        self.bytes_sent = 0
        #: Times reading was paused (flow control); the listener adds it up.
        self.reads_paused = 0
        self.last_activity = reactor.time
        # Most connections never buffer: they share one empty deque until they do
        # (an empty deque costs ~600 bytes, a lot per idle connection).
        self._buffer: collections.deque[bytes | memoryview] = _NO_BUFFER
        self._buffer_size = 0
        self._state = _OPEN
        self._reading = True
        self._eof = False
        self._writing_paused = False
        self._events = 0
        self._on_event_cb = self._on_event

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        """Register with the reactor and call the handler's ``connection_made``.

        If the reactor refuses the descriptor (the ``selectors`` fallback
        still holding the number of a socket a plugin closed without
        unregistering it), the connection is logged and closed, and
        ``on_lost`` runs as for any close; the handler is never told.
        """
        try:
            self._update_events()
        except (KeyError, ValueError, OSError) as exc:
            log.error(
                "%r: the reactor refused its descriptor (%s); closing it",
                self,
                exc,
                extra=self._log_fields(),
            )
            self._handler_told = True  # it never saw connection_made
            self._finish(exc)
            return
        self._call_handler("connection_made", self)

    @property
    def handler(self) -> Handler:
        """The protocol handler this connection feeds."""
        return self._handler

    def replace_handler(self, handler: Handler) -> None:
        """Drive ``handler`` from now on (a PROXY layer steps aside this way).

        The caller calls the new handler's ``connection_made`` itself.
        """
        self._handler = handler

    @property
    def peername(self) -> Any:
        """The peer's address, as ``getpeername()`` gives it (or as a PROXY header set it).

        An ``(host, port)`` pair is kept as its two parts and made into a
        tuple when read: an idle connection then holds no tuple of its own
        (56 bytes), and its host string is the listener's shared one.
        """
        port = self._peer_port
        if port is _WHOLE:
            return self._peer
        return (self._peer, port)

    @peername.setter
    def peername(self, value: Any) -> None:
        if type(value) is tuple and len(value) == 2:
            self._peer, self._peer_port = value
        else:  # IPv6's 4-tuple, a UNIX path, None: kept as it is
            self._peer, self._peer_port = value, _WHOLE

    @property
    def sockname(self) -> Any:
        """The local address, asked of the socket the first time it is read.

        Most connections never need it; fetching it at accept would cost
        every idle connection an address tuple. Fetched at the latest just
        before the socket closes, so ``connection_lost`` still sees it.
        """
        try:
            return self._sockname
        except AttributeError:
            pass
        name = self._sockname = _safe_name(self._sock.getsockname)
        return name

    @sockname.setter
    def sockname(self, value: Any) -> None:
        self._sockname = value

    @property
    def peer_certificate(self) -> dict[str, Any] | None:
        """None: a plain connection has no peer certificate (see :mod:`reactorkit.tls`)."""
        return None

    @property
    def alpn_protocol(self) -> str | None:
        """None: no ALPN on a plain connection."""
        return None

    @property
    def is_tls(self) -> bool:
        """False: a plain connection is not encrypted."""
        return False

    def request_shutdown(self) -> None:
        """Tell the handler a graceful shutdown began (its ``shutdown_requested``).

        Runs under the connection's failure boundary: a handler that raises
        is logged and aborted.
        """
        if self._state is _OPEN:
            self._call_handler("shutdown_requested")

    def is_closing(self) -> bool:
        """True once ``close()`` or ``abort()`` was called or the peer went away."""
        return self._state is not _OPEN

    @property
    def state(self) -> str:
        """One of ``"open"``, ``"closing"``, ``"lingering"``, ``"closed"`` (see the module doc)."""
        return self._state

    # -- reading -----------------------------------------------------------

    def pause_reading(self) -> None:
        """Stop reading until :meth:`resume_reading`; the kernel's buffer fills."""
        if self._reading:
            self._reading = False
            self.reads_paused += 1
            self._update_events()

    def resume_reading(self) -> None:
        """Read again after :meth:`pause_reading`."""
        if not self._reading:
            self._reading = True
            self._update_events()

    @property
    def is_reading(self) -> bool:
        """True unless reading is paused (or the connection is closing)."""
        return self._reading and self._state is _OPEN and not self._eof

    # -- writing -----------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data``: at once as far as the kernel takes it, the rest buffered.

        Writing to a closing or closed connection is silently ignored, as the
        peer can no longer be relied on to read it.
        """
        if self._state is not _OPEN or not data:
            return
        if self._buffer_size:  # the buffer holds only non-empty chunks: size 0 is empty
            if not isinstance(data, bytes):
                data = bytes(data)  # the caller may reuse its buffer
            self._buffer.append(data)
            self._buffer_size += len(data)
        else:
            if type(data) is not bytes and type(data) is not bytearray:
                # len() of a view counts items, send() bytes: make it count bytes.
                view = memoryview(data)
                data = view.cast("B") if view.c_contiguous else view.tobytes()
            try:
                sent = _write(self.fileno, data)
            except _TRY_AGAIN:
                sent = 0
            except OSError as exc:
                self._fatal_io_error(exc)
                return
            self.bytes_sent += sent
            self.last_activity = self.reactor.time
            if sent == len(data):
                return
            rest = memoryview(data if isinstance(data, bytes) else bytes(data))[sent:]
            if self._buffer is _NO_BUFFER:
                self._buffer = collections.deque()
            self._buffer.append(rest)
            self._buffer_size += len(rest)
            self._update_events()
        if not self._writing_paused and self._buffer_size > self.high_water:
            self._writing_paused = True
            self._call_handler("pause_writing")

    def writelines(self, chunks: Any) -> None:
        """Write every chunk of an iterable, in order."""
        for chunk in chunks:
            self.write(chunk)

    def get_write_buffer_size(self) -> int:
        """Bytes written by the handler but not yet taken by the kernel."""
        return self._buffer_size

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """Set the high and low water marks (low defaults to a quarter of high)."""
        if high is None:
            high = self.high_water
        if low is None:
            low = high // 4
        if not 0 <= low <= high:
            raise ValueError(f"need 0 <= low <= high, got high={high!r} low={low!r}")
        self.high_water = high
        self.low_water = low

    def _write_ready(self) -> None:
        buffer = self._buffer
        fileno = self.fileno
        while buffer:
            chunk = buffer[0]
            try:
                sent = _write(fileno, chunk)
            except _TRY_AGAIN:
                break
            except OSError as exc:
                self._fatal_io_error(exc)
                return
            self.bytes_sent += sent
            self._buffer_size -= sent
            if sent < len(chunk):
                buffer[0] = memoryview(chunk)[sent:]
                break
            buffer.popleft()
        self.last_activity = self.reactor.time
        if self._writing_paused and self._buffer_size <= self.low_water:
            self._writing_paused = False
            self._call_handler("resume_writing")
        if not buffer:
            if self._state is _CLOSING:
                self._linger()
                return
            self._update_events()

    # -- closing -----------------------------------------------------------

    def close(self) -> None:
        """Stop reading, flush the write buffer, then close (lingering: see the module doc)."""
        if self._state is not _OPEN:
            return
        self._state = _CLOSING
        if self._buffer:
            self._update_events()  # keep EVENT_WRITE, drop EVENT_READ
        else:
            self._linger()

    def abort(self) -> None:
        """Close at once, dropping whatever is still buffered."""
        if self._state is _CLOSED:
            return
        self._buffer.clear()
        self._buffer_size = 0
        self._finish(None)

    def _linger(self) -> None:
        # Everything is written. If the peer may still be sending, shut our
        # side, let it read the response and EOF, and close at its EOF.
        if self._eof or self.linger_timeout <= 0:
            self._finish(None)
            return
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._finish(None)
            return
        self._state = _LINGERING
        self._linger_timer = self.reactor.call_later(self.linger_timeout, self._linger_over)
        self._update_events()
        self.reactor.call_soon(self._tell_handler_lost, None)

    def _linger_over(self) -> None:
        if self._state is _LINGERING:
            self._finish(None)

    def _discard_input(self) -> None:
        try:
            data = _read(self.fileno, self.max_read)
        except _TRY_AGAIN:
            return
        except OSError:
            data = b""
        if not data:
            self._finish(None)

    def _finish(self, exc: BaseException | None) -> None:
        self._state = _CLOSED
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        if self._events:
            with contextlib.suppress(KeyError, ValueError):
                self.reactor.unregister(self.fileno)
            self._events = 0
        try:
            self._sockname  # noqa: B018 (read by connection_lost, once the socket is closed)
        except AttributeError:
            self._sockname = _safe_name(self._sock.getsockname)
        self._sock.close()
        self.reactor.call_soon(self._deliver_lost, exc)

    def _tell_handler_lost(self, exc: BaseException | None) -> None:
        if self._handler_told:
            return
        self._handler_told = True
        reactor = self.reactor
        previous = reactor.current_owner
        reactor.current_owner = self
        try:
            self._handler.connection_lost(exc)
        except _PROCESS_EXITS:
            raise
        except BaseException as error:
            self._log_handler_error("connection_lost", error)
        finally:
            reactor.current_owner = previous

    def _deliver_lost(self, exc: BaseException | None) -> None:
        self._tell_handler_lost(exc)
        if self._on_lost is not None:
            self._on_lost(self, exc)

    # -- events ------------------------------------------------------------

    def _update_events(self) -> None:
        if self._state is _CLOSED:
            return
        events = 0
        if (self._reading and not self._eof and self._state is _OPEN) or (
            self._state is _LINGERING
        ):
            events = _EVENT_READ
        if self._buffer:
            events |= _EVENT_WRITE
        if events == self._events:
            return
        if self._events == 0:
            self.reactor.register(self.fileno, events, self._on_event_cb)
        elif events == 0:
            self.reactor.unregister(self.fileno)
        else:
            self.reactor.modify(self.fileno, events, self._on_event_cb)
        self._events = events

    def _on_event(self, mask: int) -> None:
        # The readiness path: no hook, no log. A mask is 1, 2 or 3 (EVENT_READ,
        # EVENT_WRITE, both): compared, not masked, as int comparisons are
        # what the interpreter specializes.
        if mask != 2:  # EVENT_READ
            if self._state is _OPEN:
                try:
                    data = _read(self.fileno, self.max_read)
                except _TRY_AGAIN:
                    data = None
                except OSError as exc:
                    self._fatal_io_error(exc)
                    return
                if data:
                    self.bytes_received += len(data)
                    reactor = self.reactor
                    self.last_activity = reactor.time
                    reactor.current_owner = self
                    try:
                        self._handler.data_received(data)
                    except _PROCESS_EXITS:
                        reactor.current_owner = None
                        raise
                    except BaseException as exc:
                        reactor.current_owner = None
                        self._handler_failed("data_received", exc)
                        return
                    reactor.current_owner = None
                elif data is not None:
                    self._eof_received()
            elif self._state is _LINGERING:
                self._discard_input()
                return
        if mask > 1 and self._buffer_size:  # EVENT_WRITE
            self._write_ready()

    def _read_now(self) -> None:
        # The listener's shutdown drain: serve what a just-accepted client
        # already sent before the handler is asked to finish.
        if self._state is _OPEN and self._reading:
            self._on_event(_EVENT_READ)

    def _eof_received(self) -> None:
        self._eof = True
        self.last_activity = self.reactor.time
        self._update_events()
        keep_open = self._call_handler("eof_received")
        if not keep_open and self._state is _OPEN:
            self.close()

    def _call_handler(self, name: str, *args: Any) -> Any:
        reactor = self.reactor
        previous = reactor.current_owner
        reactor.current_owner = self
        try:
            return getattr(self._handler, name)(*args)
        except _PROCESS_EXITS:
            raise
        except BaseException as exc:
            self._handler_failed(name, exc)
            return None
        finally:
            reactor.current_owner = previous

    def callback_failed(self, callback: Callable[..., object], exc: BaseException) -> None:
        """A callback scheduled by this connection's handler raised: log it, abort.

        Called by the reactor for timers, ready callbacks and ``run_in_thread``
        done-callbacks scheduled while this connection was current, and for an
        exception escaping this connection's own I/O callback.
        """
        name = getattr(callback, "__qualname__", None) or repr(callback)
        self._handler_failed(name, exc)

    # -- errors ------------------------------------------------------------

    def _fatal_io_error(self, exc: OSError) -> None:
        if exc.errno not in (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED, errno.ETIMEDOUT):
            log.warning("%r: socket error: %s", self, exc, extra=self._log_fields())
        self._buffer.clear()
        self._buffer_size = 0
        if self._state is not _CLOSED:
            self._finish(exc)

    def _handler_failed(self, callback: str, exc: BaseException) -> None:
        self._log_handler_error(callback, exc)
        if self._state is _CLOSED:
            return
        self._buffer.clear()
        self._buffer_size = 0
        self._finish(exc)

    def _log_handler_error(self, callback: str, exc: BaseException) -> None:
        listener = self.listener
        # A TLS layer names the handler it drives.
        handler = getattr(self._handler, "inner_handler", None) or self._handler
        log.error(
            "handler %s.%s raised on listener %r (%s), peer %s; closing the connection",
            type(handler).__name__,
            callback,
            listener.name if listener is not None else None,
            listener.plugin if listener is not None else type(self._handler).__module__,
            format_peer(self.peername),
            exc_info=exc,
            extra=self._log_fields(),
        )

    def _log_fields(self) -> dict[str, Any]:
        # Every log line about this connection names it the same way (reactorkit.logfmt).
        listener = self.listener
        return {
            "conn_id": self.conn_id,
            "listener": listener.name if listener is not None else None,
            "peer": format_peer(self.peername),
        }

    def __repr__(self) -> str:
        return (
            f"<Connection fd={self.fileno} peer={format_peer(self.peername)} "
            f"state={self._state} buffered={self._buffer_size}>"
        )


def _safe_name(getter: Any) -> Any:
    try:
        return getter()
    except OSError:
        return None


def format_peer(peer: Any) -> str:
    """``127.0.0.1:5000``, ``[::1]:5000``, or ``unix`` for an unnamed UNIX peer."""
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = peer[0], peer[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    if not peer:
        return "unix"
    return str(peer)


if TYPE_CHECKING:

    def _is_transport(connection: Connection) -> Transport:
        return connection  # mypy checks Connection against the Transport protocol
