"""Poller: the reactor's readiness source, ``select.epoll`` used directly on Linux.

The ``selectors`` module costs a layer on every event: ``select()`` builds a
``(SelectorKey, events)`` tuple per ready descriptor through a method call,
and every registration holds a ``SelectorKey`` namedtuple. :class:`EpollPoller`
keeps one ``fd -> callback`` dict instead, which the reactor's loop indexes
straight from ``epoll.poll()``'s ``(fd, events)`` pairs, and one ``fd ->
events`` dict read only for the rare error/hang-up events.

A registration waits in a second dict, ``pending``, until the reactor's
loop moves it into ``callbacks`` just before its next poll. A batch of
events can hold one for a descriptor that a callback earlier in the batch
closed, and that an accept then gave to a new socket: that event was the
old file's. As the new socket's callback is not in ``callbacks`` yet, the
loop's lookup misses and drops the event, with no test per event.

It is a :class:`selectors.BaseSelector` as well (``register``, ``modify``,
``unregister``, ``get_key``, ``select``, ``close``) with the same semantics as
``selectors.EpollSelector``, so code and tests that use ``reactor.selector``
see no difference (except that a key made by ``select()`` or ``get_map()``
names the descriptor as its ``fileobj``: the poller keeps no file objects);
only the reactor's loop takes the fast path. Elsewhere than
Linux the reactor uses ``selectors.DefaultSelector``.

Event bits: the callbacks receive ``selectors`` masks (``EVENT_READ`` = 1,
``EVENT_WRITE`` = 2). ``EPOLLIN`` is 1 and ``EPOLLOUT`` 4, translated by
:data:`IN_OUT`; ``EPOLLERR``/``EPOLLHUP`` wake every event the descriptor is
registered for, exactly as ``selectors`` does, so a reader that paused
reading is not handed a read by a hang-up.
"""

from __future__ import annotations

import contextlib
import select
import selectors
from collections.abc import Callable, Mapping
from typing import Any, final

__all__ = ["EPOLL_ERRORS", "IN_OUT", "EpollPoller", "make_poller"]

_EPOLLIN = 1  # select.EPOLLIN
_EPOLLOUT = 4  # select.EPOLLOUT
#: Every epoll bit that is not EPOLLIN or EPOLLOUT (EPOLLERR, EPOLLHUP,
#: EPOLLPRI, EPOLLRDHUP...): such an event wakes every registered event.
EPOLL_ERRORS = ~(_EPOLLIN | _EPOLLOUT)
#: ``selectors`` mask for an epoll event made only of EPOLLIN/EPOLLOUT bits.
IN_OUT = (0, 1, 0, 0, 2, 3)


@final
class EpollPoller(selectors.BaseSelector):
    """``select.epoll`` with a ``fd -> callback`` table the reactor indexes directly.

    ``data`` given to :meth:`register` must be the callable the reactor
    calls with the ready mask. ``fileobj`` may be a socket or a bare file
    descriptor (a connection registers its descriptor, an int it already
    holds, so the table's key costs nothing more).
    """

    def __init__(self) -> None:
        self.epoll = select.epoll()
        #: fd -> the callback registered for it; the reactor's loop reads it.
        self.callbacks: dict[int, Callable[[int], object]] = {}
        #: fd -> the callback of a registration made since the last poll:
        #: :meth:`take_pending` (the reactor's loop, before it polls) moves
        #: them into ``callbacks``, so the running batch's stale events for
        #: a reused number find no callback. A descriptor is in one of the two.
        self.pending: dict[int, Callable[[int], object]] = {}
        #: fd -> the ``selectors`` events it is registered for.
        self.events: dict[int, int] = {}

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        fd = _fileno(fileobj)
        if not events or events & ~(selectors.EVENT_READ | selectors.EVENT_WRITE):
            raise ValueError(f"Invalid events: {events!r}")
        # epoll, not the table, says what is registered: a descriptor closed
        # without being unregistered (a careless plugin) left its number in
        # the table, but epoll forgot it, and the number may now be a new
        # socket's (an accept), which must not be refused.
        try:
            self.epoll.register(fd, _to_epoll(events))
        except FileExistsError:
            raise KeyError(f"{fileobj!r} (FD {fd}) is already registered") from None
        # The closed file's callback, if a careless plugin left it, goes now:
        # the batch's stale event for the number must find none.
        self.callbacks.pop(fd, None)
        self.pending[fd] = data
        self.events[fd] = events
        return selectors.SelectorKey(fileobj, fd, events, data)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        fd = _fileno(fileobj)
        table = self._table(fd)
        if table is None:
            raise KeyError(f"{fileobj!r} is not registered")
        if events != self.events[fd]:
            if not events or events & ~(selectors.EVENT_READ | selectors.EVENT_WRITE):
                raise ValueError(f"Invalid events: {events!r}")
            self.epoll.modify(fd, _to_epoll(events))
            self.events[fd] = events
        table[fd] = data
        return selectors.SelectorKey(fileobj, fd, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        fd = _fileno(fileobj)
        table = self._table(fd)
        if table is None:
            raise KeyError(f"{fileobj!r} is not registered")
        data = table.pop(fd)
        events = self.events.pop(fd)
        # Closed before it was unregistered: epoll already forgot it.
        with contextlib.suppress(OSError):
            self.epoll.unregister(fd)
        return selectors.SelectorKey(fileobj, fd, events, data)

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        fd = _fileno(fileobj)
        table = self._table(fd)
        if table is None:
            raise KeyError(f"{fileobj!r} is not registered")
        return selectors.SelectorKey(fileobj, fd, self.events[fd], table[fd])

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return {fd: self.get_key(fd) for fd in self.events}

    def take_pending(self) -> None:
        """Move the registrations made since the last poll into ``callbacks``.

        Called just before each poll (by :meth:`select`, and by the reactor's
        loop, which tests ``pending`` first so that a pass without a new
        registration costs no call).
        """
        self.callbacks.update(self.pending)
        self.pending.clear()

    def _table(self, fd: int) -> dict[int, Callable[[int], object]] | None:
        if fd in self.callbacks:
            return self.callbacks
        if fd in self.pending:
            return self.pending
        return None

    def ready_mask(self, fd: int, epoll_events: int) -> int:
        """The ``selectors`` mask for ``epoll_events`` on a registered ``fd``."""
        if epoll_events & EPOLL_ERRORS:
            return self.events[fd]
        return IN_OUT[epoll_events]

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is not None and timeout < 0:
            timeout = 0
        ready = []
        self.take_pending()  # keys are taken at once: no stale event can follow
        for fd, epoll_events in self.epoll.poll(timeout, max(len(self.callbacks), 1)):
            if fd in self.callbacks:
                ready.append((self.get_key(fd), self.ready_mask(fd, epoll_events)))
        return ready

    def close(self) -> None:
        self.epoll.close()
        self.callbacks.clear()
        self.pending.clear()
        self.events.clear()


def make_poller() -> selectors.BaseSelector:
    """An :class:`EpollPoller` where ``select.epoll`` exists, else the ``DefaultSelector``."""
    if hasattr(select, "epoll"):
        return EpollPoller()
    return selectors.DefaultSelector()


def _to_epoll(events: int) -> int:
    return (_EPOLLIN if events & selectors.EVENT_READ else 0) | (
        _EPOLLOUT if events & selectors.EVENT_WRITE else 0
    )


def _fileno(fileobj: Any) -> int:
    if isinstance(fileobj, int):
        fd = fileobj
    else:
        try:
            fd = int(fileobj.fileno())
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"Invalid file object: {fileobj!r}") from None
    if fd < 0:
        raise ValueError(f"Invalid file descriptor: {fd}")
    return fd
