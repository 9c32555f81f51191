"""http-lite against RFC 9112/9110 on real sockets: each case's status, and no smuggled canary."""

from __future__ import annotations

import array
import contextlib
import http.client
import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import reactorkit
from reactorkit.testing import RunningServer, serve
from tests import test_http11 as http11_cases
from tests.helpers import connect, recv_until_closed

CANARY = b"GET /canary HTTP/1.1\r\nHost: x\r\n\r\n"
CANARY_BODY = b"CANARY-SERVED"
STREAMED_CHUNKS = 64  # of 64 KiB


def info(request: reactorkit.Request) -> reactorkit.Response:
    return reactorkit.json_response(
        {
            "path": request.path,
            "query": request.query_string,
            "host": request.host,
            "hosts": request.headers.get_all("host"),
            "trailers": request.trailers.items_raw(),
            "body": request.text(),
        }
    )


def split(request: reactorkit.Request) -> reactorkit.Response:
    return reactorkit.Response(body="x", headers=[("X-Next", "a\r\nX-Injected: 1")])


def nul(request: reactorkit.Request) -> reactorkit.Response:
    return reactorkit.Response(body="x", headers=[("X-Nul", "a\x00b")])


def streamed(request: reactorkit.Request) -> reactorkit.Response:
    # Past the socket buffers: the stream pauses and resumes on resume_writing.
    return reactorkit.Response(body=(b"%065535d\n" % i for i in range(STREAMED_CHUNKS)))


RELEASE = threading.Event()


def spin(request: reactorkit.Request) -> reactorkit.Response:
    """Empty chunks until /release runs (a careless long poll), 5 s at most."""

    def chunks() -> Iterator[bytes]:
        deadline = time.monotonic() + 5
        while not RELEASE.is_set():
            if time.monotonic() > deadline:
                yield b"gave up"
                return
            yield b""
        yield b"released"

    return reactorkit.Response(body=chunks())


def release(request: reactorkit.Request) -> str:
    RELEASE.set()
    return "set"


class BadIterable:
    """A body whose ``__iter__`` or ``close()`` raises, by ``how``."""

    def __init__(self, how: str) -> None:
        self.how = how

    def __iter__(self) -> Iterator[bytes]:
        if self.how == "iter-raises":
            raise RuntimeError("iter bug on purpose")
        if self.how == "iter-raises-typeerror":  # not "not iterable": it is
            raise TypeError("iter bug on purpose")
        return iter([b"abc"])

    def close(self) -> None:
        if self.how == "close-raises":
            raise RuntimeError("close bug on purpose")


def bad_stream(request: reactorkit.Request) -> reactorkit.Response:
    """A streamed body that goes wrong at its first chunk or later, by ``{how}``."""
    how = request.captures["how"]
    if how in ("iter-raises", "iter-raises-typeerror", "close-raises"):
        status = 204 if request.query_string == "204" else 200
        return reactorkit.Response(status=status, body=BadIterable(how))

    def chunks() -> Iterator[Any]:
        if how.endswith("-later"):
            yield b"first chunk\n"
        if how.startswith("str"):
            yield "a str, not bytes"
        raise RuntimeError("stream bug on purpose")

    return reactorkit.Response(body=chunks())


def own_length(request: reactorkit.Request) -> reactorkit.Response:
    return reactorkit.Response(body=b"abc", headers=[("Content-Length", "999")])


ODD: dict[str, Any] = {
    "status-100": {"status": 100},  # read as interim: the next response would answer this
    "status-101": {"status": 101},
    "status-0": {"status": 0},
    "status-1000": {"status": 1000},
    "header-int": {"headers": [("X-A", 1)]},
    "header-not-a-pair": {"headers": [("X-A",)]},
    "headers-not-iterable": {"headers": 5},
    "content-type-int": {"content_type": 5},
    "content-type-list": {"content_type": ["text/plain"]},  # unhashable: no cache lookup
    "content-type-crlf": {"content_type": "text/plain\r\nX-Evil: 1"},  # response splitting
    "body-int": {"body": 123},
}


def items(request: reactorkit.Request) -> reactorkit.Response:
    """A memoryview of 4-byte ints, whole or streamed: 8 bytes, 2 items."""
    body = memoryview(array.array("i", [0x41414141, 0x42424242]))
    if request.query_string == "strided":  # every other byte: not contiguous
        return reactorkit.Response(body=memoryview(b"AXAXAXAXBXBXBXBX")[::2])
    return reactorkit.Response(body=body if request.query_string == "whole" else iter([body]))


def unjsonable(request: reactorkit.Request) -> Any:
    """A dict or list that json cannot encode (ValueError, not TypeError)."""
    if request.captures["kind"] == "cycle":
        cycle: list[Any] = []
        cycle.append(cycle)
        return cycle
    if request.captures["kind"] == "nan":
        return {"ratio": float("nan")}  # RFC 8259 has no NaN: it is not sent as bare NaN
    return {"lone surrogate": "\ud800"}


def odd(request: reactorkit.Request) -> reactorkit.Response:
    if request.captures["kind"] == "headers-raising":

        def fields() -> Iterator[tuple[str, str]]:
            yield ("X-A", "b")
            raise LookupError("the headers generator failed")

        return reactorkit.Response(headers=fields())  # type: ignore[arg-type]
    return reactorkit.Response(**ODD[request.captures["kind"]])


class Routes:
    @reactorkit.hookimpl
    def reactorkit_http_routes(self) -> list[reactorkit.Route]:
        return [
            reactorkit.Route(method="GET", path="/canary", function=lambda r: CANARY_BODY),
            reactorkit.Route(method=("GET", "POST"), path="/info", function=info),
            reactorkit.Route(method="GET", path="/split", function=split),
            reactorkit.Route(method="GET", path="/nul", function=nul),
            reactorkit.Route(method="GET", path="/own-length", function=own_length),
            reactorkit.Route(method="GET", path="/streamed", function=streamed),
            reactorkit.Route(method="GET", path="/bad-stream/{how}", function=bad_stream),
            reactorkit.Route(method="GET", path="/odd/{kind}", function=odd),
            reactorkit.Route(method="GET", path="/items", function=items),
            reactorkit.Route(method="GET", path="/spin", function=spin),
            reactorkit.Route(method="GET", path="/release", function=release),
            reactorkit.Route(method="GET", path="/unjsonable/{kind}", function=unjsonable),
            reactorkit.Route(
                method="GET", path="/unjsonable-blocking/{kind}", function=unjsonable, blocking=True
            ),
            reactorkit.Route(
                method="GET", path="/odd-blocking/{kind}", function=odd, blocking=True
            ),
        ]


@pytest.fixture
def web() -> Iterator[RunningServer]:
    with serve(handler="http-lite", plugins=[Routes()], options={"max_body_size": 1000}) as srv:
        yield srv


def exchange(srv: RunningServer, data: bytes) -> bytes:
    """Send ``data`` then half-close; everything the server answers until it closes."""
    with connect(srv.address()) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        return recv_until_closed(sock)


def responses(reply: bytes) -> list[tuple[int, bytes, bytes]]:
    """(status, head, body) of each response, framed by Content-Length."""
    out = []
    while reply:
        head, _, rest = reply.partition(b"\r\n\r\n")
        match = re.match(rb"HTTP/1\.1 (\d{3}) ", head)
        assert match is not None, reply[:200]
        length = re.search(rb"\r\ncontent-length: (\d+)", head)
        size = int(length.group(1)) if length else len(rest)
        out.append((int(match.group(1)), head, rest[:size]))
        reply = rest[size:]
    return out


def statuses(reply: bytes) -> list[int]:
    return [status for status, _, _ in responses(reply)]


def no_errors_logged(caplog: Any) -> bool:
    return not [r for r in caplog.records if r.levelno >= logging.ERROR]


# -- refused: the status, "connection: close", and the canary never served -----

REFUSED = {
    # item 2: targets that used to crash the handler (RFC 9112 section 3.2)
    "connect-501": (b"CONNECT host:443 HTTP/1.1\r\nHost: host:443\r\n\r\n", 501),
    "absolute-form-bad-port-400": (b"GET http://x:99999/ HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "absolute-form-file-scheme-400": (b"GET file:///etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "absolute-form-userinfo-400": (b"GET http://u@x/ HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    # item 3: Host (RFC 9112 section 3.2)
    "missing-host-400": (b"GET /info HTTP/1.1\r\n\r\n", 400),
    "two-hosts-400": (b"GET /info HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    "invalid-host-400": (b"GET /info HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    "invalid-host-port-400": (b"GET /info HTTP/1.1\r\nHost: a:123456\r\n\r\n", 400),
    # item 4: HTTP/1.0 and 1.1 only (RFC 9112 section 2.3)
    "rtsp-400": (b"GET / RTSP/1.0\r\nHost: x\r\n\r\n", 400),
    "ice-400": (b"SOURCE / ICE/1.0\r\nHost: x\r\n\r\n", 400),
    "http-2.0-505": (b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    "http-1.2-505": (b"GET / HTTP/1.2\r\nHost: x\r\n\r\n", 505),
    "bare-lf-400": (b"GET / HTTP/1.1\nHost: x\n\n", 400),
    "bare-cr-400": (b"GET / HTTP/1.1\r\nHost: x\rX: y\r\n\r\n", 400),
    # item 7: the asterisk form is for OPTIONS only (RFC 9112 section 3.2.4)
    "get-asterisk-400": (b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    # smuggling classes (RFC 9112 sections 6.1, 6.3, 5.2)
    "cl-and-te-400": (
        b"POST /info HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "te-and-cl-400": (
        b"POST /info HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Length: 4\r\n\r\n0\r\n\r\n",
        400,
    ),
    "duplicate-cl-400": (
        b"POST /info HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\na",
        400,
    ),
    "differing-cl-400": (
        b"POST /info HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        400,
    ),
    "signed-cl-400": (b"POST /info HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\na", 400),
    "negative-cl-400": (b"POST /info HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
    "te-chunked-identity-400": (
        b"POST /info HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        400,
    ),
    "te-xchunked-400": (
        b"POST /info HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "te-space-before-colon-400": (
        b"POST /info HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "te-twice-400": (
        b"POST /info HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "te-gzip-chunked-501": (
        b"POST /info HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        501,
    ),
    "te-on-http-1.0-400": (
        b"POST /info HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "obs-fold-400": (b"GET /info HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n", 400),
    "nul-in-name-400": (b"GET /info HTTP/1.1\r\nHost: x\r\nX\x00Y: a\r\n\r\n", 400),
    "nul-in-value-400": (b"GET /info HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n", 400),
    "chunk-without-crlf-400": (
        b"POST /info HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n0\r\n\r\n",
        400,
    ),
    "chunk-bare-lf-400": (
        b"POST /info HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\na\r\n0\r\n\r\n",
        400,
    ),
    "chunk-size-not-hex-400": (
        b"POST /info HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        400,
    ),
    # limits
    "expect-magic-417": (b"GET /info HTTP/1.1\r\nHost: x\r\nExpect: magic\r\n\r\n", 417),
    "body-over-limit-413": (b"POST /info HTTP/1.1\r\nHost: x\r\nContent-Length: 1001\r\n\r\n", 413),
}


@pytest.mark.parametrize("name", REFUSED)
def test_refused_request_gets_its_status_and_the_canary_behind_it_is_never_served(
    web: RunningServer, name: str, caplog: Any
) -> None:
    data, status = REFUSED[name]
    reply = exchange(web, data + CANARY)
    assert statuses(reply) == [status], reply[:300]
    assert b"connection: close\r\n" in reply
    assert CANARY_BODY not in reply
    assert no_errors_logged(caplog)  # nothing a client sends makes a traceback


# -- accepted: how each is understood --------------------------------------


def answer(srv: RunningServer, data: bytes) -> tuple[list[int], Any]:
    """Statuses and the /info JSON of the first response, canary pipelined behind."""
    reply = exchange(srv, data + CANARY)
    first = responses(reply)[0][2]
    body = json.loads(first) if first.startswith(b"{") else None
    assert reply.endswith(CANARY_BODY), reply[-300:]  # a valid request leaves the stream in sync
    return statuses(reply), body


def test_upgrade_is_ignored_and_answered_once_rfc9110_7_8(web: RunningServer) -> None:
    codes, body = answer(
        web,
        b"GET /info HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    assert codes == [200, 200]  # /info, then the canary: no second answer to the upgrade
    assert body["path"] == "/info"


def test_upgrade_with_a_body_keeps_it_a_body(web: RunningServer) -> None:
    codes, body = answer(
        web,
        b"POST /info HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: h2c\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(CANARY), CANARY),
    )
    assert codes == [200, 200]
    assert body["body"] == CANARY.decode()


@pytest.mark.parametrize(
    ("target", "path", "query", "host"),
    [
        (b"http://example.org?x=1", "/", "x=1", "example.org"),
        (b"https://x", "/", "", "x"),
        (b"HTTP://example.org:8080/info?a=b", "/info", "a=b", "example.org:8080"),
    ],
)
def test_absolute_form_uses_its_path_and_authority_rfc9112_3_2_2(
    web: RunningServer, target: bytes, path: str, query: str, host: str
) -> None:
    reply = exchange(web, b"GET " + target + b" HTTP/1.1\r\nHost: ignored\r\n\r\n" + CANARY)
    assert statuses(reply)[-1] == 200
    assert reply.endswith(CANARY_BODY)
    if path == "/info":
        body = json.loads(responses(reply)[0][2])
        assert (body["path"], body["query"], body["host"]) == (path, query, host)
    else:
        assert statuses(reply) == [404, 200]  # no route for "/", and no crash


def test_trailer_fields_are_never_merged_into_headers_rfc9110_6_5(web: RunningServer) -> None:
    codes, body = answer(
        web,
        b"POST /info HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nhi\r\n0\r\nHost: evil\r\nX-Sum: 1\r\n\r\n",
    )
    assert codes == [200, 200]
    assert body["hosts"] == ["x"]
    assert body["trailers"] == [["Host", "evil"], ["X-Sum", "1"]]
    assert body["body"] == "hi"


def test_chunk_extensions_with_spaces_are_accepted_rfc9112_7_1_1(web: RunningServer) -> None:
    codes, body = answer(
        web,
        b"POST /info HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5; a=b\r\nhello\r\n1 ; c\r\n!\r\n0; end=1\r\n\r\n",
    )
    assert codes == [200, 200]
    assert body["body"] == "hello!"


def test_options_asterisk_is_200_with_the_servers_methods_rfc9110_9_3_7(
    web: RunningServer,
) -> None:
    reply = exchange(web, b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n" + CANARY)
    assert statuses(reply) == [200, 200]
    head = reply.split(b"\r\n\r\n", 1)[0].lower() + b"\r\n"
    assert b"\r\nallow: get, head, options, post\r\n" in head
    assert b"\r\ncontent-length: 0\r\n" in head


def test_trailing_whitespace_is_not_part_of_a_field_value_rfc9110_5_5(
    web: RunningServer,
) -> None:
    # One read (the fast path) and the same head pipelined (the general path).
    head = b"GET /info HTTP/1.1\r\nHost: x \t\r\n\r\n"
    for data in (head, head + head):
        replies = responses(exchange(web, data))
        assert [status for status, _, _ in replies] == [200] * (len(data) // len(head))
        for _, _, body in replies:
            assert json.loads(body)["hosts"] == ["x"]


def test_http_10_without_host_is_served(web: RunningServer) -> None:
    reply = exchange(web, b"GET /canary HTTP/1.0\r\n\r\n")
    assert statuses(reply) == [200]
    assert reply.endswith(CANARY_BODY)


# -- Expect: 100-continue (RFC 9110 section 10.1.1) ---------------------------


def test_no_100_continue_for_http_10(web: RunningServer) -> None:
    with connect(web.address()) as sock:
        sock.sendall(b"POST /info HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
        sock.sendall(b"ok")
        reply = recv_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 200 ")
    assert b"100 Continue" not in reply


@pytest.mark.parametrize("order", ["expect-first", "length-first"])
def test_too_large_body_gets_413_without_100_continue(web: RunningServer, order: str) -> None:
    fields = [b"Expect: 100-continue\r\n", b"Content-Length: 5000\r\n"]
    if order == "length-first":
        fields.reverse()
    with connect(web.address()) as sock:
        sock.sendall(b"POST /info HTTP/1.1\r\nHost: x\r\n" + b"".join(fields) + b"\r\n")
        reply = recv_until_closed(sock)  # no body sent: the answer must come anyway
    assert statuses(reply) == [413]
    assert b"100 Continue" not in reply


def test_chunk_size_over_the_limit_is_refused_at_its_line(web: RunningServer) -> None:
    with connect(web.address()) as sock:
        sock.sendall(
            b"POST /info HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nfffffff\r\n"
        )
        reply = recv_until_closed(sock)  # not one byte of chunk data was sent
    assert statuses(reply) == [413]


# -- responses: no splitting, one Content-Length -------------------------------


@pytest.mark.parametrize("path", [b"/split", b"/nul"])
def test_header_injection_from_a_route_is_a_500_never_written(
    web: RunningServer, path: bytes, caplog: Any
) -> None:
    reply = exchange(web, b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n" + CANARY)
    assert statuses(reply) == [500, 200]
    assert b"X-Injected" not in reply
    assert b"a\x00b" not in reply
    assert "refused to send the response" in caplog.text


def test_a_routes_content_length_is_not_sent_beside_the_servers(web: RunningServer) -> None:
    reply = exchange(web, b"GET /own-length HTTP/1.1\r\nHost: x\r\n\r\n" + CANARY)
    head = reply.split(b"\r\n\r\n", 1)[0].lower()
    assert head.count(b"content-length") == 1
    assert b"content-length: 3" in head
    assert statuses(reply) == [200, 200]


@pytest.mark.parametrize("kind", sorted(ODD))
def test_an_odd_response_to_a_lone_keep_alive_request_gets_a_500_too(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Alone in its read, with no access log, the request takes the shortest
    # path (receive_simple, send_common): the refusal must hold there too.
    options = {"max_body_size": 1000, "access_log": False}
    with (
        serve(handler="http-lite", plugins=[Routes()], options=options) as web,
        contextlib.closing(http.client.HTTPConnection(*web.address(), timeout=10)) as conn,
    ):
        conn.request("GET", f"/odd/{kind}")
        reply = conn.getresponse()
        assert reply.status == 500
        assert reply.getheader("X-Evil") is None
        reply.read()
        conn.request("GET", "/canary")
        canary = conn.getresponse()
        assert (canary.status, canary.read()) == (200, CANARY_BODY)
    assert "refused to send the response" in caplog.text
    assert "Traceback" not in caplog.text


@pytest.mark.parametrize("route", ["odd", "odd-blocking"])
@pytest.mark.parametrize("kind", sorted(ODD))
def test_a_route_returning_an_odd_response_gets_a_500_and_the_next_request_is_answered(
    web: RunningServer, route: str, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    request = b"GET /%s/%s HTTP/1.1\r\nHost: x\r\n\r\n" % (route.encode(), kind.encode())
    reply = exchange(web, request + CANARY)
    assert [r[0] for r in responses(reply)] == [500, 200], reply[:300]
    assert reply.endswith(CANARY_BODY)
    assert "refused to send the response" in caplog.text
    assert "Traceback" not in caplog.text


@pytest.mark.parametrize("route", ["odd", "odd-blocking"])
def test_headers_that_raise_while_iterated_are_a_500_with_the_cause_logged(
    web: RunningServer, route: str, caplog: pytest.LogCaptureFixture
) -> None:
    request = b"GET /%s/headers-raising HTTP/1.1\r\nHost: x\r\n\r\n" % route.encode()
    reply = exchange(web, request + CANARY)
    assert statuses(reply) == [500, 200], reply[:300]
    assert reply.endswith(CANARY_BODY)
    assert "refused to send the response" in caplog.text
    assert "LookupError: the headers generator failed" in caplog.text


@pytest.mark.parametrize("route", ["unjsonable", "unjsonable-blocking"])
@pytest.mark.parametrize("kind", ["cycle", "surrogate", "nan"])
def test_a_route_returning_what_json_cannot_encode_gets_a_500_naming_the_route(
    web: RunningServer, route: str, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    request = b"GET /%s/%s HTTP/1.1\r\nHost: x\r\n\r\n" % (route.encode(), kind.encode())
    reply = exchange(web, request + CANARY)
    assert statuses(reply) == [500, 200], reply[:300]
    assert reply.endswith(CANARY_BODY)
    assert f"route GET /{route}/{{kind}} (unjsonable) from plugin" in caplog.text


@pytest.mark.parametrize("how", ["whole", "strided", "streamed"])
def test_a_memoryview_body_is_framed_by_its_bytes_and_the_next_response_follows(
    web: RunningServer, how: str
) -> None:
    reply = exchange(web, b"GET /items?%s HTTP/1.1\r\nHost: x\r\n\r\n" % how.encode() + CANARY)
    first, _, rest = reply.partition(b"\r\n\r\n")
    if how != "streamed":
        assert b"\r\ncontent-length: 8" in first, reply
        framed = b"AAAABBBB"
    else:
        framed = b"8\r\nAAAABBBB\r\n0\r\n\r\n"
    assert rest.startswith(framed + b"HTTP/1.1 200 OK\r\n"), reply
    assert reply.endswith(CANARY_BODY)


def test_a_streamed_response_that_ends_the_connection_drops_the_pipeline_behind_it(
    web: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    # HTTP/1.0 keep-alive cannot be chunked: the close ends the body, so the
    # canary pipelined behind it is never answered (it was, as a 500 attempt
    # that raised out of resume_writing and was logged as a handler crash).
    reply = exchange(
        web, b"GET /streamed HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" + CANARY + CANARY
    )
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"connection: close" in head
    assert body == b"".join(b"%065535d\n" % i for i in range(STREAMED_CHUNKS))
    assert "Traceback" not in caplog.text
    assert "refused to send" not in caplog.text


@pytest.mark.parametrize("how", ["str-first", "raise-first"])
def test_a_stream_failing_at_its_first_chunk_is_a_500_before_any_head(
    web: RunningServer, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The first chunk is pulled before the head is written: a clean 500, the
    # route and its plugin in the log, and the connection goes on.
    reply = exchange(web, b"GET /bad-stream/%s HTTP/1.1\r\nHost: x\r\n\r\n" % how.encode() + CANARY)
    assert statuses(reply) == [500, 200]
    assert reply.endswith(CANARY_BODY)
    assert b"transfer-encoding" not in reply.lower()
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert (
        "refused to send the response of route GET /bad-stream/{how} (bad_stream) from plugin"
        in (record.getMessage())
    )


@pytest.mark.parametrize("name", sorted(http11_cases.CASES))
def test_one_read_and_behind_another_request_are_answered_alike(
    web: RunningServer, name: str
) -> None:
    # Alone, the bytes come in one read: ServerConnection.receive_request's
    # fast path. Behind a request in the same send, the general path parses
    # them. Both must answer (or refuse) them with the same statuses.
    data = http11_cases.CASES[name][0]
    alone = re.findall(rb"HTTP/1\.1 (\d{3}) ", exchange(web, data))
    behind = re.findall(rb"HTTP/1\.1 (\d{3}) ", exchange(web, CANARY + data))
    assert behind == [b"200", *alone]


def test_a_stream_of_empty_chunks_does_not_hold_the_loop(web: RunningServer) -> None:
    # A body that yields b"" while it waits never fills the socket, so it
    # never pauses: pumped in one go it would hold the loop, and /release,
    # on another connection, could not run until the stream gave up.
    RELEASE.clear()
    with connect(web.address()) as spinning:
        spinning.sendall(b"GET /spin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert exchange(web, b"GET /release HTTP/1.1\r\nHost: x\r\n\r\n").endswith(b"set")
        reply = recv_until_closed(spinning)
    assert reply.endswith(b"8\r\nreleased\r\n0\r\n\r\n"), reply[-100:]


@pytest.mark.parametrize("how", ["iter-raises", "iter-raises-typeerror"])
def test_a_body_whose_iter_raises_is_a_500_naming_the_route(
    web: RunningServer, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    request = b"GET /bad-stream/%s HTTP/1.1\r\nHost: x\r\n\r\n" % how.encode()
    reply = exchange(web, request + CANARY)
    assert statuses(reply) == [500, 200], reply[:300]
    assert reply.endswith(CANARY_BODY)
    assert "refused to send the response of route GET /bad-stream/{how}" in caplog.text
    assert "iter bug on purpose" in caplog.text


@pytest.mark.parametrize(
    "request_line", [b"HEAD /bad-stream/close-raises", b"GET /bad-stream/close-raises?204"]
)
def test_an_unsent_body_whose_close_raises_is_logged_and_the_answer_stands(
    web: RunningServer, request_line: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    # HEAD and 204 never send the body, only close it: its close() failing
    # is the route's bug, logged with it; the response and the pipeline stand.
    reply = exchange(web, request_line + b" HTTP/1.1\r\nHost: x\r\n\r\n" + CANARY)
    assert reply.startswith(b"HTTP/1.1 20")
    assert reply.endswith(CANARY_BODY), reply[:300]
    assert reply.count(b"HTTP/1.1 ") == 2
    assert "closing the body of route GET /bad-stream/{how} (bad_stream) from plugin" in caplog.text
    assert "close bug on purpose" in caplog.text


@pytest.mark.parametrize("how", ["str-later", "raise-later"])
def test_a_stream_failing_after_its_head_aborts_the_connection_and_names_the_route(
    web: RunningServer, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The head and the first chunk are gone: the body is cut (no last chunk,
    # so the client can tell), the pipeline behind is dropped, the log names
    # the route and its plugin.
    reply = exchange(web, b"GET /bad-stream/%s HTTP/1.1\r\nHost: x\r\n\r\n" % how.encode() + CANARY)
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"transfer-encoding: chunked" in head
    assert body == b"c\r\nfirst chunk\n\r\n"  # no "0\r\n\r\n": visibly truncated
    assert CANARY_BODY not in reply
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    message = record.getMessage()
    assert message.startswith("streaming the body of route GET /bad-stream/{how} (bad_stream)")
    assert "from plugin" in message


def _peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(f.read().split("VmHWM:")[1].split()[0])


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc")
def test_a_body_in_one_byte_chunks_costs_about_its_size_in_memory(
    run_server: Any, tmp_path: Path
) -> None:
    # 1 MiB (max_body_size) in 1-byte chunks was one bytes object per byte
    # in the core's events and the handler's list: ~42 MiB per connection.
    config = tmp_path / "c.toml"
    config.write_text('[[listen]]\nhandler = "http-lite"\nport = 0\n')
    server = run_server("run", str(config))
    host, _, port = server.wait_serving(1)["http-lite"].rpartition(":")
    size = 1024 * 1024 - 1024
    body = b"1\r\na\r\n" * size + b"0\r\n\r\n"
    head = b"POST /nowhere HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    before = _peak_rss_kib(server.proc.pid)
    with connect((host, int(port)), timeout=30) as sock:
        sock.sendall(head + body)
        sock.shutdown(socket.SHUT_WR)
        reply = recv_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 404 "), reply[:100]
    grown = _peak_rss_kib(server.proc.pid) - before
    assert grown < 12 * 1024, f"peak RSS grew {grown} KiB for a {size} byte body"


def test_a_body_dripped_slower_than_body_timeout_gets_408_and_a_close(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Slowloris on the body: each byte is activity (no idle timeout) and the
    # head is complete (no header_timeout); it held the connection forever.
    options = {"body_timeout": 0.5}
    with (
        serve(handler="http-lite", plugins=[Routes()], options=options) as srv,
        connect(srv.address()) as sock,
    ):
        sock.sendall(b"POST /info HTTP/1.1\r\nHost: x\r\nContent-Length: 200\r\n\r\nab")
        sock.settimeout(0.05)  # the drip's pace: one byte per wait for a reply
        reply = b""
        for _ in range(150):  # < 200 bytes: the body never completes
            with contextlib.suppress(OSError):
                sock.sendall(b"c")
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                continue
            except ConnectionResetError:
                break
            if not chunk:
                break
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 408 "), reply[:100]
    assert b"connection: close\r\n" in reply
    assert b"the body took too long" in reply
    assert "Traceback" not in caplog.text
