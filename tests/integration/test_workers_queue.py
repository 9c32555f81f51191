"""``workers = N``: connections waiting in the kernel's accept queue survive a crash and a reload.

Closing a ``SO_REUSEPORT`` socket resets the connections queued on it
(gunicorn#2529). These tests queue connections on workers that cannot
accept (stopped with SIGSTOP), then make those workers exit, and require
every queued connection to be answered by another worker: none is reset.
"""

# The fixtures are imported from test_workers; tests naming them as
# parameters "redefine" them as far as the linter can tell.
# ruff: noqa: F811

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator

import pytest

from tests.integration.test_workers import (
    TIMEOUT,
    closing,  # noqa: F401  (a fixture)
    plugin_env,  # noqa: F401  (a fixture)
    round_trip,
    supervised,  # noqa: F401  (a fixture)
    whoami_config,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="workers tests read /proc")

#: Connections queued per test: each lands on one of two SO_REUSEPORT
#: sockets by a hash, so all landing on one is a 1 in 2**19 chance.
QUEUED = 20
#: Seconds a queued connection may wait for a worker to start (a Python
#: start on a loaded machine); the test fails, not hangs, past it.
START_TIMEOUT = 60.0


@pytest.fixture
def stopped() -> Iterator[list[int]]:
    """Pids a test stops with SIGSTOP: continued in teardown, so none is left frozen."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def stop(pids: list[int], stopped: list[int]) -> None:
    for pid in pids:
        stopped.append(pid)
        os.kill(pid, signal.SIGSTOP)
    for pid in pids:  # SIGSTOP is asynchronous: wait until the kernel says so
        wait_state(pid, "T")


def wait_state(pid: int, state: str) -> None:
    """Wait for /proc to show ``pid`` in ``state``.

    No event tells a non-parent that a process stopped; the stop takes
    effect as soon as the process runs, so this yields the CPU until then
    (bounded in time).
    """
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == state:
                return
        os.sched_yield()
    raise AssertionError(f"pid {pid} never reached state {state}")


def queue_connections(port: int, closing: list[socket.socket]) -> list[socket.socket]:
    """``QUEUED`` connections the kernel accepts (the handshake completes in its queue)."""
    clients = []
    for _ in range(QUEUED):
        sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        closing.append(sock)
        clients.append(sock)
    return clients


def served_by(sock: socket.socket) -> int:
    """The pid the whoami handler sends first; fails on a reset or a close."""
    sock.settimeout(START_TIMEOUT)
    line = b""
    while not line.endswith(b"\n"):
        chunk = sock.recv(64)  # a reset raises ConnectionResetError here
        assert chunk, "closed before it was served"
        line += chunk
    sock.settimeout(TIMEOUT)
    return int(line)


def test_connections_queued_on_a_killed_workers_socket_are_served_by_its_replacement(
    supervised, plugin_env, tmp_path, closing, stopped
) -> None:
    server = supervised(whoami_config(tmp_path / "c.toml"), env=plugin_env)
    victim, survivor = server.wait_generation(1)  # worker 0, worker 1
    stop([victim], stopped)
    # About half of these hash to the victim's socket and wait in its queue.
    clients = queue_connections(server.port(), closing)
    os.kill(victim, signal.SIGKILL)  # its copy of the socket closes with the queue full
    _, match = server.wait_for(r"started worker 0 \(pid (\d+)\)")
    replacement = int(match.group(1))
    pids = [served_by(sock) for sock in clients]
    assert set(pids) == {survivor, replacement}, pids
    for sock in clients:
        round_trip(sock, b"still here")


#: A listener of old workers that accepts at most this many at a time: on
#: its way out, an old worker cannot empty the queue in its last pass.
LIMIT = 2


def test_connections_queued_while_the_old_workers_exit_are_served_by_the_new_ones(
    supervised, plugin_env, tmp_path, closing, stopped
) -> None:
    config = whoami_config(tmp_path / "c.toml", extra=f"max_connections = {LIMIT}\n")
    server = supervised(config, env=plugin_env)
    old = server.wait_generation(1)
    port = server.port()
    stop(old, stopped)  # their retire signal waits until they continue
    server.signal(signal.SIGHUP)
    new = server.wait_generation(2)  # logged after the old ones were told to retire
    stop(new, stopped)
    # Nobody accepts now: connections made wait in the sockets' queues.
    clients = queue_connections(port, closing)
    # The old workers retire and exit with the queues full (each may still
    # accept up to LIMIT in its last pass: those it answers, then closes).
    for pid in old:
        os.kill(pid, signal.SIGCONT)
    server.wait_for(r"retired \(exited with code 0\)")
    server.wait_for(r"retired \(exited with code 0\)")
    for pid in new:
        os.kill(pid, signal.SIGCONT)
    pids = []
    for sock in clients:  # in order, closing each: the new workers' limit frees up
        pid = served_by(sock)
        if pid in new:
            round_trip(sock, b"after the reload")
        sock.close()
        pids.append(pid)
    assert set(pids) <= set(old) | set(new), pids
    assert sum(pid in new for pid in pids) >= QUEUED - LIMIT * len(old), pids
