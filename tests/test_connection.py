"""Connection over a socketpair: send-first writes, buffering, water marks, close, half-close."""

from __future__ import annotations

import array
import gc
import logging
import selectors
import socket
from collections.abc import Iterator

import pytest

from reactorkit import Connection, Handler, Reactor
from reactorkit.testing import FakeClock, run_once, run_until


class Recorder(Handler):
    """Records every callback."""

    def __init__(self, keep_open_on_eof: bool = False) -> None:
        super().__init__()
        self.events: list[object] = []
        self.data = bytearray()
        self.keep_open_on_eof = keep_open_on_eof

    def connection_made(self, connection: Connection) -> None:  # type: ignore[override]
        super().connection_made(connection)
        self.events.append("made")

    def data_received(self, data: bytes) -> None:
        self.data += data

    def eof_received(self) -> bool:
        self.events.append("eof")
        return self.keep_open_on_eof

    def connection_lost(self, exc: BaseException | None) -> None:
        self.events.append(("lost", exc))

    def pause_writing(self) -> None:
        self.events.append("pause")

    def resume_writing(self) -> None:
        self.events.append("resume")


@pytest.fixture
def reactor() -> Iterator[Reactor]:
    r = Reactor()
    yield r
    r.close()


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.settimeout(5)
    # Small kernel buffers so the would-block paths are reached quickly.
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    yield a, b
    a.close()
    b.close()


def make(reactor: Reactor, sock: socket.socket, handler: Handler, **kw: int) -> Connection:
    conn = Connection(reactor, sock, handler, peername=("test", 0), **kw)
    conn.start()
    return conn


def registered_events(reactor: Reactor, sock: socket.socket) -> int:
    try:
        return reactor.selector.get_key(sock).events
    except KeyError:
        return 0


def recv_nowait(sock: socket.socket) -> bytes:
    """What the peer has received so far, without blocking (the loop must run meanwhile)."""
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        return sock.recv(65536)
    except BlockingIOError:
        return b""
    finally:
        sock.settimeout(timeout)


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


def test_write_sends_at_once_without_registering_for_write(reactor, pair) -> None:
    a, b = pair
    conn = make(reactor, a, Recorder())
    conn.write(b"hello")
    assert recv_exactly(b, 5) == b"hello"
    assert conn.get_write_buffer_size() == 0
    assert registered_events(reactor, a) == selectors.EVENT_READ
    assert conn.bytes_sent == 5


def test_unsent_tail_is_buffered_and_event_write_registered_only_meanwhile(reactor, pair) -> None:
    a, b = pair
    handler = Recorder()
    conn = make(reactor, a, handler, high_water=10**9)
    payload = bytes(range(256)) * 2048  # 512 KiB, far more than the socket takes
    conn.write(payload)
    assert 0 < conn.get_write_buffer_size() < len(payload)
    assert registered_events(reactor, a) & selectors.EVENT_WRITE
    received = bytearray()

    def pump() -> bool:
        received.extend(recv_nowait(b))
        return len(received) == len(payload)

    run_until(reactor, pump, timeout=10)
    run_once(reactor)
    assert bytes(received) == payload
    assert conn.get_write_buffer_size() == 0
    assert registered_events(reactor, a) == selectors.EVENT_READ


def test_writes_after_a_buffered_one_keep_their_order(reactor, pair) -> None:
    a, b = pair
    conn = make(reactor, a, Recorder(), high_water=10**9)
    parts = [bytes([i]) * 50_000 for i in range(1, 6)]
    for part in parts:
        conn.write(bytearray(part))  # a mutable buffer the caller may reuse
    received = bytearray()
    total = sum(map(len, parts))

    def pump() -> bool:
        received.extend(recv_nowait(b))
        return len(received) >= total

    run_until(reactor, pump, timeout=10)
    assert bytes(received) == b"".join(parts)


def test_water_marks_pause_and_resume_writing(reactor, pair) -> None:
    a, b = pair
    handler = Recorder()
    conn = make(reactor, a, handler, high_water=32 * 1024, low_water=8 * 1024)
    conn.write(b"x" * 100_000)
    assert handler.events[-1] == "pause"
    received = 0

    def pump() -> bool:
        nonlocal received
        received += len(recv_nowait(b))
        return "resume" in handler.events

    run_until(reactor, pump, timeout=10)
    assert conn.get_write_buffer_size() <= 8 * 1024
    assert handler.events.count("pause") == 1


def test_data_is_delivered_and_counted(reactor, pair) -> None:
    a, b = pair
    handler = Recorder()
    conn = make(reactor, a, handler)
    b.sendall(b"abc")
    run_until(reactor, lambda: handler.data == b"abc")
    assert conn.bytes_received == 3


def test_pause_reading_stops_delivery_until_resumed(reactor, pair) -> None:
    a, b = pair
    handler = Recorder()
    conn = make(reactor, a, handler)
    conn.pause_reading()
    assert not conn.is_reading
    b.sendall(b"held")
    for _ in range(3):
        reactor.call_later(0.01, lambda: None)
        run_once(reactor)
    assert handler.data == b""
    conn.resume_reading()
    run_until(reactor, lambda: handler.data == b"held")


def test_eof_closes_by_default(reactor, pair) -> None:
    a, b = pair
    handler = Recorder()
    make(reactor, a, handler)
    b.shutdown(socket.SHUT_WR)
    run_until(reactor, lambda: ("lost", None) in handler.events)
    assert handler.events == ["made", "eof", ("lost", None)]
    assert b.recv(10) == b""


def test_half_close_keeps_writing_after_eof(reactor, pair) -> None:
    a, b = pair
    handler = Recorder(keep_open_on_eof=True)
    conn = make(reactor, a, handler)
    b.shutdown(socket.SHUT_WR)
    run_until(reactor, lambda: "eof" in handler.events)
    conn.write(b"still here")
    conn.close()
    run_until(reactor, lambda: ("lost", None) in handler.events)
    assert recv_exactly(b, 10) == b"still here"


def test_close_flushes_the_buffer_first(reactor, pair) -> None:
    a, b = pair
    handler = Recorder()
    conn = make(reactor, a, handler, high_water=10**9)
    payload = b"z" * 300_000
    conn.write(payload)
    conn.close()
    assert conn.is_closing()
    conn.write(b"ignored after close")
    received = bytearray()

    def pump() -> bool:
        b.setblocking(False)
        try:
            chunk = b.recv(65536)
        except BlockingIOError:
            return False
        finally:
            b.settimeout(5)
        received.extend(chunk)
        return not chunk

    run_until(reactor, pump, timeout=10)
    assert bytes(received) == payload
    run_until(reactor, lambda: ("lost", None) in handler.events)


def test_abort_drops_the_buffer_and_closes_at_once(reactor, pair) -> None:
    a, _ = pair
    handler = Recorder()
    conn = make(reactor, a, handler, high_water=10**9)
    conn.write(b"q" * 300_000)
    conn.abort()
    assert conn.state == "closed"
    assert conn.get_write_buffer_size() == 0
    run_once(reactor)
    assert handler.events[-1] == ("lost", None)


def test_connection_lost_is_delivered_on_the_next_pass_not_inside_close(reactor, pair) -> None:
    a, _ = pair
    handler = Recorder()
    conn = make(reactor, a, handler)
    conn.close()
    assert ("lost", None) not in handler.events
    run_once(reactor)
    assert handler.events[-1] == ("lost", None)


def test_close_lingers_shutting_the_write_side_until_the_peer_closes(reactor, pair) -> None:
    a, b = pair
    handler = Recorder()
    conn = make(reactor, a, handler, linger_timeout=2)
    b.sendall(b"unread input")  # closing over unread input would send RST
    conn.write(b"goodbye")
    conn.close()
    assert conn.state == "lingering"
    assert b.recv(100) == b"goodbye"
    assert b.recv(100) == b""  # our side is shut: the peer sees EOF after the data
    b.sendall(b"more the peer still sends")
    run_until(reactor, lambda: ("lost", None) in handler.events)
    assert conn.state == "lingering"  # the handler is told; the socket waits for the peer
    b.close()
    run_until(reactor, lambda: conn.state == "closed")


def test_lingering_ends_at_the_timeout_when_the_peer_never_closes(pair) -> None:
    a, _ = pair
    clock = FakeClock()
    reactor = Reactor(clock=clock)
    try:
        conn = make(reactor, a, Recorder(), linger_timeout=2)
        conn.close()
        assert conn.state == "lingering"
        clock.advance(conn.linger_timeout)
        run_once(reactor)
        assert conn.state == "closed"
    finally:
        reactor.close()


def test_peer_reset_is_reported_to_connection_lost(reactor, pair) -> None:
    a, b = pair
    handler = Recorder()
    conn = make(reactor, a, handler, high_water=10**9)
    conn.write(b"x" * 300_000)  # leave data buffered
    b.close()
    run_until(reactor, lambda: any(isinstance(e, tuple) for e in handler.events), timeout=10)
    kind, exc = handler.events[-1]  # type: ignore[misc]
    assert kind == "lost"
    assert isinstance(exc, OSError)


def test_handler_exception_aborts_only_that_connection(reactor, caplog) -> None:
    class Boom(Recorder):
        def data_received(self, data: bytes) -> None:
            raise RuntimeError("handler bug")

    a1, b1 = socket.socketpair()
    a2, b2 = socket.socketpair()
    for s in (a1, a2):
        s.setblocking(False)
    for s in (b1, b2):
        s.settimeout(5)
    bad, good = Boom(), Recorder()
    make(reactor, a1, bad)
    make(reactor, a2, good)
    with caplog.at_level(logging.ERROR, logger="reactorkit.connection"):
        b1.sendall(b"trigger")
        b2.sendall(b"fine")
        run_until(reactor, lambda: "lost" in str(bad.events) and good.data == b"fine")
    assert b1.recv(10) == b""
    assert "handler bug" in caplog.text
    assert "Boom.data_received" in caplog.text
    assert "test:0" in caplog.text  # the peer
    assert ("lost", None) not in good.events
    for s in (a1, b1, a2, b2):
        s.close()


def test_repr_shows_fd_peer_state_and_buffer(reactor, pair) -> None:
    a, _ = pair
    conn = make(reactor, a, Recorder())
    text = repr(conn)
    assert f"fd={a.fileno()}" in text
    assert "state=open" in text
    assert "buffered=0" in text


def test_set_write_buffer_limits_validates(reactor, pair) -> None:
    a, _ = pair
    conn = make(reactor, a, Recorder())
    conn.set_write_buffer_limits(high=1000)
    assert (conn.high_water, conn.low_water) == (1000, 250)
    with pytest.raises(ValueError):
        conn.set_write_buffer_limits(high=10, low=20)


def test_on_lost_runs_after_the_handlers_connection_lost(reactor, pair) -> None:
    a, _ = pair
    handler = Recorder()
    seen: list[object] = []
    conn = Connection(
        reactor,
        a,
        handler,
        peername=("test", 0),
        on_lost=lambda c, exc: seen.append((c, exc, list(handler.events))),
    )
    conn.start()
    conn.abort()
    run_once(reactor)
    ((who, exc, events),) = seen
    assert who is conn
    assert exc is None
    assert events[-1] == ("lost", None)  # the handler was told first


def test_the_connection_counts_its_read_pauses_without_touching_its_listener(reactor, pair) -> None:
    # Dependencies run one way (issue 9 item 17): a connection knows its
    # listener's name for log lines, never its counters.
    class NameOnly:
        name = "named"
        plugin = "plugin 'x'"

    a, _ = pair
    conn = Connection(reactor, a, Recorder(), listener=NameOnly(), peername=("test", 0))  # type: ignore[arg-type]
    conn.start()
    conn.pause_reading()
    conn.resume_reading()
    conn.pause_reading()
    assert conn.reads_paused == 2
    conn.abort()
    run_once(reactor)


def test_a_descriptor_the_reactor_refuses_closes_that_connection_only(
    reactor: Reactor, pair: tuple[socket.socket, socket.socket], monkeypatch, caplog
) -> None:
    # The selectors fallback keeps the key of a socket a plugin closed without
    # unregistering it, and refuses the number when a new socket reuses it.
    a, b = pair

    def refuse(fileobj: object, events: int, data: object = None) -> None:
        raise KeyError(f"{fileobj!r} is already registered")

    monkeypatch.setattr(reactor, "register", refuse)
    lost: list[object] = []
    handler = Recorder()
    conn = Connection(
        reactor, a, handler, peername=("test", 0), on_lost=lambda c, exc: lost.append(exc)
    )
    with caplog.at_level(logging.ERROR, logger="reactorkit.connection"):
        conn.start()
    assert conn.is_closing()
    assert a.fileno() == -1  # not leaked
    run_once(reactor)
    assert len(lost) == 1  # the listener's bookkeeping ran
    assert isinstance(lost[0], KeyError)
    assert handler.events == []  # never made, so never lost
    assert "refused its descriptor" in caplog.text
    assert b.recv(10) == b""  # the peer sees the close


def test_a_memoryview_of_wide_items_sent_whole_leaves_nothing_queued(reactor, pair) -> None:
    # len() of such a view counts items, not bytes: the write once queued an
    # empty chunk that nothing sent, EVENT_WRITE stayed on (a busy loop) and
    # close() waited for it forever.
    a, b = pair
    handler = Recorder()
    conn = make(reactor, a, handler)
    small = array.array("I", range(100))
    conn.write(memoryview(small))
    assert recv_exactly(b, len(small) * 4) == small.tobytes()
    assert registered_events(reactor, a) == selectors.EVENT_READ
    conn.close()
    b.shutdown(socket.SHUT_WR)
    run_until(reactor, lambda: ("lost", None) in handler.events, timeout=5)


def test_memoryviews_of_wide_items_are_buffered_in_bytes_and_in_order(reactor, pair) -> None:
    a, b = pair
    conn = make(reactor, a, Recorder(), high_water=10**9)
    big = array.array("I", range(200_000))  # 800 kB: most of it is buffered
    small = array.array("I", range(100))
    conn.write(memoryview(big))
    assert conn.get_write_buffer_size() > 0
    conn.write(memoryview(small)[::2])  # not contiguous: copied
    expected = big.tobytes() + small[::2].tobytes()
    received = bytearray()

    def pump() -> bool:
        received.extend(recv_nowait(b))
        return len(received) >= len(expected)

    run_until(reactor, pump, timeout=10)
    assert bytes(received) == expected
    assert conn.get_write_buffer_size() == 0


@pytest.mark.parametrize(
    "address",
    [
        ("127.0.0.1", 40000),
        ("::1", 40000, 0, 0),  # IPv6: a 4-tuple
        "/run/app.sock",  # a UNIX socket's path
        "",  # an unnamed UNIX peer
        None,
    ],
)
def test_peername_reads_back_as_given_and_an_idle_pair_holds_no_tuple(address: object) -> None:
    reactor = Reactor()
    a, b = socket.socketpair()
    try:
        conn = Connection(reactor, a, Handler(), peername=("10.0.0.1", 5))
        conn.peername = address
        assert conn.peername == address
        assert type(conn.peername) is type(address)
        if isinstance(address, tuple) and len(address) == 2:
            # Kept as host and port: reading makes the tuple, holding does not.
            assert not any(isinstance(r, tuple) for r in gc.get_referents(conn))
    finally:
        a.close()
        b.close()
        reactor.close()
