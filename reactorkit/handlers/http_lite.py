"""http-lite: a small, correct HTTP/1.1 server whose routes come from plugins.

Parsing is httptools (llhttp, Node.js's parser): fast, and strict about the
framing ambiguities request smuggling relies on (Content-Length together
with Transfer-Encoding, differing repeated Content-Length: both 400 and
close). On top of it this module keeps, per connection:

* a queue of parsed requests, answered strictly in order (pipelining), one
  at a time; a blocking route runs on the thread pool while later requests
  wait, and a streamed body is pumped as fast as the client reads it
  (``pause_writing``/``resume_writing``);
* limits: request line (414), header block (431), body (413), a header
  timer armed when a request's first byte arrives (408, slowloris) and a
  keep-alive idle timer; both are one ``call_later`` per request, never
  per read.

Routes come from ``reactorkit_http_routes()`` into one :class:`RouteTable`
per listener. See ``docs/handlers/http-lite.md``.
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
import httptools

import reactorkit
from reactorkit.handlers.http_static import StaticFiles

__all__ = ["HttpHandler", "HttpOptions", "RouteTable"]

log = logging.getLogger("reactorkit.http")
access_log = logging.getLogger("reactorkit.access")

SERVER = b"reactorkit"
_SUPPORTED = ("1.1", "1.0")
_NO_BODY = frozenset({204, 304})
_STATUS_LINES: dict[int, bytes] = {}


@attrs.frozen(kw_only=True)
class HttpOptions:
    """Options of the ``http-lite`` handler type (``[listen.options]``)."""

    static_root: str = ""
    max_request_line: int = attrs.field(default=8192, validator=attrs.validators.ge(64))
    max_header_size: int = attrs.field(default=16384, validator=attrs.validators.ge(256))
    max_headers: int = attrs.field(default=100, validator=attrs.validators.ge(1))
    max_body_size: int = attrs.field(default=1024 * 1024, validator=attrs.validators.ge(0))
    header_timeout: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))
    keepalive_timeout: float = attrs.field(default=5.0, validator=attrs.validators.gt(0))
    max_requests: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    access_log: bool = True


# -- routes ----------------------------------------------------------------


@attrs.define(eq=False)
class RouteTable:
    """Every route of one listener, plus the static files, by method and path."""

    options: HttpOptions
    listener: reactorkit.Listener | None = None
    exact: dict[str, dict[str, reactorkit.Route]] = attrs.field(factory=dict)
    patterns: list[tuple[Any, dict[str, reactorkit.Route]]] = attrs.field(factory=list)
    static: StaticFiles | None = None

    @classmethod
    def from_listener(cls, listener: reactorkit.Listener) -> RouteTable:
        """Collect ``reactorkit_http_routes()`` from every plugin.

        Raises:
            PluginError: two plugins route the same method and path.
        """
        found = (
            [] if listener.plugins is None else listener.plugins.collect("reactorkit_http_routes")
        )
        return cls.build(listener.options, found, listener=listener)

    @classmethod
    def build(
        cls,
        options: HttpOptions,
        contributions: Sequence[reactorkit.Contribution],
        *,
        listener: reactorkit.Listener | None = None,
    ) -> RouteTable:
        """Build the table; see :meth:`from_listener`."""
        table = cls(options=options, listener=listener)
        owners: dict[tuple[str, str], str] = {}
        shapes: dict[str, tuple[Any, dict[str, reactorkit.Route]]] = {}
        for contribution in contributions:
            route = contribution.item
            if not isinstance(route, reactorkit.Route):
                raise reactorkit.PluginError(
                    f"{contribution.source}: reactorkit_http_routes() must return Route "
                    f"objects, got {route!r}"
                )
            for method in route.method:
                key = (method, route.shape)
                if key in owners:
                    raise reactorkit.PluginError(
                        f"HTTP route {method} {route.path} is defined twice:\n"
                        f"  by {owners[key]}\n"
                        f"  and by {contribution.source}\n"
                        "uninstall one of them"
                    )
                owners[key] = contribution.source
                if route.shape == route.path:
                    table.exact.setdefault(route.path, {})[method] = route
                else:
                    entry = shapes.get(route.shape)
                    if entry is None:
                        entry = shapes[route.shape] = (route.compile(), {})
                        table.patterns.append(entry)
                    entry[1][method] = route
        if options.static_root:
            table.static = StaticFiles(options.static_root)
        return table

    def match(self, path: str) -> tuple[dict[str, reactorkit.Route] | None, dict[str, str]]:
        """The routes of ``path`` by method, and the captures."""
        methods = self.exact.get(path)
        if methods is not None:
            return methods, {}
        for regex, by_method in self.patterns:
            found = regex.match(path)
            if found is not None:
                return by_method, found.groupdict()
        return None, {}


# -- responses -------------------------------------------------------------


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        reason = reactorkit.Response(status=status).reason
        line = _STATUS_LINES[status] = b"HTTP/1.1 %d %s\r\n" % (status, reason.encode())
    return line


class _Clock:
    """The Date header, formatted at most once per second (RFC 9110 section 6.6.1)."""

    def __init__(self) -> None:
        self.second = -1
        self.header = b""

    def date(self) -> bytes:
        now = int(time.time())
        if now != self.second:
            self.second = now
            self.header = (
                b"date: "
                + email.utils.formatdate(now, usegmt=True).encode()
                + b"\r\nserver: "
                + SERVER
                + b"\r\n"
            )
        return self.header


_CLOCK = _Clock()


def error_response(status: int, message: str) -> reactorkit.Response:
    """A small plain-text error response."""
    return reactorkit.Response(status=status, body=message + "\n")


@attrs.define(eq=False, slots=True)
class _Exchange:
    request: reactorkit.Request | None
    keep_alive: bool
    started: float
    error: reactorkit.Response | None = None


# -- the handler -----------------------------------------------------------


class HttpHandler(reactorkit.Handler):
    """One HTTP/1.x connection."""

    def __init__(self, table: RouteTable) -> None:
        super().__init__(table)
        self.table = table
        self.options = table.options
        self._parser = httptools.HttpRequestParser(self)
        self._queue: collections.deque[_Exchange] = collections.deque()
        self._busy = False  # a blocking route runs or a body streams
        self._broken = False  # a parse error: no more parsing
        self._closing = False  # close once the queue is answered
        self._in_head = False
        self._in_message = False  # a request has begun and is not complete
        self._head_fed = 0
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        self._head_size = 0
        self._body: list[bytes] = []
        self._body_size = 0
        self._served = 0
        self._header_timer: reactorkit.TimerHandle | None = None
        self._idle_timer: reactorkit.TimerHandle | None = None
        self._stream: Iterator[bytes] | None = None
        self._stream_chunked = False
        self._stream_exchange: _Exchange | None = None
        self._stream_status = 200
        self._write_paused = False

    # -- connection callbacks ---------------------------------------------

    def connection_made(self, connection: reactorkit.Transport) -> None:
        self.connection = connection
        self._arm_idle()

    def data_received(self, data: bytes) -> None:
        if self._broken:
            return
        if self._in_head:
            self._head_fed += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, reactorkit.HttpError):
                self._reject(cause.status, cause.message)
            else:
                raise
        except httptools.HttpParserUpgrade:
            self._reject(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            message = str(exc)
            if "version" in message.lower():
                self._reject(505, "HTTP version not supported: HTTP/1.1 and 1.0 only")
            else:
                self._reject(400, f"malformed request: {message}")
        else:
            # Bound memory while a header block arrives: what was fed since the
            # request began, allowing one read of slack (max_read) beyond the limit.
            if self._in_head and self._head_fed > self.options.max_header_size + 65536:
                self._reject(431, "request header fields too large")

    def eof_received(self) -> bool:
        # Answer what was received, then close (a half-closing client is fine).
        self._closing = True
        return bool(self._queue) or self._busy

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_timers()
        self._close_stream()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._stream is not None:
            self._pump()

    def shutdown_requested(self) -> None:
        # Finish what was received, including a request still arriving.
        self._closing = True
        if not self._queue and not self._busy and not self._in_message:
            self.connection.close()

    # -- parser callbacks (httptools) ---------------------------------------

    def on_message_begin(self) -> None:
        self._in_head = True
        self._in_message = True
        self._head_fed = 0
        self._url = b""
        self._headers = []
        self._head_size = 0
        self._body = []
        self._body_size = 0
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        self._header_timer = self.connection.reactor.call_later(
            self.options.header_timeout, self._header_timed_out
        )

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.options.max_request_line:
            raise reactorkit.HttpError(414, "URI too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if self._head_size > self.options.max_header_size:
            raise reactorkit.HttpError(431, "request header fields too large")
        if len(self._headers) >= self.options.max_headers:
            raise reactorkit.HttpError(431, "too many header fields")
        self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        version = self._parser.get_http_version()
        if version not in _SUPPORTED:
            raise reactorkit.HttpError(505, "HTTP version not supported: HTTP/1.1 and 1.0 only")
        for name, value in self._headers:
            lower = name.lower()
            if lower == "content-length":
                if int(value) > self.options.max_body_size:
                    raise reactorkit.HttpError(
                        413, f"request body too large (limit {self.options.max_body_size} bytes)"
                    )
            elif lower == "expect":
                if value.lower() != "100-continue":
                    raise reactorkit.HttpError(417, f"unsupported expectation: {value}")
                if not self._queue and not self._busy:
                    self.connection.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self.options.max_body_size:
            raise reactorkit.HttpError(
                413, f"request body too large (limit {self.options.max_body_size} bytes)"
            )
        self._body.append(body)

    def on_message_complete(self) -> None:
        self._in_message = False
        parser = self._parser
        url = self._url
        parsed = httptools.parse_url(url)
        raw_path = parsed.path.decode("latin-1")
        query_string = (parsed.query or b"").decode("latin-1")
        request = reactorkit.Request(
            method=parser.get_method().decode("ascii"),
            path=urllib.parse.unquote(raw_path) if "%" in raw_path else raw_path,
            raw_path=raw_path,
            query=urllib.parse.parse_qs(query_string) if query_string else {},
            query_string=query_string,
            headers=reactorkit.Headers(self._headers),
            body=b"".join(self._body) if self._body else b"",
            http_version=parser.get_http_version(),
            peer=self.connection.peername,
            listener=self.table.listener,
        )
        self._queue.append(
            _Exchange(request, parser.should_keep_alive(), self.connection.reactor.time)
        )
        if not self._busy:
            self._process()

    # -- answering ---------------------------------------------------------

    def _reject(self, status: int, message: str) -> None:
        self._broken = True
        self._in_head = False
        self._in_message = False
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        self.connection.pause_reading()
        self._queue.append(
            _Exchange(
                None, False, self.connection.reactor.time, error=error_response(status, message)
            )
        )
        if not self._busy:
            self._process()

    def _process(self) -> None:
        connection = self.connection
        while self._queue and not self._busy and not connection.is_closing():
            exchange = self._queue.popleft()
            if exchange.error is not None:
                self._send(exchange, exchange.error)
                continue
            request = exchange.request
            assert request is not None
            route, response = self._route(request)
            if route is not None and route.blocking:
                self._busy = True
                future = connection.reactor.run_in_thread(route.function, request)
                future.add_done_callback(functools.partial(self._blocking_done, exchange, route))
                return
            if route is not None:
                try:
                    response = reactorkit.as_response(route.function(request))
                except reactorkit.HttpError as exc:
                    response = error_response(exc.status, exc.message or "error")
                except Exception:
                    response = self._route_failed(route, request)
            assert response is not None
            self._send(exchange, response)
        if not self._queue and not self._busy and not connection.is_closing():
            if self._closing:
                if not self._in_message:
                    connection.close()
            elif not self._in_head:
                self._arm_idle()

    def _route(
        self, request: reactorkit.Request
    ) -> tuple[reactorkit.Route | None, reactorkit.Response | None]:
        by_method, captures = self.table.match(request.path)
        if by_method is not None:
            route = by_method.get(request.method)
            if route is None and request.method == "HEAD":
                route = by_method.get("GET")
            if route is not None:
                request.captures = captures
                return route, None
        static = self.table.static
        if static is not None and request.method in ("GET", "HEAD"):
            found = static.respond(request)
            if found is not None:
                return None, found
        if by_method is None:
            return None, error_response(404, "not found")
        allowed = set(by_method)
        if "GET" in allowed:
            allowed.add("HEAD")
        allow = ", ".join(sorted(allowed))
        response = error_response(405, f"method {request.method} not allowed; allowed: {allow}")
        response.headers.append(("Allow", allow))
        return None, response

    def _blocking_done(
        self, exchange: _Exchange, route: reactorkit.Route, future: reactorkit.Future[Any]
    ) -> None:
        self._busy = False
        if self.connection.is_closing():
            return
        error = future.exception()
        assert exchange.request is not None
        if isinstance(error, reactorkit.HttpError):
            response = error_response(error.status, error.message or "error")
        elif error is not None:
            response = self._route_failed(route, exchange.request, error)
        else:
            try:
                response = reactorkit.as_response(future.result())
            except TypeError:
                response = self._route_failed(route, exchange.request)
        self._send(exchange, response)
        self._process()

    def _route_failed(
        self,
        route: reactorkit.Route,
        request: reactorkit.Request,
        error: BaseException | None = None,
    ) -> reactorkit.Response:
        log.error(
            "route %s %s (%s) raised for %s %s",
            "/".join(route.method),
            route.path,
            route.name or getattr(route.function, "__name__", "?"),
            request.method,
            request.raw_path,
            exc_info=error if error is not None else True,
        )
        if self.table.listener is not None:
            self.table.listener.stats.errors += 1
        return error_response(500, "internal server error")

    def _send(self, exchange: _Exchange, response: reactorkit.Response) -> None:
        request = exchange.request
        self._served += 1
        keep_alive = (
            exchange.keep_alive
            and not self._closing
            and exchange.error is None
            and not (self.options.max_requests and self._served >= self.options.max_requests)
        )
        head = request is not None and request.method == "HEAD"
        status = response.status
        body = response.body
        parts = [_status_line(status), _CLOCK.date()]
        content_type = response.content_type
        length: int | None = None
        stream: Iterator[bytes] | None = None
        if isinstance(body, str):
            body = body.encode()
            content_type = content_type or "text/plain; charset=utf-8"
        if isinstance(body, (bytes, bytearray, memoryview)):
            length = len(body)
        else:
            stream = iter(body)
        has_length = False
        for name, value in response.headers:
            if name.lower() == "content-length":
                has_length = True
            parts.append(b"%s: %s\r\n" % (name.encode("latin-1"), value.encode("latin-1")))
        if status not in _NO_BODY and status >= 200:
            parts.append(
                b"content-type: %s\r\n"
                % (content_type or "application/octet-stream").encode("latin-1")
            )
            if length is not None:
                parts.append(b"content-length: %d\r\n" % length)
            elif not has_length:
                if request is not None and request.http_version == "1.1":
                    parts.append(b"transfer-encoding: chunked\r\n")
                    self._stream_chunked = True
                else:
                    keep_alive = False  # HTTP/1.0: the close ends the body
                    self._stream_chunked = False
            else:
                self._stream_chunked = False
        if not keep_alive:
            parts.append(b"connection: close\r\n")
            self._closing = True
        elif request is not None and request.http_version == "1.0":
            parts.append(b"connection: keep-alive\r\n")
        parts.append(b"\r\n")
        write = self.connection.write
        if stream is None or head or status in _NO_BODY:
            if stream is not None:
                _close_iterator(stream)
            elif not head and status not in _NO_BODY:
                parts.append(bytes(body))  # type: ignore[arg-type]
            # Logged before the write, so the line exists once the client has its reply.
            self._log(exchange, status, 0 if head else (length or 0))
            write(b"".join(parts))
            if not keep_alive:
                self.connection.close()
            return
        write(b"".join(parts))
        self._stream = stream
        self._stream_exchange = exchange
        self._stream_status = status
        self._busy = True
        self._pump()

    def _pump(self) -> None:
        stream = self._stream
        assert stream is not None
        connection = self.connection
        chunked = self._stream_chunked
        sent = 0
        while not self._write_paused and not connection.is_closing():
            try:
                chunk = next(stream)
            except StopIteration:
                break
            except Exception:
                log.exception("streaming a response body failed; closing the connection")
                self._close_stream()
                connection.abort()
                return
            if not chunk:
                continue
            sent += len(chunk)
            if chunked:
                connection.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            else:
                connection.write(chunk)
        else:
            return  # paused (resume_writing pumps again) or closing
        if chunked:
            connection.write(b"0\r\n\r\n")
        exchange = self._stream_exchange
        self._stream = None
        self._stream_exchange = None
        self._busy = False
        if exchange is not None:
            self._log(exchange, self._stream_status, sent)
        if self._closing:
            connection.close()
        else:
            self._process()

    def _close_stream(self) -> None:
        if self._stream is not None:
            _close_iterator(self._stream)
            self._stream = None

    # -- timers ------------------------------------------------------------

    def _arm_idle(self) -> None:
        if self._idle_timer is None:
            self._idle_timer = self.connection.reactor.call_later(
                self.options.keepalive_timeout, self._idle_timed_out
            )

    def _idle_timed_out(self) -> None:
        self._idle_timer = None
        if not self._queue and not self._busy and not self._in_head:
            self.connection.close()

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if self._in_head and not self.connection.is_closing():
            self._reject(408, "request timeout: the header block took too long")

    def _cancel_timers(self) -> None:
        for timer in (self._header_timer, self._idle_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._idle_timer = None

    # -- access log ----------------------------------------------------------

    def _log(self, exchange: _Exchange, status: int, size: int) -> None:
        if not self.options.access_log or not access_log.isEnabledFor(logging.INFO):
            return
        request = exchange.request
        peer = self.connection.peername
        host = peer[0] if isinstance(peer, tuple) else "unix"
        line = (
            (
                f"{request.method} {request.raw_path}"
                f"{'?' + request.query_string if request.query_string else ''} "
                f"HTTP/{request.http_version}"
            )
            if request is not None
            else "-"
        )
        elapsed = (self.connection.reactor.clock() - exchange.started) * 1000
        stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())
        access_log.info('%s - - [%s] "%s" %d %d %.3fms', host, stamp, line, status, size, elapsed)


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
            state=RouteTable.from_listener,
            description="a small, correct HTTP/1.1 server; routes come from plugins",
            default_port=8080,
        )
    ]
