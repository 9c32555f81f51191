"""The HTTP-lite contract: what ``reactorkit_http_routes()`` returns and routes receive.

A plugin declares :class:`Route` objects (a method, a path pattern with
``{name}`` captures, a function). The function receives a :class:`Request`
and returns a :class:`Response` (or a plain ``str``/``bytes``/``dict``,
see :func:`as_response`).

This module is sans-IO: no sockets, no reactor.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from reactorkit.listener import Listener

__all__ = [
    "Headers",
    "Request",
    "Response",
    "Route",
    "RouteFunction",
    "as_response",
    "build_request",
    "json_response",
]

_CAPTURE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")  # RFC 9110 section 5.6.2


class Headers(Mapping[str, str]):
    """Case-insensitive, multi-valued HTTP header fields.

    ``headers["content-type"]`` gives the first value; :meth:`get_all` gives
    every value of a repeated field. Iteration yields lower-case names. The
    index by name is built on first lookup, so a request nobody inspects
    costs no more than its list of fields.
    """

    __slots__ = ("_items", "_map")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = list(items)
        self._map: dict[str, list[str]] | None = None

    def _index(self) -> dict[str, list[str]]:
        index = self._map
        if index is None:
            index = self._map = {}
            for name, value in self._items:
                index.setdefault(name.lower(), []).append(value)
        return index

    def add(self, name: str, value: str) -> None:
        """Append one field (a repeated name keeps every value)."""
        self._items.append((name, value))
        if self._map is not None:
            self._map.setdefault(name.lower(), []).append(value)

    def __getitem__(self, name: str) -> str:
        return self._index()[name.lower()][0]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._index()

    def __iter__(self) -> Iterator[str]:
        return iter(self._index())

    def __len__(self) -> int:
        return len(self._index())

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``, in arrival order (empty if absent)."""
        return list(self._index().get(name.lower(), ()))

    def items_raw(self) -> list[tuple[str, str]]:
        """Every field as it arrived: original case, repeats kept."""
        return list(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


@attrs.define(eq=False, kw_only=True)
class Request:
    """One HTTP request, as a route function sees it.

    Attributes:
        method: ``"GET"``, ``"POST"``...
        path: the decoded path, without the query (``/users/42``).
        raw_path: the path exactly as sent, percent-encoding kept.
        query: the query string parsed into lists of values.
        query_string: the query string as sent.
        headers: case-insensitive :class:`Headers`.
        body: the whole request body (Content-Length or chunked).
        trailers: the trailer fields of a chunked body, kept apart from
            ``headers`` (RFC 9110 section 6.5: never merged into them).
        host: the authority the request is for: the absolute-form target's
            if one was sent (RFC 9112 section 3.2.2), else the Host field.
        http_version: ``"1.1"`` or ``"1.0"``.
        scheme: ``"https"`` when the connection is TLS (``[listen.tls]``),
            else ``"http"``.
        peer: the client's address.
        captures: the values of the route pattern's ``{name}`` captures.
        listener: the listener that accepted the connection (its name,
            ``stats``, ``is_closed`` during graceful shutdown).
        route: the :class:`Route` that matched, None when none did (metrics).
    """

    method: str
    path: str
    raw_path: str = ""
    query: dict[str, list[str]] = attrs.field(factory=dict)
    query_string: str = ""
    headers: Headers = attrs.field(factory=Headers)
    body: bytes = b""
    trailers: Headers = attrs.field(factory=Headers)
    host: str = ""
    http_version: str = "1.1"
    scheme: str = "http"
    peer: Any = None
    captures: dict[str, str] = attrs.field(factory=dict)
    listener: Listener | None = None
    route: Route | None = None

    if not TYPE_CHECKING:  # to a type checker every attribute is set, as it is to a reader

        def __getattr__(self, name: str) -> Any:
            # Only for a slot build_request left unset: its value, made on first read.
            if name == "query":
                string = self.query_string
                value: Any = urllib.parse.parse_qs(string) if string else {}
            elif name in _LAZY:
                value = _LAZY[name]()
            else:
                raise AttributeError(f"'Request' object has no attribute {name!r}")
            object.__setattr__(self, name, value)
            return value

    def text(self, encoding: str = "utf-8") -> str:
        """The body decoded (invalid bytes replaced)."""
        return self.body.decode(encoding, "replace")

    def json(self) -> Any:
        """The body parsed as JSON.

        Raises:
            ValueError: the body is not valid JSON.
        """
        return json.loads(self.body)


_new = object.__new__
# What build_request leaves unset until it is read (Request.__getattr__), and
# query, parsed from query_string.
_LAZY: dict[str, Callable[[], Any]] = {
    "body": bytes,
    "trailers": Headers,
    "captures": dict,
    "route": lambda: None,
}


def build_request(
    method: str,
    raw_path: str,
    query_string: str,
    fields: list[tuple[str, str]] | Headers,
    host: str,
    http_version: str,
    scheme: str,
    peer: Any,
    listener: Listener | None,
) -> Request:
    """The :class:`Request` of a parsed head: a server's path, cheaper than ``Request(...)``.

    ``path`` is ``raw_path`` percent-decoded; ``fields`` become the headers
    as they are (a list is wrapped, not copied; a :class:`Headers` is used
    itself). What a route may never read is made when it first does:
    ``query`` (parsed from ``query_string``), and the empty ``body``,
    ``trailers`` and ``captures`` and ``route``. Every attribute reads
    exactly as the attrs constructor would set it (``tests/test_web.py``
    compares the two).
    """
    request: Request = _new(Request)
    request.method = method
    request.path = urllib.parse.unquote(raw_path) if "%" in raw_path else raw_path
    request.raw_path = raw_path
    request.query_string = query_string
    if type(fields) is list:
        headers: Headers = _new(Headers)
        headers._items = fields
        headers._map = None
        request.headers = headers
    else:
        request.headers = fields  # type: ignore[assignment]  # a Headers, used as it is
    request.host = host
    request.http_version = http_version
    request.scheme = scheme
    request.peer = peer
    request.listener = listener
    return request


Body = bytes | str | Iterable[bytes]


@attrs.define(eq=False, kw_only=True)
class Response:
    """What a route returns.

    Attributes:
        status: the status code, a final one (200-599): an ``int``, or an
            ``int`` subclass such as :class:`http.HTTPStatus`, sent as the
            number it holds. A ``bool``, a ``float`` or a ``1xx`` is refused
            (the client gets a 500 and the log says why).
        headers: extra header fields, ``(name, value)`` pairs. ``Date``,
            ``Server``, ``Content-Length``, ``Transfer-Encoding`` and
            ``Connection`` are the server's: a route's own are dropped,
            except a ``Content-Length`` beside an iterable body, which is
            then sent as is instead of chunked. A name that is not a token
            or a value with CR, LF, NUL or another control character is
            refused: the client gets a 500 and the log says why.
        body: ``bytes``, ``str`` (sent as UTF-8) or an iterable of ``bytes``
            chunks, which is streamed (chunked transfer coding on HTTP/1.1)
            as fast as the client reads it.
        content_type: defaults to ``text/plain; charset=utf-8`` for a ``str``
            body and ``application/octet-stream`` otherwise.
    """

    status: int = 200
    body: Body = b""
    headers: list[tuple[str, str]] = attrs.field(factory=list)
    content_type: str | None = None

    @property
    def reason(self) -> str:
        """The reason phrase of the status code."""
        try:
            return HTTPStatus(self.status).phrase
        except ValueError:
            return "Unknown"


def json_response(
    data: Any, status: int = 200, *, headers: Iterable[tuple[str, str]] = ()
) -> Response:
    """A JSON response (``application/json``), compact and UTF-8.

    Raises:
        ValueError: ``data`` holds what JSON cannot carry: a cycle, a lone
            surrogate, or a float NaN or infinity (RFC 8259 has no ``NaN``;
            strict parsers refuse it). A route that returns such data is
            answered 500 and logged with its name.
    """
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    return Response(
        status=status, body=body, headers=list(headers), content_type="application/json"
    )


def as_response(result: Any) -> Response:
    """Turn what a route returned into a :class:`Response`.

    A ``Response`` is kept; ``str``/``bytes`` become a 200 with that body; a
    ``dict`` or ``list`` becomes :func:`json_response`; ``None`` is a 204.

    Raises:
        TypeError: anything else.
    """
    if isinstance(result, Response):
        return result
    if isinstance(result, (str, bytes)):
        return Response(body=result)
    if isinstance(result, (dict, list)):
        return json_response(result)
    if result is None:
        return Response(status=204)
    raise TypeError(
        f"a route must return a Response, str, bytes, dict, list or None, "
        f"got {type(result).__name__}"
    )


RouteFunction = Callable[[Request], Any]


def _methods(value: str | Iterable[str]) -> tuple[str, ...]:
    methods = (value,) if isinstance(value, str) else tuple(value)
    out = tuple(m.upper() for m in methods)
    for method in out:
        if not _TOKEN.match(method):
            raise ValueError(f"not an HTTP method: {method!r}")
    if not out:
        raise ValueError("a route needs at least one method")
    return out


def _check_pattern(instance: Any, attribute: Any, value: str) -> None:
    if not value.startswith("/"):
        raise ValueError(f"a route pattern starts with '/', got {value!r}")
    names = _CAPTURE.findall(value)
    if len(names) != len(set(names)):
        raise ValueError(f"a capture name is used twice in {value!r}")
    if "{" in _CAPTURE.sub("", value) or "}" in _CAPTURE.sub("", value):
        raise ValueError(f"bad capture in {value!r}: use {{name}} with a Python identifier")


@attrs.frozen(kw_only=True)
class Route:
    """One route of HTTP-lite.

    Attributes:
        method: one method (``"GET"``) or several (``("GET", "HEAD")``).
            A route for GET also answers HEAD unless another route claims it.
        path: a pattern such as ``/users/{id}``; a ``{name}`` capture matches
            one non-empty path segment and is passed in ``request.captures``.
        function: called with the :class:`Request`; returns a
            :class:`Response` or anything :func:`as_response` accepts.
        blocking: run the function with ``reactor.run_in_thread``; responses
            still go out in request order.
        name: for error messages and logs; defaults to the function's name.
    """

    method: tuple[str, ...] = attrs.field(converter=_methods)
    path: str = attrs.field(validator=_check_pattern)
    function: RouteFunction
    blocking: bool = False
    name: str = ""

    @property
    def shape(self) -> str:
        """The pattern with capture names erased: two routes clash when it is equal."""
        return _CAPTURE.sub("{}", self.path)

    def compile(self) -> re.Pattern[str]:
        """The pattern as a regular expression with named groups."""
        parts = _CAPTURE.split(self.path)
        regex = []
        for index, part in enumerate(parts):
            regex.append(re.escape(part) if index % 2 == 0 else f"(?P<{part}>[^/]+)")
        return re.compile("".join(regex) + r"\Z")
