"""Chat with workers: refused without a bus, rooms shared across workers with a real Redis."""

# The fixtures are imported from test_workers; tests naming them as
# parameters "redefine" them as far as the linter can tell.
# ruff: noqa: F811

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest

from tests.helpers import reactorkit_cli
from tests.integration.test_chat_bus import BusClient
from tests.integration.test_workers import (
    Supervised,
    supervised,  # noqa: F401  (a fixture)
    write_config,
)
from tests.redis_server import RedisServer

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="workers tests read /proc")


def chat_config(path: Path, bus: str = "") -> str:
    return write_config(
        path,
        f"""
        [reactor]
        workers = 2
        shutdown_timeout = 5
        [[listen]]
        name = "rooms"
        handler = "chat"
        port = 0
        [listen.options]
        bus = "{bus}"
        bus_prefix = "t-workers:"
        rate = 1000.0
        burst = 100
        """,
    )


def test_chat_without_a_bus_cannot_run_with_workers(tmp_path: Path) -> None:
    result = reactorkit_cli("run", chat_config(tmp_path / "c.toml"))
    assert result.returncode == 1
    assert (
        "listen[0] 'rooms': handler cannot run with reactor.workers = 2: chat rooms live "
        "in one process and would split between the workers" in result.stderr
    )


def serving_worker(server_port: int, client: socket.socket, workers: list[int]) -> int:
    """The worker whose process holds the server side of ``client``'s connection."""
    client_port = client.getsockname()[1]
    inode = None
    with open("/proc/net/tcp") as f:
        for row in f.read().splitlines()[1:]:
            fields = row.split()
            local, remote = fields[1], fields[2]
            if int(local.split(":")[1], 16) == server_port and (
                int(remote.split(":")[1], 16) == client_port
            ):
                inode = fields[9]
    assert inode is not None, "the server side of the connection is not in /proc/net/tcp"
    for pid in workers:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return pid
            except OSError:
                continue  # closed meanwhile
    raise AssertionError(f"no worker holds socket {inode}")


def test_chat_with_a_bus_shares_rooms_nicks_and_order_between_workers(
    supervised, tmp_path: Path, redis_server: RedisServer
) -> None:
    server: Supervised = supervised(chat_config(tmp_path / "c.toml", bus=redis_server.url))
    workers = server.wait_generation(1)
    while "".join(server.log).count("chat bus rooms: up") < 2:
        server.wait_for(r"chat bus rooms: up")
    port = server.port()
    # Connect until two clients sit on different workers (each lands on one
    # of two SO_REUSEPORT sockets by hash; 20 more all on one: 1 in a million).
    first = BusClient(("127.0.0.1", port))
    opened = [first]
    try:
        home = serving_worker(port, first.sock, workers)
        other = None
        for _ in range(20):
            client = BusClient(("127.0.0.1", port))
            opened.append(client)
            if serving_worker(port, client.sock, workers) != home:
                other = client
                break
        assert other is not None, "every client landed on one worker"
        # The users of both workers meet: /who lists both, messages cross.
        for _ in range(50):
            other.send("/who")
            if first.nick in other.expect_prefix("* in #lobby: ").found.split(", "):
                break
        else:
            raise AssertionError(f"{other.nick} never saw {first.nick} across workers")
        # Nick changes cross between the workers.
        old_first, old_other = first.nick, other.nick
        first.send("/nick w1")
        first.expect("* you are now w1")
        other.expect(f"* {old_first} is now w1")
        other.send("/nick w2")
        other.expect("* you are now w2")
        first.expect(f"* {old_other} is now w2")
        # Joins and leaves cross; from here on the two are alone in #den, so
        # every line either reads is the very next one it must see.
        first.send("/join den")
        first.expect("* you are now in #den (0 others here)")
        other.expect("* w1 left for #den")
        other.send("/join den")
        other.expect("* you are now in #den (1 other here)")
        assert first.line() == "* w2 joined #den"
        # Messages cross in the order sent, each once.
        for i in range(30):
            first.send(f"m{i}")
        assert [other.line() for _ in range(30)] == [f"<w1> m{i}" for i in range(30)]
        other.send("/me waves back")
        assert first.line() == "* w2 waves back"
        for client in (first, other):  # nothing came twice: the next line is the answer
            client.send("/who")
            assert sorted(client.line().removeprefix("* in #den: ").split(", ")) == ["w1", "w2"]
    finally:
        for client in opened:
            client.close()
