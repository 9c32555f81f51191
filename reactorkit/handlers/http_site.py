"""What every connection of one http-lite listener shares, and what answers a request.

One :class:`HttpSite` per listener, built once by the handler type's
``state`` factory (Twisted's Factory): the options, the
:class:`~reactorkit.routes.RouteTable`, the static files, the input limits
of the sans-IO core. Given a complete :class:`~reactorkit.Request`,
:meth:`HttpSite.dispatch` says what to answer: the route's response (a
route that raises is a 500, logged with the route and the plugin that gave
it), a file under ``static_root``, ``OPTIONS *``, a 404 or 405; or, for a
blocking route, the route itself, which the handler runs on the thread
pool. Nothing here touches a connection.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Sequence
from typing import Any, Final

import attrs

import reactorkit
from reactorkit import http11
from reactorkit.handlers.http_static import StaticFiles
from reactorkit.routes import RouteTable, not_routed

__all__ = ["HttpOptions", "HttpSite", "date_line", "error_response"]

log = logging.getLogger("reactorkit.http")

_PROCESS_EXITS = (KeyboardInterrupt, SystemExit)
_Response = reactorkit.Response
_Route = reactorkit.Route
_HttpError = reactorkit.HttpError
_as_response = reactorkit.as_response


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


def error_response(status: int, message: str) -> reactorkit.Response:
    """A small plain-text error response."""
    return _Response(status=status, body=message + "\n")


_INTERNAL_ERROR: Final = "internal server error"


_date_from = 0.0
_date_until = 0.0
_date_lines = b""
_now = time.time


def date_line() -> bytes:
    """The ``Date`` and ``Server`` field lines of a response sent now.

    Formatted at most once a second (RFC 9110 section 6.6.1: a second's
    resolution); a clock that steps back is followed too.
    """
    global _date_from, _date_until, _date_lines
    now = _now()
    if _date_from <= now < _date_until:
        return _date_lines
    second = float(int(now))  # floats: a float compared to an int costs a conversion
    stamp = email.utils.formatdate(second, usegmt=True).encode()
    _date_from, _date_until = second, second + 1.0
    _date_lines = b"date: " + stamp + b"\r\nserver: reactorkit\r\n"
    return _date_lines


@attrs.define(eq=False)
class HttpSite:
    """What every connection of one http-lite listener shares: routes, files, limits."""

    options: HttpOptions
    routes: RouteTable
    limits: http11.Limits
    static: StaticFiles | None = None
    listener: reactorkit.Listener | None = None
    #: The ``Allow`` of ``OPTIONS *``: every method this listener serves.
    allow: str = ""
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
    def check(cls, options: HttpOptions, plugins: reactorkit.Plugins) -> None:
        """Raise what :meth:`from_listener` would, before anything binds (``check``)."""
        cls.build(options, plugins.collect("reactorkit_http_routes"))

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
        routes = RouteTable.build(contributions)
        methods = routes.methods | {"OPTIONS"} | ({"GET", "HEAD"} if static else set())
        return cls(options, routes, limits, static, listener, ", ".join(sorted(methods)))

    def dispatch(self, request: reactorkit.Request) -> reactorkit.Response | reactorkit.Route:
        """What answers ``request``: a response, or the blocking route to run off the loop.

        Never raises for a route's failure: an :class:`~reactorkit.HttpError`
        answers its status, anything else is a 500 and a logged traceback.
        """
        by_method = self.routes.exact.get(request.path)
        route = None if by_method is None else by_method.get(request.method)
        if route is None:
            route, captures, allowed = self.routes.find(request.method, request.path)
            if route is None:
                return self._unrouted(request, allowed)
            request.captures = captures
        request.route = route
        if route.blocking:
            return route
        try:
            result = route.function(request)
        except _HttpError as exc:
            return error_response(exc.status, exc.message or "error")
        except _PROCESS_EXITS:
            raise
        except BaseException as exc:
            return self.route_failed(route, request, exc)
        if type(result) is _Response:
            return result
        try:
            return _as_response(result)
        except Exception as exc:  # TypeError; json's ValueError (a cycle, a lone surrogate)
            return self.route_failed(route, request, exc)

    def finish_blocking(
        self, route: reactorkit.Route, request: reactorkit.Request, future: reactorkit.Future[Any]
    ) -> reactorkit.Response:
        """The response of a blocking route, from the future of its run on the thread pool."""
        error = future.exception()
        if isinstance(error, _HttpError):
            return error_response(error.status, error.message or "error")
        if error is not None:
            return self.route_failed(route, request, error)
        try:
            return _as_response(future.result())
        except Exception as exc:  # as in dispatch()
            return self.route_failed(route, request, exc)

    def _unrouted(self, request: reactorkit.Request, allowed: list[str]) -> reactorkit.Response:
        if request.path == "*":  # the core lets only OPTIONS have it
            # RFC 9110 section 9.3.7: OPTIONS * asks about the server itself.
            return _Response(status=200, headers=[("Allow", self.allow)])
        static = self.static
        if static is not None and request.method in ("GET", "HEAD"):
            response = static.respond(request)
            if response is not None:
                return response
        return not_routed(request.method, allowed)

    def route_failed(
        self, route: reactorkit.Route, request: reactorkit.Request, error: BaseException
    ) -> reactorkit.Response:
        """Log a route's failure (the route, its plugin, the request): the 500 to answer."""
        log.error(
            "route %s raised for %s %s",
            self.routes.describe(route),
            request.method,
            request.raw_path,
            exc_info=error,
            extra=self._log_fields(),
        )
        self.count_error()
        return error_response(500, _INTERNAL_ERROR)

    def refused(self, request: reactorkit.Request | None, error: Exception) -> reactorkit.Response:
        """Log a response the core refused to send (or a stream that failed first): the 500."""
        log.error(
            "refused to send the response of %s to %s %s: %s; answering 500 instead",
            self.describe(request),
            request.method if request else "-",
            request.raw_path if request else "-",
            error,
            exc_info=error.__cause__,
            extra=self._log_fields(),
        )
        self.count_error()
        return error_response(500, _INTERNAL_ERROR)

    def stream_failed(self, request: reactorkit.Request | None, error: BaseException) -> None:
        """Log a streamed body that failed after its head (the caller aborts the connection)."""
        log.error(
            "streaming the body of %s failed: %s; closing the connection",
            self.describe(request),
            error,
            exc_info=error,
            extra=self._log_fields(),
        )
        self.count_error()

    def close_failed(self, request: reactorkit.Request | None, error: Exception) -> None:
        """Log a body whose ``close()`` raised (the response, if any, stands)."""
        log.error(
            "closing the body of %s failed: %s",
            self.describe(request),
            error,
            exc_info=error,
            extra=self._log_fields(),
        )
        self.count_error()

    def describe(self, request: reactorkit.Request | None) -> str:
        """What answered ``request``, for a log line: the route and its plugin, or a file."""
        if request is None:
            return "an error response"
        route = self.routes.find(request.method, request.path)[0]
        if route is not None:
            return f"route {self.routes.describe(route)}"
        return f"static file {request.raw_path}" if self.static else "no route"

    def _log_fields(self) -> dict[str, Any]:
        # The connection being served is the reactor's current owner, here and
        # in a blocking route's done-callback: its conn_id goes on the line.
        owner = None if self.listener is None else self.listener.reactor.current_owner
        return reactorkit.connection_fields(owner)

    def count_error(self) -> None:
        """Count one failed request in the listener's ``stats.errors``."""
        if self.listener is not None:
            self.listener.stats.errors += 1
