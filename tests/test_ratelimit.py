"""TokenBucket: bursts, refill at the rate, the wait for the next token, bad arguments."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reactorkit import TokenBucket


def test_a_full_bucket_admits_a_burst_then_refuses() -> None:
    bucket = TokenBucket(rate=2.0, burst=3, now=100.0)
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]


def test_tokens_come_back_at_the_rate_up_to_the_burst() -> None:
    bucket = TokenBucket(rate=2.0, burst=3, now=0.0)
    for _ in range(3):
        assert bucket.take(0.0)
    assert not bucket.take(0.4)  # 0.8 tokens
    assert bucket.take(0.5)  # 1.0
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]


def test_delay_says_when_the_next_token_comes() -> None:
    bucket = TokenBucket(rate=4.0, burst=1, now=10.0)
    assert bucket.delay(10.0) == 0.0
    assert bucket.take(10.0)
    assert bucket.delay(10.0) == pytest.approx(0.25)
    assert bucket.delay(10.1) == pytest.approx(0.15)
    assert not bucket.take(10.2)
    assert bucket.take(10.25)


def test_time_going_backwards_adds_nothing() -> None:
    bucket = TokenBucket(rate=1.0, burst=1, now=50.0)
    assert bucket.take(50.0)
    assert not bucket.take(40.0)
    assert not bucket.take(50.5)
    assert bucket.take(51.0)


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (1, 0), (1, 0.5)])
def test_bad_rate_or_burst_is_refused(rate: float, burst: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        TokenBucket(rate=rate, burst=burst, now=0.0)


@given(
    rate=st.floats(min_value=0.1, max_value=1000),
    burst=st.integers(min_value=1, max_value=100),
    steps=st.lists(st.floats(min_value=0, max_value=2), max_size=50),
)
def test_admitted_never_exceed_burst_plus_rate_times_elapsed(
    rate: float, burst: int, steps: list[float]
) -> None:
    bucket = TokenBucket(rate=rate, burst=burst, now=0.0)
    now = 0.0
    admitted = 0
    for step in steps:
        now += step
        admitted += sum(bucket.take(now) for _ in range(5))
    assert admitted <= burst + rate * now + 1e-6
