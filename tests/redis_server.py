"""A private redis-server for the tests: a free loopback port, no persistence, always stopped."""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

READY = "Ready to accept connections"
START_TIMEOUT = 10.0


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1, persisting nothing.

    It can be killed and restarted on the same port and socket path, for the
    tests of a Redis that goes away and comes back.
    """

    def __init__(self, directory: Path, *, password: str | None = None) -> None:
        self.directory = directory
        self.port = free_port()
        self.path = str(directory / "redis.sock")
        self.password = password
        self.proc: subprocess.Popen[str] | None = None
        self.log: list[str] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def unix_url(self) -> str:
        return f"unix://{self.path}"

    def start(self) -> None:
        """Start it and wait (bounded) for its "ready" line."""
        args = [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--unixsocket",
            self.path,
            "--unixsocketperm",
            "700",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.directory),
            "--loglevel",
            "notice",
        ]
        if self.password is not None:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + START_TIMEOUT
        output = ""
        # os.read, not readline(): a buffered readline may pull the "ready"
        # line into Python's buffer, after which select() sees nothing more.
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while READY not in output:
                left = deadline - time.monotonic()
                if left <= 0 or not selector.select(left):
                    self.log.append(output)
                    self.kill()
                    raise TimeoutError("redis-server did not start:\n" + "".join(self.log))
                chunk = os.read(fd, 65536).decode(errors="replace")
                if not chunk:
                    self.log.append(output)
                    self.proc.wait(5)
                    raise RuntimeError("redis-server exited:\n" + "".join(self.log))
                output += chunk
        self.log.append(output)
        # Keep reading its output so a full pipe can never stall it.
        os.set_blocking(self.proc.stdout.fileno(), False)

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would."""
        self._stop(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM and wait."""
        self._stop(signal.SIGTERM)

    def _stop(self, sig: int) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(10)
        finally:
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.proc = None


def require_redis_server() -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (.ci/run installs Debian's redis-server)")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One private redis-server for the whole session (tests use their own channel prefixes)."""
    require_redis_server()
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server for one test, which it may kill and restart."""
    require_redis_server()
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()
