"""Hostile review of chat's fast paths: the printable-line skip and the inline refill.

Each fast path is checked against the formula it replaced, with hypothesis.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from reactorkit import TokenBucket
from reactorkit.handlers.chat import _CONTROL, ChatHandler, ChatOptions, ChatRooms
from reactorkit.testing import FakeConnection

# -- the printable-line skip --------------------------------------------------

# Every class of code point that printable/regex could disagree on.
_SPECIAL = [
    *map(chr, range(0x20)),  # C0, TAB, LF, CR
    "\x7f",  # DEL
    *map(chr, range(0x80, 0xA0)),  # C1
    "\u00a0",  # NBSP
    "\u00ad",  # soft hyphen (Cf)
    "\u1680",
    "\u2000",
    "\u200b",  # zero-width space
    "\u200d",  # ZWJ
    "\u200e",
    "\u202e",  # RLO
    "\u2028",
    "\u2029",
    "\u3000",
    "\ufeff",
    "\ufffd",
    "\U000e0001",  # language tag
    "\u0301",  # combining acute
    "e\u0301",
    "\U0001f468\u200d\U0001f469\u200d\U0001f467",  # a ZWJ family
    "\U0001f1eb\U0001f1f7",  # a flag
    "\ud800",  # a lone surrogate (only from bad input; encoded with "replace")
    "\U0010ffff",
    "\ue000",  # private use
    "\u0378",  # unassigned
]
_TEXT = st.lists(
    st.one_of(st.sampled_from(_SPECIAL), st.characters(), st.text(max_size=4)), max_size=30
).map("".join)
# Raw lines as a client sends them: valid UTF-8, broken UTF-8, anything.
_RAW = st.lists(
    st.one_of(
        _TEXT.map(lambda s: s.encode("utf-8", "surrogatepass")),
        st.binary(max_size=8),
        st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xc2\x85", b"\xc2\x9b", b"\xe2\x80"]),
    ),
    max_size=12,
).map(b"".join)


@given(_TEXT)
@example("a\tb")
@example("\x1b[2J")
@example("\u2028\x85\x9b")
def test_the_printable_skip_never_changes_what_the_regex_makes(text: str) -> None:
    # The fast path is only right if a printable string has nothing to replace.
    fast = text if text.isprintable() else _CONTROL.sub("\ufffd", text)
    assert fast == _CONTROL.sub("\ufffd", text)


def _old_text(raw: bytes) -> str:
    # line_received before the fast path (9706593^).
    return _CONTROL.sub("\ufffd", raw.decode("utf-8", "replace")).strip()


@settings(max_examples=300, deadline=None)
@given(_RAW)
@example(b"\xed\xa0\x80 lone surrogate")
@example(b"\xc2\x9b31m C1 CSI")
@example(b"\x1c\x1d\x1e\x1f separators that strip() eats")
@example(b"\xe2\x80\xa8")
def test_a_line_reaches_the_others_as_the_regex_alone_made_it(raw: bytes) -> None:
    raw = raw.replace(b"\n", b"")
    rooms = ChatRooms(options=ChatOptions(rate=1e9, burst=10**9))
    a, b = ChatHandler(rooms), ChatHandler(rooms)
    conn_a, conn_b = FakeConnection(a), FakeConnection(b)
    conn_a.take()
    conn_b.take()
    a.line_received(b"m " + raw)  # never a command
    expected = _old_text(b"m " + raw)
    assert conn_b.take() == f"<{a.nick}> {expected}\r\n".encode("utf-8", "replace")


# -- TokenBucket.take against the formula it replaced --------------------------


class OldBucket:
    """TokenBucket as it was before 9706593: _refill() with min(), then spend."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst, self.tokens, self.updated = float(rate), float(burst), 0.0, now
        self.tokens = self.burst

    def _refill(self, now: float) -> None:
        elapsed = now - self.updated
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self.updated = now

    def take(self, now: float) -> bool:
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def delay(self, now: float) -> float:
        self._refill(now)
        return max(0.0, (1.0 - self.tokens) / self.rate)


def _same(x: float, y: float) -> bool:
    return x == y or (math.isnan(x) and math.isnan(y))


_TIMES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-1e3, 1e3),
    st.sampled_from([0.0, -0.0, 1e-300, 5e-324, 1e308, -1e308, math.inf, -math.inf]),
)
_STEPS = st.lists(
    st.tuples(st.sampled_from(["take", "delay", "same", "back"]), _TIMES), max_size=60
)


@settings(max_examples=500, deadline=None)
@given(
    rate=st.one_of(
        st.floats(min_value=5e-324, allow_infinity=True, exclude_min=False),
        st.sampled_from([1e-9, 0.1, 0.3, 1 / 3, 2.5, 1e300, math.inf]),
    ),
    burst=st.one_of(
        st.floats(min_value=1.0, allow_infinity=True),
        st.integers(1, 10**6),
        st.sampled_from([1, 1.0000000001, 1.5, 2.9999999, 10**20]),
    ),
    start=_TIMES,
    steps=_STEPS,
)
def test_take_is_the_old_refill_then_spend(
    rate: float, burst: float, start: float, steps: list[tuple[str, float]]
) -> None:
    new, old = TokenBucket(rate, burst, start), OldBucket(rate, burst, start)
    now = start
    for op, t in steps:
        if op == "same":
            pass  # equal times: take again at the same instant
        elif op == "back":
            now = now - abs(t) if not math.isnan(t) else now
        else:
            now = t
        if op == "delay":
            assert _same(new.delay(now), old.delay(now))
        else:
            assert new.take(now) is old.take(now)
        assert _same(new.tokens, old.tokens), (new, old.tokens)
        assert _same(new.updated, old.updated)


def test_delay_after_take_is_when_take_next_succeeds() -> None:
    bucket = TokenBucket(rate=3.0, burst=2, now=7.0)
    assert bucket.take(7.0)
    assert bucket.take(7.0)
    assert not bucket.take(7.0)
    wait = bucket.delay(7.1)
    assert wait == pytest.approx(1 / 3 - 0.1)
    assert not bucket.take(7.1 + wait / 2)
    assert bucket.take(7.1 + wait + 1e-9)
    assert bucket.tokens >= 0.0


def test_a_bucket_never_goes_negative_nor_past_burst_under_drift() -> None:
    bucket = TokenBucket(rate=0.7, burst=3, now=0.0)
    now = 0.0
    for i in range(10_000):
        now += 0.013 * (i % 7) - 0.02 * (i % 3 == 0)  # forward, equal and backward steps
        bucket.take(now)
        assert 0.0 <= bucket.tokens <= bucket.burst
