"""http-lite: a small, correct HTTP/1.1 server whose routes come from plugins.

This module is the glue. :mod:`reactorkit.http11` speaks the protocol
(bytes in, events out, responses to bytes), :mod:`reactorkit.routes` finds
the route, :mod:`reactorkit.handlers.http_static` serves files. Here, per
connection: feed what arrives to the core, queue complete requests, answer
them strictly in order (a blocking route on the thread pool, a streamed body
at the client's pace), write a batch of pipelined responses at once, and
keep two deadlines (header timeout: 408; keep-alive: close) with one timer.

Memory stays bounded (docs/handlers/http-lite.md has the figure): reading
stops while ``max_pending`` requests wait or the output is past the
connection's high-water mark, and no response is produced while it is.
"""

from __future__ import annotations

import collections
import email.utils
import functools
import logging
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from typing import Any

import attrs

import reactorkit
from reactorkit import http11
from reactorkit.handlers.http_static import StaticFiles
from reactorkit.routes import RouteTable, not_routed

__all__ = ["HttpHandler", "HttpOptions", "HttpSite", "RouteTable"]

log = logging.getLogger("reactorkit.http")
access_log = logging.getLogger("reactorkit.access")

_BATCH = 65536  # pipelined responses gathered before one write
_REQUEST = http11.Request
_END = http11.EndOfMessage
_DATA = http11.Data
_ERROR = http11.Error
_as_response = reactorkit.as_response
_IDLE = http11.State.IDLE
_HEAD = http11.State.HEAD
_BODY = http11.State.BODY
_MUST_CLOSE = http11.State.MUST_CLOSE
_Item = tuple[reactorkit.Request | http11.Error, float]


@attrs.frozen(kw_only=True)
class HttpOptions:
    """Options of the ``http-lite`` handler type (``[listen.options]``)."""

    static_root: str = ""
    max_request_line: int = attrs.field(default=8192, validator=attrs.validators.ge(64))
    max_header_size: int = attrs.field(default=16384, validator=attrs.validators.ge(256))
    max_headers: int = attrs.field(default=100, validator=attrs.validators.ge(1))
    max_body_size: int = attrs.field(default=1024 * 1024, validator=attrs.validators.ge(0))
    max_pending: int = attrs.field(default=32, validator=attrs.validators.ge(1))
    header_timeout: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))
    body_timeout: float = attrs.field(default=60.0, validator=attrs.validators.ge(0))
    keepalive_timeout: float = attrs.field(default=5.0, validator=attrs.validators.gt(0))
    drain_grace: float = attrs.field(default=1.0, validator=attrs.validators.ge(0))
    max_requests: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    access_log: bool = True
    metrics: bool = False  # GET /metrics answers here (reactorkit.metrics)


@attrs.define(eq=False)
class HttpSite:
    """What every connection of one http-lite listener shares: routes, files, limits."""

    options: HttpOptions
    routes: RouteTable
    limits: http11.Limits
    static: StaticFiles | None = None
    listener: reactorkit.Listener | None = None
    #: Per-route counts and latency when the server observes (reactorkit.observe).
    requests: reactorkit.RequestStats | None = None

    @classmethod
    def from_listener(cls, listener: reactorkit.Listener) -> HttpSite:
        """Collect ``reactorkit_http_routes()`` from every plugin (see :meth:`build`)."""
        found = (
            [] if listener.plugins is None else listener.plugins.collect("reactorkit_http_routes")
        )
        site = cls.build(listener.options, found, listener=listener)
        site.requests = reactorkit.request_stats(listener)
        return site

    @classmethod
    def build(
        cls,
        options: HttpOptions,
        contributions: Sequence[reactorkit.Contribution],
        *,
        listener: reactorkit.Listener | None = None,
    ) -> HttpSite:
        """The site of ``options`` with these routes.

        Raises:
            PluginError: two plugins route the same method and path.
        """
        limits = http11.Limits(
            max_request_line=options.max_request_line,
            max_header_size=options.max_header_size,
            max_headers=options.max_headers,
            max_body_size=options.max_body_size,
        )
        static = StaticFiles(options.static_root) if options.static_root else None
        return cls(options, RouteTable.build(contributions), limits, static, listener)


class _DateLine:
    """The Date and Server lines, formatted at most once a second (RFC 9110 section 6.6.1)."""

    second = -1
    value = b""

    def line(self) -> bytes:
        now = int(time.time())
        if now != self.second:
            self.second = now
            stamp = email.utils.formatdate(now, usegmt=True).encode()
            self.value = b"date: " + stamp + b"\r\nserver: reactorkit\r\n"
        return self.value


_DATE = _DateLine()


def error_response(status: int, message: str) -> reactorkit.Response:
    """A small plain-text error response."""
    return reactorkit.Response(status=status, body=message + "\n")


class HttpHandler(reactorkit.Handler):
    """One HTTP/1.x connection."""

    def __init__(self, site: HttpSite) -> None:
        super().__init__(site)
        self.site = site
        self.options = site.options
        self._core = http11.ServerConnection(site.limits)
        self._find = site.routes.find
        self._queue: collections.deque[_Item] = collections.deque()
        self._request: reactorkit.Request | None = None  # its body is arriving
        self._started = 0.0
        self._body = bytearray()  # not a list: a body in many small reads stays its size
        self._busy = False  # a blocking route runs or a body streams
        self._closing = False  # EOF or shutdown: answer what came, then close
        self._shutdown = False
        # Shutdown or reload began while idle: a request may be on its way.
        # (A busy connection's last answer already says Connection: close.)
        # Read on until drain_grace passes; one that comes is answered with
        # Connection: close (an idle close races the client's next request).
        self._grace = False
        self._write_paused = False
        self._reading = True
        self._want_continue = False
        self._out: list[bytes] = []
        self._out_size = 0
        self._stream: Iterator[bytes] | None = None
        self._stream_log: tuple[reactorkit.Request | None, int, float] | None = None
        self._served = 0
        self._head_since: float | None = None
        self._body_since: float | None = None
        self._idle_since: float | None = None
        self._timer: reactorkit.TimerHandle | None = None
        self._timer_due = 0.0

    # -- connection callbacks ------------------------------------------------

    def connection_made(self, connection: reactorkit.Transport) -> None:
        self.connection = connection
        self._settle()

    def data_received(self, data: bytes) -> None:
        self._core.feed(data)
        self._advance()

    def eof_received(self) -> bool:
        self._core.feed_eof()
        self._closing = True
        self._grace = False
        self._advance()
        return True  # answer what was received, then close (in _settle)

    def shutdown_requested(self) -> None:
        self._closing = self._shutdown = True
        grace = self.options.drain_grace
        core = self._core
        idle = (
            not self._queue
            and not self._busy
            and self._request is None
            and not core.buffered
            and core.their_state is _IDLE
        )
        if grace > 0 and idle:
            self._grace = True
            self.connection.reactor.call_later(grace, self._grace_over)
        self._advance()

    def _grace_over(self) -> None:
        if self._grace:
            self._grace = False
            if not self.connection.is_closing():
                self._advance()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._close_stream()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._stream is not None:
            self._pump()
        self._advance()

    # -- the loop: pull requests, answer them, settle -------------------------

    def _advance(self) -> None:
        core = self._core
        queue = self._queue
        connection = self.connection
        limit = self.options.max_pending
        next_event = core.next_event
        while not connection.is_closing():
            more = True
            while len(queue) < limit:
                event = next_event()
                kind = type(event)
                if kind is _REQUEST:
                    self._begin(event)  # type: ignore[arg-type]
                elif kind is _END:
                    self._end(event)  # type: ignore[arg-type]
                elif kind is _DATA:
                    self._body += event.data  # type: ignore[union-attr]
                else:
                    if kind is http11.Error:
                        queue.append((event, connection.reactor.time))  # type: ignore[arg-type]
                        self._request = None
                        self._want_continue = False
                    more = False
                    break
            if self._want_continue:
                self._send_continue()
            if not queue or self._busy or self._write_paused:
                break
            self._answer()
            if not more and not queue:
                break  # the core had nothing more: no need to ask again
        self._flush()
        self._settle()

    def _begin(self, event: http11.Request) -> None:
        path = event.path
        query = event.query
        self._started = self.connection.reactor.time
        self._idle_since = None  # busy: the keep-alive clock restarts when idle again
        self._body = bytearray()
        self._request = reactorkit.Request(
            method=event.method,
            path=urllib.parse.unquote(path) if "%" in path else path,
            raw_path=path,
            query=urllib.parse.parse_qs(query) if query else {},
            query_string=query,
            headers=reactorkit.Headers(event.headers),
            host=event.host,
            http_version=event.http_version,
            scheme="https" if self.connection.is_tls else "http",
            peer=self.connection.peername,
            listener=self.site.listener,
        )
        if event.expects_continue:
            self._want_continue = True

    def _end(self, event: http11.EndOfMessage) -> None:
        request = self._request
        assert request is not None
        if self._body:
            request.body = bytes(self._body)
            self._body = bytearray()
        if event.trailers:
            request.trailers = reactorkit.Headers(event.trailers)
        self._queue.append((request, self._started))
        self._request = None
        self._want_continue = False

    def _send_continue(self) -> None:
        data = self._core.send_continue()
        if data:
            self._out.append(data)
            self._want_continue = False

    def _answer(self) -> None:
        queue = self._queue
        connection = self.connection
        find = self._find
        while queue and not self._busy and not self._write_paused:
            item, started = queue.popleft()
            if type(item) is _ERROR:
                self._respond(None, error_response(item.status, item.reason), started)
                continue
            request: reactorkit.Request = item  # type: ignore[assignment]
            route, captures, allowed = find(request.method, request.path)
            request.route = route
            if route is None:
                response = None
                static = self.site.static
                if static is not None and request.method in ("GET", "HEAD"):
                    response = static.respond(request)
                self._respond(request, response or not_routed(request.method, allowed), started)
            elif route.blocking:
                request.captures = captures
                self._busy = True
                future = connection.reactor.run_in_thread(route.function, request)
                future.add_done_callback(
                    functools.partial(self._blocking_done, route, request, started)
                )
            else:
                request.captures = captures
                try:
                    response = _as_response(route.function(request))
                except reactorkit.HttpError as exc:
                    response = error_response(exc.status, exc.message or "error")
                except Exception as exc:
                    response = self._route_failed(route, request, exc)
                self._respond(request, response, started)
            if self._out_size >= _BATCH or connection.get_write_buffer_size():
                self._flush()  # a client that does not read gets one response at a time
            if connection.is_closing():
                return
            if self._core.our_state is _MUST_CLOSE or not self._core.pending:
                # Answered "close" (a streamed one is still in BODY but the core
                # dropped the requests behind it): what was queued is dropped.
                queue.clear()
                return

    def _blocking_done(
        self,
        route: reactorkit.Route,
        request: reactorkit.Request,
        started: float,
        future: reactorkit.Future[Any],
    ) -> None:
        self._busy = False
        if self.connection.is_closing():
            return
        error = future.exception()
        if isinstance(error, reactorkit.HttpError):
            response = error_response(error.status, error.message or "error")
        elif error is not None:
            response = self._route_failed(route, request, error)
        else:
            try:
                response = reactorkit.as_response(future.result())
            except TypeError as exc:
                response = self._route_failed(route, request, exc)
        self._respond(request, response, started)
        self._advance()

    def _route_failed(
        self, route: reactorkit.Route, request: reactorkit.Request, error: BaseException
    ) -> reactorkit.Response:
        log.error(
            "route %s %s (%s) raised for %s %s",
            "/".join(route.method),
            route.path,
            route.name or getattr(route.function, "__name__", "?"),
            request.method,
            request.raw_path,
            exc_info=error,
            extra=reactorkit.connection_fields(self.connection),
        )
        self._count_error()
        return error_response(500, "internal server error")

    def _count_error(self) -> None:
        if self.site.listener is not None:
            self.site.listener.stats.errors += 1

    def _respond(
        self, request: reactorkit.Request | None, response: reactorkit.Response, started: float
    ) -> None:
        core = self._core
        self._served += 1
        close = (self._closing and self._is_last()) or (
            0 < self.options.max_requests <= self._served
        )
        try:
            data = core.send(response, date=_DATE.line(), close=close)
        except reactorkit.HttpProtocolError as exc:
            log.error(
                "refused to send the response to %s %s: %s; answering 500 instead",
                request.method if request else "-",
                request.raw_path if request else "-",
                exc,
            )
            self._count_error()
            _close_iterator(response.body)
            response = error_response(500, "internal server error")
            data = core.send(response, date=_DATE.line(), close=close)
        self._out.append(data)
        self._out_size += len(data)
        if self.site.requests is not None:
            self.site.requests.record(request, response.status, started)
        body = response.body
        if core.our_state is _BODY:
            self._stream = iter(body)  # type: ignore[arg-type,assignment]
            self._stream_log = (request, response.status, started)
            self._busy = True
            self._flush()
            self._pump()
            return
        if not isinstance(body, (bytes, str)):
            _close_iterator(body)  # HEAD, 304: the body is not sent
        if self.options.access_log and access_log.isEnabledFor(logging.INFO):
            size = 0 if request is not None and request.method == "HEAD" else _size(body)
            self._log(request, response.status, size, started)

    def _is_last(self) -> bool:
        core = self._core
        return (
            not self._queue
            and self._request is None
            and not core.buffered
            and core.their_state is not _HEAD
        )

    def _flush(self) -> None:
        if self._out:
            out = self._out
            self.connection.write(out[0] if len(out) == 1 else b"".join(out))
            self._out = []
            self._out_size = 0

    def _pump(self) -> None:
        stream = self._stream
        assert stream is not None
        connection = self.connection
        core = self._core
        sent = 0
        try:
            while not self._write_paused and not connection.is_closing():
                try:
                    chunk = next(stream)
                except StopIteration:
                    break
                sent += len(chunk)
                connection.write(core.send_data(chunk))
            else:
                return  # paused (resume_writing pumps again) or closing
            connection.write(core.send_end())
        except Exception:
            log.exception("streaming a response body failed; closing the connection")
            self._close_stream()
            connection.abort()
            return
        self._stream = None
        self._busy = False
        if self._stream_log is not None and self.options.access_log:
            self._log(*self._stream_log[:2], sent, self._stream_log[2])

    def _close_stream(self) -> None:
        if self._stream is not None:
            _close_iterator(self._stream)
            self._stream = None

    # -- flow control, closing and the deadlines ---------------------------

    def _settle(self) -> None:
        connection = self.connection
        if connection.is_closing():
            return
        core = self._core
        state = core.their_state
        buffered = core.buffered
        finished = not self._queue and not self._busy
        if finished and core.our_state is _MUST_CLOSE:
            connection.close()
            return
        mid_request = state is _HEAD or state is _BODY
        if (
            finished
            and self._closing
            and not mid_request
            and not (self._shutdown and buffered)
            and not self._grace
        ):
            connection.close()
            return
        reading = (
            not self._write_paused
            and len(self._queue) < self.options.max_pending
            and (mid_request or not self._shutdown or self._grace)
        )
        if reading is not self._reading:
            self._reading = reading
            if reading:
                connection.resume_reading()
            else:
                connection.pause_reading()
        if state is _HEAD:
            if self._head_since is None:
                now = self._head_since = connection.reactor.time
                self._arm(now + self.options.header_timeout)
        else:
            self._head_since = None
        if state is _BODY and self.options.body_timeout:
            if self._body_since is None:
                now = self._body_since = connection.reactor.time
                self._arm(now + self.options.body_timeout)
        else:
            self._body_since = None
        if finished and state is _IDLE and not buffered:
            if self._idle_since is None:
                now = self._idle_since = connection.reactor.time
                due = now + self.options.keepalive_timeout
                if self._timer is None or self._timer_due > due:
                    self._arm(due)
        else:
            self._idle_since = None

    def _arm(self, due: float) -> None:
        # One timer per connection; it is moved only when a deadline comes
        # sooner than the one it waits for, so a busy keep-alive connection
        # pushes about one timer per keepalive_timeout, not one per request.
        timer = self._timer
        if timer is not None:
            if self._timer_due <= due:
                return
            timer.cancel()
        self._timer_due = due
        self._timer = self.connection.reactor.call_at(due, self._deadline)

    def _deadline(self) -> None:
        self._timer = None
        connection = self.connection
        if connection.is_closing():
            return
        now = connection.reactor.time
        options = self.options
        head_since = self._head_since
        if head_since is not None:
            if now - head_since >= options.header_timeout:
                self._head_since = None
                reactorkit.limit_closed(connection, "header_timeout")
                error = self._core.fail(408, "request timeout: the header block took too long")
                self._queue.append((error, now))
                self._advance()
                return
            self._arm(head_since + options.header_timeout)
        body_since = self._body_since
        if body_since is not None:
            if now - body_since >= options.body_timeout:
                self._body_since = None
                reactorkit.limit_closed(connection, "body_timeout")
                error = self._core.fail(408, "request timeout: the body took too long")
                self._queue.append((error, now))
                self._request = None  # answered by the 408
                self._want_continue = False
                self._advance()
                return
            self._arm(body_since + options.body_timeout)
        idle_since = self._idle_since
        if idle_since is not None:
            if now - idle_since >= options.keepalive_timeout:
                connection.close()
                return
            self._arm(idle_since + options.keepalive_timeout)

    # -- access log ----------------------------------------------------------

    def _log(
        self, request: reactorkit.Request | None, status: int, size: int, started: float
    ) -> None:
        if not access_log.isEnabledFor(logging.INFO):
            return
        peer = self.connection.peername
        host = peer[0] if isinstance(peer, tuple) else "unix"
        line = (
            f"{request.method} {request.raw_path}"
            f"{'?' + request.query_string if request.query_string else ''} "
            f"HTTP/{request.http_version}"
            if request is not None
            else "-"
        )
        elapsed = (self.connection.reactor.clock() - started) * 1000
        stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())
        scheme = "https" if self.connection.is_tls else "http"
        access_log.info(
            '%s - - [%s] "%s" %d %d %.3fms %s',
            host,
            stamp,
            line,
            status,
            size,
            elapsed,
            scheme,
            extra=reactorkit.access_fields(self.connection, request, status, size, elapsed),
        )


def _size(body: Any) -> int:
    if isinstance(body, str):
        return len(body.encode())
    return len(body) if isinstance(body, (bytes, bytearray, memoryview)) else 0


def _close_iterator(iterator: Any) -> None:
    close = getattr(iterator, "close", None)
    if close is not None:
        close()


@reactorkit.hookimpl
def reactorkit_handler_types() -> list[reactorkit.HandlerType]:
    return [
        reactorkit.HandlerType(
            name="http-lite",
            handler=HttpHandler,
            options=HttpOptions,
            state=HttpSite.from_listener,
            description="a small, correct HTTP/1.1 server; routes come from plugins",
            default_port=8080,
        )
    ]
