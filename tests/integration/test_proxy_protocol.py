"""PROXY protocol behind a real HAProxy (send-proxy, send-proxy-v2), and without one."""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import reactorkit
from reactorkit.connection import format_peer
from reactorkit.testing import serve
from tests.helpers import TIMEOUT, connect, recv_until_closed
from tests.tlscerts import make_certs

HAPROXY = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/sbin")
needs_haproxy = pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed")

MADE: list[Any] = []


class Peer(reactorkit.Handler):
    """Says who it thinks the client is, then echoes."""

    def __init__(self, state: Any = None) -> None:
        super().__init__(state)
        MADE.append(self)

    def connection_made(self, connection: reactorkit.Transport) -> None:
        super().connection_made(connection)
        connection.write(f"you are {format_peer(connection.peername)}\n".encode())

    def data_received(self, data: bytes) -> None:
        self.connection.write(data)


PEER = reactorkit.HandlerType(name="peer", handler=Peer)


@contextlib.contextmanager
def haproxy(tmp_path: Path, backend: Any, mode: str) -> Iterator[tuple[str, int]]:
    """HAProxy in TCP mode on a free port, relaying to ``backend`` with ``mode``.

    The listening socket is ours, handed over as ``fd@``: HAProxy accepts on
    it from the start, so there is no port race and nothing to poll for.
    """
    assert HAPROXY is not None
    front = socket.socket()
    front.bind(("127.0.0.1", 0))
    front.listen(64)
    config = tmp_path / f"haproxy-{mode}.cfg"
    config.write_text(
        # No global maxconn: HAProxy sizes its descriptor table from it and
        # would refuse an fd@ above that size.
        "defaults\n    mode tcp\n    timeout connect 5s\n"
        "    timeout client 30s\n    timeout server 30s\n"
        f"frontend front\n    bind fd@{front.fileno()}\n    default_backend back\n"
        f"backend back\n    server app {backend[0]}:{backend[1]} {mode}\n"
    )
    proc = subprocess.Popen(
        [HAPROXY, "-f", str(config), "-db"],
        pass_fds=[front.fileno()],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    address = front.getsockname()
    front.close()  # HAProxy has its own copy
    try:
        yield address
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate(timeout=10)


def client_from(source: str, address: Any) -> socket.socket:
    return socket.create_connection(address[:2], timeout=TIMEOUT, source_address=(source, 0))


def read_line(sock: Any) -> bytes:
    # A byte at a time: what the server sends after the line (an echo) may
    # already be there, and must stay for the next read.
    out = b""
    while not out.endswith(b"\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        out += chunk
    return out


@needs_haproxy
@pytest.mark.parametrize(
    ("send", "accept"),
    [
        ("send-proxy", "v1"),
        ("send-proxy", "any"),
        ("send-proxy-v2", "v2"),
        ("send-proxy-v2", "any"),
    ],
)
def test_handler_sees_the_client_address_haproxy_passed(
    tmp_path: Path, send: str, accept: str
) -> None:
    MADE.clear()
    with (
        serve(handler=PEER, proxy_protocol=accept, proxy_from=["127.0.0.1"]) as srv,
        haproxy(tmp_path, srv.address(), send) as front,
        client_from("127.0.0.5", front) as sock,
    ):
        port = sock.getsockname()[1]
        assert read_line(sock) == f"you are 127.0.0.5:{port}\n".encode()
        sock.sendall(b"no header bytes here")
        assert sock.recv(100) == b"no header bytes here"
    assert len(MADE) == 1


@needs_haproxy
def test_listener_for_v2_refuses_a_v1_header(tmp_path: Path) -> None:
    MADE.clear()
    with (
        serve(handler=PEER, proxy_protocol="v2", proxy_from=["127.0.0.1"]) as srv,
        haproxy(tmp_path, srv.address(), "send-proxy") as front,
        client_from("127.0.0.5", front) as sock,
    ):
        assert recv_until_closed(sock) == b""
        listener = next(iter(srv.listeners.values()))
        assert listener.stats.proxy_failures == 1
    assert MADE == []


@needs_haproxy
def test_allow_deny_apply_to_the_address_in_the_header(tmp_path: Path) -> None:
    MADE.clear()
    with (
        serve(
            handler=PEER, proxy_protocol="any", proxy_from=["127.0.0.1"], allow=["127.0.0.5"]
        ) as srv,
        haproxy(tmp_path, srv.address(), "send-proxy-v2") as front,
    ):
        with client_from("127.0.0.6", front) as sock:
            assert recv_until_closed(sock) == b""
        with client_from("127.0.0.5", front) as sock:
            assert read_line(sock).startswith(b"you are 127.0.0.5:")
        listener = next(iter(srv.listeners.values()))
        assert listener.stats.refused == 1
    assert len(MADE) == 1  # no handler was built for the refused client


@needs_haproxy
def test_proxy_then_tls(tmp_path: Path) -> None:
    """TLS passes through HAProxy in TCP mode; the header comes before the ClientHello."""
    certs = make_certs(tmp_path)
    tls = certs.tls_table()
    with (
        serve(handler=PEER, proxy_protocol="v2", proxy_from=["127.0.0.1"], tls=tls) as srv,
        haproxy(tmp_path, srv.address(), "send-proxy-v2") as front,
    ):
        raw = client_from("127.0.0.9", front)
        port = raw.getsockname()[1]
        with certs.client_context().wrap_socket(raw, server_hostname="localhost") as sock:
            assert read_line(sock) == f"you are 127.0.0.9:{port}\n".encode()
            assert isinstance(sock, ssl.SSLSocket)


@needs_haproxy
def test_http_lite_access_log_and_chat_through_the_cli(run_server: Any, tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        '[[listen]]\nname = "web"\nhandler = "http-lite"\nport = 0\n'
        'proxy_protocol = "v2"\nproxy_from = ["127.0.0.1/32"]\n'
        '[[listen]]\nname = "chat"\nhandler = "chat"\nport = 0\n'
        'proxy_protocol = "v1"\nproxy_from = ["127.0.0.1/32"]\n'
        "[listen.options]\nwho_addresses = true\n"
    )
    server = run_server("run", str(config))
    server.wait_serving(2)
    server.keep_reading_log()
    with (
        haproxy(tmp_path, server.tcp("web"), "send-proxy-v2") as web,
        haproxy(tmp_path, server.tcp("chat"), "send-proxy") as chat,
    ):
        with client_from("127.0.0.5", web) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert recv_until_closed(sock).startswith(b"HTTP/1.1 200")
        with client_from("127.0.0.6", chat) as alice, client_from("127.0.0.7", chat) as bob:
            alice_file, bob_file = alice.makefile("rb"), bob.makefile("rb")
            alice.sendall(b"/nick alice\r\n")
            while alice_file.readline() != b"* you are now alice\r\n":
                pass
            bob.sendall(b"/nick bob\r\n/who\r\n")
            while not (line := bob_file.readline()).startswith(b"* in #lobby: "):
                assert line, "closed before the /who answer"
            # /who shows each member's address as HAProxy passed it, not HAProxy's.
            # (Either may have reached the server first: HAProxy connects to it for each.)
            members = sorted(line.removeprefix(b"* in #lobby: ").rstrip().split(b", "))
            assert members == [b"alice (127.0.0.6)", b"bob (127.0.0.7)"]
            alice_file.close()
            bob_file.close()
    code, log = server.terminate()
    assert code == 0
    assert "127.0.0.5 - - [" in log
    assert '"GET /healthz HTTP/1.1" 200' in log


def test_untrusted_sender_is_refused_at_accept(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="reactorkit.edge")
    MADE.clear()
    with serve(handler=PEER, proxy_protocol="v1", proxy_from=["127.0.0.1"]) as srv:
        with client_from("127.0.0.8", srv.address()) as sock:
            sock.sendall(b"PROXY TCP4 10.0.0.1 10.0.0.2 1 2\r\nhi")
            assert recv_until_closed(sock) == b""
        listener = next(iter(srv.listeners.values()))
        assert listener.stats.refused == 1
    assert MADE == []
    assert "not in proxy_from" in caplog.text


def test_header_deadline_and_bad_headers_close_the_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="reactorkit.edge")
    MADE.clear()
    with serve(
        handler=PEER, proxy_protocol="any", proxy_from=["127.0.0.1"], proxy_timeout=0.3
    ) as srv:
        address = srv.address()
        with connect(address) as sock:  # says nothing
            started = time.monotonic()
            assert recv_until_closed(sock) == b""
            assert 0.25 <= time.monotonic() - started < 3.0
        with connect(address) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
            assert recv_until_closed(sock) == b""
        with connect(address) as sock:
            sock.sendall(b"PROXY TCP4 1.2.3.4")  # truncated, then EOF
            sock.shutdown(socket.SHUT_WR)
            assert recv_until_closed(sock) == b""
        # A hand-written header works as HAProxy's does, with the data after it.
        with connect(address) as sock:
            sock.sendall(b"PROXY TCP6 2001:db8::1 ::1 4242 80\r\nping")
            assert read_line(sock) == b"you are [2001:db8::1]:4242\n"
            assert sock.recv(10) == b"ping"
        listener = next(iter(srv.listeners.values()))
        assert srv.call(lambda: listener.stats.proxy_failures) == 3
    assert len(MADE) == 1
    assert "no PROXY header within 0.3s" in caplog.text
    assert "bad PROXY header" in caplog.text


def test_local_header_keeps_the_real_peer() -> None:
    with (
        serve(handler=PEER, proxy_protocol="v2", proxy_from=["127.0.0.1"]) as srv,
        connect(srv.address()) as sock,
    ):
        sock.sendall(b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00")
        port = sock.getsockname()[1]
        assert read_line(sock) == f"you are 127.0.0.1:{port}\n".encode()


def test_deny_written_as_an_ipv4_mapped_address_refuses_that_client() -> None:
    # A balancer on IPv6 names IPv4 clients as ::ffff:a.b.c.d. The address is
    # matched as IPv4, so a deny entry copied in that same form must match too
    # (it used to be an IPv6 network nothing was ever compared against).
    mapped_header = b"PROXY TCP6 ::ffff:10.9.8.7 ::1 4000 80\r\n"
    for deny in (["::ffff:10.9.8.7"], ["::ffff:10.9.8.0/120"], ["10.9.8.7"]):
        with serve(handler=PEER, proxy_protocol="v1", proxy_from=["127.0.0.1"], deny=deny) as srv:
            with connect(srv.address()) as sock:
                sock.sendall(mapped_header)
                assert recv_until_closed(sock) == b"", deny
            with connect(srv.address()) as sock:
                sock.sendall(b"PROXY TCP6 ::ffff:10.9.9.7 ::1 4000 80\r\n")
                assert read_line(sock).startswith(b"you are [::ffff:"), deny  # admitted
