"""reactorkit.systemd: sd_notify to a UNIX datagram socket, and LISTEN_* parsing."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from reactorkit import systemd


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(5)
    yield sock
    sock.close()


def test_notify_sends_the_state_as_one_datagram(notify_socket: socket.socket) -> None:
    env = {"NOTIFY_SOCKET": notify_socket.getsockname()}
    assert systemd.notify("READY=1\nSTATUS=ok", env)
    assert notify_socket.recv(4096) == b"READY=1\nSTATUS=ok"


def test_notify_reaches_an_abstract_socket() -> None:
    name = f"reactorkit-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert systemd.notify("STOPPING=1", {"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(4096) == b"STOPPING=1"


def test_notify_reloading_carries_the_monotonic_time(notify_socket: socket.socket) -> None:
    assert systemd.notify_reloading({"NOTIFY_SOCKET": notify_socket.getsockname()})
    state, usec = notify_socket.recv(4096).decode().split("\n")
    assert state == "RELOADING=1"
    assert usec.startswith("MONOTONIC_USEC=")
    assert int(usec.partition("=")[2]) > 0


def test_notify_without_a_socket_does_nothing() -> None:
    assert systemd.notify("READY=1", {}) is False


def test_notify_to_a_missing_socket_is_logged_not_raised(tmp_path: Path, caplog) -> None:
    assert systemd.notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone")}) is False
    assert "cannot notify systemd" in caplog.text


def test_listen_fds_for_another_process_are_ignored_and_removed() -> None:
    env = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1", "LISTEN_FDNAMES": "web"}
    assert systemd.listen_fds(env) == {}
    assert env == {}, "a child must not mistake them for its own"


def test_listen_fds_takes_named_sockets_from_fd_3() -> None:
    # Put two listening sockets at descriptors 3 and 4, as systemd would.
    saved = [_save(3), _save(4)]
    socks = [socket.socket(), socket.socket()]
    try:
        for fd, sock in zip((3, 4), socks, strict=True):
            sock.bind(("127.0.0.1", 0))
            sock.listen()
            os.dup2(sock.fileno(), fd)
        env = {"LISTEN_PID": str(os.getpid()), "LISTEN_FDS": "2", "LISTEN_FDNAMES": "web:"}
        found = systemd.listen_fds(env)
        assert sorted(found) == ["unknown", "web"]
        assert found["web"][0].getsockname() == socks[0].getsockname()
        assert found["unknown"][0].getsockname() == socks[1].getsockname()
        assert not found["web"][0].get_inheritable()
        for taken in found.values():
            taken[0].detach()  # descriptors 3 and 4 are restored below
    finally:
        for fd, old in zip((3, 4), saved, strict=True):
            if old is None:
                os.close(fd)
            else:
                os.dup2(old[0], fd, inheritable=old[1])
                os.close(old[0])
        for sock in socks:
            sock.close()


def _save(fd: int) -> tuple[int, bool] | None:
    try:
        return os.dup(fd), os.get_inheritable(fd)
    except OSError:
        return None  # not open
