"""The Redis client without a server: URLs, backoff, and RESP3 framing split at every byte."""

from __future__ import annotations

import itertools
import logging
import random
from typing import Any

import hiredis
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reactorkit
from reactorkit.redis import RedisAddress, RedisClient, _RedisProtocol, backoff_delay
from reactorkit.testing import FakeClock, FakeConnection, run_once

# -- URLs ---------------------------------------------------------------------


def test_a_tcp_url_with_credentials_and_database() -> None:
    address = RedisAddress.from_url("redis://app:s3cr%40t@cache.local:6380/3", environ={})
    assert (address.host, address.port, address.db) == ("cache.local", 6380, 3)
    assert (address.username, address.password) == ("app", "s3cr@t")
    assert str(address) == "redis://app:***@cache.local:6380/3"
    assert "s3cr" not in repr(address)


def test_defaults_port_6379_and_database_0() -> None:
    address = RedisAddress.from_url("redis://127.0.0.1", environ={})
    assert (address.host, address.port, address.db, address.password) == (
        "127.0.0.1",
        6379,
        0,
        None,
    )


def test_a_unix_url() -> None:
    address = RedisAddress.from_url("unix:///run/redis/redis.sock?db=2", environ={})
    assert (address.path, address.db, address.host) == ("/run/redis/redis.sock", 2, None)
    assert str(address) == "unix:///run/redis/redis.sock?db=2"


def test_the_password_comes_from_the_environment_when_the_url_has_none() -> None:
    env = {"REACTORKIT_REDIS_PASSWORD": "from-env"}
    assert RedisAddress.from_url("redis://h:1/0", environ=env).password == "from-env"
    assert RedisAddress.from_url("redis://:inurl@h:1/0", environ=env).password == "inurl"
    assert str(RedisAddress.from_url("redis://h:1/0", environ=env)) == "redis://:***@h:1/0"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://h:1", "unsupported URL 'http://h:1'"),
        ("redis://:hunter2@h:port", "bad port in 'redis://:***@h:port'"),
        ("redis://:hunter2@/0", "no host in 'redis://:***@/0'"),
        ("redis://h:1/zero", "database in 'redis://h:1/zero' must be a number"),
        ("unix://", "no socket path"),
        # An unescaped "/" ends the authority early: the password reads as a port.
        ("redis://:hunter2/x@h:1/0", "bad port in 'redis://:***@h:1/0'"),
        # A password where the user name goes is shown as neither.
        ("redis://hunter2@h:port", "bad port in 'redis://***@h:port'"),
        ("redis://app:hunter2?@h:1/0", "bad port in 'redis://app:***@h:1/0'"),
    ],
)
def test_bad_urls_are_explained_without_the_password(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=r"expected|must be") as info:
        RedisAddress.from_url(url, environ={})
    assert message in str(info.value)
    assert "hunter2" not in str(info.value)


# -- backoff ------------------------------------------------------------------


def test_backoff_grows_exponentially_with_jitter_and_never_passes_the_cap() -> None:
    rng = random.Random(7)
    delays = [backoff_delay(n, base=0.1, cap=5.0, rng=rng) for n in range(40)]
    for n, delay in enumerate(delays):
        ceiling = min(5.0, 0.1 * 2**n)
        assert ceiling / 2 <= delay <= ceiling
    assert max(delays) <= 5.0
    assert len({round(d, 6) for d in delays[10:]}) > 1  # jittered, not in lock step


# -- RESP3 framing --------------------------------------------------------------


def resp_push(*items: bytes) -> bytes:
    return b">%d\r\n" % len(items) + b"".join(b"$%d\r\n%s\r\n" % (len(i), i) for i in items)


HELLO_REPLY = b"%2\r\n+server\r\n+redis\r\n+proto\r\n:3\r\n"
SUBSCRIBED = b">3\r\n$10\r\npsubscribe\r\n$3\r\np:*\r\n:1\r\n"


def handshaken_client(**kwargs: Any) -> tuple[RedisClient, FakeConnection, list[Any]]:
    """A client whose handshake ran over a FakeConnection (no socket)."""
    reactor = reactorkit.Reactor(clock=FakeClock(), threads=1)
    messages: list[Any] = []
    client = RedisClient(
        reactor,
        RedisAddress.from_url("redis://:pw@127.0.0.1:1/4", environ={}),
        patterns=[b"p:*"],
        on_message=lambda channel, payload: messages.append((channel, payload)),
        on_state=lambda up, why: messages.append(("state", up)),
        **kwargs,
    )
    protocol = _RedisProtocol(client)
    connection = FakeConnection(protocol, reactor=reactor)
    client._protocol = protocol
    client._state = "handshake"
    client._handshake(protocol)
    return client, connection, messages


def test_the_handshake_is_hello_3_with_auth_select_and_psubscribe() -> None:
    client, connection, _ = handshaken_client()
    assert connection.take() == (
        hiredis.pack_command((b"HELLO", 3, b"AUTH", "default", "pw"))  # type: ignore[arg-type]
        + hiredis.pack_command((b"SELECT", 4))  # type: ignore[arg-type]
        + hiredis.pack_command((b"PSUBSCRIBE", b"p:*"))  # type: ignore[arg-type]
    )
    assert client.state == "handshake"
    client.reactor.close()


HANDSHAKE_REPLIES = HELLO_REPLY + b"+OK\r\n" + SUBSCRIBED  # HELLO, SELECT, PSUBSCRIBE
AFTER_PUBLISH = (
    resp_push(b"pmessage", b"p:*", b"p:room", b"one")
    + resp_push(b"pmessage", b"p:*", b"p:room", b"two\r\nwith CRLF inside")
    + b":2\r\n"  # the PUBLISH reply, between two pushes
    + resp_push(b"message", b"p:direct", b"three")
    + resp_push(b"pmessage", b"p:*", b"p:room", b"")
)
EXPECTED = [
    ("state", True),
    (b"p:room", b"one"),
    (b"p:room", b"two\r\nwith CRLF inside"),
    (b"p:direct", b"three"),
    (b"p:room", b""),
]


def feed_split(connection: FakeConnection, data: bytes, cuts: list[int]) -> None:
    points = [0, *sorted({c % len(data) for c in cuts}), len(data)]
    for start, end in itertools.pairwise(points):
        if end > start:
            connection.feed(data[start:end])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(min_value=1, max_value=10_000), max_size=10),
    st.lists(st.integers(min_value=1, max_value=10_000), max_size=10),
)
def test_resp_split_anywhere_gives_the_same_events(first: list[int], second: list[int]) -> None:
    client, connection, messages = handshaken_client()
    try:
        feed_split(connection, HANDSHAKE_REPLIES, first)
        assert client.is_up
        replies: list[Any] = []
        assert client.execute(b"PUBLISH", b"p:room", b"x", callback=replies.append)
        feed_split(connection, AFTER_PUBLISH, second)
        assert messages == EXPECTED
        assert replies == [2]
        assert not connection.is_closing()
    finally:
        client.close()
        client.reactor.close()


def test_resp_fed_one_byte_at_a_time() -> None:
    client, connection, messages = handshaken_client()
    for i in range(len(HANDSHAKE_REPLIES)):
        assert not client.is_up
        connection.feed(HANDSHAKE_REPLIES[i : i + 1])
    assert client.execute(b"PUBLISH", b"p:room", b"x")
    for i in range(len(AFTER_PUBLISH)):
        connection.feed(AFTER_PUBLISH[i : i + 1])
    assert messages == EXPECTED
    client.close()
    client.reactor.close()


@pytest.mark.parametrize(
    ("garbage", "reason"),
    [
        (b"?what\r\n", "protocol error"),
        (b":1\r\n:2\r\n", "unexpected reply with no command waiting"),
        (b"$99999999\r\n" + b"x" * 70_000, "reply larger than 65536 bytes"),
    ],
)
def test_garbage_after_the_handshake_aborts_the_connection(
    garbage: bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    client, connection, messages = handshaken_client(max_reply=65536)
    connection.feed(HELLO_REPLY + b"+OK\r\n" + SUBSCRIBED)
    assert client.is_up
    client.execute(b"PUBLISH", b"p:x", b"y")
    connection.feed(b":1\r\n")  # its reply
    connection.feed(garbage)
    assert connection.aborted
    run_once(client.reactor)  # connection_lost may come on the next pass
    assert reason in caplog.text
    assert "pw" not in caplog.text.replace("password", "")
    assert messages[-1] == ("state", False)
    assert client.state == "waiting"  # a reconnect is scheduled
    client.close()
    client.reactor.close()


def test_a_refused_hello_is_logged_without_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, connection, messages = handshaken_client()
    connection.feed(b"-WRONGPASS invalid username-password pair or user is disabled.\r\n")
    assert connection.aborted
    run_once(client.reactor)
    assert "HELLO 3 refused" in caplog.text
    assert "WRONGPASS" in caplog.text
    assert ":pw" not in caplog.text
    assert messages == []  # never came up
    client.close()
    client.reactor.close()


def test_commands_are_dropped_and_counted_while_not_up() -> None:
    client, _connection, _ = handshaken_client()
    assert client.publish(b"p:x", b"early") is False
    assert client.stats.dropped == 1
    client.close()
    client.reactor.close()


def test_pending_replies_are_bounded() -> None:
    client, connection, _ = handshaken_client(max_pending=5)
    connection.feed(HELLO_REPLY + b"+OK\r\n" + SUBSCRIBED)
    sent = [client.publish(b"p:x", b"m") for _ in range(8)]
    assert sent == [True] * 5 + [False] * 3
    assert client.stats.dropped == 3
    client.close()
    client.reactor.close()


def test_a_missing_ping_answer_aborts_and_reconnects() -> None:
    client, connection, messages = handshaken_client(ping_interval=1.0)
    connection.feed(HELLO_REPLY + b"+OK\r\n" + SUBSCRIBED)
    clock = client.reactor.clock
    assert isinstance(clock, FakeClock)
    connection.take()
    clock.advance(1.0)
    run_once(client.reactor)
    assert connection.take() == b"*1\r\n$4\r\nPING\r\n"
    clock.advance(1.0)
    run_once(client.reactor)
    assert connection.aborted
    run_once(client.reactor)
    assert messages[-1] == ("state", False)
    client.close()
    client.reactor.close()


def test_a_refused_select_never_lets_the_client_up(caplog: pytest.LogCaptureFixture) -> None:
    client, connection, messages = handshaken_client()
    connection.feed(HELLO_REPLY)
    assert not client.is_up  # SELECT is still unanswered
    connection.feed(b"-ERR DB index is out of range\r\n" + SUBSCRIBED)
    run_once(client.reactor)
    assert connection.aborted
    assert messages == []
    assert "SELECT 4 refused: ERR DB index is out of range" in caplog.text
    client.close()
    client.reactor.close()


def test_an_outage_logs_one_line_then_one_per_interval_however_many_attempts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # 100 s down, an attempt failing every 0.5 s: one "unreachable" line at
    # once, then one "still unreachable" per RECONNECT_LOG_INTERVAL (30 s).
    reactor = reactorkit.Reactor(clock=FakeClock(), threads=1)
    client = RedisClient(reactor, RedisAddress.from_url("redis://127.0.0.1:1/0", environ={}))
    clock = reactor.clock
    assert isinstance(clock, FakeClock)
    with caplog.at_level(logging.DEBUG, logger="reactorkit.redis"):
        for _ in range(200):
            client._went_down("Connection refused")
            client._cancel_timer()
            clock.advance(0.5)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 4, warnings
    assert "unreachable: Connection refused; reconnecting with backoff up to" in warnings[0]
    assert [w.split(": ")[1] for w in warnings[1:]] == [
        "still unreachable after 30s and 61 attempts",
        "still unreachable after 60s and 121 attempts",
        "still unreachable after 90s and 181 attempts",
    ]
    debug = [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert len(debug) == 196  # every other attempt, at debug only
    client.close()
    reactor.close()
