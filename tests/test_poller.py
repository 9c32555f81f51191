"""Poller: epoll used directly, with selectors' semantics (masks, hang-ups, stale events)."""

from __future__ import annotations

import select
import selectors
import socket
from collections.abc import Iterator

import pytest

from reactorkit import Reactor
from reactorkit.poller import EpollPoller, make_poller
from reactorkit.testing import run_once

pytestmark = pytest.mark.skipif(not hasattr(select, "epoll"), reason="epoll is Linux-only")


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.settimeout(5)
    b.settimeout(5)
    a.setblocking(False)
    yield a, b
    a.close()
    b.close()


def test_the_reactor_uses_epoll_directly_on_linux() -> None:
    reactor = Reactor()
    try:
        assert isinstance(reactor.selector, EpollPoller)
        assert isinstance(make_poller(), EpollPoller)
    finally:
        reactor.close()


@pytest.mark.parametrize("given", [False, True], ids=["own-poller", "given-selector"])
def test_a_readable_socket_gets_event_read(pair, given: bool) -> None:
    # A caller's own selector (the portable path, as off Linux) dispatches the same.
    a, b = pair
    reactor = Reactor(selector=selectors.DefaultSelector()) if given else Reactor()
    seen: list[int] = []
    reactor.register(a, selectors.EVENT_READ, seen.append)
    b.sendall(b"x")
    run_once(reactor)
    assert seen == [selectors.EVENT_READ]
    reactor.close()


def test_a_hang_up_wakes_only_the_registered_events(pair) -> None:
    # A connection that paused reading (registered for EVENT_WRITE only)
    # must not be handed a read by the peer's hang-up, as with selectors.
    a, b = pair
    reactor = Reactor()
    seen: list[int] = []
    a.sendall(b"x" * 4096)  # keep the socket writable-registered below
    reactor.register(a, selectors.EVENT_WRITE, seen.append)
    b.close()
    run_once(reactor)
    assert seen == [selectors.EVENT_WRITE]
    reactor.modify(a, selectors.EVENT_READ, seen.append)
    seen.clear()
    run_once(reactor)
    assert seen == [selectors.EVENT_READ]
    reactor.close()


def test_a_descriptor_unregistered_earlier_in_a_batch_gets_no_event(pair) -> None:
    a, b = pair
    c, d = socket.socketpair()
    c.settimeout(5)
    d.settimeout(5)
    reactor = Reactor()
    seen: list[str] = []

    def first(mask: int) -> None:
        seen.append("first")
        reactor.unregister(other_fd)

    def second(mask: int) -> None:
        seen.append("second")
        reactor.unregister(a_fd)

    a_fd, other_fd = a.fileno(), c.fileno()
    reactor.register(a_fd, selectors.EVENT_READ, first)
    reactor.register(other_fd, selectors.EVENT_READ, second)
    b.sendall(b"x")
    d.sendall(b"x")
    run_once(reactor)
    assert len(seen) == 1  # whichever ran first unregistered the other
    reactor.close()
    c.close()
    d.close()


def test_the_key_api_behaves_like_selectors(pair) -> None:
    a, _ = pair
    poller = EpollPoller()
    key = poller.register(a, selectors.EVENT_READ, "data")
    assert (key.fd, key.events, key.data) == (a.fileno(), selectors.EVENT_READ, "data")
    assert poller.get_key(a.fileno()).events == selectors.EVENT_READ
    with pytest.raises(KeyError):
        poller.register(a, selectors.EVENT_READ, "again")
    with pytest.raises(ValueError):
        poller.modify(a, 8, "bad events")
    poller.modify(a, selectors.EVENT_READ | selectors.EVENT_WRITE, "both")
    assert poller.get_key(a).events == 3
    ((ready, mask),) = poller.select(0)
    assert (ready.fd, ready.data, mask) == (a.fileno(), "both", selectors.EVENT_WRITE)
    poller.unregister(a)
    with pytest.raises(KeyError):
        poller.get_key(a)
    with pytest.raises(KeyError):
        poller.unregister(a)
    poller.close()
