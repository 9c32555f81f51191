"""``workers = N``: a reply in flight finishes across a reload and a SIGTERM; drains are bounded."""

# The fixtures are imported from test_workers; tests naming them as
# parameters "redefine" them as far as the linter can tell.
# ruff: noqa: F811

from __future__ import annotations

import signal
import socket
import sys
from pathlib import Path

import pytest

from tests.integration.test_workers import (
    BIG_REPLY_PLUGIN,
    TIMEOUT,
    Supervised,
    closing,  # noqa: F401  (a fixture)
    plugin_env,  # noqa: F401  (a fixture)
    supervised,  # noqa: F401  (a fixture)
    write_config,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="workers tests read /proc")

#: What the big-reply handler writes per request: far more than the socket
#: buffers hold, so most of it is still in the worker when the signal comes.
REPLY = 32 * 1024 * 1024


def big_reply_server(
    supervised, plugin_env: dict[str, str], tmp_path: Path, shutdown_timeout: float
) -> Supervised:
    (Path(plugin_env["PYTHONPATH"]) / "rk_big_reply.py").write_text(BIG_REPLY_PLUGIN)
    config = write_config(
        tmp_path / "c.toml",
        f"""
        [reactor]
        workers = 2
        plugins = ["rk_big_reply"]
        shutdown_timeout = {shutdown_timeout}
        [[listen]]
        handler = "big-reply"
        port = 0
        """,
    )
    server = supervised(config, env=plugin_env)
    server.wait_generation(1)
    return server


def start_reply(port: int, closing: list[socket.socket]) -> socket.socket:
    """Ask for a big reply and read its first byte: the rest is in flight."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    closing.append(sock)
    sock.sendall(b"go\n")
    assert sock.recv(1) == b"R"
    return sock


def read_rest(sock: socket.socket) -> int:
    """Read to EOF; returns the bytes read (a reset raises)."""
    total = 0
    buf = bytearray(1 << 20)
    while n := sock.recv_into(buf):
        assert buf[:n] == b"R" * n
        total += n
    return total


def test_a_reply_in_flight_during_a_reload_is_finished_by_the_retiring_worker(
    supervised, plugin_env, tmp_path, closing
) -> None:
    server = big_reply_server(supervised, plugin_env, tmp_path, shutdown_timeout=60)
    sock = start_reply(server.port(), closing)
    server.signal(signal.SIGHUP)
    server.wait_generation(2)  # logged once the old workers were told to retire
    # The old worker stopped accepting but sends the whole reply, then closes.
    assert 1 + read_rest(sock) == REPLY
    server.wait_for(r"retired \(exited with code 0\)")


def test_a_retiring_worker_whose_client_never_reads_leaves_at_shutdown_timeout(
    supervised, plugin_env, tmp_path, closing
) -> None:
    server = big_reply_server(supervised, plugin_env, tmp_path, shutdown_timeout=1)
    start_reply(server.port(), closing)  # and never read again
    server.signal(signal.SIGHUP)
    new = server.wait_generation(2)
    # Both old workers are gone although this client still holds its connection.
    server.wait_for(r"retired \(exited with code 0\)")
    server.wait_for(r"retired \(exited with code 0\)")
    assert server.children() == set(new)


def test_sigterm_lets_a_reply_in_flight_finish_then_exits_zero(
    supervised, plugin_env, tmp_path, closing
) -> None:
    server = big_reply_server(supervised, plugin_env, tmp_path, shutdown_timeout=60)
    sock = start_reply(server.port(), closing)
    server.signal(signal.SIGTERM)
    server.wait_for(r"SIGTERM: stopping 2 workers")
    assert 1 + read_rest(sock) == REPLY
    assert server.wait_exit() == 0
