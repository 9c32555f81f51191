"""TokenBucket: the rate limit of chat and line-command.

A bucket holds up to ``burst`` tokens and gains ``rate`` tokens a second;
each admitted line spends one. A client may therefore send ``burst`` lines
at once, then ``rate`` lines a second on average.

This module is sans-IO: the caller passes the time (``reactor.time``), so
the bucket never reads a clock, schedules a timer or touches a socket, and
tests drive it with plain numbers.
"""

from __future__ import annotations

from typing import final

__all__ = ["TokenBucket"]


@final
class TokenBucket:
    """A token bucket: ``rate`` tokens a second, at most ``burst`` saved.

    It starts full.

    Args:
        rate: tokens gained per second; must be > 0.
        burst: the most tokens the bucket holds; must be >= 1.
        now: the current time in seconds (any monotonic origin).

    Raises:
        ValueError: ``rate`` is not positive or ``burst`` is below 1.
    """

    __slots__ = ("burst", "rate", "tokens", "updated")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be > 0 tokens per second, got {rate!r}")
        if not burst >= 1:
            raise ValueError(f"burst must be >= 1 token, got {burst!r}")
        self.rate = float(rate)
        self.burst = float(burst)
        self.tokens = self.burst
        self.updated = now

    def _refill(self, now: float) -> None:
        elapsed = now - self.updated
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self.updated = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one.

        Returns:
            True if a token was spent (the line is admitted), False if the
            bucket is empty.
        """
        # _refill, inline: this runs once per line of every client.
        tokens = self.tokens
        elapsed = now - self.updated
        if elapsed > 0.0:
            tokens += elapsed * self.rate
            if tokens > self.burst:
                tokens = self.burst
            self.updated = now
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return True
        self.tokens = tokens
        return False

    def delay(self, now: float) -> float:
        """Seconds from ``now`` until a token is available; 0.0 if one is."""
        self._refill(now)
        return max(0.0, (1.0 - self.tokens) / self.rate)

    def __repr__(self) -> str:
        return f"<TokenBucket rate={self.rate:g}/s burst={self.burst:g} tokens={self.tokens:.2f}>"
