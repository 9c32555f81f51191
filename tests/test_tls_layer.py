"""TLSLayer driven in memory: a FakeConnection below it, an SSLObject client facing it.

Deterministic (FakeClock, no sockets): the handshake gates the handler,
pause_reading holds plaintext, EOF and close_notify, the handshake deadline.
"""

from __future__ import annotations

import contextlib
import ssl
from pathlib import Path
from typing import Any

import pytest

import reactorkit
from reactorkit.testing import FakeConnection
from reactorkit.tls import TLSConfig, TLSLayer, make_server_context
from tests.tlscerts import Certs, make_certs


class Recorder(reactorkit.Handler):
    def __init__(self, state: Any = None) -> None:
        super().__init__(state)
        self.data: list[bytes] = []
        self.events: list[str] = []
        self.keep_open = False

    def connection_made(self, connection: reactorkit.Transport) -> None:
        super().connection_made(connection)
        self.events.append("made")

    def data_received(self, data: bytes) -> None:
        self.data.append(data)

    def eof_received(self) -> bool | None:
        self.events.append("eof")
        return self.keep_open

    def connection_lost(self, exc: BaseException | None) -> None:
        self.events.append("lost")


class Pair:
    """A TLS client (SSLObject) talking to a TLSLayer over a FakeConnection."""

    def __init__(self, certs: Certs, timeout: float = 10.0) -> None:
        context = make_server_context(TLSConfig(cert=certs.server_cert, key=certs.server_key))
        self.inner = Recorder()
        self.failures = 0
        self.layer = TLSLayer(lambda: self.inner, context, timeout, self._failed)
        self.raw = FakeConnection(self.layer)  # type: ignore[arg-type]
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.client = certs.client_context().wrap_bio(
            self.incoming, self.outgoing, server_hostname="localhost"
        )

    def _failed(self) -> None:
        self.failures += 1

    def pump(self) -> None:
        """Move bytes both ways until neither side has anything to send."""
        for _ in range(20):
            to_server = self.outgoing.read()
            if to_server and not self.raw.closed and self.raw.is_reading:
                self.raw.feed(to_server)
            to_client = self.raw.take()
            if to_client:
                self.incoming.write(to_client)
            if not to_server and not to_client:
                return

    def handshake(self) -> None:
        for _ in range(10):
            try:
                self.client.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.pump()
        self.pump()

    def read_all(self) -> bytes:
        out = b""
        while True:
            try:
                out += self.client.read(65536)
            except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                return out


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return make_certs(tmp_path)


def test_handler_is_made_only_after_the_handshake(certs: Certs) -> None:
    pair = Pair(certs)
    assert pair.inner.events == []
    pair.handshake()
    assert pair.inner.events == ["made"]
    assert pair.inner.connection is pair.layer
    assert pair.layer.is_tls
    assert pair.layer.peername == pair.raw.peername


def test_plaintext_both_ways(certs: Certs) -> None:
    pair = Pair(certs)
    pair.handshake()
    pair.client.write(b"hello")
    pair.pump()
    assert b"".join(pair.inner.data) == b"hello"
    pair.layer.write(b"world")
    pair.pump()
    assert pair.read_all() == b"world"
    assert (pair.layer.bytes_received, pair.layer.bytes_sent) == (5, 5)


def test_pause_reading_holds_plaintext_until_resume(certs: Certs) -> None:
    pair = Pair(certs)
    pair.handshake()
    pair.layer.pause_reading()
    assert not pair.raw.is_reading
    pair.client.write(b"held")
    pair.layer.data_received(pair.outgoing.read())  # already read by the socket
    assert pair.inner.data == []
    pair.layer.resume_reading()
    pair.raw.settle()
    assert pair.inner.data == [b"held"]


def test_close_notify_is_eof_and_close_sends_one(certs: Certs) -> None:
    pair = Pair(certs)
    pair.handshake()
    pair.client.write(b"last words")
    with contextlib.suppress(ssl.SSLWantReadError):
        pair.client.unwrap()  # close_notify, and no TCP EOF after it
    pair.pump()
    assert pair.inner.data == [b"last words"]
    assert pair.inner.events == ["made", "eof"]
    assert pair.raw.is_closing()  # the handler did not keep it open: closed
    pair.raw.settle()
    assert pair.inner.events == ["made", "eof", "lost"]


def test_half_close_keeps_writing_after_eof(certs: Certs) -> None:
    pair = Pair(certs)
    pair.handshake()
    pair.inner.keep_open = True
    pair.raw.feed_eof()  # TCP EOF without close_notify
    assert pair.inner.events == ["made", "eof"]
    assert not pair.raw.is_closing()
    pair.layer.write(b"after eof")
    pair.pump()
    assert pair.read_all() == b"after eof"


def test_handshake_deadline_closes_without_the_handler(certs: Certs) -> None:
    pair = Pair(certs, timeout=2.0)
    pair.raw.advance(1.9)
    assert not pair.raw.is_closing()
    pair.raw.advance(0.2)
    assert pair.raw.is_closing()
    assert pair.failures == 1
    pair.raw.settle()
    assert pair.inner.events == []


def test_garbage_fails_the_handshake_once(certs: Certs) -> None:
    pair = Pair(certs)
    pair.raw.feed(b"GET / HTTP/1.1\r\n\r\n")
    assert pair.raw.is_closing()
    assert pair.failures == 1
    pair.raw.advance(20)  # the deadline was cancelled: no second failure
    assert pair.failures == 1
    assert pair.inner.events == []


def test_bytes_after_close_notify_are_not_buffered(certs: Certs) -> None:
    # A handler that keeps its side open after EOF (half-close) must not let
    # the client grow the incoming BIO: nothing may follow close_notify, and
    # SSLObject never reads past it, so such bytes are dropped on arrival.
    pair = Pair(certs)
    pair.handshake()
    pair.inner.keep_open = True
    with contextlib.suppress(ssl.SSLWantReadError):
        pair.client.unwrap()
    pair.pump()
    assert pair.inner.events == ["made", "eof"]
    for _ in range(64):
        pair.raw.feed(b"\x17\x03\x03\x40\x00" + bytes(16384))
    assert pair.layer._incoming.pending == 0
    assert pair.inner.data == []
    pair.layer.write(b"still answering")  # the handler's side still works
    pair.pump()
    assert pair.read_all() == b"still answering"


def test_eof_while_the_handler_holds_reading_waits_for_the_held_plaintext(certs: Certs) -> None:
    # Promise 3: what the client sent before its EOF is delivered, then the
    # EOF. A handler that paused reading mid-delivery (output over high water)
    # must not be told EOF while plaintext is still held in the TLS layer.
    pair = Pair(certs)
    pair.handshake()
    inner = pair.inner
    original = inner.data_received

    def pause_after_first(data: bytes) -> None:
        original(data)
        if len(inner.data) == 1:
            pair.layer.pause_reading()

    inner.data_received = pause_after_first  # type: ignore[method-assign]
    for part in (b"first ", b"second ", b"third"):
        pair.client.write(part)  # one TLS record each
    pair.raw.feed(pair.outgoing.read())
    assert inner.data == [b"first "]  # paused: the rest is held
    pair.raw.feed_eof()  # the client's FIN arrives while the handler holds reading
    assert inner.events == ["made"]  # not told yet: plaintext is still held
    assert not pair.raw.is_closing()
    pair.layer.resume_reading()
    pair.raw.settle()
    assert b"".join(inner.data) == b"first second third"
    assert inner.events == ["made", "eof"]  # then the EOF, once
    assert pair.raw.is_closing()  # and the close the handler asked for
