"""http-lite's short path without sockets: receive_simple, send_common, the handler's reads."""

from __future__ import annotations

import itertools
import re
from http import HTTPStatus
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import reactorkit
from reactorkit import http11
from reactorkit.errors import HttpProtocolError
from reactorkit.handlers.http_lite import HttpHandler, HttpOptions, HttpSite
from reactorkit.http11 import Limits, ServerConnection
from reactorkit.testing import FakeConnection
from tests.test_http11_head import by_llhttp, events

CANARY = b"GET /canary HTTP/1.1\r\nHost: x\r\n\r\n"


read_apart = by_llhttp  # the first byte apart: llhttp reads the head


def read_simply(data: bytes, limits: Limits) -> list[tuple[Any, ...]] | None:
    """The events of ``data`` as receive_simple takes it, or None if it took nothing."""
    conn = ServerConnection(limits)
    taken = conn.receive_simple(data)
    if taken is None:
        assert conn.buffered == 0  # nothing taken
        assert conn.pending == 0
        return None
    method, path, query, headers, host, version = taken
    target = data.split(b" ", 2)[1].decode("latin-1")
    keep_alive = conn.their_state is not http11.State.MUST_CLOSE
    request = (
        "request",
        *(method, target, path, query, host, headers.items_raw(), version, keep_alive, False),
    )
    conn.feed_eof()
    return [request, ("EndOfMessage",), *events(conn)]


# -- receive_simple against llhttp: heads near every limit --------------------

NAMES = st.sampled_from(
    ["a", "Accept", "X-Y", "User-Agent"] * 6
    + ["Host", "HOST", "hOsT", "x-host", "Host-X", "Hos", "Proxy-Connection", "Upgrade"]
    + ["Keep-Alive", "TE", "Connection", "Expect", "Content-Length", "Transfer-Encoding"]
)
VALUE_CHARS = st.sampled_from([*"ax:0[]-.,;  \t\t%@/?*", "\x7f", "\x80", "\x00", "\x0b"])
VALUES = st.one_of(
    st.sampled_from(["x", "x:80", "close", "", "  ", "\t", "a, b", "0", "[::1]:1", "x:65536"]),
    st.text(VALUE_CHARS, max_size=8),
)
FIELD = st.tuples(NAMES, st.sampled_from([":", ": ", ":\t", " :", ":  "]), VALUES).map(
    lambda parts: "".join(parts) + "\r\n"
)
PATHS = st.text(st.sampled_from(list("/a%?#=&;:@+~.-!$'()*,")), max_size=10).map(lambda t: "/" + t)
HEADS = st.builds(
    lambda method, path, version, fields, extra, end: (
        f"{method} {path} {version}\r\n{''.join(fields)}{extra}{end}".encode("latin-1")
    ),
    st.sampled_from(["GET", "HEAD", "GET", "POST"]),
    PATHS,
    st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/1.1"]),
    st.lists(FIELD, max_size=8),
    st.sampled_from(["Host: y\r\n"] * 3 + ["", "X: " + "a" * 40 + "\r\n"]),
    st.sampled_from(["\r\n", "\r\n", "\n", "\r\n\r\n"]),
)
LIMITS = st.builds(
    lambda line, size, count: Limits(
        max_request_line=line, max_header_size=size, max_headers=count, max_body_size=100
    ),
    st.integers(20, 120),
    st.integers(20, 200),
    st.integers(0, 8),
)


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(HEADS, LIMITS)
def test_receive_simple_reads_as_llhttp_at_any_limits(data: bytes, limits: Limits) -> None:
    taken = read_simply(data, limits)
    if taken is not None:
        assert taken == read_apart(data, limits)


@pytest.mark.parametrize("count", [3, 4])
def test_receive_simple_counts_fields_as_llhttp_at_max_headers(count: int) -> None:
    limits = Limits(max_headers=3)
    data = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"A:\r\n" * (count - 1) + b"\r\n"
    taken = read_simply(data, limits)
    assert (taken is not None) == (count <= 3)
    assert read_apart(data, limits)[0][0] == ("request" if count <= 3 else "error")


# -- what llhttp remembers between requests ----------------------------------

# llhttp reads Proxy-Connection as Connection; the core does not (RFC 9110
# section 7.6.1 names only Connection), so the connection stays open.
PROXY_CLOSE = b"GET / HTTP/1.1\r\nHost: x\r\nProxy-Connection: close\r\n\r\n"


def kinds(out: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return [event[:3] for event in out]


def test_a_request_llhttp_reads_as_close_is_kept_alive_however_the_reads_fall() -> None:
    ways = []
    for cuts in (
        [PROXY_CLOSE + CANARY],
        [PROXY_CLOSE, CANARY],
        [PROXY_CLOSE[:1], PROXY_CLOSE[1:] + CANARY],
    ):
        conn = ServerConnection()
        out = []
        for data in cuts:
            conn.feed(data)
            out += events(conn)
        ways.append(kinds(out))
    assert ways[0] == ways[1] == ways[2]
    assert ways[0][-2] == ("request", "GET", "/canary")


# -- send_common and send: what a careless route returns ---------------------


class OwnInt(int):
    """An int whose own conversion fails: the value it holds is what is sent."""

    def __int__(self) -> int:
        raise ValueError("a route's own __int__")


def answered(response: reactorkit.Response) -> bytes:
    conn = ServerConnection()
    assert conn.receive_simple(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") is not None
    return conn.send(response)


@pytest.mark.parametrize(
    ("status", "line"),
    [
        (HTTPStatus.CREATED, b"HTTP/1.1 201 Created\r\n"),
        (HTTPStatus.NO_CONTENT, b"HTTP/1.1 204 No Content\r\n"),
        (OwnInt(202), b"HTTP/1.1 202 Accepted\r\n"),
    ],
)
def test_an_int_subclass_status_is_sent_as_the_int_it_holds(status: int, line: bytes) -> None:
    assert answered(reactorkit.Response(status=status, body="x")).startswith(line)


@pytest.mark.parametrize("status", [True, 200.0, "200", None, OwnInt(99), HTTPStatus.CONTINUE])
def test_a_status_that_is_not_a_final_int_is_refused(status: Any) -> None:
    with pytest.raises(HttpProtocolError):
        answered(reactorkit.Response(status=status, body="x"))


@pytest.mark.parametrize(
    "response",
    [
        reactorkit.Response(body="\ud800"),
        reactorkit.Response(body="x", content_type="text/plain\r\nX-Evil: 1"),
        reactorkit.Response(body="x", content_type=["text/plain"]),  # type: ignore[arg-type]
        reactorkit.Response(body="x", headers=[("X", "a\nb")]),
    ],
)
def test_send_common_leaves_what_send_refuses_and_takes_nothing(
    response: reactorkit.Response,
) -> None:
    conn = ServerConnection()
    assert conn.receive_simple(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") is not None
    assert conn.send_common(response, b"") is None
    assert conn.pending == 1
    with pytest.raises(HttpProtocolError):
        conn.send(response)
    assert conn.send(reactorkit.Response(body="ok")).endswith(b"ok")  # still answerable


# -- the handler: the short path and the general path mixed, reads anywhere --


def describe(request: reactorkit.Request) -> str:
    return f"{request.method} {request.path} {request.query_string} {request.body!r}"


ROUTES = [
    reactorkit.Route(method=("GET", "POST", "HEAD"), path="/e", function=describe),
    reactorkit.Route(method="GET", path="/canary", function=lambda request: "CANARY"),
]
REQUESTS = {
    "simple": b"GET /e?q=1 HTTP/1.1\r\nHost: x\r\nA: 1\r\n\r\n",
    "head": b"HEAD /e HTTP/1.1\r\nHost: x\r\n\r\n",
    "keep-alive": b"GET /e HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n",
    "post": b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
    "chunked": (
        b"POST /e HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n"
    ),
    "expect": b"POST /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nab",
    "http/1.0": b"GET /e HTTP/1.0\r\nHost: x\r\n\r\n",
    "http/1.0 keep-alive": b"GET /e HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n",
    "bad host": b"GET /e HTTP/1.1\r\nHost: a b\r\n\r\n",
    "no host": b"GET /e HTTP/1.1\r\n\r\n",
    "close": b"GET /e HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    "proxy close": PROXY_CLOSE,
    "smuggle": (
        b"GET /e HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
    ),
    "empty line": b"\r\n",
    "404": b"GET /nope?%zz HTTP/1.1\r\nhOsT: x\r\n\r\n",
    "long": b"GET /e HTTP/1.1\r\nHost: x\r\nA: " + b"b" * 150 + b"\r\n\r\n",
    "many": b"GET /e HTTP/1.1\r\nHost: x\r\n" + b"B: c\r\n" * 7 + b"\r\n",
}
OPTIONS = [
    {},
    {"access_log": False},
    {"access_log": False, "high_water": 100},
    {"access_log": False, "max_headers": 7, "max_header_size": 256},
    {"access_log": False, "max_requests": 3},
    {"access_log": False, "max_pending": 1},
]


def served(pieces: list[bytes], options: dict[str, Any], blocked: set[int]) -> bytes:
    """What the handler writes for ``pieces``, each a read; writes blocked at ``blocked``."""
    options = dict(options)
    high_water = options.pop("high_water", None)
    site = HttpSite.build(
        HttpOptions(**options), [reactorkit.Contribution(r, "test", None) for r in ROUTES]
    )
    conn = FakeConnection(HttpHandler(site))
    if high_water:
        conn.set_write_buffer_limits(high=high_water)
    for i, piece in enumerate(pieces):
        if i in blocked:
            conn.block_writes()
        if not conn.is_reading:
            conn.drain()
        if conn.is_closing() or not conn.is_reading:
            break
        conn.feed(piece)
    conn.drain()
    if conn.is_reading:
        conn.feed_eof()
        conn.drain()
    # The Date line varies; a 100 Continue depends on whether the body came with the head.
    text = re.sub(rb"date: [^\r]*\r\n", b"", conn.value())
    return text.replace(b"HTTP/1.1 100 Continue\r\n\r\n", b"")


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    st.lists(st.sampled_from(sorted(REQUESTS)), min_size=1, max_size=6),
    st.sampled_from(range(len(OPTIONS))),
    st.data(),
)
def test_requests_read_anywhere_are_answered_as_one_byte_at_a_time(
    names: list[str], which: int, data: st.DataObject
) -> None:
    stream = b"".join(REQUESTS[name] for name in names) + CANARY
    # Mostly at request boundaries (each read one whole head: the short path), some anywhere.
    bounds = [0]
    for name in names:
        bounds.append(bounds[-1] + len(REQUESTS[name]))
    keep = data.draw(st.lists(st.booleans(), min_size=len(bounds), max_size=len(bounds)))
    anywhere = data.draw(st.lists(st.integers(0, len(stream)), max_size=3))
    cuts = sorted({0, len(stream), *anywhere, *(b for b, k in zip(bounds, keep, strict=True) if k)})
    pieces = [stream[a:b] for a, b in itertools.pairwise(cuts)]
    blocked = set(data.draw(st.lists(st.integers(0, len(pieces)), max_size=2)))
    options = OPTIONS[which]
    one_by_one = [stream[i : i + 1] for i in range(len(stream))]
    assert served(pieces, options, blocked) == served(one_by_one, options, set())
