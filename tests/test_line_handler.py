"""LineHandler: framing at every split point, limits, flow control, fairness, EOF, deadlines."""

from __future__ import annotations

import gc
import itertools
import weakref

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reactorkit import LineHandler
from reactorkit.testing import FakeConnection, run_once


class Lines(LineHandler):
    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.lines: list[bytes] = []
        self.too_long: list[int] = []

    def line_received(self, line: bytes) -> None:
        self.lines.append(line)


class KeepGoing(Lines):
    def line_too_long(self, length: int) -> None:
        self.too_long.append(length)


def test_lf_and_crlf_lines() -> None:
    h = Lines()
    FakeConnection(h).feed(b"one\ntwo\r\nthree")
    assert h.lines == [b"one", b"two"]


def test_custom_delimiter() -> None:
    h = Lines(delimiter=b"\0")
    FakeConnection(h).feed(b"a\0b\r\0c")
    assert h.lines == [b"a", b"b\r"]


def test_over_long_line_gets_an_error_and_closes() -> None:
    h = Lines(max_line_length=8)
    conn = FakeConnection(h)
    conn.feed(b"short\n" + b"x" * 20)
    assert h.lines == [b"short"]
    assert conn.value().startswith(b"-ERR line too long")
    assert conn.closed


def test_complete_over_long_line_in_one_chunk_is_refused() -> None:
    h = Lines(max_line_length=4)
    conn = FakeConnection(h)
    conn.feed(b"toolong\nok\n")
    assert h.lines == []
    assert conn.closed


def test_complete_over_long_line_reports_its_length() -> None:
    h = KeepGoing(max_line_length=4)
    conn = FakeConnection(h)
    conn.feed(b"toolong\r\nok\nabcdefgh\n")
    assert h.too_long == [7, 8]
    assert h.lines == [b"ok"]
    assert not conn.closed


def test_line_exactly_at_the_limit_is_accepted_with_crlf() -> None:
    h = Lines(max_line_length=4)
    conn = FakeConnection(h)
    conn.feed(b"abcd")
    conn.feed(b"\r")
    conn.feed(b"\n")
    assert h.lines == [b"abcd"]
    assert not conn.closed


def test_memory_stays_bounded_while_an_over_long_line_arrives() -> None:
    h = KeepGoing(max_line_length=100)
    conn = FakeConnection(h)
    for _ in range(1000):
        conn.feed(b"y" * 1000)
        assert len(h._line_buffer) <= 1000 + 101
    conn.feed(b"tail\nnext\n")
    assert h.too_long == [1000]
    assert h.lines == [b"next"]  # the rest of the long line was discarded


def test_no_dispatch_after_close() -> None:
    class CloseOnFirst(Lines):
        def line_received(self, line: bytes) -> None:
            super().line_received(line)
            self.connection.close()

    h = CloseOnFirst()
    FakeConnection(h).feed(b"a\nb\nc\n")
    assert h.lines == [b"a"]


def test_reentrant_data_received_only_appends() -> None:
    class Reenter(Lines):
        def line_received(self, line: bytes) -> None:
            super().line_received(line)
            if line == b"a":
                self.data_received(b"injected\n")

    h = Reenter()
    FakeConnection(h).feed(b"a\nb\n")
    assert h.lines == [b"a", b"b", b"injected"]


def test_scanning_resumes_where_it_stopped() -> None:
    calls = 0

    class Counting(bytearray):
        def find(self, *args: object) -> int:  # type: ignore[override]
            nonlocal calls
            calls += 1
            return super().find(*args)  # type: ignore[arg-type]

    h = Lines(max_line_length=100_000)
    FakeConnection(h)
    h._line_buffer = Counting()
    for _ in range(2000):
        h.data_received(b"z")
    h.data_received(b"\n")
    assert h.lines == [b"z" * 2000]
    assert calls <= 2001 + 1


@given(
    lines=st.lists(st.binary(max_size=20).filter(lambda b: b"\n" not in b), max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=10),
    crlf=st.booleans(),
)
def test_any_split_gives_the_same_lines(lines: list[bytes], cuts: list[int], crlf: bool) -> None:
    lines = [line.rstrip(b"\r") for line in lines]
    end = b"\r\n" if crlf else b"\n"
    data = b"".join(line + end for line in lines)
    points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    h = Lines(max_line_length=64)
    conn = FakeConnection(h)
    for start, stop in itertools.pairwise(points):
        conn.feed(data[start:stop])
    assert h.lines == lines
    assert not conn.closed


# -- flow control, fairness, the end of input, the line deadline -------------


def test_at_most_max_lines_per_pass_the_rest_on_later_passes() -> None:
    h = Lines(max_lines_per_pass=3)
    conn = FakeConnection(h)
    conn.feed(b"1\n2\n3\n4\n5\n6\n7\npartial")
    assert h.lines == [b"1", b"2", b"3"]
    assert not conn.is_reading  # the backlog is one read at most
    run_once(conn.reactor)
    assert h.lines == [b"1", b"2", b"3", b"4", b"5", b"6"]
    run_once(conn.reactor)
    assert h.lines[-1] == b"7"
    assert conn.is_reading
    conn.feed(b" line\n")
    assert h.lines[-1] == b"partial line"


def test_one_connections_backlog_does_not_hold_up_another() -> None:
    flood = Lines(max_lines_per_pass=10)
    flood_conn = FakeConnection(flood)
    quiet = Lines()
    quiet_conn = FakeConnection(quiet, reactor=flood_conn.reactor)
    flood_conn.feed(b"x\n" * 1000)
    quiet_conn.feed(b"hello\n")
    assert quiet.lines == [b"hello"]
    passes = 0
    while len(flood.lines) < 1000 and passes < 200:
        run_once(flood_conn.reactor)
        passes += 1
    assert passes == 99  # 10 lines per pass: 10 at once, then 99 passes


def test_pause_lines_holds_lines_and_reading_until_resumed() -> None:
    class PauseOnB(Lines):
        def line_received(self, line: bytes) -> None:
            super().line_received(line)
            if line == b"b":
                self.pause_lines()

    h = PauseOnB()
    conn = FakeConnection(h)
    conn.feed(b"a\nb\nc\nd\n")
    assert h.lines == [b"a", b"b"]
    assert not conn.is_reading
    run_once(conn.reactor)
    assert h.lines == [b"a", b"b"]
    h.resume_lines()
    run_once(conn.reactor)
    assert h.lines == [b"a", b"b", b"c", b"d"]
    assert conn.is_reading


def test_write_buffer_above_high_water_holds_lines_until_it_drains() -> None:
    class Big(Lines):
        def line_received(self, line: bytes) -> None:
            super().line_received(line)
            self.connection.write(b"r" * 1000)

    h = Big()
    conn = FakeConnection(h)
    conn.set_write_buffer_limits(high=4000)
    conn.block_writes()
    conn.feed(b"q\n" * 50)
    assert len(h.lines) == 5  # 5000 bytes buffered: above 4000, stop
    assert not conn.is_reading
    run_once(conn.reactor)
    assert len(h.lines) == 5
    conn.drain()  # the peer read it all, and stops reading again
    conn.block_writes()
    run_once(conn.reactor)
    assert len(h.lines) == 10


def test_eof_dispatches_every_complete_line_then_lines_finished() -> None:
    class Finish(Lines):
        finished = 0

        def lines_finished(self) -> None:
            self.finished += 1
            super().lines_finished()

    h = Finish(max_lines_per_pass=2)
    conn = FakeConnection(h)
    conn.feed(b"1\n2\n3\n4\n5\nunfinished")
    conn.feed_eof()
    assert h.finished == 0
    assert not conn.is_closing()
    for _ in range(3):
        run_once(conn.reactor)
    assert h.lines == [b"1", b"2", b"3", b"4", b"5"]
    assert h.finished == 1
    assert conn.is_closing()


def test_shutdown_requested_stops_reading_and_answers_what_was_received() -> None:
    h = Lines(max_lines_per_pass=1)
    conn = FakeConnection(h)
    conn.feed(b"a\nb\n")
    h.shutdown_requested()
    assert not conn.is_reading
    run_once(conn.reactor)
    assert h.lines == [b"a", b"b"]
    assert conn.is_closing()


def test_line_timeout_default_answer_and_close() -> None:
    h = Lines(line_timeout=5)
    conn = FakeConnection(h)
    conn.feed(b"slow")
    conn.advance(4.9)
    assert not conn.is_closing()
    conn.advance(0.1)
    assert conn.value() == b"-ERR line timeout: a line must be completed within 5 seconds\r\n"
    assert conn.is_closing()
    assert h.lines == []


def test_line_clock_restarts_while_input_is_held_back() -> None:
    h = Lines(line_timeout=5)
    conn = FakeConnection(h)
    conn.feed(b"half")
    h.pause_lines()  # not reading: the rest may wait in the kernel
    conn.advance(5)
    conn.advance(3)
    assert not conn.is_closing()
    h.resume_lines()
    conn.advance(5)
    assert conn.is_closing()


def test_bad_flow_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="max_lines_per_pass must be >= 1"):
        Lines(max_lines_per_pass=0)
    with pytest.raises(ValueError, match="line_timeout must be >= 0"):
        Lines(line_timeout=-1)


def test_a_pending_timer_does_not_keep_a_dropped_handler_alive() -> None:
    h = Lines(line_timeout=30)
    conn = FakeConnection(h)
    conn.feed(b"partial")
    reactor = conn.reactor
    ref = weakref.ref(h)
    del h, conn
    gc.collect()
    assert ref() is None
    reactor.close()


@given(
    lines=st.lists(st.binary(max_size=12).filter(lambda b: b"\n" not in b), max_size=30),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=10),
    per_pass=st.integers(min_value=1, max_value=5),
    pause_every=st.integers(min_value=0, max_value=7),
    eof=st.booleans(),
)
def test_caps_pauses_and_eof_keep_every_line_in_order(
    lines: list[bytes], cuts: list[int], per_pass: int, pause_every: int, eof: bool
) -> None:
    class Pausing(Lines):
        def line_received(self, line: bytes) -> None:
            super().line_received(line)
            if pause_every and len(self.lines) % pause_every == 0:
                self.pause_lines()
                self.connection.reactor.call_soon(self.resume_lines)

    lines = [line.rstrip(b"\r") for line in lines]
    data = b"".join(line + b"\n" for line in lines)
    points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    h = Pausing(max_line_length=64, max_lines_per_pass=per_pass)
    conn = FakeConnection(h)
    for start, stop in itertools.pairwise(points):
        for _ in range(100):  # passes until the connection reads again
            if conn.is_reading:
                break
            run_once(conn.reactor)
        conn.feed(data[start:stop])
    if eof:
        conn.feed_eof()
    for _ in range(100):
        if len(h.lines) == len(lines) and (conn.is_reading or eof):
            break
        run_once(conn.reactor)
    assert h.lines == lines
    assert conn.is_closing() == eof
