"""Out of file descriptors: the listener backs off instead of spinning, then recovers."""

from __future__ import annotations

import os
import resource
import selectors
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.helpers import connect

FD_LIMIT = 48
FLOOD = 80


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def lower_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs Linux /proc")
def test_emfile_backs_off_without_spinning_and_recovers(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        textwrap.dedent("""
        [[listen]]
        handler = "echo"
        port = 0
        backlog = 256
        max_connections = 1000
    """)
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "reactorkit", "run", str(config)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        preexec_fn=lower_fd_limit,
    )
    flood: list[socket.socket] = []
    try:
        assert proc.stderr is not None
        line = ""
        while "listening:" not in line:
            line = proc.stderr.readline()
            assert line, "server exited before listening"
        port = int(line.rsplit(":", 1)[1])
        address = ("127.0.0.1", port)

        flood += [connect(address) for _ in range(FLOOD)]  # completes in the backlog
        # Every accepted connection echoes; some were not accepted (no fds left).
        # (selectors, not select.select: the test process may hold fds > 1023.)
        with selectors.DefaultSelector() as waiter:
            for sock in flood:
                sock.sendall(b"x")
                waiter.register(sock, selectors.EVENT_READ)
            served = 0
            deadline = time.monotonic() + 1.0
            while served < FLOOD and time.monotonic() < deadline:
                for key, _ in waiter.select(0.2):
                    assert key.fileobj.recv(1) == b"x"  # type: ignore[union-attr]
                    waiter.unregister(key.fileobj)
                    served += 1
        # While out of descriptors the server must not spin.
        before = cpu_seconds(proc.pid)
        time.sleep(1.0)  # a measurement window, not a wait for an event
        burned = cpu_seconds(proc.pid) - before
        assert burned < 0.25, f"the server burned {burned:.2f}s of CPU in 1s while paused"

        for sock in flood:
            sock.close()
        # Descriptors free up: it accepts again, by itself.
        with connect(address, timeout=10) as sock:
            sock.sendall(b"back")
            assert sock.recv(10) == b"back"
    finally:
        for sock in flood:
            sock.close()
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0
    assert err.count("cannot accept") >= 1
    assert "Too many open files" in err
    # Logged once per episode, not once per retry.
    assert err.count("cannot accept") <= 3
