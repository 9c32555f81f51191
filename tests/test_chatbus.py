"""The chat bus without Redis: two chat servers on one LocalHub, driven with FakeConnections."""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator

import pytest

import reactorkit
from reactorkit import chatbus
from reactorkit.handlers.chat import ChatHandler, ChatOptions, ChatRooms
from reactorkit.options import build_options
from reactorkit.testing import FakeClock, FakeConnection, run_once

INTERVAL = 1.0


class Server:
    """One chat 'server': its rooms, attached to the hub through a LocalBus."""

    def __init__(self, reactor: reactorkit.Reactor, hub: reactorkit.LocalHub) -> None:
        self.reactor = reactor
        self.rooms = ChatRooms(options=ChatOptions(rate=1000.0, burst=100))
        self.bus = reactorkit.LocalBus(reactor, hub, presence_interval=INTERVAL)
        self.rooms.attach_bus(self.bus, reactor)

    def client(self, nick: str) -> FakeConnection:
        connection = FakeConnection(ChatHandler(self.rooms), reactor=self.reactor)
        connection.feed(f"/nick {nick}\n".encode())
        return connection


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def reactor(clock: FakeClock) -> Iterator[reactorkit.Reactor]:
    reactor = reactorkit.Reactor(clock=clock, threads=1)
    yield reactor
    reactor.close()


@pytest.fixture
def hub() -> reactorkit.LocalHub:
    return reactorkit.LocalHub()


def settle(reactor: reactorkit.Reactor, passes: int = 4) -> None:
    for _ in range(passes):
        run_once(reactor)


def lines(connection: FakeConnection) -> list[str]:
    return connection.take().decode().splitlines()


def two_servers(
    reactor: reactorkit.Reactor, hub: reactorkit.LocalHub
) -> tuple[Server, Server, FakeConnection, FakeConnection]:
    one, two = Server(reactor, hub), Server(reactor, hub)
    settle(reactor)
    alice = one.client("alice")
    settle(reactor)
    bob = two.client("bob")
    settle(reactor)
    lines(alice)
    lines(bob)
    return one, two, alice, bob


def test_events_cross_once_and_echoes_are_dropped(
    reactor: reactorkit.Reactor, hub: reactorkit.LocalHub
) -> None:
    one, _two, alice, bob = two_servers(reactor, hub)
    alice.feed(b"hello\n/me waves\n")
    settle(reactor)
    assert lines(bob) == ["<alice> hello", "* alice waves"]
    assert lines(alice) == []
    assert one.bus.stats.own_echoes >= 2  # the hub delivers to everyone, itself too
    bob.feed(b"/who\n")
    assert lines(bob) == ["* in #lobby: bob, alice"]
    bob.feed(b"/nick robert\n")
    settle(reactor)
    assert lines(alice) == ["* bob is now robert"]
    alice.feed(b"/who\n")
    assert lines(alice) == ["* in #lobby: alice, robert"]


def test_a_nick_in_use_elsewhere_is_taken_and_private_messages_cross(
    reactor: reactorkit.Reactor, hub: reactorkit.LocalHub
) -> None:
    _, _, alice, bob = two_servers(reactor, hub)
    lines(alice)
    alice.feed(b"/nick BOB\n/msg bob hi there\n")
    assert lines(alice) == ["! nick BOB is taken", "-> *bob* hi there"]
    settle(reactor)
    assert lines(bob) == ["*alice* hi there"]


def test_redis_down_gives_one_notice_keeps_local_chat_and_forgets_remote_members(
    reactor: reactorkit.Reactor, hub: reactorkit.LocalHub
) -> None:
    one, _, alice, bob = two_servers(reactor, hub)
    amy = one.client("amy")
    settle(reactor)
    lines(alice)
    lines(bob)
    hub.set_up(False)
    settle(reactor)
    down = "! other servers are unreachable: only people on this server see messages now"
    assert lines(alice) == [down]
    assert lines(bob) == [down]
    hub.set_up(False)  # still down: nothing new to say
    settle(reactor)
    assert lines(alice) == []
    alice.feed(b"local\n/who\n/msg bob x\n")
    settle(reactor)
    assert lines(amy)[-1] == "<alice> local"
    assert lines(alice) == ["* in #lobby: alice, amy", "! no such nick: bob"]
    assert lines(bob) == []
    hub.set_up(True)
    settle(reactor, 8)
    assert lines(alice) == ["* other servers are reachable again"]
    assert lines(bob) == ["* other servers are reachable again"]
    alice.feed(b"/who\n")
    assert lines(alice) == ["* in #lobby: alice, amy, bob"]  # the hello/state exchange


def test_a_silent_server_s_members_leave_within_four_intervals(
    reactor: reactorkit.Reactor, hub: reactorkit.LocalHub, clock: FakeClock
) -> None:
    _one, two, alice, _bob = two_servers(reactor, hub)
    hub.buses.remove(two.bus)  # the process died: no bye, no heartbeat
    for _ in range(4):
        clock.advance(INTERVAL)
        settle(reactor)
    assert lines(alice) == ["* bob left (their server stopped answering)"]
    alice.feed(b"/who\n")
    assert lines(alice) == ["* in #lobby: alice"]


def test_a_server_that_closes_its_bus_says_goodbye(
    reactor: reactorkit.Reactor, hub: reactorkit.LocalHub
) -> None:
    _, two, alice, bob = two_servers(reactor, hub)
    two.rooms.close_bus()
    settle(reactor)
    assert lines(alice) == ["* bob left (server shutting down)"]
    bob.feed(b"still here\n")  # its clients keep chatting locally; nothing is published
    settle(reactor)
    assert lines(alice) == []
    assert two.bus.publish(reactorkit.ChatEvent(kind="say", room="lobby", nick="x")) is False


def test_presence_heartbeats_fix_a_missed_join(
    reactor: reactorkit.Reactor, hub: reactorkit.LocalHub, clock: FakeClock
) -> None:
    _one, two, _alice, _ = two_servers(reactor, hub)
    two.bus._peers.clear()  # as if it had missed every event so far
    clock.advance(INTERVAL)
    settle(reactor)
    assert two.bus.remote_members("lobby") == ["alice"]


def test_malformed_bus_messages_are_counted_and_logged_once(
    reactor: reactorkit.Reactor, hub: reactorkit.LocalHub, caplog: pytest.LogCaptureFixture
) -> None:
    one, _, alice, bob = two_servers(reactor, hub)
    junk = [
        b"not json",
        b"[1, 2]",
        b'{"o": 5, "q": 1, "k": "say"}',
        b'{"o": "x", "q": 1, "k": "say", "r": "lobby", "n": 7}',
        b'{"o": "x", "q": 2, "k": "state", "r": "lobby", "m": [1]}',
        b'{"o": "x", "q": 3, "k": "from-the-future"}',
        b"\xff\xfe",
    ]
    with caplog.at_level(logging.WARNING, logger="reactorkit.chatbus"):
        for payload in junk:
            hub._deliver(payload)
        settle(reactor)
    assert one.bus.stats.malformed == 6  # the unknown kind is a newer peer's, not junk
    # One line per server (two on this hub), however many came.
    assert len([r for r in caplog.records if "malformed" in r.getMessage()]) == 2
    alice.feed(b"still fine\n")
    settle(reactor)
    assert lines(bob)[-1] == "<alice> still fine"


def test_sequence_gaps_are_counted(reactor: reactorkit.Reactor, hub: reactorkit.LocalHub) -> None:
    one, _, _, _ = two_servers(reactor, hub)
    hub._deliver(b'{"o": "peer", "q": 1, "k": "say", "r": "lobby", "n": "z", "t": "a"}')
    hub._deliver(b'{"o": "peer", "q": 5, "k": "say", "r": "lobby", "n": "z", "t": "b"}')
    settle(reactor)
    assert one.bus.stats.gaps == 3


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"bus": "http://h:1"}, "bus unsupported URL 'http://h:1'"),
        ({"bus": "redis://:pw@h:nope"}, "bus bad port in 'redis://:***@h:nope'"),
        ({"bus_prefix": "a*b"}, "bus_prefix channel prefix must be 1-64 letters"),
    ],
)
def test_bad_bus_options_are_config_errors(options: dict[str, str], message: str) -> None:
    with pytest.raises(reactorkit.ConfigErrors) as info:
        build_options(ChatOptions, options)
    assert message in str(info.value)
    assert "pw@" not in str(info.value)


def test_a_good_bus_url_is_accepted() -> None:
    options = build_options(ChatOptions, {"bus": "redis://127.0.0.1:6379/0", "bus_prefix": "x:"})
    assert options.bus == "redis://127.0.0.1:6379/0"


class Flaky:
    """A bus listener with a bug: it raises on one event."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def bus_event(self, event: reactorkit.ChatEvent) -> None:
        if event.text == "boom":
            raise RuntimeError("listener bug")
        self.texts.append(event.text)

    def bus_state_changed(self, up: bool, reason: str) -> None:
        pass

    def bus_members(self) -> list[tuple[str, str]]:
        return []


def test_a_listener_that_raises_loses_one_event_not_the_bus(
    reactor: reactorkit.Reactor, hub: reactorkit.LocalHub, caplog: pytest.LogCaptureFixture
) -> None:
    receiver: reactorkit.ChatBus = reactorkit.LocalBus(reactor, hub)
    sender: reactorkit.ChatBus = reactorkit.LocalBus(reactor, hub)
    flaky = Flaky()
    receiver.start(flaky)
    sender.start(Flaky())
    settle(reactor)
    for text in ("before", "boom", "after"):
        assert sender.publish(reactorkit.ChatEvent(kind="say", room="r", nick="n", text=text))
    with caplog.at_level(logging.ERROR, logger="reactorkit.chatbus"):
        settle(reactor)
    assert flaky.texts == ["before", "after"]
    assert "bus_event" in caplog.text
    assert "listener bug" in caplog.text
    assert receiver.is_up


def test_presence_from_too_many_servers_is_bounded(
    reactor: reactorkit.Reactor, hub: reactorkit.LocalHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chatbus, "MAX_PEERS", 3)
    monkeypatch.setattr(chatbus, "MAX_PEER_ROOM_MEMBERS", 2)
    one, _, _, _ = two_servers(reactor, hub)  # the other server is peer 1
    for i in range(5):
        hub._deliver(b'{"o": "p%d", "q": 1, "k": "state", "r": "lobby", "m": ["a", "b", "c"]}' % i)
    settle(reactor)
    assert len(one.bus._peers) == 3
    assert one.bus.stats.malformed == 3
    assert sorted(one.bus.remote_members("lobby")) == ["a", "a", "b", "b", "bob"]


def test_healthz_reports_each_running_bus_and_whether_it_is_up(
    reactor: reactorkit.Reactor, hub: reactorkit.LocalHub
) -> None:
    from reactorkit.handlers.healthz import healthz

    def body() -> str:
        response = healthz(reactorkit.Request(method="GET", path="/healthz"))
        assert response.status == 200  # local chat still works: never 503 for the bus
        assert isinstance(response.body, str)
        return response.body

    # Buses of earlier tests that nothing refers to any more stay in the
    # weak set until the cyclic GC runs: collect them now, not mid-test.
    gc.collect()
    before = body()
    one = Server(reactor, hub)
    settle(reactor)
    name = one.bus.name
    assert f"chat bus {name}: up\n" in body()
    hub.set_up(False)
    settle(reactor)
    assert f"chat bus {name}: down\n" in body()
    one.bus.close()
    assert body() == before


def test_an_origin_that_is_not_a_short_id_is_malformed(
    reactor: reactorkit.Reactor, hub: reactorkit.LocalHub
) -> None:
    # The origin goes into log lines ("no word from server ..."): CR/LF there
    # would forge log lines, and a 100 KB one would be logged every interval.
    one, _, _, _ = two_servers(reactor, hub)
    for origin in (b"x\\r\\nWARNING forged", b"y" * 100_000, b""):
        hub._deliver(b'{"o": "%s", "q": 1, "k": "state", "r": "lobby", "m": ["a"]}' % origin)
    settle(reactor)
    assert one.bus.stats.malformed == 3
    assert len(one.bus._peers) == 1  # only the other real server
