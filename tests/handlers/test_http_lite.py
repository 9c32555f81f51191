"""http-lite without sockets: requests split anywhere, routing, route table conflicts."""

from __future__ import annotations

import itertools
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reactorkit
from reactorkit.handlers.http_lite import HttpHandler, HttpOptions, HttpSite
from reactorkit.handlers.http_static import _parse_range
from reactorkit.routes import RouteTable
from reactorkit.testing import FakeConnection, run_until


def echo_body(request: reactorkit.Request) -> reactorkit.Response:
    return reactorkit.Response(body=request.method.encode() + b" " + request.body)


def item(request: reactorkit.Request) -> str:
    return f"{request.captures['kind']}:{request.captures['id']}"


ROUTES = [
    reactorkit.Route(method=("GET", "POST"), path="/echo", function=echo_body),
    reactorkit.Route(method="GET", path="/items/{kind}/{id}", function=item),
]


def handler(**options: object) -> tuple[HttpHandler, FakeConnection]:
    site = HttpSite.build(
        HttpOptions(**options),  # type: ignore[arg-type]
        [reactorkit.Contribution(r, "test", None) for r in ROUTES],
    )
    h = HttpHandler(site)
    return h, FakeConnection(h)


def bodies(output: bytes) -> list[bytes]:
    return [part.split(b"\r\n\r\n", 1)[1] for part in output.split(b"HTTP/1.1 ")[1:]]


PIPELINE = (
    b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n"
    b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
    b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    b"GET /items/book/7?x=1 HTTP/1.1\r\nHost: x\r\n\r\n"
)
EXPECTED = [b"GET ", b"POST hello", b"POST abcde", b"book:7"]


@settings(max_examples=200)
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(PIPELINE)), max_size=12))
def test_pipelined_requests_split_anywhere_give_the_same_responses(cuts: list[int]) -> None:
    _, conn = handler()
    points = sorted({*cuts, 0, len(PIPELINE)})
    for start, stop in itertools.pairwise(points):
        conn.feed(PIPELINE[start:stop])
    assert bodies(conn.take()) == EXPECTED
    assert not conn.is_closing()


def test_every_single_byte_boundary() -> None:
    _, conn = handler()
    for i in range(len(PIPELINE)):
        conn.feed(PIPELINE[i : i + 1])
    assert bodies(conn.take()) == EXPECTED


def test_header_timer_is_armed_per_request_not_per_read() -> None:
    _h, conn = handler(header_timeout=1.0)
    for byte in b"GET /echo HTTP/1.1\r\nHost: x\r\n":
        conn.feed(bytes([byte]))
    timers = len(conn.reactor._timers)
    assert timers <= 2  # the idle timer (cancelled) and one header timer
    conn.advance(1.5)
    assert conn.value().startswith(b"HTTP/1.1 408 ")
    assert conn.is_closing()


def test_keepalive_timer_closes_an_idle_connection() -> None:
    _, conn = handler(keepalive_timeout=2.0)
    conn.feed(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
    conn.advance(1.0)
    assert not conn.is_closing()
    conn.advance(1.5)
    assert conn.is_closing()


def test_keepalive_timer_restarts_after_each_request() -> None:
    _, conn = handler(keepalive_timeout=2.0)
    for _ in range(4):  # 6 s of a busy connection, never 2 s idle
        conn.advance(1.5)
        conn.feed(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
    assert not conn.is_closing()
    assert len(bodies(conn.value())) == 4
    conn.advance(2.5)
    assert conn.is_closing()


@pytest.mark.parametrize("access_log", [False, True])  # the short path, or the general
@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, x\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi",
    ],
)
def test_blank_lines_between_requests_do_not_restart_keepalive(
    access_log: bool, request_bytes: bytes
) -> None:
    # RFC 9112 2.2 has a server skip empty lines before a request line; a
    # client sending one every so often must still be closed as idle.
    _, conn = handler(keepalive_timeout=2.0, access_log=access_log)
    for _ in range(3):  # real requests restart it, on every path
        conn.advance(1.5)
        conn.feed(request_bytes)
    assert len(bodies(conn.value())) == 3
    for _ in range(3):
        conn.advance(0.6)
        assert not conn.is_closing()
        conn.feed(b"\r\n")
    conn.advance(0.3)  # 2.1 s after the last request was answered
    assert conn.is_closing()


@pytest.mark.parametrize("access_log", [False, True])
def test_keepalive_timer_waits_while_the_client_has_not_read_its_answers(
    access_log: bool,
) -> None:
    # Answers above high water, unread: the server, not the client, has
    # unfinished business. Keep-alive starts once they are taken (nginx:
    # keepalive_timeout only while waiting for a request); the listener's
    # idle_timeout bounds a client that never reads.
    _, conn = handler(keepalive_timeout=2.0, access_log=access_log)
    conn.set_write_buffer_limits(high=1500)
    conn.block_writes()
    while conn.is_reading:
        conn.feed(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
    conn.advance(6.0)
    assert not conn.is_closing()
    conn.drain()  # the client reads everything
    conn.advance(1.0)
    assert not conn.is_closing()
    conn.advance(1.5)
    assert conn.is_closing()


def test_eof_after_a_request_answers_then_closes() -> None:
    _, conn = handler()
    conn.feed(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
    conn.feed_eof()
    assert bodies(conn.value()) == [b"GET "]
    assert conn.is_closing()


def test_route_conflict_names_both_plugins() -> None:
    one = reactorkit.Route(method="GET", path="/a/{x}", function=item)
    two = reactorkit.Route(method=("PUT", "GET"), path="/a/{y}", function=item)
    with pytest.raises(reactorkit.PluginError) as info:
        RouteTable.build(
            [
                reactorkit.Contribution(one, "p1", "d1 1"),
                reactorkit.Contribution(two, "p2", "d2 2"),
            ],
        )
    assert str(info.value).splitlines() == [
        "HTTP route GET /a/{y} is defined twice:",
        "  by plugin 'p1' (d1 1)",
        "  and by plugin 'p2' (d2 2)",
        "uninstall one of them",
    ]


def test_same_path_different_methods_from_two_plugins_is_fine() -> None:
    one = reactorkit.Route(method="GET", path="/a", function=item)
    two = reactorkit.Route(method="POST", path="/a", function=item)
    table = RouteTable.build(
        [reactorkit.Contribution(one, "p1", None), reactorkit.Contribution(two, "p2", None)],
    )
    methods, _ = table.match("/a")
    assert methods is not None
    assert set(methods) == {"GET", "POST"}


@pytest.mark.parametrize(
    ("path", "message"),
    [("nope", "starts with '/'"), ("/a/{x}/{x}", "used twice"), ("/a/{1x}", "bad capture")],
)
def test_bad_route_patterns(path: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        reactorkit.Route(method="GET", path=path, function=item)


def test_as_response_conversions() -> None:
    assert reactorkit.as_response("x").body == "x"
    assert reactorkit.as_response({"a": 1}).content_type == "application/json"
    assert reactorkit.as_response(None).status == 204
    with pytest.raises(TypeError):
        reactorkit.as_response(42)


def test_headers_are_case_insensitive_and_multi_valued() -> None:
    headers = reactorkit.Headers([("Set-Cookie", "a"), ("set-cookie", "b"), ("X-A", "1")])
    assert headers["SET-COOKIE"] == "a"
    assert headers.get_all("Set-Cookie") == ["a", "b"]
    assert "x-a" in headers
    assert len(headers) == 2


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bytes=0-9", (0, 10)),
        ("bytes=5-", (5, 100)),
        ("bytes=-10", (90, 100)),
        ("bytes=0-500", (0, 100)),
        ("bytes=100-", "unsatisfiable"),
        ("bytes=0-1,5-6", None),
        ("items=0-1", None),
        ("bytes=-", None),
    ],
)
def test_range_parsing(value: str, expected: object) -> None:
    assert _parse_range(value, 100) == expected


# -- requests in flight: EOF, shutdown, timers, bounds (issues 9 and 10) -------

GATE = threading.Event()


def slow(request: reactorkit.Request) -> str:
    assert GATE.wait(5)
    return "slow"


def blocking_handler(**options: object) -> tuple[HttpHandler, FakeConnection]:
    GATE.clear()
    routes = [*ROUTES, reactorkit.Route(method="GET", path="/slow", function=slow, blocking=True)]
    site = HttpSite.build(
        HttpOptions(**options),  # type: ignore[arg-type]
        [reactorkit.Contribution(r, "test", None) for r in routes],
    )
    h = HttpHandler(site)
    return h, FakeConnection(h)


THREE = (
    b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
    b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n"
    b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
)


def test_eof_behind_a_blocking_request_answers_all_three_in_order_then_closes() -> None:
    _, conn = blocking_handler()
    conn.feed(THREE)
    conn.feed_eof()
    assert not conn.is_closing()
    GATE.set()
    run_until(conn.reactor, conn.is_closing)
    assert bodies(conn.value()) == [b"slow", b"GET ", b"POST hi"]


def test_shutdown_behind_a_blocking_request_answers_all_three_the_last_with_close() -> None:
    h, conn = blocking_handler()
    conn.feed(THREE)
    h.shutdown_requested()
    assert not conn.is_closing()
    assert not conn.is_reading  # nothing new is read once shutdown began
    GATE.set()
    run_until(conn.reactor, conn.is_closing)
    out = conn.value()
    assert bodies(out) == [b"slow", b"GET ", b"POST hi"]
    assert out.count(b"connection: close") == 1
    assert out.rindex(b"connection: close") > out.rindex(b"GET ")


def test_shutdown_finishes_a_request_still_arriving() -> None:
    h, conn = blocking_handler()
    conn.feed(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab")
    h.shutdown_requested()
    assert conn.is_reading
    conn.feed(b"cd")
    assert bodies(conn.value()) == [b"POST abcd"]
    assert b"connection: close" in conn.value()
    assert conn.is_closing()


def test_keepalive_timer_spares_a_body_arriving_behind_a_blocking_request() -> None:
    _, conn = blocking_handler(keepalive_timeout=1.0, header_timeout=1.0)
    conn.feed(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    conn.feed(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab")
    conn.advance(5.0)  # both deadlines long past, the body half-sent
    assert not conn.is_closing()
    conn.feed(b"cd")
    GATE.set()
    run_until(conn.reactor, lambda: b"POST abcd" in conn.value())
    assert bodies(conn.value()) == [b"slow", b"POST abcd"]
    assert not conn.is_closing()
    conn.advance(1.5)  # now idle: the keep-alive timer applies
    assert conn.is_closing()


def test_max_pending_pauses_reading_and_answering_resumes_it() -> None:
    _, conn = blocking_handler(max_pending=2)
    conn.feed(
        b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n" + b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n" * 5
    )
    assert not conn.is_reading
    GATE.set()
    run_until(conn.reactor, lambda: len(bodies(conn.value())) == 6)
    assert conn.is_reading


def test_a_client_that_does_not_read_gets_one_response_past_high_water() -> None:
    h, conn = handler()
    conn.block_writes()
    request = b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n"
    for _ in range(20_000):
        if not conn.is_reading:
            break
        conn.feed(request * 50)
    assert not conn.is_reading
    one_response = len(_one_response())
    assert conn.get_write_buffer_size() <= conn.high_water + one_response
    assert h._core.buffered <= len(request) * 50  # at most the last read, unparsed
    assert len(h._out.queue) <= h.options.max_pending
    conn.drain()
    answered = len(bodies(conn.value()))
    assert answered > 0
    assert conn.is_reading


def _one_response() -> bytes:
    _, conn = handler()
    conn.feed(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
    return conn.value()


def test_expect_100_continue_waits_for_the_requests_turn() -> None:
    _, conn = blocking_handler()
    conn.feed(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    conn.feed(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n"
    )
    assert b"100 Continue" not in conn.value()
    GATE.set()
    run_until(conn.reactor, lambda: b"100 Continue" in conn.value())
    assert conn.value().index(b"slow") < conn.value().index(b"100 Continue")
    conn.feed(b"ok")
    assert bodies(conn.value().replace(b"HTTP/1.1 100 Continue\r\n\r\n", b"")) == [
        b"slow",
        b"POST ok",
    ]


def test_shutdown_of_an_idle_connection_answers_a_request_arriving_in_the_grace() -> None:
    # An idle keep-alive connection closed at once would race the client's
    # next request (issue 12: reload under keep-alive load lost requests).
    h, conn = handler(drain_grace=1.0)
    conn.feed(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
    conn.take()
    h.shutdown_requested()
    assert not conn.is_closing()
    assert conn.is_reading
    conn.advance(0.5)
    conn.feed(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
    out = conn.take()
    assert out.startswith(b"HTTP/1.1 200")
    assert b"connection: close" in out.lower()
    assert conn.is_closing()


def test_shutdown_closes_an_idle_connection_when_the_grace_ends() -> None:
    h, conn = handler(drain_grace=1.0)
    h.shutdown_requested()
    conn.advance(0.9)
    assert not conn.is_closing()
    conn.advance(0.2)
    assert conn.is_closing()
    assert conn.take() == b""


def test_drain_grace_zero_closes_an_idle_connection_at_shutdown() -> None:
    h, conn = handler(drain_grace=0)
    h.shutdown_requested()
    assert conn.is_closing()


def test_request_scheme_follows_the_connection() -> None:
    seen: list[str] = []
    routes = [reactorkit.Route(method="GET", path="/s", function=lambda r: seen.append(r.scheme))]
    for is_tls in (False, True):
        site = HttpSite.build(
            HttpOptions(), [reactorkit.Contribution(r, "t", None) for r in routes]
        )
        h = HttpHandler(site)
        conn = FakeConnection(h, is_tls=is_tls)
        conn.feed(b"GET /s HTTP/1.1\r\nHost: x\r\n\r\n")
    assert seen == ["http", "https"]


def test_the_header_clock_does_not_run_while_the_server_holds_reading() -> None:
    # Issue 9 item 6 meets the header deadline: reading paused for flow
    # control is the server's doing; a client that reads late must not get
    # a 408 for a request head the server itself stopped reading.
    _h, conn = handler(header_timeout=1.0)
    conn.block_writes()
    request = b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n"
    stream = request * 20_000
    fed = 0
    while conn.is_reading:
        assert fed < len(stream), "the handler never stopped reading"
        conn.feed(stream[fed : fed + 1000])  # 1000 is no multiple of a request
        fed += 1000
    conn.advance(5.0)  # the client is slow to read, far past header_timeout
    conn.drain()
    run_until(conn.reactor, lambda: conn.is_reading or conn.is_closing())
    assert b" 408 " not in conn.value()
    assert not conn.is_closing()
    conn.feed(stream[fed : fed + len(request)])  # completes the request cut in two
    complete = (fed + len(request)) // len(request)
    for _ in range(1000):
        if len(bodies(conn.value())) == complete or not conn.is_reading:
            break
        conn.drain()
        conn.settle()
    conn.drain()
    run_until(conn.reactor, lambda: len(bodies(conn.value())) >= complete)
    assert b" 408 " not in conn.value()
    assert len(bodies(conn.value())) == complete


def test_a_client_pipelining_longer_than_header_timeout_gets_no_408() -> None:
    # Every read ends inside a head, so the handler never sees another state
    # between reads: the header clock must still start anew for each head.
    _h, conn = handler(header_timeout=1.0)
    request = b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n"
    stream = request * 200
    step = 3 * len(request) + 7  # three requests and the start of a fourth
    fed = 0
    while fed + step <= len(stream):
        conn.feed(stream[fed : fed + step])
        fed += step
        conn.advance(0.3)  # 62 reads, 18 s in all: far past header_timeout
    assert b" 408 " not in conn.value()
    assert len(bodies(conn.value())) == fed // len(request)
    assert not conn.is_closing()
    conn.feed(stream[fed : fed + len(request) - fed % len(request)])
    conn.feed(request[:25])  # a head that stalls does have its deadline
    conn.advance(1.5)
    conn.settle()
    assert b" 408 " in conn.value()
