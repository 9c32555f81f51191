"""simple_head, the one-regex check of a simple head: it matches only what llhttp reads alike."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from reactorkit import http11
from reactorkit.http11 import Limits, ServerConnection
from reactorkit.http11.head import simple_head
from reactorkit.web import Headers

LIMITS = Limits(max_request_line=300, max_header_size=400, max_headers=6, max_body_size=1000)


def full(event: Any) -> tuple[Any, ...]:
    """Every attribute of an event: fields included, so a difference in any one shows."""
    if isinstance(event, http11.Request):
        return (
            "request",
            event.method,
            event.target,
            event.path,
            event.query,
            event.host,
            event.headers,
            event.http_version,
            event.keep_alive,
            event.expects_continue,
        )
    if isinstance(event, http11.Error):
        return ("error", event.status, event.reason)
    return (type(event).__name__,)


def events(conn: ServerConnection) -> list[tuple[Any, ...]]:
    out = []
    while (event := conn.next_event()) is not http11.NEED_DATA:
        out.append(full(event))
        if isinstance(event, (http11.Error, http11.ConnectionClosed)):
            break
    return out


def by_llhttp(data: bytes, limits: Limits = LIMITS) -> list[tuple[Any, ...]]:
    """The events of ``data`` fed in two pieces: llhttp reads the head, never simple_head."""
    conn = ServerConnection(limits)
    conn.feed(data[:1])
    out = events(conn)
    conn.feed(data[1:])
    out += events(conn)
    conn.feed_eof()
    return out + events(conn)


def in_one_read(data: bytes) -> list[tuple[Any, ...]]:
    """The events of ``data`` in one read: receive_request's fast path, then the events."""
    conn = ServerConnection(LIMITS)
    request = conn.receive_request(data)
    out = [] if request is None else [full(request), ("EndOfMessage",)]
    out += events(conn)
    conn.feed_eof()
    return out + events(conn)


# Mostly what a simple head is made of, with the bytes next to it that it must not take.
URI = "aZ09-._~!$&'()*+,;=:@/?%"
TEXT = st.text(
    alphabet=st.sampled_from(list(URI * 4 + '#|"<>{}^`[] \t\r\n\x00\x01\x7f\xff')),
    max_size=12,
)
NAMES = st.sampled_from(
    ["Host", "host", "Connection", "Expect", "Upgrade", "X-A", "accept", "User-Agent"] * 3
    + ["Content-Length", "transfer-encoding", "a b", "", "a:b", "Host ", "\x00"]
)
VALUES = st.one_of(
    st.sampled_from(
        [
            "x",
            "x:80",
            "close",
            "keep-alive",
            "Upgrade",
            "100-continue",
            "0",
            "",
            " x ",
            "\tx\t",
            "a b",
            "a  b\t",
            "a\x00b",
            "a\x7fb",
            "a\xffb",
            "[::1]:8080",
            "a, close",
            "x:99999",
        ]
    ),
    TEXT,
)
FIELD = st.tuples(NAMES, VALUES).map(lambda nv: f"{nv[0]}:{nv[1]}\r\n")
HEADS = st.builds(
    lambda method, target, version, host, fields, end: (
        f"{method} {target} {version}\r\n{host}{''.join(fields)}{end}".encode("latin-1")
    ),
    st.sampled_from(["GET", "HEAD"] * 4 + ["POST", "get", "OPTIONS", "CONNECT", "GET "]),
    st.one_of(
        st.sampled_from(["/", "/a?b=c", "*", "http://x/", "/a#f", "//", "/%zz"]),
        TEXT.map(lambda t: "/" + t),
    ),
    st.sampled_from(["HTTP/1.1"] * 4 + ["HTTP/1.0", "HTTP/1.2", "http/1.1", "HTTP/1.1 "]),
    st.sampled_from(["Host: x\r\n"] * 4 + ["", "Host:\r\n", "Host: a b\r\n"]),
    st.lists(FIELD, max_size=6),
    st.sampled_from(["\r\n"] * 4 + ["\n", "\r\n\r\n"]),
)


@settings(max_examples=500, deadline=None)
@given(HEADS)
@example(b"GET / HTTP/1.1\r\nHost: x\r\nA:\r\nB: \t \r\n\r\n")
@example(b"GET /" + b"a" * 290 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
@example(b"GET / HTTP/1.1\r\nHost: x\r\n" + b"A: b\r\n" * 6 + b"\r\n")
def test_one_read_refuses_and_reads_exactly_as_llhttp(data: bytes) -> None:
    assert in_one_read(data) == by_llhttp(data)


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",  # llhttp checks CL
        b"GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nA: b\r\n c\r\n\r\n",  # obs-fold
        b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\rA: b\r\n\r\n",
        b"GET / HTTP/1.1\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\x00\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: \xff\r\n\r\n",
        b"GET /#f HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
)
def test_what_simple_head_leaves_to_llhttp(data: bytes) -> None:
    assert simple_head(data) is None


def test_simple_head_reads_a_simple_head() -> None:
    data = b"HEAD /a?b=c HTTP/1.0\r\nHost: x:80 \r\nX-Y:\tp q\t\r\nE:\r\n\r\n"
    assert simple_head(data) == (
        "HEAD",
        "/a?b=c",
        "1.0",
        [("Host", "x:80"), ("X-Y", "p q"), ("E", "")],
    )


def test_simple_head_is_linear_on_whitespace_runs() -> None:
    # Possessive repeats: a value of alternating spaces and tabs, then a bad
    # byte, is refused in one pass, not after trying every split of the run.
    data = b"GET / HTTP/1.1\r\nA: x" + b" \t" * 20000 + b"\x01\r\n\r\n"
    assert simple_head(data) is None
    assert simple_head(b"GET / HTTP/1.1\r\nA: x" + b" \t" * 20000 + b"\r\n\r\n") is not None


def by_receive_simple(data: bytes) -> list[tuple[Any, ...]] | None:
    """The events of ``data`` as receive_simple reads it, or None if it took nothing."""
    conn = ServerConnection(LIMITS)
    taken = conn.receive_simple(data)
    if taken is None:
        # Nothing was taken: the connection is as new, and reads the data as ever.
        assert (conn.their_state, conn.buffered, conn.pending) == (http11.State.IDLE, 0, 0)
        assert in_one_read(data) == by_llhttp(data)
        return None
    method, path, query, headers, host, version = taken
    assert conn.pending == 1
    keep_alive = conn.their_state is not http11.State.MUST_CLOSE
    # The fields as llhttp gives them; the target is not returned (path and query are).
    target = by_llhttp(data)[0][2]
    request = (
        "request",
        method,
        target,
        path,
        query,
        host,
        headers.items_raw(),
        version,
        keep_alive,
        False,
    )
    conn.feed_eof()
    return [request, ("EndOfMessage",), *events(conn)]


@settings(max_examples=500, deadline=None)
@given(HEADS)
@example(b"GET / HTTP/1.1\r\nHost: x\r\nA:\r\nB: \t \r\n\r\n")
@example(b"GET /a? HTTP/1.0\r\nhOST: x\r\n\r\n")
@example(b"GET / HTTP/1.1\r\nHost: x\r\n" + b"A: b\r\n" * 6 + b"\r\n")
@example(b"GET / HTTP/1.1\r\nHost: x\r\n" + b"A: b\r\n" * 5 + b"\r\n")
def test_receive_simple_reads_exactly_as_llhttp(data: bytes) -> None:
    taken = by_receive_simple(data)
    if taken is not None:
        assert taken == by_llhttp(data)


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",
        b"HEAD /a%20b?c=d&e HTTP/1.1\r\nX: 1\r\nhost:  x:80 \t\r\nAccept: */*\r\n\r\n",
        b"GET /a? HTTP/1.0\r\nHost: [::1]:8080\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n" + b"A: b\r\n" * 5 + b"\r\n",  # max_headers fields
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n",  # browsers
        b"GET / HTTP/1.0\r\nconnection:\tKeep-Alive \r\nHost: x\r\n\r\n",  # ab -k
        b"HEAD / HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n",
    ],
)
def test_receive_simple_takes_the_commonest_heads(data: bytes) -> None:
    taken = by_receive_simple(data)
    assert taken is not None
    assert taken == by_llhttp(data)


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",  # Connection: read it
        b"GET / HTTP/1.0\r\nHost: x\r\nConnection: keep-alive, close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\n\r\n",
        b"GET / HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\nConnection: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x y\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",  # no Host
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\ntransfer-encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Host: y\r\nA: b\r\n c\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n" + b"A: b\r\n" * 6 + b"\r\n",  # one field too many
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
)
def test_what_receive_simple_leaves_to_the_rest(data: bytes) -> None:
    assert by_receive_simple(data) is None


def test_receive_simple_takes_nothing_behind_a_buffered_byte() -> None:
    conn = ServerConnection(LIMITS)
    conn.feed(b"G")
    assert conn.receive_simple(b"ET / HTTP/1.1\r\nHost: x\r\n\r\n") is None
    assert conn.buffered == 1


def test_the_fields_receive_simple_returns_read_like_any_headers() -> None:
    conn = ServerConnection(LIMITS)
    taken = conn.receive_simple(b"GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\na: 2\r\n\r\n")
    assert taken is not None
    headers = taken[3]
    assert isinstance(headers, Headers)
    assert repr(headers) == "Headers([('Host', 'x'), ('A', '1'), ('a', '2')])"
    assert headers["a"] == "1"
    assert headers.get_all("A") == ["1", "2"]
    assert "HOST" in headers
    assert list(headers) == ["host", "a"]
    headers.add("B", "3")
    assert headers.items_raw()[-1] == ("B", "3")
    assert headers["b"] == "3"
    with pytest.raises(AttributeError):
        headers.nothing  # noqa: B018  # only the fields are filled in on first use
