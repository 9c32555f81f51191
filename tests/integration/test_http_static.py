"""http-lite static files: bytes, types, validators, ranges, big files, no escape from the root."""

from __future__ import annotations

import email.utils
import http.client
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from reactorkit.testing import RunningServer, serve
from tests.helpers import connect, recv_until_closed

BIG = 3 * 1024 * 1024 + 123  # far above the 64 KiB high water mark


@pytest.fixture
def site_root(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    (root / "docs").mkdir(parents=True)
    (root / "index.html").write_text("<h1>home</h1>")
    (root / "docs" / "index.html").write_text("<p>docs</p>")
    (root / "style.css").write_text("body{}")
    (root / "data.json").write_text('{"a": 1}')
    (root / "big.bin").write_bytes(os.urandom(BIG))
    (root / "empty").mkdir()
    (tmp_path / "secret.txt").write_text("top secret")
    (root / "escape").symlink_to(tmp_path / "secret.txt")
    (root / "escape-dir").symlink_to(tmp_path)
    (root / "inside").symlink_to(root / "style.css")
    return root


@pytest.fixture
def web(site_root: Path) -> Iterator[RunningServer]:
    with serve(handler="http-lite", options={"static_root": str(site_root)}) as srv:
        yield srv


def get(
    srv: RunningServer, path: str, headers: dict[str, str] | None = None, method: str = "GET"
) -> tuple[int, dict[str, str], bytes]:
    host, port = srv.address()[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request(method, path, headers=headers or {})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, body


def raw_status(srv: RunningServer, path: bytes) -> int:
    with connect(srv.address()) as sock:
        sock.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = recv_until_closed(sock)
    return int(reply.split(b" ", 2)[1])


def test_files_with_their_types(web: RunningServer, site_root: Path) -> None:
    for path, content_type, body in [
        ("/", "text/html; charset=utf-8", b"<h1>home</h1>"),
        ("/docs/", "text/html; charset=utf-8", b"<p>docs</p>"),
        ("/docs", "text/html; charset=utf-8", b"<p>docs</p>"),
        ("/style.css", "text/css; charset=utf-8", b"body{}"),
        ("/data.json", "application/json; charset=utf-8", b'{"a": 1}'),
        ("/inside", "text/css; charset=utf-8", b"body{}"),  # a symlink inside the root
    ]:
        status, headers, got = get(web, path)
        assert (status, headers["content-type"], got) == (200, content_type, body), path
        assert headers["content-length"] == str(len(body))


def test_missing_file_and_directory_without_index_are_404(web: RunningServer) -> None:
    assert get(web, "/nope.txt")[0] == 404
    assert get(web, "/empty/")[0] == 404


@pytest.mark.parametrize("path", ["/style.css/", "/docs/index.html/", "/inside/"])
def test_a_file_with_a_trailing_slash_is_404_not_served(web: RunningServer, path: str) -> None:
    # A file is not a directory: "/f.txt/" names nothing (as nginx and Apache answer).
    status, _headers, body = get(web, path)
    assert status == 404
    assert b"body{}" not in body
    assert b"docs" not in body


def test_head_sends_headers_only(web: RunningServer) -> None:
    status, headers, body = get(web, "/big.bin", method="HEAD")
    assert status == 200
    assert headers["content-length"] == str(BIG)
    assert body == b""


def test_large_file_streams_intact(web: RunningServer, site_root: Path) -> None:
    status, _headers, body = get(web, "/big.bin")
    assert status == 200
    assert body == (site_root / "big.bin").read_bytes()


def test_slow_reader_of_a_large_file_keeps_server_memory_bounded(web: RunningServer) -> None:
    with connect(web.address()) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        sock.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(10).startswith(b"HTTP/1.1")
        (conn,) = web.call(lambda: list(web.listeners["http-lite"].connections))
        buffered = web.call(conn.get_write_buffer_size)
        assert buffered <= conn.high_water + 64 * 1024  # one chunk past the mark at most


def test_etag_and_if_none_match_give_304(web: RunningServer) -> None:
    _, headers, _ = get(web, "/style.css")
    etag = headers["etag"]
    status, headers304, body = get(web, "/style.css", {"If-None-Match": etag})
    assert (status, body) == (304, b"")
    assert headers304["etag"] == etag
    assert get(web, "/style.css", {"If-None-Match": f'"other", W/{etag}'})[0] == 304
    assert get(web, "/style.css", {"If-None-Match": '"other"'})[0] == 200


def test_if_modified_since(web: RunningServer, site_root: Path) -> None:
    mtime = (site_root / "style.css").stat().st_mtime
    later = email.utils.formatdate(mtime + 60, usegmt=True)
    earlier = email.utils.formatdate(mtime - 60, usegmt=True)
    assert get(web, "/style.css", {"If-Modified-Since": later})[0] == 304
    assert get(web, "/style.css", {"If-Modified-Since": earlier})[0] == 200
    assert get(web, "/style.css", {"If-Modified-Since": "garbage"})[0] == 200


@pytest.mark.parametrize(
    ("value", "start", "end"),
    [
        ("bytes=0-99", 0, 100),
        ("bytes=100-", 100, BIG),
        ("bytes=-500", BIG - 500, BIG),
        ("bytes=10-10", 10, 11),
        (f"bytes=0-{BIG * 2}", 0, BIG),
    ],
)
def test_single_range(
    web: RunningServer, site_root: Path, value: str, start: int, end: int
) -> None:
    data = (site_root / "big.bin").read_bytes()
    status, headers, body = get(web, "/big.bin", {"Range": value})
    assert status == 206
    assert headers["content-range"] == f"bytes {start}-{end - 1}/{BIG}"
    assert body == data[start:end]


@pytest.mark.parametrize("value", [f"bytes={BIG}-", "bytes=-0", "bytes=500-100"])
def test_unsatisfiable_range_is_416(web: RunningServer, value: str) -> None:
    status, headers, _ = get(web, "/big.bin", {"Range": value})
    assert status == 416
    assert headers["content-range"] == f"bytes */{BIG}"


def test_multiple_ranges_get_the_whole_file(web: RunningServer) -> None:
    status, _headers, body = get(web, "/style.css", {"Range": "bytes=0-1,3-4"})
    assert (status, body) == (200, b"body{}")


TRAVERSALS = [
    b"/../secret.txt",
    b"/docs/../../secret.txt",
    b"/%2e%2e/secret.txt",
    b"/%2E%2E/secret.txt",
    b"/.%2e/secret.txt",
    b"/%2e./secret.txt",
    b"/docs/%2e%2e/%2e%2e/secret.txt",
    b"/..%2fsecret.txt",
    b"/..%2Fsecret.txt",
    b"/%2f..%2fsecret.txt",
    b"/..%5csecret.txt",
    b"/..\\secret.txt",
    b"/docs\\..\\..\\secret.txt",
    b"/secret.txt%00.css",
    b"/style.css%00",
    b"/%252e%252e/secret.txt",
    b"/escape",
    b"/escape-dir/secret.txt",
    b"/./style.css",
    b"//../secret.txt",
    b"/%c0%ae%c0%ae/secret.txt",
]


@pytest.mark.parametrize("path", TRAVERSALS, ids=[p.decode("latin-1") for p in TRAVERSALS])
def test_no_path_escapes_the_root(web: RunningServer, path: bytes) -> None:
    status = raw_status(web, path)
    assert status in (400, 403, 404), status
    assert status != 200


def test_traversal_never_returns_the_secret(web: RunningServer) -> None:
    for path in TRAVERSALS:
        with connect(web.address()) as sock:
            sock.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert b"top secret" not in recv_until_closed(sock)


def test_routes_win_over_static_files(web: RunningServer) -> None:
    status, _, body = get(web, "/healthz")
    assert (status, body) == (200, b"ok\n")
