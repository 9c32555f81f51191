"""RedisClient over real sockets: fake Redis servers that misbehave, and a real redis-server."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import reactorkit
from reactorkit.redis import RedisAddress, RedisClient
from reactorkit.testing import run_until
from tests.redis_server import RedisServer, require_redis_server

HELLO_REPLY = b"%2\r\n+server\r\n+redis\r\n+proto\r\n:3\r\n"


class FakeRedis:
    """A loopback TCP server whose every connection runs ``behave(conn)`` on a thread."""

    def __init__(self, behave: Callable[[socket.socket], None]) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.behave = behave
        self.accepted = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            conn.settimeout(5)
            thread = threading.Thread(target=self._run, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _run(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            self.behave(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()
        for thread in self._threads:
            thread.join(5)


@pytest.fixture
def fake_redis() -> Iterator[Callable[[Callable[[socket.socket], None]], FakeRedis]]:
    made: list[FakeRedis] = []

    def make(behave: Callable[[socket.socket], None]) -> FakeRedis:
        server = FakeRedis(behave)
        made.append(server)
        return server

    yield make
    for server in made:
        server.close()


@pytest.fixture
def reactor() -> Iterator[reactorkit.Reactor]:
    reactor = reactorkit.Reactor(threads=2)
    yield reactor
    reactor.close()


def client_for(reactor: reactorkit.Reactor, url: str, **kwargs: Any) -> RedisClient:
    states: list[tuple[bool, str]] = []
    kwargs.setdefault("reconnect_min", 0.01)
    kwargs.setdefault("reconnect_max", 0.05)
    client = RedisClient(
        reactor,
        RedisAddress.from_url(url),
        on_state=lambda up, why: states.append((up, why)),
        **kwargs,
    )
    client.states = states  # type: ignore[attr-defined]
    return client


def stop(reactor: reactorkit.Reactor, client: RedisClient) -> None:
    client.close()
    for _ in range(3):  # deliver connection_lost and cancelled connects
        reactor.call_soon(reactor.stop)
        reactor.run()


def read_until_quiet(conn: socket.socket) -> None:
    while conn.recv(65536):
        pass


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (b"?garbage\r\n", "protocol error"),
        (b"$-5\r\n", "protocol error"),
        (b"-ERR unknown command 'HELLO'\r\n", "HELLO 3 refused (Redis >= 6 is needed"),
    ],
)
def test_a_redis_that_answers_garbage_is_dropped_and_retried_without_flooding_the_log(
    reactor: reactorkit.Reactor,
    fake_redis: Any,
    caplog: pytest.LogCaptureFixture,
    answer: bytes,
    reason: str,
) -> None:
    def behave(conn: socket.socket) -> None:
        conn.recv(65536)
        conn.sendall(answer)
        read_until_quiet(conn)

    server = fake_redis(behave)
    client = client_for(reactor, f"redis://127.0.0.1:{server.port}")
    with caplog.at_level(logging.WARNING, logger="reactorkit.redis"):
        client.start()
        run_until(reactor, lambda: client.stats.disconnects >= 4)
    assert not client.is_up
    assert client.states == []
    warnings = [r for r in caplog.records if r.name == "reactorkit.redis"]
    assert len(warnings) == 1, caplog.text  # one line, however many attempts
    assert reason in warnings[0].getMessage()
    stop(reactor, client)


def test_a_redis_that_closes_at_once_is_retried_with_backoff(
    reactor: reactorkit.Reactor, fake_redis: Any
) -> None:
    server = fake_redis(lambda conn: None)
    client = client_for(reactor, f"redis://127.0.0.1:{server.port}")
    client.start()
    run_until(reactor, lambda: server.accepted >= 4)
    assert not client.is_up
    assert client.state in ("waiting", "connecting", "handshake")
    stop(reactor, client)


def test_a_redis_that_never_answers_times_out_the_handshake(
    reactor: reactorkit.Reactor, fake_redis: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = fake_redis(read_until_quiet)
    client = client_for(reactor, f"redis://127.0.0.1:{server.port}", connect_timeout=0.2)
    with caplog.at_level(logging.WARNING, logger="reactorkit.redis"):
        client.start()
        run_until(reactor, lambda: server.accepted >= 2)
    assert "no answer to the handshake within 0.2s" in caplog.text
    stop(reactor, client)


def test_a_redis_that_stops_reading_cannot_grow_the_buffer(
    reactor: reactorkit.Reactor, fake_redis: Any, caplog: pytest.LogCaptureFixture
) -> None:
    stalled = threading.Event()

    def behave(conn: socket.socket) -> None:
        conn.recv(65536)  # HELLO (and nothing else to subscribe to)
        conn.sendall(HELLO_REPLY)
        stalled.wait(10)  # then never read again

    server = fake_redis(behave)
    limit = 64 * 1024
    client = client_for(reactor, f"redis://127.0.0.1:{server.port}", max_buffer=limit)
    client.start()
    run_until(reactor, lambda: client.is_up)
    protocol = client._protocol
    assert protocol is not None
    payload = b"x" * 8192
    with caplog.at_level(logging.WARNING, logger="reactorkit.redis"):
        sent = 0
        for _ in range(2000):  # far more than any kernel buffer
            if client.publish(b"ch", payload):
                sent += 1
            assert protocol.connection.get_write_buffer_size() <= limit
    stalled.set()
    assert client.stats.dropped == 2000 - sent > 0
    drops = [r for r in caplog.records if "dropping commands" in r.getMessage()]
    assert len(drops) == 1  # logged once, counted always
    stop(reactor, client)


# -- a real redis-server --------------------------------------------------------


def test_publish_and_subscribe_through_a_real_redis_over_unix_and_tcp(
    reactor: reactorkit.Reactor, redis_server: RedisServer
) -> None:
    got: list[tuple[bytes, bytes]] = []
    subscriber = client_for(
        reactor,
        redis_server.unix_url,
        patterns=[b"t-real:*"],
        on_message=lambda channel, payload: got.append((channel, payload)),
    )
    publisher = client_for(reactor, redis_server.url + "?db=1")
    subscriber.start()
    publisher.start()
    run_until(reactor, lambda: subscriber.is_up and publisher.is_up)
    replies: list[Any] = []
    for i in range(100):
        publisher.execute(b"PUBLISH", b"t-real:a", b"m%d" % i, callback=replies.append)
    run_until(reactor, lambda: len(got) == 100)
    assert got == [(b"t-real:a", b"m%d" % i) for i in range(100)]
    assert replies == [1] * 100  # one subscriber got each
    stop(reactor, subscriber)
    stop(reactor, publisher)


def test_auth_from_the_environment_and_a_wrong_password_never_logged(
    reactor: reactorkit.Reactor,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    require_redis_server()
    server = RedisServer(tmp_path, password="s3cret-pw")
    server.start()
    try:
        monkeypatch.setenv("REACTORKIT_REDIS_PASSWORD", "s3cret-pw")
        good = client_for(reactor, server.url)
        wrong = client_for(reactor, f"redis://:not-the-pw@127.0.0.1:{server.port}/0")
        with caplog.at_level(logging.DEBUG):
            good.start()
            wrong.start()
            run_until(reactor, lambda: good.is_up and wrong.stats.disconnects >= 2)
        assert not wrong.is_up
        assert "WRONGPASS" in caplog.text
        assert "s3cret-pw" not in caplog.text
        assert "not-the-pw" not in caplog.text
        assert "s3cret-pw" not in repr(good)
        assert "not-the-pw" not in repr(wrong)
        stop(reactor, good)
        stop(reactor, wrong)
    finally:
        server.stop()
