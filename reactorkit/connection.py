"""Connection: a non-blocking socket transport between the reactor and a handler.

Theory of operation
-------------------
* One selector registration per connection, whose ``key.data`` is the
  connection's bound ``_on_event``; the events asked for are recomputed by
  ``_update_events`` only when reading is paused or resumed, EOF arrives, or
  the write buffer becomes empty or non-empty.
* Reading: ``EVENT_READ`` while reading is wanted. Each readiness event does
  one ``recv`` of up to ``max_read`` bytes and hands the bytes to the
  handler. An empty read is EOF: the handler's ``eof_received`` decides
  between half-close (return True) and close.
* Writing: ``write()`` calls ``send`` at once when nothing is buffered and
  keeps only the unsent tail (a ``memoryview`` slice, no copy) in a deque.
  ``EVENT_WRITE`` is registered only while that deque is non-empty. Above
  ``high_water`` buffered bytes the handler's ``pause_writing`` is called;
  once the buffer drains to ``low_water``, ``resume_writing``.
* Activity is stamped from ``reactor.time`` (read once per loop pass), never
  by pushing a timer per event; the listener sweeps idle connections.
* ``close()`` stops reading, flushes what is buffered, then closes;
  ``abort()`` drops the buffer and closes at once. Either way the socket is
  closed and ``connection_lost`` delivered on the next loop pass, never from
  inside the handler's own callback.
* A handler exception is caught here, logged with the callback, listener and
  peer, and aborts only this connection. ``KeyboardInterrupt`` and
  ``SystemExit`` propagate.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import socket
from typing import TYPE_CHECKING, Any, final

from reactorkit.handler import Handler

if TYPE_CHECKING:
    from reactorkit.listener import Listener
    from reactorkit.reactor import Reactor

__all__ = [
    "DEFAULT_HIGH_WATER",
    "DEFAULT_LOW_WATER",
    "DEFAULT_MAX_READ",
    "Connection",
]

log = logging.getLogger("reactorkit.connection")

DEFAULT_MAX_READ = 65536
DEFAULT_HIGH_WATER = 64 * 1024
DEFAULT_LOW_WATER = 16 * 1024

_EVENT_READ = 1  # selectors.EVENT_READ
_EVENT_WRITE = 2  # selectors.EVENT_WRITE
_TRY_AGAIN = (BlockingIOError, InterruptedError)

# The shared, always-empty buffer of connections that never had to buffer.
# maxlen=0 makes a stray append a no-op instead of shared state.
_NO_BUFFER: collections.deque[bytes | memoryview] = collections.deque(maxlen=0)

# States, in order.
_OPEN = "open"
_CLOSING = "closing"
_CLOSED = "closed"


@final
class Connection:
    """One accepted socket, owned by the reactor thread.

    Handlers receive it in ``connection_made`` and use ``write``, ``close``,
    ``abort``, ``pause_reading``, ``resume_reading``; the rest is read-only
    information (``peername``, ``sockname``, ``bytes_received``,
    ``bytes_sent``, ``listener``, ``reactor``).
    """

    __slots__ = (
        "__weakref__",
        "_buffer",
        "_buffer_size",
        "_eof",
        "_events",
        "_handler",
        "_on_event_cb",
        "_reading",
        "_recv",
        "_send",
        "_sock",
        "_state",
        "_writing_paused",
        "bytes_received",
        "bytes_sent",
        "fileno",
        "high_water",
        "last_activity",
        "listener",
        "low_water",
        "max_read",
        "peername",
        "reactor",
        "sockname",
    )

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
    ) -> None:
        self.reactor = reactor
        self._sock = sock
        self._handler = handler
        self.listener = listener
        self.fileno = sock.fileno()
        self.peername = peername if peername is not None else _safe_name(sock.getpeername)
        self.sockname = _safe_name(sock.getsockname)
        self.max_read = max_read
        self.high_water = high_water
        self.low_water = low_water
        self.bytes_received = 0
        self.bytes_sent = 0
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
        # Bound once: the readiness path does no attribute walk to reach them.
        self._recv = sock.recv
        self._send = sock.send

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        """Register with the reactor and call the handler's ``connection_made``."""
        self._update_events()
        try:
            self._handler.connection_made(self)
        except Exception as exc:
            self._handler_failed("connection_made", exc)

    @property
    def handler(self) -> Handler:
        """The protocol handler this connection feeds."""
        return self._handler

    def is_closing(self) -> bool:
        """True once ``close()`` or ``abort()`` was called or the peer went away."""
        return self._state is not _OPEN

    @property
    def state(self) -> str:
        """``"open"``, ``"closing"`` (flushing before close) or ``"closed"``."""
        return self._state

    # -- reading -----------------------------------------------------------

    def pause_reading(self) -> None:
        """Stop reading until :meth:`resume_reading`; the kernel's buffer fills."""
        if self._reading:
            self._reading = False
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
        if self._buffer:
            if not isinstance(data, bytes):
                data = bytes(data)  # the caller may reuse its buffer
            self._buffer.append(data)
            self._buffer_size += len(data)
        else:
            try:
                sent = self._send(data)
            except _TRY_AGAIN:
                sent = 0
            except OSError as exc:
                self._fatal_io_error(exc)
                return
            self.bytes_sent += sent
            if sent == len(data):
                return
            self.last_activity = self.reactor.time
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
        send = self._send
        while buffer:
            chunk = buffer[0]
            try:
                sent = send(chunk)
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
                self._finish(None)
                return
            self._update_events()

    # -- closing -----------------------------------------------------------

    def close(self) -> None:
        """Stop reading, flush the write buffer, then close the socket."""
        if self._state is not _OPEN:
            return
        self._state = _CLOSING
        if self._buffer:
            self._update_events()  # keep EVENT_WRITE, drop EVENT_READ
        else:
            self._finish(None)

    def abort(self) -> None:
        """Close at once, dropping whatever is still buffered."""
        if self._state is _CLOSED:
            return
        self._buffer.clear()
        self._buffer_size = 0
        self._finish(None)

    def _finish(self, exc: BaseException | None) -> None:
        self._state = _CLOSED
        if self._events:
            with contextlib.suppress(KeyError, ValueError):
                self.reactor.unregister(self._sock)
            self._events = 0
        self._sock.close()
        self.reactor.call_soon(self._deliver_lost, exc)

    def _deliver_lost(self, exc: BaseException | None) -> None:
        try:
            self._handler.connection_lost(exc)
        except Exception as error:
            self._log_handler_error("connection_lost", error)
        if self.listener is not None:
            self.listener._connection_closed(self, exc)

    # -- events ------------------------------------------------------------

    def _update_events(self) -> None:
        if self._state is _CLOSED:
            return
        events = 0
        if self._reading and not self._eof and self._state is _OPEN:
            events = _EVENT_READ
        if self._buffer:
            events |= _EVENT_WRITE
        if events == self._events:
            return
        if self._events == 0:
            self.reactor.register(self._sock, events, self._on_event_cb)
        elif events == 0:
            self.reactor.unregister(self._sock)
        else:
            self.reactor.modify(self._sock, events, self._on_event_cb)
        self._events = events

    def _on_event(self, mask: int) -> None:
        if mask & 1 and self._state is _OPEN:  # EVENT_READ; a literal on the hot path
            try:
                data = self._recv(self.max_read)
            except _TRY_AGAIN:
                data = None
            except OSError as exc:
                self._fatal_io_error(exc)
                return
            if data:
                self.bytes_received += len(data)
                self.last_activity = self.reactor.time
                try:
                    self._handler.data_received(data)
                except Exception as exc:
                    self._handler_failed("data_received", exc)
                    return
            elif data is not None:
                self._eof_received()
        if mask & 2 and self._buffer:  # EVENT_WRITE
            self._write_ready()

    def _eof_received(self) -> None:
        self._eof = True
        self.last_activity = self.reactor.time
        self._update_events()
        try:
            keep_open = self._handler.eof_received()
        except Exception as exc:
            self._handler_failed("eof_received", exc)
            return
        if not keep_open:
            self.close()

    def _call_handler(self, name: str) -> None:
        try:
            getattr(self._handler, name)()
        except Exception as exc:
            self._handler_failed(name, exc)

    # -- errors ------------------------------------------------------------

    def _fatal_io_error(self, exc: OSError) -> None:
        if exc.errno not in (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED, errno.ETIMEDOUT):
            log.warning("%r: socket error: %s", self, exc)
        self._buffer.clear()
        self._buffer_size = 0
        if self._state is not _CLOSED:
            self._finish(exc)

    def _handler_failed(self, callback: str, exc: Exception) -> None:
        self._log_handler_error(callback, exc)
        if self.listener is not None:
            self.listener.stats.errors += 1
        self.abort()

    def _log_handler_error(self, callback: str, exc: BaseException) -> None:
        listener = self.listener.name if self.listener is not None else None
        log.error(
            "handler %s.%s raised on listener %r, peer %s; closing the connection",
            type(self._handler).__name__,
            callback,
            listener,
            _format_peer(self.peername),
            exc_info=exc,
        )

    def __repr__(self) -> str:
        return (
            f"<Connection fd={self.fileno} peer={_format_peer(self.peername)} "
            f"state={self._state} buffered={self._buffer_size}>"
        )


def _safe_name(getter: Any) -> Any:
    try:
        return getter()
    except OSError:
        return None


def _format_peer(peer: Any) -> str:
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = peer[0], peer[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    if not peer:
        return "unix"
    return str(peer)
