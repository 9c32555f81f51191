"""Socket activation by systemd-socket-activate; Type=notify to a fake NOTIFY_SOCKET."""

from __future__ import annotations

import shutil
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_workers import (
    Supervised,
    closing,  # noqa: F401  (a fixture)
    round_trip,
    supervised,  # noqa: F401  (a fixture)
    write_config,
)

ACTIVATE = shutil.which("systemd-socket-activate")
pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="systemd is Linux only"),
    pytest.mark.skipif(
        ACTIVATE is None,
        reason="systemd-socket-activate missing (Debian package systemd; .ci/run installs it)",
    ),
]

TIMEOUT = 5.0


class FakeNotifySocket:
    """The UNIX datagram socket systemd reads sd_notify messages from; records each."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(30)

    def next(self) -> dict[str, str]:
        """The next notification as a dict (``{"READY": "1", ...}``)."""
        data = self.sock.recv(4096).decode()
        return dict(line.split("=", 1) for line in data.splitlines())


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[FakeNotifySocket]:
    fake = FakeNotifySocket(tmp_path / "notify")
    yield fake
    fake.sock.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def activate(supervised, port: int, config: str, notify: FakeNotifySocket) -> Supervised:  # noqa: F811
    """``reactorkit run CONFIG`` under systemd-socket-activate, on a socket named ``web``.

    Like systemd without ``Accept=yes`` it binds the port, waits for the first
    connection (which stays queued in the kernel), then starts the service.
    """
    assert ACTIVATE is not None
    prefix = [ACTIVATE, "-l", f"127.0.0.1:{port}", "--fdname=web"]
    prefix += ["-E", f"NOTIFY_SOCKET={notify.path}"]
    return supervised(config, prefix=prefix)


def echo_config(path: Path, workers: int) -> str:
    return write_config(
        path,
        f"""
        [reactor]
        workers = {workers}
        shutdown_timeout = 5
        [[listen]]
        name = "web"
        handler = "echo"
        fd_name = "web"
        """,
    )


def test_workers_serve_the_activated_socket_and_notify_ready_reloading_stopping(
    supervised,  # noqa: F811
    notify,
    tmp_path,
    closing,  # noqa: F811
) -> None:
    port = free_port()
    server = activate(supervised, port, echo_config(tmp_path / "c.toml", workers=2), notify)
    server.wait_for(r"Listening on 127\.0\.0\.1:\d+ as 3")
    # The connection that activates the service is answered by a worker.
    first = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    closing.append(first)
    round_trip(first, b"first")
    ready = notify.next()
    assert ready["READY"] == "1"
    assert ready["MAINPID"] == str(server.proc.pid)  # exec'd: the supervisor is the main pid
    pids = server.wait_generation(1)
    assert server.children() == set(pids)
    assert "systemd socket 'web'" in "".join(server.log)
    server.signal(signal.SIGHUP)
    assert notify.next()["RELOADING"] == "1"
    assert notify.next()["READY"] == "1"
    new = server.wait_generation(2)
    assert not set(new) & set(pids)
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        round_trip(sock, b"after reload")
    # Accepted before the reload: its retiring worker asked the echo handler
    # to finish (shutdown_requested), which closes it cleanly: EOF, no reset.
    assert first.recv(16) == b""
    first.close()
    server.signal(signal.SIGTERM)
    assert notify.next() == {"STOPPING": "1"}
    assert server.wait_exit() == 0


def test_one_worker_serves_the_activated_socket_without_a_supervisor(
    supervised,  # noqa: F811
    notify,
    tmp_path,
) -> None:
    port = free_port()
    server = activate(supervised, port, echo_config(tmp_path / "c.toml", workers=1), notify)
    server.wait_for(r"Listening on 127\.0\.0\.1:\d+ as 3")
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        round_trip(sock, b"hello")
        assert notify.next()["READY"] == "1"
    server.wait_for(rf"\[{server.proc.pid}\] reactorkit.server: listening: web handler=echo")
    assert server.children() == set()
    server.signal(signal.SIGTERM)
    assert notify.next() == {"STOPPING": "1"}
    assert server.wait_exit() == 0


def test_a_listener_naming_a_socket_systemd_did_not_pass_is_an_error(
    supervised,  # noqa: F811
    notify,
    tmp_path,
) -> None:
    port = free_port()
    config = write_config(
        tmp_path / "c.toml",
        """
        [reactor]
        workers = 2
        [[listen]]
        name = "api"
        handler = "echo"
        fd_name = "api"
        """,
    )
    server = activate(supervised, port, config, notify)
    server.wait_for(r"Listening on")
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT):
        pass
    assert server.wait_exit() == 1
    assert "listen[0] 'api': systemd passed no socket named 'api' (LISTEN_FDNAMES: web)" in "".join(
        server.log
    )
