"""The sans-IO HTTP/1.1 core without sockets: events at every split, states, send() checks."""

from __future__ import annotations

import array
import itertools
from http import HTTPStatus
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reactorkit
from reactorkit import http11
from reactorkit.http11 import NEED_DATA, Limits, ServerConnection, State

LIMITS = Limits(max_request_line=200, max_header_size=400, max_headers=10, max_body_size=1000)


def summary(event: Any) -> tuple[Any, ...]:
    """An event as comparable data (Data pieces are merged by :func:`pull_all`)."""
    if isinstance(event, http11.Request):
        return ("request", event.method, event.path, event.query, event.host, event.keep_alive)
    if isinstance(event, http11.Data):
        return ("data", event.data)
    if isinstance(event, http11.EndOfMessage):
        return ("end", event.trailers)
    if isinstance(event, http11.Error):
        return ("error", event.status)
    return ("closed",)


def pull_all(conn: ServerConnection, out: list[tuple[Any, ...]]) -> None:
    while True:
        event = conn.next_event()
        if event is NEED_DATA:
            return
        item = summary(event)
        if item[0] == "data" and out and out[-1][0] == "data":
            out[-1] = ("data", out[-1][1] + item[1])
        else:
            out.append(item)
        if item[0] in ("error", "closed"):
            return


def parse(pieces: list[bytes], *, eof: bool = True) -> list[tuple[Any, ...]]:
    conn = ServerConnection(LIMITS)
    out: list[tuple[Any, ...]] = []
    for piece in pieces:
        conn.feed(piece)
        pull_all(conn, out)
    if eof:
        conn.feed_eof()
        pull_all(conn, out)
    return out


def request(method: str = "GET", path: str = "/", host: str = "x", keep: bool = True) -> Any:
    return ("request", method, path, "", host, keep)


CASES: dict[str, tuple[bytes, list[tuple[Any, ...]]]] = {
    "get": (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", [request(), ("end", ()), ("closed",)]),
    "pipelined, with a leading empty line": (
        b"\r\nGET /a?q=1 HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
        [
            ("request", "GET", "/a", "q=1", "x", True),
            ("end", ()),
            request(path="/b"),
            ("end", ()),
            ("closed",),
        ],
    ),
    "content-length body": (
        b"POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        [request("POST", "/p"), ("data", b"hello"), ("end", ()), ("closed",)],
    ),
    "chunked with extensions and BWS (RFC 9112 7.1.1) and a trailer": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5; a=b\r\nhello\r\n3 ;x\r\nabc\r\n0\r\nHost: evil\r\n\r\n",
        [request("POST"), ("data", b"helloabc"), ("end", (("Host", "evil"),)), ("closed",)],
    ),
    "upgrade ignored, its body stays a body (RFC 9110 7.8)": (
        b"POST / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: h2c\r\n"
        b"Content-Length: 26\r\n\r\nGET /smuggled HTTP/1.1\r\n\r\n",
        [request("POST"), ("data", b"GET /smuggled HTTP/1.1\r\n\r\n"), ("end", ()), ("closed",)],
    ),
    "absolute-form (RFC 9112 3.2.2)": (
        b"GET http://example.org?x=1 HTTP/1.1\r\nHost: other\r\n\r\n",
        [("request", "GET", "/", "x=1", "example.org", True), ("end", ()), ("closed",)],
    ),
    "connection close stops reading": (
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /canary HTTP/1.1\r\n\r\n",
        [request(keep=False), ("end", ()), ("closed",)],
    ),
    "http/1.0 without host": (
        b"GET / HTTP/1.0\r\n\r\n",
        [request(host="", keep=False), ("end", ()), ("closed",)],
    ),
    "trailing whitespace is not part of a field value (RFC 9110 5.5)": (
        b"GET / HTTP/1.1\r\nHost: x \t\r\nConnection: close \r\n\r\n",
        [request(keep=False), ("end", ()), ("closed",)],
    ),
    "no host": (b"GET / HTTP/1.1\r\n\r\n", [("error", 400)]),
    "two hosts": (b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", [("error", 400)]),
    "bad host": (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", [("error", 400)]),
    "host port too big": (b"GET / HTTP/1.1\r\nHost: a:99999\r\n\r\n", [("error", 400)]),
    "connect": (b"CONNECT host:443 HTTP/1.1\r\nHost: host:443\r\n\r\n", [("error", 501)]),
    "absolute-form port too big": (
        b"GET http://x:99999/ HTTP/1.1\r\nHost: x\r\n\r\n",
        [("error", 400)],
    ),
    "file scheme": (b"GET file:///etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", [("error", 400)]),
    "asterisk on GET": (b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", [("error", 400)]),
    "rtsp": (b"GET / RTSP/1.0\r\nHost: x\r\n\r\n", [("error", 400)]),
    "http/2.0": (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", [("error", 505)]),
    "bare LF": (b"GET / HTTP/1.1\nHost: x\n\n", [("error", 400)]),
    "bare CR": (b"GET / HTTP/1.1\r\nHost: x\rY: z\r\n\r\n", [("error", 400)]),
    "obs-fold": (b"GET / HTTP/1.1\r\nHost: x\r\nA: b\r\n  c\r\n\r\n", [("error", 400)]),
    "CL and TE": (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        [("error", 400)],
    ),
    "duplicate CL": (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\na",
        [("error", 400)],
    ),
    "gzip, chunked": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        [("error", 501)],
    ),
    "TE on HTTP/1.0": (
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        [("error", 400)],
    ),
    "body over the limit, declared": (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n",
        [("error", 413)],
    ),
    "chunk size over the limit, refused at its line": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nfffff\r\n",
        [request("POST"), ("error", 413)],
    ),
    "chunk data without CRLF": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n0\r\n\r\n",
        [request("POST"), ("data", b"a"), ("error", 400)],
    ),
    "expectation other than 100-continue": (
        b"GET / HTTP/1.1\r\nHost: x\r\nExpect: magic\r\n\r\n",
        [("error", 417)],
    ),
    "request line padded past its limit with spaces": (
        b"GET" + b" " * 300 + b"/ HTTP/1.1\r\nHost: x\r\n\r\n",
        [("error", 414)],
    ),
    "target too long": (b"GET /" + b"a" * 300 + b" HTTP/1.1\r\nHost: x\r\n\r\n", [("error", 414)]),
    "header block too large": (
        b"GET / HTTP/1.1\r\nHost: x\r\nA: " + b"b" * 500 + b"\r\n\r\n",
        [("error", 431)],
    ),
    "too many fields": (
        b"GET / HTTP/1.1\r\nHost: x\r\n" + b"A: b\r\n" * 11 + b"\r\n",
        [("error", 431)],
    ),
    "eof mid-head": (b"GET / HTTP/1.1\r\nHost", [("error", 400)]),
    # Smuggling classes, each refused alike in one read (the fast path) and in pieces.
    "signed CL": (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\na", [("error", 400)]),
    "CL list": (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 1\r\n\r\na", [("error", 400)]),
    "TE xchunked": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n",
        [("error", 400)],
    ),
    "TE chunked, chunked": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
        [("error", 400)],
    ),
    "TE with a space before the colon": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n",
        [("error", 400)],
    ),
    "TE folded (obs-fold)": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n",
        [("error", 400)],
    ),
    "NUL in a field": (b"GET / HTTP/1.1\r\nHost: x\r\nA: b\x00c\r\n\r\n", [("error", 400)]),
    "bare LF ends the head, a request behind": (
        b"GET / HTTP/1.1\r\nHost: x\n\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        [("error", 400)],
    ),
    "CR ends the request line": (b"GET / HTTP/1.1\rHost: x\r\n\r\n", [("error", 400)]),
    "HTTP/2 preface": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", [("error", 400)]),
    "http/1.2": (b"GET / HTTP/1.2\r\nHost: x\r\n\r\n", [("error", 505)]),
    "http/0.9": (b"GET /\r\n\r\n", [("error", 400)]),
    "leading bare LF": (b"\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", [("error", 400)]),
    "expect 100-continue without a body": (
        b"GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
        [request(), ("end", ()), ("closed",)],
    ),
}


@pytest.mark.parametrize("name", CASES)
def test_every_two_piece_split_gives_the_same_events(name: str) -> None:
    data, expected = CASES[name]
    assert parse([data]) == expected
    for cut in range(1, len(data)):
        assert parse([data[:cut], data[cut:]]) == expected, f"split at {cut}"


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(sorted(CASES)),
    cuts=st.lists(st.integers(min_value=0, max_value=700), max_size=20),
)
def test_any_split_gives_the_same_events(name: str, cuts: list[int]) -> None:
    data, expected = CASES[name]
    points = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    assert parse([data[a:b] for a, b in itertools.pairwise(points)]) == expected


def test_one_byte_at_a_time_is_linear_in_the_head_size() -> None:
    conn = ServerConnection(Limits(max_header_size=60000))
    head = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"A: b\r\n" * 50 + b"\r\n"
    out: list[tuple[Any, ...]] = []
    for byte in head:
        conn.feed(bytes([byte]))
        pull_all(conn, out)
    assert out == [request(), ("end", ())]


def test_states_follow_the_request_and_the_response() -> None:
    conn = ServerConnection(LIMITS)
    assert (conn.their_state, conn.our_state) == (State.IDLE, State.IDLE)
    conn.feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\na")
    assert isinstance(conn.next_event(), http11.Request)
    assert conn.their_state is State.BODY
    assert conn.pending == 1
    conn.feed(b"b")  # the body is read as it is pulled
    assert conn.next_event() == http11.Data(b"ab")
    assert isinstance(conn.next_event(), http11.EndOfMessage)
    assert conn.their_state is State.IDLE
    conn.send(reactorkit.Response(body="x"))
    assert (conn.pending, conn.our_state) == (0, State.IDLE)
    conn.send_continue()  # nothing owed
    with pytest.raises(reactorkit.HttpProtocolError, match="no request to answer"):
        conn.send(reactorkit.Response())


def feed_one(data: bytes, limits: Limits = LIMITS) -> ServerConnection:
    conn = ServerConnection(limits)
    conn.feed(data)
    pull_all(conn, [])
    return conn


@pytest.mark.parametrize("value", ["a\r\nX-Injected: 1", "a\nb", "a\x00b", "a\rb"])
def test_send_refuses_response_splitting(value: str) -> None:
    conn = feed_one(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    with pytest.raises(reactorkit.HttpProtocolError):
        conn.send(reactorkit.Response(headers=[("X-A", value)]))
    assert conn.pending == 1  # nothing was sent: the caller answers 500 instead
    assert b"500" in conn.send(reactorkit.Response(status=500))


def test_send_refuses_a_header_name_that_is_not_a_token() -> None:
    conn = feed_one(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    with pytest.raises(reactorkit.HttpProtocolError, match="not a token"):
        conn.send(reactorkit.Response(headers=[("X A", "1")]))


def test_the_servers_own_fields_win_over_a_routes() -> None:
    conn = feed_one(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    out = conn.send(
        reactorkit.Response(
            body=b"abc", headers=[("Content-Length", "999"), ("Connection", "upgrade")]
        )
    )
    head = out.lower()
    assert head.count(b"content-length") == 1
    assert b"content-length: 3\r\n" in head
    assert b"connection" not in head


def test_head_gets_the_length_without_the_body() -> None:
    conn = feed_one(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    out = conn.send(reactorkit.Response(body=b"hello"))
    assert out.endswith(b"content-length: 5\r\n\r\n")


def test_http_10_keep_alive_is_echoed_and_close_ends_reading() -> None:
    conn = feed_one(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert b"connection: keep-alive\r\n" in conn.send(reactorkit.Response())
    assert conn.our_state is State.IDLE
    out = conn.send(reactorkit.Response(), close=True) if conn.pending else b""
    assert out == b""  # nothing pending: the caller must not send
    conn.feed(b"GET / HTTP/1.0\r\n\r\n")
    pull_all(conn, [])
    assert b"connection: close\r\n" in conn.send(reactorkit.Response())
    assert (conn.our_state, conn.their_state) == (State.MUST_CLOSE, State.MUST_CLOSE)


def test_streamed_body_is_chunked_on_11_and_close_delimited_on_10() -> None:
    conn = feed_one(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    head = conn.send(reactorkit.Response(body=iter([b"ab"])))
    assert b"transfer-encoding: chunked" in head
    assert conn.our_state is State.BODY
    assert conn.send_data(b"ab") == b"2\r\nab\r\n"
    assert conn.send_end() == b"0\r\n\r\n"
    assert conn.our_state is State.IDLE
    old = feed_one(b"GET / HTTP/1.0\r\n\r\n")
    head = old.send(reactorkit.Response(body=iter([b"ab"])))
    assert b"connection: close" in head
    assert old.send_data(b"ab") == b"ab"
    assert old.send_end() == b""
    assert old.our_state is State.MUST_CLOSE


def test_a_memoryview_body_is_framed_by_its_bytes_not_its_items() -> None:
    # len() of a memoryview counts items: 2 for two 4-byte ints, 8 bytes sent.
    items = memoryview(array.array("i", [0x41414141, 0x42424242]))
    conn = feed_one(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    out = conn.send(reactorkit.Response(body=items))
    assert out.endswith(b"content-length: 8\r\n\r\nAAAABBBB")
    conn = feed_one(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    conn.send(reactorkit.Response(body=iter([items])))
    assert conn.send_data(items) == b"8\r\nAAAABBBB\r\n"
    conn = feed_one(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    conn.send(reactorkit.Response(body=iter([]), headers=[("Content-Length", "2")]))
    with pytest.raises(reactorkit.HttpProtocolError, match="longer"):
        conn.send_data(items)


def test_a_strided_or_typed_memoryview_is_sent_as_plain_bytes() -> None:
    strided = memoryview(b"aXbXc")[::2]  # not contiguous: b"".join() refuses it
    conn = feed_one(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert conn.send(reactorkit.Response(body=strided)).endswith(b"content-length: 3\r\n\r\nabc")
    # Close-delimited (HTTP/1.0): the chunk goes out as given, so it must be
    # bytes a transport can slice by len() after a partial send.
    old = feed_one(b"GET / HTTP/1.0\r\n\r\n")
    old.send(reactorkit.Response(body=iter([])))
    for view in (strided, memoryview(array.array("i", [0x41414141]))):
        data = old.send_data(view)
        assert bytes(data) == view.tobytes()
        assert len(data) == view.nbytes


def test_a_streamed_body_must_match_its_declared_length() -> None:
    conn = feed_one(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    conn.send(reactorkit.Response(body=iter([]), headers=[("Content-Length", "4")]))
    conn.send_data(b"abc")
    with pytest.raises(reactorkit.HttpProtocolError, match="shorter"):
        conn.send_end()
    conn = feed_one(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    conn.send(reactorkit.Response(body=iter([]), headers=[("Content-Length", "2")]))
    with pytest.raises(reactorkit.HttpProtocolError, match="longer"):
        conn.send_data(b"abc")


def test_100_continue_only_when_the_request_is_next_and_11() -> None:
    conn = feed_one(
        b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n"
    )
    assert conn.send_continue() == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert conn.send_continue() == b""  # once
    old = feed_one(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")
    assert old.send_continue() == b""  # RFC 9110 10.1.1: never to HTTP/1.0
    behind = feed_one(
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n"
    )
    assert behind.send_continue() == b""  # the GET is not answered yet
    behind.send(reactorkit.Response())
    assert behind.send_continue() == b"HTTP/1.1 100 Continue\r\n\r\n"


@pytest.mark.parametrize("order", ["expect first", "length first"])
def test_100_continue_is_not_sent_when_the_body_is_too_large(order: str) -> None:
    fields = [b"Expect: 100-continue\r\n", b"Content-Length: 5000\r\n"]
    if order == "length first":
        fields.reverse()
    conn = ServerConnection(LIMITS)
    conn.feed(b"POST / HTTP/1.1\r\nHost: x\r\n" + b"".join(fields) + b"\r\n")
    event = conn.next_event()
    assert event == http11.Error(413, "request body too large (limit 1000 bytes)")
    assert conn.send_continue() == b""


def test_after_an_error_nothing_more_is_parsed() -> None:
    conn = ServerConnection(LIMITS)
    conn.feed(b"GET / HTTP/1.1\r\n\r\nGET /canary HTTP/1.1\r\nHost: x\r\n\r\n")
    assert isinstance(conn.next_event(), http11.Error)
    conn.feed(b"GET /canary HTTP/1.1\r\nHost: x\r\n\r\n")
    assert conn.next_event() is NEED_DATA
    assert conn.their_state is State.ERROR
    assert b"connection: close" in conn.send(reactorkit.Response(status=400))


def test_buffer_holds_at_most_one_head_past_what_was_pulled() -> None:
    conn = ServerConnection(LIMITS)
    conn.feed(b"GET / HTTP/1.1\r\nHost: x\r\n" + b"A: b\r\n" * 5)
    assert conn.next_event() is NEED_DATA
    assert conn.buffered < LIMITS.max_request_line + LIMITS.max_header_size
    conn.feed(b"B: " + b"c" * 500)
    assert conn.next_event() == http11.Error(431, "request header fields too large")
    assert conn.buffered == 0


@pytest.mark.parametrize("name", CASES)
def test_receive_request_gives_the_same_events_as_feed_and_next_event(name: str) -> None:
    # The fast path returns a whole bodyless request at once (its END
    # implied); anything else is only fed, and next_event() goes on as usual.
    data, expected = CASES[name]
    conn = ServerConnection(LIMITS)
    out: list[tuple[Any, ...]] = []
    request = conn.receive_request(data)
    if request is not None:
        out += [summary(request), ("end", ())]
        assert conn.pending == 1
    pull_all(conn, out)
    conn.feed_eof()
    pull_all(conn, out)
    assert out == expected


def test_receive_request_answers_keep_alive_requests_one_read_each() -> None:
    conn = ServerConnection(LIMITS)
    for _ in range(3):
        request = conn.receive_request(b"GET /a?b=c HTTP/1.1\r\nHost: x\r\n\r\n")
        assert request is not None
        assert (request.path, request.query, conn.their_state) == ("/a", "b=c", State.IDLE)
        out = conn.send(reactorkit.Response(body=b"ok", content_type="text/plain"), date=b"")
        assert out == (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"
        )
    body = conn.receive_request(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\n")
    assert body is None  # a body follows: the events say so
    assert isinstance(conn.next_event(), http11.Request)


def test_a_str_body_utf8_cannot_encode_is_refused_not_raised() -> None:
    conn = feed_one(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    with pytest.raises(reactorkit.HttpProtocolError, match="UTF-8 cannot encode"):
        conn.send(reactorkit.Response(body="lone surrogate \udc80"))
    assert conn.pending == 1  # nothing was sent: the caller answers 500 instead


def test_a_streamed_chunk_that_is_not_bytes_is_refused() -> None:
    conn = feed_one(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    conn.send(reactorkit.Response(body=iter([])))
    with pytest.raises(reactorkit.HttpProtocolError, match="must be bytes, got a str"):
        conn.send_data("text")  # type: ignore[arg-type]


def test_a_float_status_is_refused_even_when_its_int_is_cached() -> None:
    conn = ServerConnection(LIMITS)
    for status in (200, 200.0):
        assert conn.receive_request(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") is not None
        if status == 200:
            conn.send(reactorkit.Response(body=b"ok", content_type="text/plain"))
            continue
        with pytest.raises(reactorkit.HttpProtocolError, match="not a final status"):
            conn.send(reactorkit.Response(status=status, body=b"ok", content_type="text/plain"))  # type: ignore[arg-type]


@pytest.mark.parametrize("keep_alive", [True, False])
def test_an_http_status_member_is_sent_as_its_number(keep_alive: bool) -> None:
    # HTTPStatus.CREATED is an int: routes use it. bool is an int too, and not a status.
    head = b"GET / HTTP/1.1\r\nHost: x\r\n%s\r\n" % (
        b"" if keep_alive else b"Connection: close\r\n"
    )
    conn = ServerConnection(LIMITS)
    assert conn.receive_request(head) is not None
    out = conn.send(reactorkit.Response(status=HTTPStatus.CREATED, body=b"ok"), date=b"")
    assert out.startswith(b"HTTP/1.1 201 Created\r\n")
    conn = ServerConnection(LIMITS)
    assert conn.receive_request(head) is not None
    with pytest.raises(reactorkit.HttpProtocolError, match="not a final status"):
        conn.send(reactorkit.Response(status=True, body=b"ok"), date=b"")
