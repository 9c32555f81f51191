"""LineHandler framing: delimiters, CRLF, limits, bounded memory, every split point."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from reactorkit import LineHandler
from reactorkit.testing import FakeConnection


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
