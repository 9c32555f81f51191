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

import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from reactorkit.observe import limit_closed

if TYPE_CHECKING:
    from reactorkit.listener import Listener
    from reactorkit.plugins import Plugins
    from reactorkit.reactor import TimerHandle
    from reactorkit.transport import Transport

__all__ = [
    "DEFAULT_MAX_LINE",
    "DEFAULT_MAX_LINES_PER_PASS",
    "Handler",
    "HandlerType",
    "LineHandler",
    "NoOptions",
]

#: Default limit for one line of a :class:`LineHandler`, delimiter excluded.
DEFAULT_MAX_LINE = 16384
#: Default cap on the lines a :class:`LineHandler` dispatches per loop pass.
DEFAULT_MAX_LINES_PER_PASS = 100


class Handler:
    """The base class of every protocol handler: override what you need.

    ``HandlerType.handler`` is called with one argument, the listener's
    shared state (see :class:`HandlerType`), once per accepted connection.
    The default ``__init__`` keeps it as ``self.state``.

    Args:
        state: the per-listener shared state.
    """

    # Slots, so a subclass that declares ``__slots__`` too (the echo handler)
    # carries no per-connection ``__dict__``; one that does not gets its
    # ``__dict__`` and ``__weakref__`` as usual.
    __slots__ = ("connection", "state")

    #: The connection (a :class:`~reactorkit.Transport`), set by :meth:`connection_made`.
    connection: Transport

    def __init__(self, state: Any = None) -> None:
        self.state = state

    def connection_made(self, connection: Transport) -> None:
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
    ``b"\\r"`` is removed as well, so LF and CRLF clients both work.

    Memory stays bounded and one client cannot starve the others:

    * at most ``max_line_length`` bytes of an unfinished line are held, and
      scanning resumes where the last search stopped;
    * at most ``max_lines_per_pass`` lines are dispatched per loop pass; the
      rest of a pipelined batch waits in the buffer, with reading paused,
      and is dispatched on later passes (``reactor.call_soon``). The buffer
      therefore holds at most one read plus one unfinished line;
    * while the write buffer is above its high-water mark
      (:meth:`pause_writing`) no line is dispatched and reading is paused, so
      a client that sends but never reads cannot make the server pile up
      replies. :meth:`pause_lines` does the same for a subclass's reasons;
    * with ``line_timeout`` > 0, a line must be completed within that many
      seconds of its first byte, or :meth:`line_timed_out` is called.

    Every complete line received is dispatched, in order, also after EOF and
    on a graceful shutdown; then :meth:`lines_finished` is called (it closes
    the connection by default). An unfinished last line is dropped.

    Once the connection is closing, no further line is dispatched; a
    re-entrant :meth:`data_received` (a handler feeding itself) only appends.
    This class drives the connection's ``pause_reading``/``resume_reading``:
    subclasses hold input back with :meth:`pause_lines` instead.

    Args:
        state: the per-listener shared state.
        delimiter: the line terminator; defaults to the class attribute.
        max_line_length: the longest line accepted, delimiter excluded.
        max_lines_per_pass: lines dispatched per loop pass at most (>= 1).
        line_timeout: seconds to complete a line once its first byte came;
            0 means no limit.

    Raises:
        ValueError: ``max_lines_per_pass`` < 1 or ``line_timeout`` < 0.
    """

    delimiter: bytes = b"\n"
    max_line_length: int = DEFAULT_MAX_LINE
    max_lines_per_pass: int = DEFAULT_MAX_LINES_PER_PASS
    line_timeout: float = 0.0

    def __init__(
        self,
        state: Any = None,
        *,
        delimiter: bytes | None = None,
        max_line_length: int | None = None,
        max_lines_per_pass: int | None = None,
        line_timeout: float | None = None,
    ) -> None:
        super().__init__(state)
        if delimiter is not None:
            self.delimiter = delimiter
        if max_line_length is not None:
            self.max_line_length = max_line_length
        if max_lines_per_pass is not None:
            if max_lines_per_pass < 1:
                raise ValueError(f"max_lines_per_pass must be >= 1, got {max_lines_per_pass!r}")
            self.max_lines_per_pass = max_lines_per_pass
        if line_timeout is not None:
            if not line_timeout >= 0:
                raise ValueError(f"line_timeout must be >= 0 seconds, got {line_timeout!r}")
            self.line_timeout = line_timeout
        self._line_buffer = bytearray()
        self._scanned = 0
        self._dispatching = False
        self._discarding = False
        self._backlog = False  # complete lines wait in the buffer for a later pass
        self._lines_paused = False  # pause_lines()
        self._writing_paused = False  # pause_writing()
        self._held = False  # any of the above, or input ended: no dispatch, no reading
        self._reading_paused = False  # this class paused the connection's reading
        self._continuing = False  # a _continue_lines is scheduled
        self._input_done = 0  # 1: EOF or shutdown seen; 2: lines_finished() called
        self._line_started: float | None = None  # when the unfinished line began
        self._line_timer: TimerHandle | None = None

    # -- what subclasses override --------------------------------------------

    def line_received(self, line: bytes) -> None:
        """Called with each complete line, without its delimiter."""

    def line_too_long(self, length: int) -> None:
        """Called when a line grows past ``max_line_length``.

        The default writes ``-ERR line too long`` and closes. Whatever it does,
        the partial line is dropped; if the connection stays open the rest of
        that line, up to the next delimiter, is discarded too.

        Args:
            length: how many bytes of the line were received before giving up
                (for a complete line: its length, delimiter excluded).
        """
        limit_closed(self.connection, "line_too_long", f"{length} bytes")
        self.connection.write(
            b"-ERR line too long: the limit is %d bytes\r\n" % self.max_line_length
        )
        self.connection.close()

    def line_timed_out(self) -> None:
        """Called when a line is not completed within ``line_timeout`` seconds.

        The clock starts at the line's first byte and is restarted while
        this handler holds input back (reading paused). The default writes
        ``-ERR line timeout`` and closes. Whatever it does, the unfinished
        line is dropped.
        """
        limit_closed(self.connection, "line_timeout")
        self.connection.write(
            b"-ERR line timeout: a line must be completed within %g seconds\r\n" % self.line_timeout
        )
        self.connection.close()

    def lines_dispatched(self) -> None:
        """Called after each round of :meth:`line_received` calls.

        A round is one read, or one later pass over a backlog. The default
        does nothing; a handler that gathers its replies sends them here
        with one ``write()``.
        """

    def lines_finished(self) -> None:
        """Called once input ended and every complete line before it was dispatched.

        Input ends at EOF (:meth:`eof_received`) or on a graceful shutdown
        (:meth:`shutdown_requested`). The default closes the connection
        (after its writes are flushed). A handler whose requests are still
        in flight overrides it to close once the last one is answered.
        """
        self.connection.close()

    # -- connection callbacks --------------------------------------------------

    def eof_received(self) -> bool | None:
        """Dispatch the complete lines left, then call :meth:`lines_finished`.

        Returns:
            True: the connection is closed by :meth:`lines_finished`, once
            every line received is answered.
        """
        self._end_input()
        return True

    def shutdown_requested(self) -> None:
        """Stop reading, dispatch the complete lines received, then :meth:`lines_finished`."""
        self._end_input()

    def connection_lost(self, exc: BaseException | None) -> None:
        """Stops the line clock; a subclass that overrides this calls ``super()``."""
        if self._line_timer is not None:
            self._line_timer.cancel()
            self._line_timer = None

    def pause_writing(self) -> None:
        """Stop dispatching lines, and reading, until the write buffer drains.

        A subclass that overrides this calls ``super()``.
        """
        self._writing_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        """Dispatch the lines held back on a later pass, and read again."""
        self._writing_paused = False
        self._unblocked()

    # -- flow control ----------------------------------------------------------

    def pause_lines(self) -> None:
        """Stop dispatching lines, and reading, until :meth:`resume_lines`.

        Lines already received stay buffered (one read at most) and are
        dispatched in order after :meth:`resume_lines`. Calling it again
        while paused does nothing.
        """
        if not self._lines_paused:
            self._lines_paused = True
            self._update_reading()

    def resume_lines(self) -> None:
        """Undo :meth:`pause_lines`; held lines are dispatched on a later pass."""
        if self._lines_paused:
            self._lines_paused = False
            self._unblocked()

    def _unblocked(self) -> None:
        if self._backlog:
            self._schedule_continue()
        self._update_reading()

    def _update_reading(self) -> None:
        held = self._held = bool(
            self._lines_paused or self._writing_paused or self._backlog or self._input_done
        )
        if held:
            if not self._reading_paused:
                self._reading_paused = True
                self.connection.pause_reading()
        elif self._reading_paused:
            self._reading_paused = False
            self.connection.resume_reading()

    def _schedule_continue(self) -> None:
        if not self._continuing:
            self._continuing = True
            self.connection.reactor.call_soon(
                _call_weakly, weakref.WeakMethod(self._continue_lines)
            )

    def _continue_lines(self) -> None:
        self._continuing = False
        if self._dispatching or self.connection.is_closing():
            return
        if self._lines_paused or self._writing_paused:
            return  # resume_lines() / resume_writing() schedule the next round
        self._dispatching = True
        try:
            self._dispatch_lines()
        finally:
            self._dispatching = False
        self.lines_dispatched()
        if self._input_done == 1 and not self._backlog:
            self._finish_input()

    def _end_input(self) -> None:
        if self._input_done:
            return
        self._input_done = 1
        self._line_started = None
        self._update_reading()
        if self._dispatching:
            self._schedule_continue()  # called from line_received: finish after it
        elif not self._backlog:
            self._finish_input()

    def _finish_input(self) -> None:
        self._input_done = 2
        del self._line_buffer[:]  # an unfinished last line is no request
        self._scanned = 0
        self._discarding = False
        if not self.connection.is_closing():
            self.lines_finished()

    # -- framing ---------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        buffer = self._line_buffer
        if self._dispatching or self._held:
            buffer += data  # re-entrant, or held back: dispatched later, in order
            return
        self._dispatching = True
        try:
            # The common case, one whole line per read: dispatch it without
            # copying it through the buffer (inline: this runs per request).
            end = -1
            if not buffer and not self._discarding:
                delimiter = self.delimiter
                end = data.find(delimiter)
                if end >= 0 and end == len(data) - len(delimiter):
                    if end and data[end - 1] == 13 and delimiter == b"\n":
                        end -= 1
                    if end > self.max_line_length or self.connection.is_closing():
                        end = -1
                else:
                    end = -1
            if end >= 0:
                self.line_received(data[:end])
                if buffer:  # the handler fed itself more
                    self._dispatch_lines()
            else:
                buffer += data
                self._dispatch_lines()
        finally:
            self._dispatching = False
        self.lines_dispatched()

    def _dispatch_lines(self) -> None:
        buffer = self._line_buffer
        delimiter = self.delimiter
        dlen = len(delimiter)
        strip_cr = delimiter == b"\n"
        limit = self.max_line_length
        connection = self.connection
        budget = self.max_lines_per_pass
        held = False
        start = 0
        search = max(0, self._scanned - dlen + 1)
        while not connection.is_closing():
            end = buffer.find(delimiter, search)
            if end < 0:
                break
            if self._discarding:
                self._discarding = False
            elif budget <= 0 or self._lines_paused or self._writing_paused:
                held = True  # the rest waits for a later pass
                break
            else:
                line_end = end - 1 if strip_cr and end > start and buffer[end - 1] == 13 else end
                if line_end - start > limit:
                    length = line_end - start
                    start = search = end + dlen
                    self.line_too_long(length)
                    continue
                budget -= 1
                self.line_received(bytes(buffer[start:line_end]))
            start = search = end + dlen
        if start:
            del buffer[:start]
            self._line_started = None  # what is left is a new line
        if held:
            self._scanned = 0
            if not self._backlog:
                self._backlog = True
                self._update_reading()
            if not (self._lines_paused or self._writing_paused):
                self._schedule_continue()
            return
        if self._backlog:
            self._backlog = False
            self._update_reading()
        pending = len(buffer)
        # An unfinished line over the limit (+1 for a CR that may precede the LF).
        if pending > limit + (1 if strip_cr else 0) and not connection.is_closing():
            del buffer[:]
            self._scanned = 0
            self._line_started = None
            if not self._discarding:
                self._discarding = True
                self.line_too_long(pending)
            return
        if self._discarding:
            del buffer[:]  # still inside the over-long line
            pending = 0
        self._scanned = pending
        if pending and self._line_started is None and self.line_timeout > 0:
            self._start_line_clock()

    # -- the line deadline -----------------------------------------------------

    def _start_line_clock(self) -> None:
        # One timer per connection at most, re-armed lazily: a line that
        # completes in time costs no cancel, the timer just finds no line.
        reactor = self.connection.reactor
        self._line_started = reactor.time
        if self._line_timer is None:
            self._line_timer = reactor.call_later(
                self.line_timeout, _call_weakly, weakref.WeakMethod(self._line_clock_fired)
            )

    def _line_clock_fired(self) -> None:
        self._line_timer = None
        started = self._line_started
        if started is None or self._input_done or self.connection.is_closing():
            return
        reactor = self.connection.reactor
        if self._held:
            # Not reading: the rest of the line may be waiting in the kernel.
            self._line_started = started = reactor.time
        remaining = started + self.line_timeout - reactor.time
        if remaining > 0:
            self._line_timer = reactor.call_later(
                remaining, _call_weakly, weakref.WeakMethod(self._line_clock_fired)
            )
            return
        self._line_started = None
        del self._line_buffer[:]
        self._scanned = 0
        self.line_timed_out()


def _call_weakly(method: weakref.WeakMethod[Callable[[], object]]) -> None:
    # What LineHandler schedules on the reactor holds its handler weakly: a
    # pending timer never keeps a dropped connection's handler alive.
    bound = method()
    if bound is not None:
        bound()


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
        check: called before anything binds, by ``run`` and ``check`` alike,
            with the listener's options and the :class:`~reactorkit.Plugins`;
            raises :class:`~reactorkit.PluginError` for what ``state`` would
            refuse (two plugins giving one command, say), so ``check``
            reports it. Must have no side effects: no connections, no files
            written. None (the default) checks nothing.
        alpn: ALPN protocols a TLS listener of this type offers when its
            ``[listen.tls]`` names none (http-lite: ``("http/1.1",)``).
    """

    name: str
    handler: Callable[[Any], Handler]
    options: type = NoOptions
    state: Callable[[Listener], Any] = _options_state
    description: str = ""
    default_port: int | None = None
    check: Callable[[Any, Plugins], object] | None = None
    alpn: tuple[str, ...] = ()
