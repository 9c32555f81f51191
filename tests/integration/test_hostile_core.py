"""Issue 15's lean hot path attacked: the reactor's promises still hold on real sockets."""

from __future__ import annotations

import os
import selectors
import socket
from collections.abc import Callable
from typing import Any

import pytest

from reactorkit.reactor import Reactor

SELECTORS: dict[str, Callable[[], selectors.BaseSelector | None]] = {
    "epoll-poller": lambda: None,  # the default: reactorkit.poller.EpollPoller
    "selectors-epoll": selectors.EpollSelector,
    "selectors-poll": selectors.PollSelector,
}


@pytest.mark.parametrize("kind", sorted(SELECTORS))
def test_a_descriptor_closed_and_reused_in_one_batch_gets_no_stale_event(kind: str) -> None:
    # Callback A closes B, whose read event is in the same batch, and registers
    # a new socket that takes B's descriptor number (as an accept would).
    # B's stale event must reach neither B's callback nor the newcomer's: the
    # newcomer has nothing to read, and a plugin reading a blocking descriptor
    # only when told it is ready would hang the loop.
    reactor = Reactor(selector=SELECTORS[kind]())
    a_r, a_w = socket.socketpair()
    b_r, b_w = socket.socketpair()
    c_r, c_w = socket.socketpair()
    opened = [a_r, a_w, b_w, c_r, c_w]
    for sock in [*opened, b_r]:
        sock.settimeout(5.0)
    calls: list[Any] = []

    def on_a(mask: int) -> None:
        a_r.recv(100)
        calls.append("a")
        fd = b_r.fileno()
        reactor.unregister(b_r)
        b_r.close()
        os.dup2(c_r.fileno(), fd)  # the lowest free number, as accept() picks
        newcomer = socket.socket(fileno=fd)
        opened.append(newcomer)
        reactor.register(newcomer, selectors.EVENT_READ, lambda m: calls.append(("newcomer", m)))

    try:
        reactor.register(a_r, selectors.EVENT_READ, on_a)
        reactor.register(b_r, selectors.EVENT_READ, lambda m: calls.append(("b", m)))
        a_w.send(b"a")  # ready first: A's event comes before B's in the batch
        b_w.send(b"b")
        reactor.stop()  # one pass
        reactor.run()
        assert calls == ["a"]
        # The newcomer is watched all the same: data for it arrives.
        c_w.send(b"c")
        reactor.stop()
        reactor.run()
        assert calls == ["a", ("newcomer", selectors.EVENT_READ)]
    finally:
        reactor.close()
        for sock in opened:
            sock.close()
