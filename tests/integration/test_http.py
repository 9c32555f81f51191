"""http-lite with real clients: http.client, urllib, curl and raw sockets."""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

import reactorkit
from reactorkit.testing import RunningServer, serve
from tests.helpers import connect, recv_until_closed

GATE = threading.Event()


def hello(request: reactorkit.Request) -> str:
    return f"hello {request.query.get('name', ['world'])[0]}"


def user(request: reactorkit.Request) -> reactorkit.Response:
    return reactorkit.json_response({"id": request.captures["id"], "peer": request.peer[0]})


def echo(request: reactorkit.Request) -> reactorkit.Response:
    return reactorkit.Response(
        body=request.body,
        headers=[("X-Content-Type-Seen", request.headers.get("content-type", ""))],
        content_type="application/octet-stream",
    )


def stream(request: reactorkit.Request) -> reactorkit.Response:
    return reactorkit.Response(body=(b"chunk %d\n" % i for i in range(5)))


def slow(request: reactorkit.Request) -> str:
    assert GATE.wait(5)
    return "slow done"


def crash(request: reactorkit.Request) -> str:
    raise RuntimeError("route bug on purpose")


def forbidden(request: reactorkit.Request) -> str:
    raise reactorkit.HttpError(403, "members only")


class Routes:
    @reactorkit.hookimpl
    def reactorkit_http_routes(self) -> list[reactorkit.Route]:
        return [
            reactorkit.Route(method="GET", path="/hello", function=hello),
            reactorkit.Route(method="GET", path="/users/{id}", function=user),
            reactorkit.Route(method=("POST", "PUT"), path="/echo", function=echo),
            reactorkit.Route(method="GET", path="/stream", function=stream),
            reactorkit.Route(method="GET", path="/slow", function=slow, blocking=True),
            reactorkit.Route(method="GET", path="/crash", function=crash),
            reactorkit.Route(method="GET", path="/forbidden", function=forbidden),
            reactorkit.Route(
                method="GET", path="/forbidden-slow", function=forbidden, blocking=True
            ),
        ]


@pytest.fixture
def web() -> Iterator[RunningServer]:
    GATE.clear()
    with serve(
        handler="http-lite",
        plugins=[Routes()],
        options={"header_timeout": 0.5, "max_body_size": 100_000},
    ) as srv:
        yield srv
    GATE.set()


def client(srv: RunningServer) -> http.client.HTTPConnection:
    host, port = srv.address()[:2]
    return http.client.HTTPConnection(host, port, timeout=5)


def raw(srv: RunningServer, data: bytes) -> bytes:
    """Send raw bytes, read until the server closes."""
    with connect(srv.address()) as sock:
        sock.sendall(data)
        return recv_until_closed(sock)


def test_keep_alive_with_http_client(web: RunningServer) -> None:
    conn = client(web)
    for name in ("a", "b", "c"):
        conn.request("GET", f"/hello?name={name}")
        response = conn.getresponse()
        assert response.status == 200
        assert response.read() == f"hello {name}".encode()
        assert response.getheader("Content-Type") == "text/plain; charset=utf-8"
        assert response.getheader("Server") == "reactorkit"
        assert response.getheader("Date", "").endswith("GMT")
    assert web.call(lambda: web.listeners["http-lite"].stats.total_connections) == 1
    conn.close()


def test_captures_and_json(web: RunningServer) -> None:
    conn = client(web)
    conn.request("GET", "/users/42")
    response = conn.getresponse()
    assert response.getheader("Content-Type") == "application/json"
    assert json.loads(response.read()) == {"id": "42", "peer": "127.0.0.1"}
    conn.close()


def test_head_has_headers_but_no_body(web: RunningServer) -> None:
    conn = client(web)
    conn.request("HEAD", "/hello")
    response = conn.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Length") == "11"
    assert response.read() == b""
    conn.request("GET", "/hello")  # the connection is still in sync
    assert conn.getresponse().read() == b"hello world"
    conn.close()


def test_post_body_with_content_length_and_chunked(web: RunningServer) -> None:
    conn = client(web)
    conn.request("POST", "/echo", body=b"x" * 5000, headers={"Content-Type": "a/b"})
    response = conn.getresponse()
    assert response.read() == b"x" * 5000
    assert response.getheader("X-Content-Type-Seen") == "a/b"
    conn.request("PUT", "/echo", body=iter([b"part1-", b"part2"]), encode_chunked=True)
    assert conn.getresponse().read() == b"part1-part2"
    conn.close()


def test_urllib_get_and_post(web: RunningServer) -> None:
    host, port = web.address()[:2]
    with urllib.request.urlopen(f"http://{host}:{port}/hello?name=urllib", timeout=5) as r:
        assert r.read() == b"hello urllib"
    request = urllib.request.Request(f"http://{host}:{port}/echo", data=b"form=1", method="POST")
    with urllib.request.urlopen(request, timeout=5) as r:
        assert r.read() == b"form=1"


def test_streamed_iterable_body_is_chunked(web: RunningServer) -> None:
    conn = client(web)
    conn.request("GET", "/stream")
    response = conn.getresponse()
    assert response.getheader("Transfer-Encoding") == "chunked"
    assert response.read() == b"".join(b"chunk %d\n" % i for i in range(5))
    conn.close()


def test_streamed_body_on_http_10_is_close_delimited(web: RunningServer) -> None:
    reply = raw(web, b"GET /stream HTTP/1.0\r\n\r\n")
    head, _, body = reply.partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower()
    assert body == b"".join(b"chunk %d\n" % i for i in range(5))


def test_http_10_keep_alive_when_asked(web: RunningServer) -> None:
    with connect(web.address()) as sock:
        sock.sendall(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        reply = sock.recv(4096)
        assert b"connection: keep-alive" in reply.lower()
        sock.sendall(b"GET /hello HTTP/1.0\r\n\r\n")
        rest = recv_until_closed(sock)
        assert rest.endswith(b"hello world")


def test_pipelined_requests_are_answered_in_order(web: RunningServer) -> None:
    requests = (
        b"".join(b"GET /hello?name=%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(20))
        + b"GET /hello?name=last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    reply = raw(web, requests)
    bodies = [part.split(b"\r\n\r\n", 1)[1][:20] for part in reply.split(b"HTTP/1.1 200 OK")[1:]]
    assert [b.split(b"HTTP")[0] for b in bodies] == [b"hello %d" % i for i in range(20)] + [
        b"hello last"
    ]


def test_blocking_route_keeps_pipelined_order_and_serves_others(web: RunningServer) -> None:
    with connect(web.address()) as sock:
        sock.sendall(
            b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        other = client(web)  # another client is not held up meanwhile
        other.request("GET", "/hello?name=other")
        assert other.getresponse().read() == b"hello other"
        other.close()
        GATE.set()
        reply = recv_until_closed(sock)
    assert reply.index(b"slow done") < reply.index(b"hello world")


def test_route_exception_is_a_500_and_the_server_carries_on(
    web: RunningServer, caplog: Any
) -> None:
    conn = client(web)
    conn.request("GET", "/crash")
    response = conn.getresponse()
    assert response.status == 500
    response.read()
    conn.request("GET", "/hello")
    assert conn.getresponse().read() == b"hello world"
    conn.close()
    assert "route bug on purpose" in caplog.text


def test_route_raising_http_error_answers_that_status(web: RunningServer) -> None:
    conn = client(web)
    for path in ("/forbidden", "/forbidden-slow"):
        conn.request("GET", path)
        response = conn.getresponse()
        assert (response.status, response.read()) == (403, b"members only\n")
    conn.close()


def test_404_and_405_with_allow(web: RunningServer) -> None:
    conn = client(web)
    conn.request("GET", "/nowhere")
    response = conn.getresponse()
    assert response.status == 404
    response.read()
    conn.request("DELETE", "/echo")
    response = conn.getresponse()
    assert response.status == 405
    assert response.getheader("Allow") == "POST, PUT"
    response.read()
    conn.close()


def test_expect_100_continue(web: RunningServer) -> None:
    with connect(web.address()) as sock:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
        )
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"body")
        reply = sock.recv(4096)
        assert reply.startswith(b"HTTP/1.1 200 OK")
        assert reply.endswith(b"body")


def test_connection_close_is_honoured(web: RunningServer) -> None:
    reply = raw(web, b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert b"connection: close" in reply.lower()
    assert reply.endswith(b"hello world")


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"b" * 20000 + b"\r\n\r\n", 431),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-%d: y\r\n" % i for i in range(150))
            + b"\r\n",
            431,
        ),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n", 413),
        (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"ffff\r\n"
            + b"z" * 0xFFFF
            + b"\r\n"
            + b"ffff\r\n"
            + b"z" * 0xFFFF
            + b"\r\n",
            413,
        ),
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n", 400),
        (b"GET / HTTP/2.0\r\n\r\n", 505),
        (b"GET / HTTP/1.2\r\n\r\n", 505),
        (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
            400,
        ),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nExpect: magic\r\n\r\n", 417),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),  # a TLS hello
    ],
    ids=[
        "uri-414",
        "header-431",
        "header-count-431",
        "length-413",
        "chunked-413",
        "garbage-400",
        "bad-header-400",
        "http2-505",
        "http12-505",
        "cl-te-smuggling-400",
        "differing-cl-400",
        "negative-cl-400",
        "expect-417",
        "tls-400",
    ],
)
def test_bad_input_gets_an_error_and_a_closed_connection(
    web: RunningServer, request_bytes: bytes, status: int
) -> None:
    reply = raw(web, request_bytes)
    assert reply.startswith(b"HTTP/1.1 %d " % status), reply[:200]
    assert b"connection: close" in reply.lower()


def test_smuggled_request_after_a_bad_one_is_never_served(web: RunningServer) -> None:
    reply = raw(
        web,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked"
        b"\r\n\r\n0\r\n\r\nGET /hello HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    assert reply.startswith(b"HTTP/1.1 400 ")
    assert b"hello world" not in reply


def test_slowloris_gets_408_without_blocking_others(web: RunningServer) -> None:
    with connect(web.address()) as slow_sock:
        slow_sock.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n")  # ...and never finishes
        conn = client(web)
        conn.request("GET", "/hello")
        assert conn.getresponse().read() == b"hello world"
        conn.close()
        started = time.monotonic()
        reply = recv_until_closed(slow_sock)
    assert reply.startswith(b"HTTP/1.1 408 ")
    assert 0.3 < time.monotonic() - started < 4


def test_keep_alive_idle_timeout_closes() -> None:
    options = {"keepalive_timeout": 0.2}
    with serve(handler="http-lite", options=options) as srv, connect(srv.address()) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = recv_until_closed(sock)
    assert reply.startswith(b"HTTP/1.1 200 OK")
    assert reply.endswith(b"ok\n")


def test_blank_lines_do_not_keep_an_idle_connection_open() -> None:
    # A client that sends a bare CRLF every 0.15 s (blank lines a server
    # skips before a request line) is closed once keepalive_timeout (0.5 s)
    # has passed since its last request, as if it had sent nothing.
    options = {"keepalive_timeout": 0.5}
    with serve(handler="http-lite", options=options) as srv, connect(srv.address()) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = b""
        while not reply.endswith(b"ok\n"):
            reply += sock.recv(4096)
        answered = time.monotonic()
        sock.settimeout(0.15)
        closed = False
        while time.monotonic() - answered < 3 and not closed:
            try:
                sock.sendall(b"\r\n")
                closed = sock.recv(4096) == b""
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed = True
        waited = time.monotonic() - answered
    assert closed, "still open after 3 s of blank lines"
    assert 0.4 < waited < 1.5


def test_max_requests_per_connection() -> None:
    with serve(handler="http-lite", options={"max_requests": 2}) as srv:
        reply = raw(srv, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 3)
    assert reply.count(b"HTTP/1.1 200 OK") == 2
    assert b"connection: close" in reply.lower()


def test_access_log(web: RunningServer, caplog: Any) -> None:
    caplog.set_level("INFO", logger="reactorkit.access")
    conn = client(web)
    conn.request("GET", "/hello?name=log")
    conn.getresponse().read()
    conn.close()
    line = next(r.getMessage() for r in caplog.records if r.name == "reactorkit.access")
    assert line.startswith("127.0.0.1 - - [")
    assert '"GET /hello?name=log HTTP/1.1" 200 9 ' in line
    assert line.endswith("ms http")


def test_access_log_can_be_switched_off(caplog: Any) -> None:
    caplog.set_level("INFO", logger="reactorkit.access")
    with serve(handler="http-lite", options={"access_log": False}) as srv:
        raw(srv, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert not [r for r in caplog.records if r.name == "reactorkit.access"]


def test_healthz_is_503_during_graceful_shutdown() -> None:
    with serve(handler="http-lite", shutdown_timeout=5) as srv:
        conn = client(srv)
        conn.request("GET", "/healthz")
        assert conn.getresponse().read() == b"ok\n"
        # Begin the shutdown but keep this connection busy answering.
        with connect(srv.address()) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # headers not finished
            srv.call(lambda: None)
            srv.reactor.call_soon_threadsafe(srv.server.shutdown)
            srv.call(lambda: None)
            sock.sendall(b"\r\n")
            reply = recv_until_closed(sock)
        assert reply.startswith(b"HTTP/1.1 503 ")
        assert reply.endswith(b"shutting down\n")
        conn.close()


def test_conflicting_routes_from_two_plugins_fail_at_startup() -> None:
    class One:
        @reactorkit.hookimpl
        def reactorkit_http_routes(self) -> list[reactorkit.Route]:
            return [reactorkit.Route(method="GET", path="/items/{id}", function=hello)]

    class Two:
        @reactorkit.hookimpl
        def reactorkit_http_routes(self) -> list[reactorkit.Route]:
            return [reactorkit.Route(method="GET", path="/items/{key}", function=hello)]

    with (
        pytest.raises(reactorkit.PluginError) as info,
        serve(handler="http-lite", plugins=[One(), Two()]),
    ):
        pass
    message = str(info.value)
    assert "HTTP route GET /items/{key} is defined twice" in message
    assert "plugin 'test-plugin-0'" in message
    assert "plugin 'test-plugin-1'" in message


@pytest.mark.skipif(
    shutil.which("curl") is None, reason="curl is not installed (.ci/run installs it)"
)
def test_curl(web: RunningServer) -> None:
    host, port = web.address()[:2]
    result = subprocess.run(
        [
            "curl",
            "-sS",
            "-i",
            "--max-time",
            "5",
            f"http://{host}:{port}/hello?name=curl",
            f"http://{host}:{port}/users/7",
            "-d",
            "",
            "--json",
            "{}",
        ][:6],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert result.returncode == 0, result.stderr
    assert "HTTP/1.1 200 OK" in result.stdout
    assert result.stdout.endswith("hello curl")
    posted = subprocess.run(
        [
            "curl",
            "-sS",
            "--max-time",
            "5",
            "--data-binary",
            "curl body",
            f"http://{host}:{port}/echo",
        ],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert posted.stdout == "curl body"
    chunked = subprocess.run(
        [
            "curl",
            "-sS",
            "--max-time",
            "5",
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            "chunked body",
            f"http://{host}:{port}/echo",
        ],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert chunked.stdout == "chunked body"
    head = subprocess.run(
        ["curl", "-sS", "-I", "--max-time", "5", f"http://{host}:{port}/healthz"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert head.stdout.startswith("HTTP/1.1 200 OK")
    assert "content-length: 3" in head.stdout.lower()


def test_random_bytes_never_crash_the_server(web: RunningServer) -> None:
    import random

    rng = random.Random(1234)
    for _ in range(30):
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
        with connect(web.address()) as sock:
            sock.sendall(junk)
            sock.shutdown(socket.SHUT_WR)
            recv_until_closed(sock)
    conn = client(web)
    conn.request("GET", "/hello")
    assert conn.getresponse().read() == b"hello world"
    conn.close()
