"""The three deadlines of one http-lite connection, on one timer.

* ``header_timeout`` runs while the client's side is ``HEAD`` (a request
  head is arriving): past it, a 408.
* ``body_timeout`` runs while it is ``BODY`` (0: never): past it, a 408.
* ``keepalive_timeout`` runs only while the connection is truly idle (the
  handler says so): past it, the connection is closed.

One timer per connection, moved only when a deadline comes sooner than the
one it waits for; when it fires early it is re-armed for what is left. So a
busy keep-alive connection pushes about one timer per
``keepalive_timeout``, not one per request, and a deadline costs a few
attribute stores per request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, final

from reactorkit.http11 import State

if TYPE_CHECKING:
    from reactorkit.handlers.http_site import HttpOptions
    from reactorkit.reactor import Reactor, TimerHandle

__all__ = ["Deadlines"]

_IDLE = State.IDLE
_HEAD = State.HEAD
_BODY = State.BODY


@final
class Deadlines:
    """Header, body and keep-alive deadlines of one connection.

    Args:
        reactor: whose ``time`` and ``call_at`` are used.
        options: the listener's timeouts.
        expired: called with ``"header block"``, ``"body"`` or ``"idle"``
            when that deadline passes (at most once per :meth:`update` that
            started it).
    """

    __slots__ = (
        "_body",
        "_body_since",
        "_due",
        "_expired",
        "_head_since",
        "_header",
        "_idle_since",
        "_keepalive",
        "_reactor",
        "_timer",
    )

    def __init__(
        self, reactor: Reactor, options: HttpOptions, expired: Callable[[str], object]
    ) -> None:
        self._reactor = reactor
        self._header = options.header_timeout
        self._body = options.body_timeout
        self._keepalive = options.keepalive_timeout
        self._expired = expired
        self._head_since: float | None = None
        self._body_since: float | None = None
        self._idle_since: float | None = None
        self._timer: TimerHandle | None = None
        self._due = 0.0

    def update(
        self, state: State, idle: bool, reading: bool = True, head_done: float = -1.0
    ) -> None:
        """Follow the client's side ``state``; ``idle``: nothing queued, running or buffered.

        A ``HEAD`` or ``BODY`` deadline starts when that state is first
        seen and keeps running until another state is, or until a request
        head completes (``head_done``, the reactor time of the last one):
        the state seen then is the next request's, whose clock starts anew.
        A pipelining client whose every read ends inside a head is never in
        another state at an update, and must not be timed over all its
        requests at once. The keep-alive deadline restarts at an idle
        update that follows a request head (``head_done`` after its start)
        or a non-idle one; bytes that make no request (blank lines before a
        request line) do not restart it. While the handler does not read
        (``reading`` False: flow control, ``max_pending``) neither runs: the
        client cannot be late with bytes the server is not taking; the clock
        starts again when reading resumes.
        """
        if state is _IDLE:
            if idle:
                # Keep-alive restarts once a request came since it started (or
                # after a busy stretch), not at every read: blank lines, which
                # RFC 9112 section 2.2 has a server skip, are no request, and a
                # client sending one now and then must not be kept forever.
                since = self._idle_since
                if since is None or head_done > since:
                    self.idle()
            else:
                self._head_since = self._body_since = self._idle_since = None
            return
        self._idle_since = None
        if not reading:
            self._head_since = self._body_since = None
            return
        if state is _HEAD:
            self._body_since = None
            since = self._head_since
            if since is None or head_done > since:
                now = self._head_since = self._reactor.time
                self._arm(now + self._header)
        elif state is _BODY:
            self._head_since = None
            since = self._body_since
            if self._body and (since is None or head_done > since):
                now = self._body_since = self._reactor.time
                self._arm(now + self._body)
        else:
            self._head_since = self._body_since = None

    def idle(self) -> None:
        """``update(IDLE, True)``: nothing to do until the next request; keep-alive restarts."""
        self._head_since = self._body_since = None
        now = self._idle_since = self._reactor.time
        due = now + self._keepalive
        if self._timer is None or self._due > due:
            self._arm(due)

    def cancel(self) -> None:
        """Stop the timer (the connection is gone)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self, due: float) -> None:
        timer = self._timer
        if timer is not None:
            if self._due <= due:
                return  # it fires first and re-arms for what is left
            timer.cancel()
        self._due = due
        self._timer = self._reactor.call_at(due, self._fire)

    def _fire(self) -> None:
        self._timer = None
        now = self._reactor.time
        for since, timeout, what in (
            (self._head_since, self._header, "header block"),
            (self._body_since, self._body, "body"),
            (self._idle_since, self._keepalive, "idle"),
        ):
            if since is not None:
                if now - since >= timeout:
                    self._head_since = self._body_since = self._idle_since = None
                    self._expired(what)
                    return
                self._arm(since + timeout)
