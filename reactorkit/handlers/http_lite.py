"""http-lite: a small, correct HTTP/1.1 server whose routes come from plugins.

This module is the glue. :mod:`reactorkit.http11` speaks the protocol;
:mod:`.http_input` makes its events into complete requests;
:mod:`.http_site` says what answers a request; :mod:`.http_output` writes
the answers (batched, streamed, logged); :mod:`.http_deadlines` keeps the
timeouts. Here, per connection: feed what arrives to the core, answer
complete requests strictly in order (at once when nothing is ahead of them,
else from a queue: a blocking route runs on the thread pool, a streamed body
goes at the client's pace), and decide when to read and when to close.

Memory stays bounded (docs/handlers/http-lite.md has the figure): reading
stops while ``max_pending`` requests wait or the output is past the
connection's high-water mark, and no response is produced while it is.
"""

from __future__ import annotations

import reactorkit
from reactorkit import http11
from reactorkit.handlers.http_deadlines import Deadlines
from reactorkit.handlers.http_input import Input
from reactorkit.handlers.http_output import Output
from reactorkit.handlers.http_site import HttpOptions, HttpSite
from reactorkit.routes import RouteTable
from reactorkit.web import build_request

__all__ = ["HttpHandler", "HttpOptions", "HttpSite", "RouteTable"]

_IDLE, _HEAD, _BODY = http11.State.IDLE, http11.State.HEAD, http11.State.BODY
_MUST_CLOSE = http11.State.MUST_CLOSE
_LIMITS = {"header block": "header_timeout", "body": "body_timeout"}  # reactorkit.observe


class HttpHandler(reactorkit.Handler):
    """One HTTP/1.x connection."""

    def __init__(self, site: HttpSite) -> None:
        super().__init__(site)
        self.site = site
        self.options = site.options
        self._core = http11.ServerConnection(site.limits)
        self._max_pending = site.options.max_pending
        self._closing = False  # EOF or shutdown: answer what came, then close
        self._shutdown = False
        # Shutdown began while idle: a request may be on its way. Read on until
        # drain_grace passes; one that comes is answered with Connection: close.
        self._grace = False
        self._reading = True

    def connection_made(self, connection: reactorkit.Transport) -> None:
        self.connection = connection
        self._reactor = connection.reactor
        self._peer = connection.peername
        self._scheme = "https" if connection.is_tls else "http"
        self._listener = self.site.listener
        self._out = Output(self.site, self._core, connection, self._advance, self._is_last)
        self._in = Input(self._core, connection, self._listener, self._out, self._max_pending)
        if self._listener is not None and self._listener.closing:
            # Accepted from the backlog at shutdown: what it sent already is
            # answered, the last response with Connection: close.
            self._out.closing = True
        self._deadlines = Deadlines(connection.reactor, self.options, self._deadline_passed)
        self._settle()

    def data_received(self, data: bytes) -> None:
        core, out = self._core, self._out
        if out.queue or out.running or out.stream or out.paused or self._closing:
            core.feed(data)
        elif (simple := core.receive_simple(data)) is not None:
            # The commonest case: one simple request, nothing ahead of it.
            request = build_request(*simple, self._scheme, self._peer, self._listener)
            if out.answer_now(request, self._reactor.time) and self._reading and not out.paused:
                self._deadlines.idle()  # all _settle would do
            else:
                self._in.started = self._reactor.time  # a head came: keep-alive restarts
                self._settle()
            return
        elif (head := core.receive_request(data)) is not None:  # one bodyless request
            self._in.started = self._reactor.time
            out.answer_now(self._in.request_of(head), self._reactor.time)
            self._settle()
            return
        self._advance()

    def eof_received(self) -> bool:
        self._core.feed_eof()
        self._closing = self._out.closing = True
        self._grace = False
        self._advance()
        return True  # answer what was received, then close (in _settle)

    def shutdown_requested(self) -> None:
        self._closing = self._out.closing = self._shutdown = True
        core = self._core
        idle = not (self._out.queue or self._out.is_busy() or self._in.head or core.buffered)
        if self.options.drain_grace > 0 and idle and core.their_state is _IDLE:
            self._grace = True
            self._reactor.call_later(self.options.drain_grace, self._grace_over)
        self._advance()

    def _grace_over(self) -> None:
        if self._grace:
            self._grace = False
            if not self.connection.is_closing():
                self._advance()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._deadlines.cancel()
        self._out.close()

    def pause_writing(self) -> None:
        self._out.paused = True

    def resume_writing(self) -> None:
        self._out.paused = False
        self._out.pump()
        self._advance()

    def _advance(self) -> None:
        core, out, connection, input_ = self._core, self._out, self.connection, self._in
        while not connection.is_closing():
            more = input_.pull()
            if input_.want_continue and (data := core.send_continue()):
                out.flush()  # the responses before it, then the 100
                connection.write(data)
                input_.want_continue = False
            out.drain()
            if not more or out.queue or out.paused or out.is_busy():
                break
        out.flush()
        self._settle()

    def _is_last(self) -> bool:
        core = self._core
        return (
            not (self._out.queue or self._in.head or core.buffered)
            and core.their_state is not _HEAD
        )

    def _settle(self) -> None:
        connection, core, out = self.connection, self._core, self._out
        if connection.is_closing():
            return
        state = core.their_state
        finished = not out.queue and not out.is_busy()
        if finished and core.our_state is _MUST_CLOSE:
            connection.close()
            return
        mid_request = state is _HEAD or state is _BODY
        if (
            finished
            and self._closing
            and not (mid_request or self._grace or (self._shutdown and core.buffered))
        ):
            connection.close()
            return
        reading = (
            not out.paused
            and len(out.queue) < self._max_pending
            and (mid_request or not self._shutdown or self._grace)
        )
        if reading is not self._reading:
            self._reading = reading
            if reading:
                connection.resume_reading()
            else:
                connection.pause_reading()
        # Answers the client has not taken (paused) are not idleness: keep-alive waits.
        idle = finished and not core.buffered and not out.paused
        self._deadlines.update(state, idle, reading, self._in.started)

    def _deadline_passed(self, what: str) -> None:
        if self.connection.is_closing():
            return
        if what == "idle":
            self.connection.close()
            return
        reactorkit.limit_closed(self.connection, _LIMITS[what])
        self._in.fail(408, f"request timeout: the {what} took too long")
        self._advance()


@reactorkit.hookimpl
def reactorkit_handler_types() -> list[reactorkit.HandlerType]:
    return [
        reactorkit.HandlerType(
            name="http-lite",
            handler=HttpHandler,
            options=HttpOptions,
            state=HttpSite.from_listener,
            check=HttpSite.check,
            description="a small, correct HTTP/1.1 server; routes come from plugins",
            default_port=8080,
            alpn=("http/1.1",),
        )
    ]
