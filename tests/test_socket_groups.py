"""Socket groups: SO_REUSEPORT sockets per worker slot, shared sockets, reuse across reloads."""

from __future__ import annotations

import os
import socket
import sys
import tomllib
from pathlib import Path

import pytest

from reactorkit import Config, HandlerType
from reactorkit.config import plan_listeners
from reactorkit.errors import BindError
from reactorkit.plugins import Contribution
from reactorkit.socket_groups import SocketGroup, bind_groups

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="SO_REUSEPORT groups are Linux")

ECHO = {
    "echo": Contribution(
        item=HandlerType(name="echo", handler=object),  # type: ignore[arg-type]
        plugin="test",
        distribution=None,
    )
}


def plan(text: str) -> tuple[Config, list]:  # type: ignore[type-arg]
    config = Config.from_dict(tomllib.loads(text), path="w.toml")
    return config, plan_listeners(config, ECHO)


def close_all(groups: dict[str, SocketGroup]) -> None:
    for group in groups.values():
        group.close()


def test_a_tcp_listener_gets_one_reuseport_socket_per_worker_on_one_port() -> None:
    config, plans = plan('[reactor]\nworkers=3\n[[listen]]\nhandler="echo"\nport=0')
    groups = bind_groups(config, plans, {}, {})
    try:
        group = groups["echo"]
        assert not group.shared
        assert len(group.socks) == 3
        assert len({s.getsockname() for s in group.socks}) == 1
        assert all(s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for s in group.socks)
        # Worker i of n serves sockets j with j % n == i.
        assert group.fds_for(0, 3) == [group.socks[0].fileno()]
        assert group.fds_for(0, 2) == [group.socks[0].fileno(), group.socks[2].fileno()]
    finally:
        close_all(groups)


def test_a_port_someone_else_listens_on_is_refused_not_shared() -> None:
    with socket.socket() as stranger:
        stranger.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        stranger.bind(("127.0.0.1", 0))
        stranger.listen()
        port = stranger.getsockname()[1]
        config, plans = plan(f'[reactor]\nworkers=2\n[[listen]]\nhandler="echo"\nport={port}')
        with pytest.raises(BindError) as info:
            bind_groups(config, plans, {}, {})
    assert f"w.toml: listen[0] 'echo': cannot listen on 127.0.0.1:{port}" in str(info.value)


def test_a_reload_reuses_the_group_of_an_unchanged_address_and_grows_it() -> None:
    config, plans = plan('[reactor]\nworkers=2\n[[listen]]\nhandler="echo"\nport=0')
    old = bind_groups(config, plans, {}, {})
    try:
        first = list(old["echo"].socks)
        config, plans = plan('[reactor]\nworkers=3\n[[listen]]\nhandler="echo"\nport=0')
        new = bind_groups(config, plans, old, {})
        assert new["echo"] is old["echo"]
        assert new["echo"].socks[:2] == first
        assert len(new["echo"].socks) == 3
    finally:
        close_all(old)


def test_a_unix_socket_is_one_shared_socket_unlinked_at_close(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    config, plans = plan(f'[reactor]\nworkers=4\n[[listen]]\nhandler="echo"\npath="{path}"')
    groups = bind_groups(config, plans, {}, {})
    group = groups["echo"]
    assert group.shared
    assert group.fds_for(3, 4) == [group.socks[0].fileno()]
    assert path.exists()
    group.close()
    assert not path.exists()


def test_a_systemd_socket_is_shared_and_never_unlinked_or_missing_named() -> None:
    inherited = socket.socket()
    inherited.bind(("127.0.0.1", 0))
    inherited.listen()
    try:
        config, plans = plan('[reactor]\nworkers=2\n[[listen]]\nhandler="echo"\nfd_name="web"')
        groups = bind_groups(config, plans, {}, {"web": [inherited]})
        assert groups["echo"].socks == [inherited]
        assert not groups["echo"].owned
        with pytest.raises(
            BindError, match=r"systemd passed no socket named 'web' \(LISTEN_FDNAMES: api\)"
        ):
            bind_groups(config, plans, {}, {"api": [inherited]})
    finally:
        inherited.close()


def test_closing_a_group_stops_it_listening_though_a_worker_still_holds_a_copy() -> None:
    config, plans = plan('[reactor]\nworkers=2\n[[listen]]\nhandler="echo"\nport=0')
    groups = bind_groups(config, plans, {}, {})
    group = groups["echo"]
    port = group.socks[0].getsockname()[1]
    # Another member of the port's SO_REUSEPORT group, and an exiting worker's copy.
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", port))
        other.listen(128)
        copies = [socket.socket(fileno=os.dup(s.fileno())) for s in group.socks]
        try:
            group.close()
            for _ in range(60):  # none is hashed to the closed group's sockets
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
            other.setblocking(False)
            accepted = 0
            for _ in range(60):
                conn, _ = other.accept()
                conn.close()
                accepted += 1
            assert accepted == 60
        finally:
            for copy in copies:
                copy.close()
