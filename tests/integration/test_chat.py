"""chat over real sockets with several clients: delivery, order, rooms, limits, bad input."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from reactorkit.handlers.chat import HELP
from reactorkit.testing import RunningServer, serve
from tests.helpers import connect
from tests.integration.test_line_command import (
    PeakBuffer,
    flood_until_paused,
    never_reading_client,
)


class ChatClient:
    """A line-reading chat client with a timeout on every read."""

    def __init__(self, address: Any) -> None:
        self.sock = connect(address)
        self.file = self.sock.makefile("rb")
        self.nick = self.line().split(", ")[1].split("!")[0]  # from the greeting
        self.line()  # how to change the nick
        self.line()  # you are now in #lobby

    def line(self) -> str:
        raw = self.file.readline()
        assert raw.endswith(b"\r\n"), f"not a CRLF line: {raw!r}"
        return raw[:-2].decode()

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode() + b"\n")

    def expect(self, wanted: str) -> list[str]:
        """Read lines until ``wanted``; returns the lines skipped before it."""
        skipped = []
        while (got := self.line()) != wanted:
            skipped.append(got)
        return skipped

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@contextmanager
def chat_server(**options: Any) -> Iterator[RunningServer]:
    with serve(handler="chat", options=options) as srv:
        yield srv


def clients(srv: RunningServer, n: int) -> list[ChatClient]:
    out = []
    for _ in range(n):
        client = ChatClient(srv.address())
        for earlier in out:
            assert earlier.line() == f"* {client.nick} joined #lobby"
        out.append(client)
    return out


def test_messages_reach_every_other_client_in_order() -> None:
    with chat_server() as srv:
        a, b, c = clients(srv, 3)
        for i in range(5):
            a.send(f"message {i}")
        for reader in (b, c):
            assert [reader.line() for _ in range(5)] == [
                f"<{a.nick}> message {i}" for i in range(5)
            ]
        b.send("reply")
        assert a.line() == f"<{b.nick}> reply"
        for client in (a, b, c):
            client.close()


def test_rooms_private_messages_and_announcements() -> None:
    with chat_server() as srv:
        a, b, c = clients(srv, 3)
        a.send("/nick alice")
        assert a.line() == "* you are now alice"
        assert b.line() == c.line() == f"* {a.nick} is now alice"
        a.send("/join ops")
        assert a.line() == "* you are now in #ops (0 others here)"
        assert b.line() == c.line() == "* alice left for #ops"
        b.send("/join ops")
        assert a.line() == f"* {b.nick} joined #ops"
        assert b.line() == "* you are now in #ops (1 other here)"
        assert c.line() == f"* {b.nick} left for #ops"
        b.send("ops only")
        assert a.line() == f"<{b.nick}> ops only"
        c.send(f"/msg alice hello from {c.nick}")
        assert c.line() == f"-> *alice* hello from {c.nick}"
        assert a.line() == f"*{c.nick}* hello from {c.nick}"
        c.send("/who")
        assert c.line() == f"* in #lobby: {c.nick}"
        a.send("/quit")
        assert a.line() == "* bye"
        assert b.line() == "* alice left (quit)"
        b.send("/quit")
        assert b.line() == "* bye"
        assert b.file.readline() == b""  # closed: its room is gone before c asks
        c.send("/rooms")
        assert c.line() == "* rooms: #lobby (1)"
        for client in (a, b, c):
            client.close()


def test_invalid_utf8_is_replaced() -> None:
    with chat_server() as srv:
        a, b = clients(srv, 2)
        a.sock.sendall(b"caf\xc3 \xff ok\r\n")
        assert b.line() == f"<{a.nick}> caf\ufffd \ufffd ok"
        a.close()
        b.close()


def test_client_disconnecting_mid_line_is_announced_and_the_fragment_dropped() -> None:
    with chat_server() as srv:
        a, b = clients(srv, 2)
        a.sock.sendall(b"half a mess")
        a.close()
        assert b.line() == f"* {a.nick} left (disconnected)"
        b.send("/who")
        assert b.line() == f"* in #lobby: {b.nick}"
        b.close()


def test_over_long_line_disconnects() -> None:
    with chat_server(max_line_length=64) as srv:
        a, b = clients(srv, 2)
        a.sock.sendall(b"y" * 200)
        assert a.line() == "! line too long: the limit is 64 bytes; disconnecting"
        assert a.file.readline() == b""
        assert b.line() == f"* {a.nick} left (line too long)"
        a.close()
        b.close()


def test_flooding_client_is_warned_then_disconnected() -> None:
    with chat_server(rate=1.0, burst=2, flood_strikes=3) as srv:
        a, b = clients(srv, 2)
        a.sock.sendall(b"".join(b"spam %d\n" % i for i in range(10)))
        assert b.line() == f"<{a.nick}> spam 0"
        assert b.line() == f"<{a.nick}> spam 1"
        warnings = [a.line() for _ in range(2)]
        assert all(w.startswith("! slow down") for w in warnings)
        assert a.line() == "! disconnected for flooding"
        assert b.line() == f"* {a.nick} left (flooding)"
        a.close()
        b.close()


def test_never_reading_client_is_dropped_while_others_chat_at_full_speed() -> None:
    with chat_server(max_output_buffer=16384, rate=100000.0, burst=100000) as srv:
        talker, listener = clients(srv, 2)
        stuck = socket.create_connection(srv.address()[:2], timeout=5)
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        assert talker.line().endswith("joined #lobby")
        assert listener.line().endswith("joined #lobby")
        payload = "z" * 900
        count = 10000  # ~9 MB to every reader: past any loopback socket buffer (4 MiB max)
        started = time.monotonic()
        for i in range(count):
            talker.sock.sendall(f"{i} {payload}\n".encode())
            if i % 100 == 99:  # keep the listener's socket drained as we go
                for j in range(i - 99, i + 1):
                    line = listener.line()
                    if line.startswith("* "):  # the stuck client's leave notice
                        assert line.endswith("left (too slow reading)")
                        line = listener.line()
                    assert line == f"<{talker.nick}> {j} {payload}"
        assert time.monotonic() - started < 30
        open_count = srv.call(lambda: srv.listeners["chat"].open_connections)
        assert open_count == 2, "the never-reading client was not disconnected"
        stuck.close()
        talker.close()
        listener.close()


def test_a_line_not_finished_in_time_disconnects() -> None:
    with chat_server(line_timeout=0.2) as srv:
        slow, other = clients(srv, 2)
        slow.sock.sendall(b"typing very slo")
        assert slow.line() == "! line not finished within 0.2 seconds; disconnecting"
        assert slow.file.readline() == b""
        assert other.line() == f"* {slow.nick} left (line timeout)"
        slow.close()
        other.close()


def test_a_client_that_sends_but_never_reads_is_bounded_and_others_chat_on() -> None:
    with chat_server(rate=1e9, burst=10**9) as srv:
        talker, listener = clients(srv, 2)
        flooder = never_reading_client(srv.address())
        assert talker.line().endswith("joined #lobby")
        assert listener.line().endswith("joined #lobby")
        with flooder:
            peak = PeakBuffer(srv)
            flood_until_paused(srv, flooder, b"/help\n" * (3 * 1024 * 1024 // 6))
            conns = srv.call(lambda: list(srv.server.connections))
            stuck = [c for c in conns if not c.is_reading]
            assert len(stuck) == 1  # the flooder, held back but still connected
            talker.send("still here")
            assert listener.line() == f"<{talker.nick}> still here"
            help_size = sum(len(line) + 2 for line in HELP)
            bound = stuck[0].high_water + stuck[0].max_read + 1024 + help_size
            assert peak.stop() <= bound
        talker.close()
        listener.close()
