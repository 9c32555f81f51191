"""TLS over real sockets: Python's ssl, curl and openssl s_client as clients."""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import select
import selectors
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

import reactorkit
from reactorkit.testing import serve
from tests.helpers import TIMEOUT, connect, reactorkit_cli, recv_until_closed
from tests.tlscerts import Certs, make_certs

MADE: list[Any] = []


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return make_certs(tmp_path)


class WhoAmI(reactorkit.Handler):
    """Answers every read with what the connection knows of TLS, then echoes."""

    def __init__(self, state: Any = None) -> None:
        super().__init__(state)
        MADE.append(self)

    def connection_made(self, connection: reactorkit.Transport) -> None:
        super().connection_made(connection)
        cert = connection.peer_certificate
        subject = dict(x[0] for x in cert["subject"]) if cert else {}
        connection.write(
            f"tls={connection.is_tls} alpn={connection.alpn_protocol} "
            f"cn={subject.get('commonName')}\n".encode()
        )

    def data_received(self, data: bytes) -> None:
        self.connection.write(data)


WHOAMI = reactorkit.HandlerType(name="whoami", handler=WhoAmI)


def tls_connect(certs: Certs, address: Any, **kwargs: Any) -> ssl.SSLSocket:
    context = kwargs.pop("context", None) or certs.client_context(**kwargs)
    sock = socket.create_connection(address[:2], timeout=TIMEOUT)
    return context.wrap_socket(sock, server_hostname="localhost")


def read_line(sock: ssl.SSLSocket) -> bytes:
    out = b""
    while not out.endswith(b"\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        out += chunk
    return out


def test_python_ssl_echo_and_alpn(certs: Certs) -> None:
    tls = certs.tls_table(alpn=["x-echo", "http/1.1"])
    with serve(handler=WHOAMI, tls=tls) as srv:
        context = certs.client_context()
        context.set_alpn_protocols(["http/1.1"])
        with tls_connect(certs, srv.address(), context=context) as sock:
            assert read_line(sock) == b"tls=True alpn=http/1.1 cn=None\n"
            sock.sendall(b"secret")
            assert sock.recv(100) == b"secret"
            assert sock.version() in ("TLSv1.2", "TLSv1.3")


def tls_roundtrip(sock: ssl.SSLSocket, payload: bytes, timeout: float = 60) -> bytes:
    """Send ``payload`` while reading the echo, from one thread.

    One thread only: an SSLSocket must not be read and written from two
    threads at once (OpenSSL's SSL object is not thread-safe).
    """
    sock.setblocking(False)
    received = bytearray()
    sent = 0
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
        while len(received) < len(payload) and time.monotonic() < deadline:
            events = 0
            for _, mask in selector.select(0 if sock.pending() else 0.5):
                events |= mask
            if events & selectors.EVENT_READ or sock.pending():
                try:
                    chunk = sock.recv(1 << 16)
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    chunk = None
                if chunk == b"":
                    break
                if chunk:
                    received += chunk
            if events & selectors.EVENT_WRITE and sent < len(payload):
                with contextlib.suppress(ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    sent += sock.send(payload[sent : sent + (1 << 16)])
                if sent == len(payload):
                    selector.modify(sock, selectors.EVENT_READ)
    return bytes(received)


def test_four_mib_echo_intact_under_flow_control(certs: Certs) -> None:
    # The client sends everything while reading: the server's echo fills its
    # write buffer, pauses reading, resumes.
    payload = os.urandom(4 * 1024 * 1024)
    with (
        serve(handler="echo", tls=certs.tls_table()) as srv,
        tls_connect(certs, srv.address()) as sock,
    ):
        received = tls_roundtrip(sock, payload)
    assert len(received) == len(payload)
    assert received == payload


def test_pause_reading_holds_plaintext_until_resumed(certs: Certs) -> None:
    """A handler that pauses after every chunk still gets every byte, in order."""

    class Slow(reactorkit.Handler):
        def data_received(self, data: bytes) -> None:
            self.connection.write(data)
            self.connection.pause_reading()
            self.connection.reactor.call_later(0.001, self.connection.resume_reading)

    payload = os.urandom(300_000)
    handler_type = reactorkit.HandlerType(name="slow", handler=Slow)
    with (
        serve(handler=handler_type, tls=certs.tls_table()) as srv,
        tls_connect(certs, srv.address()) as sock,
    ):
        received = tls_roundtrip(sock, payload)
    assert bytes(received) == payload


class AnswerAtEof(reactorkit.Handler):
    """Keeps what it reads and answers only at EOF (promise 3 across TLS)."""

    def __init__(self, state: Any = None) -> None:
        super().__init__(state)
        self.got = b""

    def data_received(self, data: bytes) -> None:
        self.got += data

    def eof_received(self) -> bool | None:
        self.connection.write(b"got " + self.got)
        return False


@pytest.mark.parametrize("close_notify", [True, False])
def test_request_answered_at_eof_with_or_without_close_notify(
    certs: Certs, close_notify: bool
) -> None:
    handler_type = reactorkit.HandlerType(name="at-eof", handler=AnswerAtEof)
    with serve(handler=handler_type, tls=certs.tls_table()) as srv:
        raw = socket.create_connection(srv.address()[:2], timeout=TIMEOUT)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        client = certs.client_context().wrap_bio(incoming, outgoing, server_hostname="localhost")

        def pump() -> bool:
            data = outgoing.read()
            if data:
                raw.sendall(data)
            chunk = raw.recv(65536)
            incoming.write(chunk) if chunk else incoming.write_eof()
            return bool(chunk)

        while True:
            try:
                client.do_handshake()
                break
            except ssl.SSLWantReadError:
                assert pump()
        client.write(b"the whole request")
        if close_notify:
            with contextlib.suppress(ssl.SSLWantReadError):
                client.unwrap()
        raw.sendall(outgoing.read())
        raw.shutdown(socket.SHUT_WR)  # then TCP EOF
        answer = b""
        while True:
            try:
                chunk = client.read(65536)
            except ssl.SSLWantReadError:
                if not pump():
                    break
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                break
            if not chunk:
                break  # the server's close_notify
            answer += chunk
        raw.close()
    assert answer == b"got the whole request"


def test_stalled_handshake_is_closed_at_handshake_timeout(
    certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="reactorkit.tls")
    MADE.clear()
    with serve(handler=WHOAMI, tls=certs.tls_table(handshake_timeout=0.3)) as srv:
        with connect(srv.address()) as sock:
            started = time.monotonic()
            # Half a ClientHello: a record header promising more than comes.
            sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
            assert recv_until_closed(sock) == b""
            elapsed = time.monotonic() - started
        listener = next(iter(srv.listeners.values()))
        assert listener.stats.tls_failures == 1
    assert 0.25 <= elapsed < 3.0
    assert MADE == []
    assert "no handshake within 0.3s" in caplog.text


def test_garbage_instead_of_client_hello_closes_cleanly(
    certs: Certs, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="reactorkit.tls")
    MADE.clear()
    with serve(handler=WHOAMI, tls=certs.tls_table()) as srv:
        with connect(srv.address()) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = recv_until_closed(sock)
        # Whatever came back is at most a TLS alert record, never plaintext.
        assert answer == b"" or answer[:1] == b"\x15"
        # The server lives on: a good client right after is served.
        with tls_connect(certs, srv.address()) as good:
            assert read_line(good).startswith(b"tls=True")
    failures = [r for r in caplog.records if "TLS handshake failed" in r.getMessage()]
    assert len(failures) == 1  # logged once, at info
    assert failures[0].levelno == logging.INFO
    assert "127.0.0.1:" in failures[0].getMessage()
    assert len(MADE) == 1


def test_mutual_tls_requires_a_client_certificate(certs: Certs) -> None:
    tls = certs.tls_table(ca=certs.client_ca, client_auth="required")
    MADE.clear()
    with serve(handler=WHOAMI, tls=tls) as srv:
        with tls_connect(certs, srv.address(), with_cert=True) as sock:
            assert read_line(sock) == b"tls=True alpn=None cn=alice\n"
        # Without a certificate: TLS 1.3 clients learn it at their first read.
        with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):  # noqa: PT012
            sock = tls_connect(certs, srv.address())
            sock.sendall(b"x")
            if not sock.recv(100):
                raise ConnectionResetError("closed without an answer")
        sock.close()
        listener = next(iter(srv.listeners.values()))
        assert listener.stats.tls_failures == 1
    assert len(MADE) == 1  # the handler never ran for the refused client


def test_peer_going_away_mid_handshake_never_reaches_the_handler(certs: Certs) -> None:
    MADE.clear()
    with serve(handler=WHOAMI, tls=certs.tls_table()) as srv:
        for _ in range(20):
            with connect(srv.address()) as sock:
                sock.sendall(b"\x16\x03\x01")
        with tls_connect(certs, srv.address()) as sock:
            assert read_line(sock).startswith(b"tls=True")
    assert len(MADE) == 1


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_over_tls_to_http_lite(certs: Certs, run_server: Any, tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        f'[[listen]]\nname = "web"\nhandler = "http-lite"\nport = 0\n'
        f'[listen.tls]\ncert = "{certs.server_cert}"\nkey = "{certs.server_key}"\n'
        f'alpn = ["http/1.1"]\n'
    )
    server = run_server("run", str(config))
    server.wait_serving(1)
    server.keep_reading_log()
    _, port = server.tcp("web")
    done = subprocess.run(
        [
            "curl", "-sS", "--max-time", "10", "--cacert", certs.ca_cert,
            "-w", "\\n%{http_version} %{scheme}",
            f"https://localhost:{port}/healthz",
        ],
        capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    body, _, info = done.stdout.rpartition("\n")
    assert info == "1.1 HTTPS"
    assert body
    # Plain HTTP to the TLS port is refused, and the server keeps going.
    plain = subprocess.run(
        ["curl", "-sS", "--max-time", "10", f"http://127.0.0.1:{port}/healthz"],
        capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip
    assert plain.returncode != 0
    code, log = server.terminate()
    assert code == 0
    assert "TLS handshake failed on listener 'web', peer 127.0.0.1:" in log
    assert '"GET /healthz HTTP/1.1" 200' in log
    access = next(line for line in log.splitlines() if '"GET /healthz HTTP/1.1" 200' in line)
    assert access.endswith("ms https")  # the access log shows the scheme


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_openssl_s_client(certs: Certs) -> None:
    with serve(handler="echo", tls=certs.tls_table(min_version="1.3")) as srv:
        _, port = srv.address()[:2]
        proc = subprocess.Popen(
            [
                "openssl", "s_client", "-connect", f"127.0.0.1:{port}",
                "-CAfile", certs.ca_cert, "-verify_return_error", "-servername", "localhost",
                "-quiet",
            ],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            assert proc.stdin is not None
            assert proc.stdout is not None
            # stdin stays open until the echo is back (s_client quits at EOF).
            proc.stdin.write(b"hello over openssl\n")
            proc.stdin.flush()
            got = b""
            deadline = time.monotonic() + 10
            poller = select.poll()  # not select(): the fd may be above 1024
            poller.register(proc.stdout, select.POLLIN)
            while b"\n" not in got and time.monotonic() < deadline:
                if poller.poll(500):
                    chunk = os.read(proc.stdout.fileno(), 4096)
                    if not chunk:
                        break
                    got += chunk
            assert got == b"hello over openssl\n"
        finally:
            proc.kill()
            proc.communicate(timeout=10)
        # A TLS 1.2 client is refused by min_version = "1.3".
        old = subprocess.run(
            [
                "openssl", "s_client", "-connect", f"127.0.0.1:{port}",
                "-CAfile", certs.ca_cert, "-tls1_2", "-quiet", "-no_ign_eof",
            ],
            input=b"x\n", capture_output=True, timeout=20, check=False,
        )  # fmt: skip
        assert old.returncode != 0
        assert b"x" not in old.stdout


def test_check_validates_the_files(certs: Certs, tmp_path: Path) -> None:
    def check(tls: str) -> Any:
        config = tmp_path / "c.toml"
        config.write_text(f'[[listen]]\nhandler = "echo"\nport = 0\n[listen.tls]\n{tls}\n')
        return reactorkit_cli("check", str(config))

    good = check(f'cert = "{certs.server_cert}"\nkey = "{certs.server_key}"')
    assert good.returncode == 0, good.stderr
    missing = check(f'cert = "{tmp_path}/nope.pem"\nkey = "{certs.server_key}"')
    assert missing.returncode != 0
    assert "tls cert file" in missing.stderr
    assert "cannot be read" in missing.stderr
    (tmp_path / "other").mkdir()
    other = make_certs(tmp_path / "other")
    mismatch = check(f'cert = "{certs.server_cert}"\nkey = "{other.server_key}"')
    assert mismatch.returncode != 0
    assert "key" in mismatch.stderr.lower()
    (tmp_path / "soon").mkdir()
    in_three_days = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=3)
    soon = make_certs(tmp_path / "soon", not_after=in_three_days)
    warned = check(f'cert = "{soon.server_cert}"\nkey = "{soon.server_key}"')
    assert warned.returncode == 0
    assert "expires on" in warned.stderr
    (tmp_path / "later").mkdir()
    in_twenty_days = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=20)
    later = make_certs(tmp_path / "later", not_after=in_twenty_days)
    quiet = check(f'cert = "{later.server_cert}"\nkey = "{later.server_key}"')
    assert quiet.returncode == 0, quiet.stderr
    assert "expires" not in quiet.stderr  # 14 days is the threshold, not any date
    (tmp_path / "gone").mkdir()
    yesterday = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
    gone = make_certs(tmp_path / "gone", not_after=yesterday)
    expired = check(f'cert = "{gone.server_cert}"\nkey = "{gone.server_key}"')
    assert expired.returncode != 0
    assert "expired on" in expired.stderr
    bad = check('cert = 7\nclient_auth = "always"\nmin_version = "1.0"\nalpn = "h2"\nextra = 1')
    assert bad.returncode != 0
    for text in ("tls.cert is required", "tls.client_auth must be one of", "tls.min_version",
                 "tls.alpn must be a list", "tls.extra is not a known"):  # fmt: skip
        assert text in bad.stderr, bad.stderr


class HalfClose(reactorkit.Handler):
    """Keeps its side open after the client's EOF (answers later, as http-lite may)."""

    def __init__(self, state: Any = None) -> None:
        super().__init__(state)
        MADE.append(self)

    def eof_received(self) -> bool | None:
        self.connection.write(b"eof\n")
        return True


def test_bytes_after_close_notify_are_dropped_not_buffered(certs: Certs) -> None:
    MADE.clear()
    junk = b"\x17\x03\x03\x40\x00" + bytes(16384)
    count = 256  # 4 MiB after close_notify
    with serve(
        handler=reactorkit.HandlerType(name="half", handler=HalfClose), tls=certs.tls_table()
    ) as srv:
        raw = socket.create_connection(srv.address()[:2], timeout=TIMEOUT)
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        client = certs.client_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
        while True:
            try:
                client.do_handshake()
                break
            except ssl.SSLWantReadError:
                raw.sendall(outgoing.read())
                incoming.write(raw.recv(65536))
        with contextlib.suppress(ssl.SSLWantReadError):
            client.unwrap()
        raw.sendall(outgoing.read())
        while b"eof\n" not in read_plain(client, incoming, raw):  # the server saw the EOF
            pass
        for _ in range(count):
            raw.sendall(junk)
        layer = MADE[0].connection
        deadline = time.monotonic() + TIMEOUT
        while layer._conn.bytes_received < count * len(junk) and time.monotonic() < deadline:
            select.select([], [], [], 0.01)  # the server thread is still reading
        assert layer._conn.bytes_received >= count * len(junk)
        assert layer._incoming.pending == 0
        raw.close()


def read_plain(client: ssl.SSLObject, incoming: ssl.MemoryBIO, raw: socket.socket) -> bytes:
    """Plaintext the server sent, reading the socket once if none is decrypted yet."""
    try:
        return client.read(65536)
    except ssl.SSLWantReadError:
        incoming.write(raw.recv(65536))
        return b""


class BrokenInit(reactorkit.Handler):
    def __init__(self, state: Any = None) -> None:
        raise RuntimeError("handler bug")


def test_a_handler_that_fails_to_build_is_not_a_tls_failure(certs: Certs) -> None:
    # The handshake succeeded; the handler's bug is logged as one (errors),
    # not also counted and logged as a failed TLS handshake.
    handler_type = reactorkit.HandlerType(name="broken", handler=BrokenInit)
    with serve(handler=handler_type, tls=certs.tls_table()) as srv:
        with tls_connect(certs, srv.address()) as sock:
            sock.sendall(b"x")
            assert recv_until_closed(sock) == b""
        listener = next(iter(srv.listeners.values()))
        deadline = time.monotonic() + TIMEOUT
        while listener.connections and time.monotonic() < deadline:
            select.select([], [], [], 0.01)  # connection_lost comes on the next loop pass
        assert not listener.connections
        assert listener.stats.errors == 1
        assert listener.stats.tls_failures == 0


@pytest.mark.parametrize(("handler", "expected"), [("http-lite", "http/1.1"), ("echo", None)])
def test_without_an_alpn_setting_the_handler_type_s_protocols_are_offered(
    certs: Certs, handler: str, expected: str | None
) -> None:
    # [listen.tls] names no alpn: http-lite offers http/1.1 (issue 14), echo nothing.
    with serve(handler=handler, tls=certs.tls_table()) as srv:
        context = certs.client_context()
        context.set_alpn_protocols(["h2", "http/1.1"])
        with tls_connect(certs, srv.address(), context=context) as sock:
            assert sock.selected_alpn_protocol() == expected
