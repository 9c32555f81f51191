"""Handler base classes and the handler type a plugin declares.

A handler is the per-connection protocol object. The connection calls it
(``connection_made``, ``data_received``, ``eof_received``, ``connection_lost``,
``pause_writing``, ``resume_writing``, ``shutdown_requested``) and it answers
through ``self.connection`` (``write``, ``close``, ``abort``,
``pause_reading``...). It never touches the socket, so it can be driven in a
test by ``reactorkit.testing.FakeConnection``.

An exception raised from any callback closes only that connection; the
connection logs it with the listener's name and the peer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from reactorkit.connection import Connection
    from reactorkit.listener import Listener

__all__ = [
    "DEFAULT_MAX_LINE",
    "Handler",
    "HandlerType",
    "LineHandler",
    "NoOptions",
]

#: Default limit for one line of a :class:`LineHandler`, delimiter excluded.
DEFAULT_MAX_LINE = 16384


class Handler:
    """The base class of every protocol handler: override what you need.

    ``HandlerType.handler`` is called with one argument, the listener's
    shared state (see :class:`HandlerType`), once per accepted connection.
    The default ``__init__`` keeps it as ``self.state``.

    Args:
        state: the per-listener shared state.
    """

    #: The connection, set just before :meth:`connection_made`.
    connection: Connection

    def __init__(self, state: Any = None) -> None:
        self.state = state

    def connection_made(self, connection: Connection) -> None:
        """Called once the connection is accepted; the default keeps it as ``self.connection``."""
        self.connection = connection

    def data_received(self, data: bytes) -> None:
        """Called with every chunk of bytes read; chunk boundaries mean nothing."""

    def eof_received(self) -> bool | None:
        """Called when the peer shut down its sending side.

        Returns:
            True to keep the connection open for writing (half-close); anything
            else closes it once pending writes are flushed.
        """
        return None

    def connection_lost(self, exc: BaseException | None) -> None:
        """Called once, after the socket is closed; ``exc`` is None for a clean close."""

    def pause_writing(self) -> None:
        """Called when the write buffer rises above the high water mark.

        Stop producing until :meth:`resume_writing`. A handler that echoes or
        relays input should ``self.connection.pause_reading()`` here.
        """

    def resume_writing(self) -> None:
        """Called when the write buffer drains below the low water mark."""

    def shutdown_requested(self) -> None:
        """Called when the server starts a graceful shutdown.

        The default closes the connection once its writes are flushed. Override
        to finish the work in hand first (e.g. the current HTTP response); the
        connection is aborted anyway when the shutdown timeout runs out.
        """
        self.connection.close()


class LineHandler(Handler):
    """A handler for line-oriented protocols: override :meth:`line_received`.

    Input is split on ``delimiter``; with the default ``b"\\n"`` a trailing
    ``b"\\r"`` is removed as well, so LF and CRLF clients both work. Memory
    stays bounded: at most ``max_line_length`` bytes of an unfinished line
    are held, and scanning resumes where the last search stopped.

    Once the connection is closing, no further line is dispatched; a
    re-entrant :meth:`data_received` (a handler feeding itself) only appends.

    Args:
        state: the per-listener shared state.
        delimiter: the line terminator; defaults to the class attribute.
        max_line_length: the longest line accepted, delimiter excluded.
    """

    delimiter: bytes = b"\n"
    max_line_length: int = DEFAULT_MAX_LINE

    def __init__(
        self,
        state: Any = None,
        *,
        delimiter: bytes | None = None,
        max_line_length: int | None = None,
    ) -> None:
        super().__init__(state)
        if delimiter is not None:
            self.delimiter = delimiter
        if max_line_length is not None:
            self.max_line_length = max_line_length
        self._line_buffer = bytearray()
        self._scanned = 0
        self._dispatching = False
        self._discarding = False

    def line_received(self, line: bytes) -> None:
        """Called with each complete line, without its delimiter."""

    def line_too_long(self, length: int) -> None:
        """Called when a line grows past ``max_line_length``.

        The default writes ``-ERR line too long`` and closes. Whatever it does,
        the partial line is dropped; if the connection stays open the rest of
        that line, up to the next delimiter, is discarded too.

        Args:
            length: how many bytes of the line were received before giving up.
        """
        self.connection.write(
            b"-ERR line too long: the limit is %d bytes\r\n" % self.max_line_length
        )
        self.connection.close()

    def data_received(self, data: bytes) -> None:
        buffer = self._line_buffer
        if self._dispatching:
            buffer += data  # re-entrant call: the running loop picks it up
            return
        self._dispatching = True
        try:
            if not buffer and not self._discarding and self._one_line(data):
                if not buffer:
                    return
            else:
                buffer += data
            self._dispatch_lines()
        finally:
            self._dispatching = False

    def _one_line(self, data: bytes) -> bool:
        # The common case, one whole line per read: dispatch it without
        # copying it through the buffer. False when it is not that case.
        delimiter = self.delimiter
        end = data.find(delimiter)
        if end < 0 or end != len(data) - len(delimiter):
            return False
        line_end = end - 1 if delimiter == b"\n" and end and data[end - 1] == 13 else end
        if line_end > self.max_line_length or self.connection.is_closing():
            return False
        self.line_received(data[:line_end])
        return True

    def _dispatch_lines(self) -> None:
        buffer = self._line_buffer
        delimiter = self.delimiter
        dlen = len(delimiter)
        strip_cr = delimiter == b"\n"
        limit = self.max_line_length
        connection = self.connection
        start = 0
        search = max(0, self._scanned - dlen + 1)
        while not connection.is_closing():
            end = buffer.find(delimiter, search)
            if end < 0:
                break
            if self._discarding:
                self._discarding = False
            else:
                line_end = end - 1 if strip_cr and end > start and buffer[end - 1] == 13 else end
                if line_end - start > limit:
                    length = line_end - start
                    start = search = end + dlen
                    self.line_too_long(length)
                    continue
                self.line_received(bytes(buffer[start:line_end]))
            start = search = end + dlen
        if start:
            del buffer[:start]
        pending = len(buffer)
        # An unfinished line over the limit (+1 for a CR that may precede the LF).
        if pending > limit + (1 if strip_cr else 0) and not connection.is_closing():
            del buffer[:]
            self._scanned = 0
            if not self._discarding:
                self._discarding = True
                self.line_too_long(pending)
            return
        if self._discarding:
            del buffer[:]  # still inside the over-long line
            pending = 0
        self._scanned = pending


@attrs.frozen(kw_only=True)
class NoOptions:
    """The options class of a handler that takes none."""


def _options_state(listener: Listener) -> Any:
    return listener.options


@attrs.frozen(kw_only=True)
class HandlerType:
    """What a plugin declares for each protocol it provides.

    Return a list of these from ``reactorkit_handler_types()``.

    Attributes:
        name: the name configs use in ``handler = "..."``; unique across plugins.
        handler: called once per connection with the listener's shared state;
            usually a :class:`Handler` subclass.
        options: an ``attrs`` class (``@attrs.frozen(kw_only=True)``) built from
            the listener's ``[listen.options]`` table.
        state: called once per listener with the :class:`~reactorkit.Listener`
            (its ``options``, ``reactor``, ``hook``, ``stats``) to build the
            shared state every connection's handler receives. Defaults to the
            options object itself.
        description: one line, shown by ``reactorkit plugins``.
        default_port: the port the built-in default config uses, if any.
    """

    name: str
    handler: Callable[[Any], Handler]
    options: type = NoOptions
    state: Callable[[Listener], Any] = _options_state
    description: str = ""
    default_port: int | None = None
