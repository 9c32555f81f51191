"""http-lite: a small, correct HTTP/1.1 server whose routes come from plugins.

This module is the glue. :mod:`reactorkit.http11` speaks the protocol
(bytes in, events out, responses to bytes); :mod:`.http_site` says what
answers a request (routes, files, errors); :mod:`.http_stream` pulls a
streamed body; :mod:`.http_deadlines` keeps the timeouts;
:mod:`.http_access_log` writes the access log. Here, per connection: feed
what arrives to the core, answer complete requests strictly in order (at
once when nothing is ahead of them, else from a queue: a blocking route runs
on the thread pool, a streamed body goes at the client's pace), write a
batch of pipelined responses at once, and decide when to read and close.

Memory stays bounded (docs/handlers/http-lite.md has the figure): reading
stops while ``max_pending`` requests wait or the output is past the
connection's high-water mark, and no response is produced while it is.
"""

from __future__ import annotations

import collections
import functools
from typing import Any

import reactorkit
from reactorkit import http11
from reactorkit.handlers.http_access_log import body_size, log_response
from reactorkit.handlers.http_deadlines import Deadlines
from reactorkit.handlers.http_site import HttpOptions, HttpSite, date_line, error_response
from reactorkit.handlers.http_stream import BodyStream
from reactorkit.routes import RouteTable
from reactorkit.web import build_request

__all__ = ["HttpHandler", "HttpOptions", "HttpSite", "RouteTable"]

_BATCH = 65536  # pipelined responses gathered before one write
_REQUEST, _END, _DATA, _ERROR = http11.Request, http11.EndOfMessage, http11.Data, http11.Error
_IDLE, _HEAD, _BODY = http11.State.IDLE, http11.State.HEAD, http11.State.BODY
_MUST_CLOSE = http11.State.MUST_CLOSE
_PROCESS_EXITS = (KeyboardInterrupt, SystemExit)
_Item = tuple[reactorkit.Request | http11.Error, float]
_LIMITS = {"header block": "header_timeout", "body": "body_timeout"}  # reactorkit.observe


class HttpHandler(reactorkit.Handler):
    """One HTTP/1.x connection."""

    def __init__(self, site: HttpSite) -> None:
        super().__init__(site)
        self.site = site
        self.options = options = site.options
        self._core = http11.ServerConnection(site.limits)
        self._dispatch = site.dispatch
        self._requests = site.requests  # per-route metrics, None when not observed
        self._max_pending = options.max_pending
        self._max_requests = options.max_requests
        self._listener = site.listener
        self._log = options.access_log
        self._queue: collections.deque[_Item] = collections.deque()  # complete, not answered
        self._head: http11.Request | None = None  # the request whose body is arriving
        self._started = 0.0
        self._body = bytearray()  # not a list: a body in many small reads stays its size
        self._busy = False  # a blocking route runs or a body streams
        self._closing = False  # EOF or shutdown: answer what came, then close
        self._shutdown = False
        # Shutdown or reload began while idle: a request may be on its way. Read
        # on until drain_grace passes; one that comes is answered with
        # Connection: close (an idle close races the client's next request).
        self._grace = False
        self._write_paused = False
        self._reading = True
        self._want_continue = False
        self._out: list[bytes] = []
        self._out_size = 0
        self._stream: BodyStream | None = None
        self._served = 0

    # -- connection callbacks ------------------------------------------------

    def connection_made(self, connection: reactorkit.Transport) -> None:
        self.connection = connection
        self._peer = connection.peername
        self._scheme = "https" if connection.is_tls else "http"
        self._deadlines = Deadlines(connection.reactor, self.options, self._deadline_passed)
        self._settle()

    def data_received(self, data: bytes) -> None:
        core = self._core
        if self._queue or self._busy or self._write_paused or self._closing:
            core.feed(data)
        else:
            head = core.receive_request(data)
            if head is not None:  # the common case: one whole bodyless request, nothing ahead
                self._answer(self._request_of(head), self.connection.reactor.time)
                self._flush()
                if (
                    core.their_state is _IDLE
                    and self._reading
                    and not (self._busy or self._write_paused)
                ):
                    self._deadlines.update(_IDLE, True)  # all _settle would do
                else:
                    self._settle()
                return
        self._advance()

    def eof_received(self) -> bool:
        self._core.feed_eof()
        self._closing = True
        self._grace = False
        self._advance()
        return True  # answer what was received, then close (in _settle)

    def shutdown_requested(self) -> None:
        self._closing = self._shutdown = True
        core = self._core
        idle = not (self._queue or self._busy or self._head or core.buffered)
        if self.options.drain_grace > 0 and idle and core.their_state is _IDLE:
            self._grace = True
            self.connection.reactor.call_later(self.options.drain_grace, self._grace_over)
        self._advance()

    def _grace_over(self) -> None:
        if self._grace:
            self._grace = False
            if not self.connection.is_closing():
                self._advance()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._deadlines.cancel()
        if self._stream is not None:
            self._close(self._stream)
            self._stream = None

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._stream is not None:
            self._pump()
        self._advance()

    # -- requests in, responses out -----------------------------------------

    def _advance(self) -> None:
        core = self._core
        queue = self._queue
        connection = self.connection
        next_event = core.next_event
        while not connection.is_closing():
            more = True
            while len(queue) < self._max_pending:
                event: Any = next_event()
                kind = type(event)
                if kind is _REQUEST:
                    self._head = event
                    self._started = connection.reactor.time
                    self._want_continue = event.expects_continue
                elif kind is _END:
                    request = self._request(event)
                    if queue or self._busy or self._write_paused:
                        queue.append((request, self._started))
                    else:  # nothing ahead of it: answered at once
                        self._answer(request, self._started)
                        self._flush_if_full()
                elif kind is _DATA:
                    self._body += event.data
                else:
                    if kind is _ERROR:
                        queue.append((event, connection.reactor.time))
                        self._head = None
                        self._want_continue = False
                    more = False
                    break
            if self._want_continue:
                data = core.send_continue()
                if data:
                    self._out.append(data)
                    self._want_continue = False
            while queue and not self._busy and not self._write_paused:
                if connection.is_closing() or core.our_state is _MUST_CLOSE or not core.pending:
                    queue.clear()  # answered "close": what was queued is dropped
                    break
                self._answer(*queue.popleft())
                self._flush_if_full()
            if not more or queue or self._busy or self._write_paused:
                break
        self._flush()
        self._settle()

    def _request(self, end: http11.EndOfMessage) -> reactorkit.Request:
        head = self._head
        assert head is not None
        self._head = None
        self._want_continue = False
        request = self._request_of(head)
        if self._body:
            request.body = bytes(self._body)
            self._body = bytearray()
        if end.trailers:
            request.trailers = reactorkit.Headers(end.trailers)
        return request

    def _request_of(self, head: http11.Request) -> reactorkit.Request:
        return build_request(
            head.method,
            head.path,
            head.query,
            head.headers,
            head.host,
            head.http_version,
            self._scheme,
            self._peer,
            self._listener,
        )

    def _answer(self, item: reactorkit.Request | http11.Error, started: float) -> None:
        if type(item) is _ERROR:
            self._respond(None, error_response(item.status, item.reason), started)
            return
        request: reactorkit.Request = item  # type: ignore[assignment]
        answer = self._dispatch(request)
        if type(answer) is reactorkit.Response:
            self._respond(request, answer, started)
        elif isinstance(answer, reactorkit.Route):  # blocking: its answer comes later
            self._busy = True
            future = self.connection.reactor.run_in_thread(answer.function, request)
            future.add_done_callback(functools.partial(self._ran, answer, request, started))
        else:
            self._respond(request, answer, started)

    def _ran(
        self,
        route: reactorkit.Route,
        request: reactorkit.Request,
        started: float,
        future: reactorkit.Future[Any],
    ) -> None:
        self._busy = False
        if not self.connection.is_closing():
            self._respond(request, self.site.finish_blocking(route, request, future), started)
            self._advance()

    def _respond(
        self, request: reactorkit.Request | None, response: reactorkit.Response, started: float
    ) -> None:
        core = self._core
        self._served += 1
        close = (self._closing and self._is_last()) or 0 < self._max_requests <= self._served
        stream = None
        if type(response.body) is not bytes and type(response.body) is not str:
            stream = BodyStream.open(response, request)
            if stream is not None and stream.failure is not None:
                self._close(stream)
                response, stream = self.site.refused(request, stream.failure), None
        try:
            data = core.send(response, date=date_line(), close=close)
        except reactorkit.HttpProtocolError as exc:
            if stream is not None:
                self._close(stream)
                stream = None
            response = self.site.refused(request, exc)
            data = core.send(response, date=date_line(), close=close)
        self._out.append(data)
        self._out_size += len(data)
        if self._requests is not None:
            self._requests.record(request, response.status, started)
        if stream is not None:
            if core.our_state is _BODY:
                stream.started = started
                self._stream = stream
                self._busy = True
                self._flush()
                self._pump()
                return
            self._close(stream)  # HEAD, 204, 304: the body is not sent
        if self._log:
            size = body_size(request, response) if stream is None else 0
            self._log_response(request, response.status, size, started)

    def _close(self, stream: BodyStream) -> None:
        error = stream.close()
        if error is not None:
            self.site.close_failed(stream.request, error)

    def _is_last(self) -> bool:
        core = self._core
        return not (self._queue or self._head or core.buffered) and core.their_state is not _HEAD

    def _flush_if_full(self) -> None:
        if self._out_size >= _BATCH or self.connection.get_write_buffer_size():
            self._flush()  # a client that does not read gets one response at a time

    def _flush(self) -> None:
        out = self._out
        if out:
            self.connection.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()
            self._out_size = 0

    def _pump(self) -> None:
        stream = self._stream
        assert stream is not None
        connection = self.connection
        try:
            if not stream.pump(self._core, connection, lambda: self._write_paused):
                if not (self._write_paused or connection.is_closing()):
                    connection.reactor.call_soon(self._pump_again, stream)  # its turn is over
                return  # paused (resume_writing pumps again) or closing
        except _PROCESS_EXITS:
            raise
        except BaseException as exc:
            self.site.stream_failed(stream.request, exc)
            self._stream = None
            self._close(stream)
            connection.abort()
            return
        self._stream = None
        self._busy = False
        if self._log:
            self._log_response(stream.request, stream.status, stream.sent, stream.started)

    def _pump_again(self, stream: BodyStream) -> None:
        if self._stream is stream and not (self._write_paused or self.connection.is_closing()):
            self._pump()
            self._advance()  # as resume_writing: what waited behind the stream

    def _log_response(
        self, request: reactorkit.Request | None, status: int, size: int, started: float
    ) -> None:
        elapsed = self.connection.reactor.clock() - started
        log_response(request, status, size, elapsed, self._peer, self._scheme, self.connection)

    # -- reading, closing and the deadlines -----------------------------------

    def _settle(self) -> None:
        connection = self.connection
        if connection.is_closing():
            return
        core = self._core
        state = core.their_state
        finished = not self._queue and not self._busy
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
            not self._write_paused
            and len(self._queue) < self._max_pending
            and (mid_request or not self._shutdown or self._grace)
        )
        if reading is not self._reading:
            self._reading = reading
            if reading:
                connection.resume_reading()
            else:
                connection.pause_reading()
        self._deadlines.update(state, finished and not core.buffered)

    def _deadline_passed(self, what: str) -> None:
        if self.connection.is_closing():
            return
        if what == "idle":
            self.connection.close()
            return
        reactorkit.limit_closed(self.connection, _LIMITS[what])
        error = self._core.fail(408, f"request timeout: the {what} took too long")
        self._queue.append((error, self.connection.reactor.time))
        self._head = None  # answered by the 408
        self._want_continue = False
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
