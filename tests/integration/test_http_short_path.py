"""http-lite's short path (access log off), real sockets: hostile reads, careless routes, limits."""

from __future__ import annotations

import copy
import pickle
import re
import socket
import threading
import time
from collections.abc import Iterator
from http import HTTPStatus
from typing import Any

import attrs
import pytest

import reactorkit
from reactorkit.testing import RunningServer, serve
from tests.helpers import connect, recv_until_closed

CANARY = b"GET /canary HTTP/1.1\r\nHost: x\r\n\r\n"
BIG = 64 * 1024
RELEASE = threading.Event()


class OwnInt(int):
    """An int whose own conversion fails."""

    def __int__(self) -> int:
        raise ValueError("a route's own __int__")


SAME = reactorkit.Response(body="0")


def same(request: reactorkit.Request) -> reactorkit.Response:
    """The same Response object every time, mutated: each answer is what it holds then."""
    SAME.body = str(int(SAME.body) + 1)
    return SAME


STATUSES: dict[str, Any] = {
    "created": HTTPStatus.CREATED,
    "no-content": HTTPStatus.NO_CONTENT,
    "own-int": OwnInt(202),
    "true": True,
    "float": 200.0,
    "continue": HTTPStatus.CONTINUE,
}


def status(request: reactorkit.Request) -> reactorkit.Response:
    return reactorkit.Response(status=STATUSES[request.captures["kind"]], body="s")


def mutate(request: reactorkit.Request) -> str:
    request.headers.add("X-Added", "1")
    request.query["added"] = ["1"]
    request.body = b"replaced"
    return (
        f"{request.headers.get_all('x-added')} {request.headers['host']} {request.query}"
        f" {request.body!r} {request.trailers.items_raw()} {request.captures}"
    )


def introspect(request: reactorkit.Request) -> str:
    evolved = attrs.evolve(request, listener=None)
    copied = copy.copy(request)
    thawed = pickle.loads(pickle.dumps(evolved))
    return " ".join(
        [
            repr(request).split(",")[0],
            repr(evolved.headers),
            str(copied.query),
            str(thawed.headers.items_raw()),
            str(thawed.query),
            repr(thawed.body),
        ]
    )


def held(request: reactorkit.Request) -> str:
    RELEASE.wait(5)
    return "held"


class Routes:
    @reactorkit.hookimpl
    def reactorkit_http_routes(self) -> list[reactorkit.Route]:
        route = reactorkit.Route
        return [
            route(method=("GET", "HEAD"), path="/plain", function=lambda r: "plain"),
            route(method="GET", path="/canary", function=lambda r: "CANARY-SERVED"),
            route(method="GET", path="/big", function=lambda r: b"b" * BIG),
            route(method="GET", path="/same", function=same),
            route(method="GET", path="/status/{kind}", function=status),
            route(method="GET", path="/bad-str", function=lambda r: "\ud800"),
            route(
                method="GET",
                path="/type-crlf",
                function=lambda r: reactorkit.Response(body="x", content_type="a\r\nX-Evil: 1"),
            ),
            route(
                method="GET",
                path="/type-list",
                function=lambda r: reactorkit.Response(body="x", content_type=["a"]),
            ),
            route(method="GET", path="/raise", function=lambda r: 1 / 0),
            route(method="GET", path="/missing", function=lambda r: r.nonexistent),
            route(
                method="GET",
                path="/fields",
                function=lambda r: reactorkit.Response(body="f", headers=[("X-A", "1")]),
            ),
            route(method="GET", path="/mutate", function=mutate),
            route(method="GET", path="/introspect", function=introspect),
            route(
                method="GET",
                path="/echo",
                function=lambda r: f"{r.path}|{r.query_string}|{r.query}|{r.host}|{r.http_version}",
            ),
            route(method="GET", path="/held", function=held, blocking=True),
        ]


def serving(**options: Any) -> Any:
    return serve(handler="http-lite", plugins=[Routes()], options={"access_log": False, **options})


@pytest.fixture
def web() -> Iterator[RunningServer]:
    with serving() as srv:
        yield srv


def read_responses(
    sock: socket.socket, count: int, heads: int = 0
) -> list[tuple[int, bytes, bytes]]:
    """``count`` responses, framed by Content-Length; the first ``heads`` answer HEAD."""
    out: list[tuple[int, bytes, bytes]] = []
    data = b""
    while len(out) < count:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            chunk = sock.recv(65536)
            assert chunk, (out, data)
            data += chunk
            continue
        head = data[:end]
        match = re.match(rb"HTTP/1\.1 (\d{3}) ", head)
        assert match is not None, data[:200]
        code = int(match.group(1))
        length = re.search(rb"\r\ncontent-length: (\d+)", head)
        size = 0 if len(out) < heads or length is None else int(length.group(1))
        while len(data) < end + 4 + size:
            chunk = sock.recv(65536)
            assert chunk, (out, data[:200])
            data += chunk
        out.append((code, head, data[end + 4 : end + 4 + size]))
        data = data[end + 4 + size :]
    assert data == b"", data[:200]
    return out


def exchange(srv: RunningServer, *reads: bytes) -> bytes:
    """Send each of ``reads`` apart, then half-close; all the server answers until it closes."""
    with connect(srv.address()) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for data in reads:
            sock.sendall(data)
            time.sleep(0.02)  # most likely one read each
        sock.shutdown(socket.SHUT_WR)
        return recv_until_closed(sock)


def statuses(reply: bytes, heads: tuple[int, ...] = ()) -> list[int]:
    """The status of each response in ``reply``; those at ``heads`` answer HEAD (no body)."""
    out: list[int] = []
    pos = 0
    while pos < len(reply):
        end = reply.index(b"\r\n\r\n", pos)
        head = reply[pos:end]
        match = re.match(rb"HTTP/1\.1 (\d{3}) ", head)
        assert match is not None, head[:200]
        length = re.search(rb"\r\ncontent-length: (\d+)", head)
        pos = end + 4
        if length is not None and len(out) not in heads:
            pos += int(length.group(1))
        out.append(int(match.group(1)))
    return out


# -- reads: the short path and the general path, switching mid-connection ----


def test_reads_that_switch_paths_are_answered_in_order_and_counted(web: RunningServer) -> None:
    simple = b"GET /echo?a=1 HTTP/1.1\r\nHost: x\r\n\r\n"
    with connect(web.address()) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(simple)  # the short path
        assert read_responses(sock, 1)[0][2] == b"/echo|a=1|{'a': ['1']}|x|1.1"
        sock.sendall(simple + b"GET /echo?b=2 HTTP/1.1\r\nHost: x\r\n\r\n")  # pipelined
        assert [body for _, _, body in read_responses(sock, 2)] == [
            b"/echo|a=1|{'a': ['1']}|x|1.1",
            b"/echo|b=2|{'b': ['2']}|x|1.1",
        ]
        sock.sendall(b"GET /echo?c HTTP/1.1\r\n")  # a head in two reads
        time.sleep(0.05)
        sock.sendall(b"Host: y\r\n\r\n")
        assert read_responses(sock, 1)[0][2] == b"/echo|c|{}|y|1.1"
        sock.sendall(b"HEAD /plain HTTP/1.1\r\nHost: x\r\n\r\n")  # short, answered the long way
        head = read_responses(sock, 1, heads=1)[0]
        assert head[0] == 200
        assert b"content-length: 5" in head[1]
        sock.sendall(b"GET /ech%6f? HTTP/1.1\r\nhOsT: x\r\n\r\n")
        assert read_responses(sock, 1)[0][2] == b"/echo||{}|x|1.1"
        sock.sendall(b"GET /echo HTTP/1.0\r\nHost: x\r\n\r\n")  # short, then closed
        reply = recv_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"connection: close\r\n" in reply
    assert reply.endswith(b"\r\n\r\n/echo||{}|x|1.0")


REFUSED = {
    "bad host": (b"GET /plain HTTP/1.1\r\nHost: a b\r\n\r\n", [400]),
    "two hosts": (b"GET /plain HTTP/1.1\r\nHost: a\r\nhOsT: a\r\n\r\n", [400]),
    "no host": (b"GET /plain HTTP/1.1\r\n\r\n", [400]),
    "host a, b": (b"GET /plain HTTP/1.1\r\nHost: a, b\r\n\r\n", [400]),
    "bad port": (b"GET /plain HTTP/1.1\r\nHost: a:99999\r\n\r\n", [400]),
    "CL and TE": (
        b"GET /plain HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n",
        [400],
    ),
    "obs-fold": (b"GET /plain HTTP/1.1\r\nHost: x\r\nA: b\r\n c\r\n\r\n", [400]),
    "bare LF": (b"GET /plain HTTP/1.1\nHost: x\n\n", [400]),
    "HTTP/1.0": (b"GET /plain HTTP/1.0\r\nHost: x\r\n\r\n", [200]),
    "close": (b"GET /plain HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", [200]),
    "too many fields": (b"GET /plain HTTP/1.1\r\nHost: x\r\n" + b"A: b\r\n" * 3 + b"\r\n", [431]),
    "head too large": (b"GET /plain HTTP/1.1\r\nHost: x\r\nA: " + b"b" * 300 + b"\r\n\r\n", [431]),
}


@pytest.mark.parametrize("apart", [False, True], ids=["one read", "apart"])
@pytest.mark.parametrize("name", sorted(REFUSED))
def test_a_canary_behind_a_last_request_is_never_answered(name: str, apart: bool) -> None:
    data, expected = REFUSED[name]
    with serving(max_headers=3, max_header_size=256) as srv:
        reply = exchange(srv, data, CANARY) if apart else exchange(srv, data + CANARY)
    assert statuses(reply) == expected
    assert b"connection: close\r\n" in reply
    assert b"CANARY-SERVED" not in reply


def test_heads_at_exactly_the_limits_take_the_short_path_and_one_more_is_refused() -> None:
    line = b"GET /echo HTTP/1.1\r\n"
    fields = b"Host: x\r\nA: b\r\nC: d\r\n"
    with serving(max_headers=3, max_request_line=64, max_header_size=256) as srv:
        reply = exchange(srv, line + fields + b"\r\n", line + fields + b"E: f\r\n\r\n", CANARY)
    assert statuses(reply) == [200, 431]
    assert b"CANARY-SERVED" not in reply


def test_a_request_llhttp_reads_as_close_keeps_the_connection_in_any_read(
    web: RunningServer,
) -> None:
    # llhttp takes Proxy-Connection for Connection; the server does not.
    first = b"GET /plain HTTP/1.1\r\nHost: x\r\nProxy-Connection: close\r\n\r\n"
    for reads in ([first + CANARY], [first, CANARY], [first[:3], first[3:] + CANARY]):
        reply = exchange(web, *reads)
        assert statuses(reply) == [200, 200], reads
        assert reply.endswith(b"CANARY-SERVED")


# -- careless routes: a 500 (or what they meant), and the connection serves on


CARELESS = {
    "/status/created": (201, b"s"),
    "/status/no-content": (204, b""),
    "/status/own-int": (202, b"s"),
    "/status/true": (500, b"internal server error\n"),
    "/status/float": (500, b"internal server error\n"),
    "/status/continue": (500, b"internal server error\n"),
    "/bad-str": (500, b"internal server error\n"),
    "/type-crlf": (500, b"internal server error\n"),
    "/type-list": (500, b"internal server error\n"),
    "/raise": (500, b"internal server error\n"),
    "/missing": (500, b"internal server error\n"),
    "/fields": (200, b"f"),
}


@pytest.mark.parametrize("path", sorted(CARELESS))
def test_a_careless_route_is_answered_and_the_next_request_too(
    web: RunningServer, path: str
) -> None:
    code, body = CARELESS[path]
    with connect(web.address()) as sock:
        sock.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        first = read_responses(sock, 1)[0]
        sock.sendall(CANARY)
        second = read_responses(sock, 1)[0]
    assert (first[0], first[2]) == (code, body)
    assert b"X-Evil" not in first[1]
    assert (second[0], second[2]) == (200, b"CANARY-SERVED")


def test_the_same_response_object_mutated_is_sent_as_it_is_each_time(web: RunningServer) -> None:
    with connect(web.address()) as sock:
        bodies = []
        for _ in range(3):
            sock.sendall(b"GET /same HTTP/1.1\r\nHost: x\r\n\r\n")
            bodies.append(read_responses(sock, 1)[0][2])
    assert [int(body) for body in bodies] == [int(bodies[0]) + i for i in range(3)]


def test_a_route_may_change_and_copy_the_request_it_is_given(web: RunningServer) -> None:
    with connect(web.address()) as sock:
        sock.sendall(b"GET /mutate?q=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.sendall(b"GET /introspect?q=2 HTTP/1.1\r\nHost: y\r\n\r\n")
        (_, _, mutated), (_, _, copied) = read_responses(sock, 2)
    assert mutated == b"['1'] x {'q': ['1'], 'added': ['1']} b'replaced' [] {}"
    assert copied == (
        b"Request(method='GET' Headers([('Host', 'y')]) {'q': ['2']}"
        b" [('Host', 'y')] {'q': ['2']} b''"
    )


# -- flow control, EOF, shutdown -------------------------------------------


def test_a_client_that_reads_late_gets_every_answer_in_order() -> None:
    # Far more than the kernel's buffers hold: the server's writes pause, then
    # its reading, while the requests come one a read (the short path).
    count = 300
    requests = [b"GET /big?%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(count)]
    with serving(keepalive_timeout=60) as srv, connect(srv.address()) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def send() -> None:
            for request in requests:
                sock.sendall(request)
            sock.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send)
        sender.start()
        time.sleep(0.5)  # not reading meanwhile
        reply = recv_until_closed(sock, limit=1 << 30)
        sender.join(10)
    assert statuses(reply) == [200] * count
    assert reply.count(b"b" * BIG) == count


def test_eof_right_after_a_request_answers_it_then_closes(web: RunningServer) -> None:
    with connect(web.address()) as sock:
        sock.sendall(b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)
        reply = recv_until_closed(sock)
    assert statuses(reply) == [200]
    assert reply.endswith(b"plain")


def test_shutdown_answers_the_request_in_flight_and_the_one_behind_it() -> None:
    RELEASE.clear()
    with serving() as srv, connect(srv.address()) as sock:
        sock.sendall(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.1)
        sock.sendall(b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.1)
        stopping = threading.Thread(target=srv.stop)
        stopping.start()
        time.sleep(0.1)
        RELEASE.set()
        reply = recv_until_closed(sock)
        stopping.join(10)
    assert statuses(reply) == [200, 200]
    assert reply.endswith(b"connection: close\r\n\r\nplain")


# -- options that turn the short path off, and the keep-alive clock ----------


@pytest.mark.parametrize(
    "options",
    [{"access_log": True}, {"metrics": True}, {"max_requests": 5}, {}],
    ids=["access log", "metrics", "max_requests", "short path"],
)
def test_the_answers_are_the_same_with_the_short_path_off(options: dict[str, Any]) -> None:
    reads = [
        b"GET /echo?a=%20 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /status/created HTTP/1.1\r\nHost: x\r\n\r\n",
        b"HEAD /plain HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /fields HTTP/1.1\r\nHost: x\r\n\r\n",
    ]
    with serving(**options) as srv:
        reply = exchange(srv, *reads)
    assert statuses(reply, heads=(2,)) == [200, 201, 200, 200]
    assert reply.endswith(
        b"\r\nX-A: 1\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 1\r\n\r\nf"
    )


def test_max_requests_closes_after_the_last_short_request() -> None:
    with serving(max_requests=2) as srv:
        reply = exchange(srv, b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n", CANARY, CANARY)
    assert statuses(reply) == [200, 200]
    assert reply.count(b"CANARY-SERVED") == 1
    assert reply.endswith(b"connection: close\r\n\r\nCANARY-SERVED")


def test_metrics_count_the_requests_the_short_path_would_take() -> None:
    with serving(metrics=True) as srv, connect(srv.address()) as sock:
        for _ in range(3):
            sock.sendall(b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
            read_responses(sock, 1)
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = recv_until_closed(sock)
    assert re.search(rb'route="/plain",status="2xx"[^}]*} 3\.0', reply), reply[-2000:]


def test_the_keepalive_clock_restarts_at_each_short_response() -> None:
    with serving(keepalive_timeout=0.5) as srv, connect(srv.address()) as sock:
        for _ in range(4):  # 4 x 0.3 s: past the timeout in all, never in one gap
            sock.sendall(b"GET /plain HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_responses(sock, 1)[0][0] == 200
            time.sleep(0.3)
        answered = time.monotonic()
        sock.sendall(CANARY)
        assert read_responses(sock, 1)[0][2] == b"CANARY-SERVED"
        assert recv_until_closed(sock) == b""  # closed when idle, nothing more sent
        assert time.monotonic() - answered >= 0.45
