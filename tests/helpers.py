"""Helpers for the project's own tests: clients with timeouts, CLI subprocesses."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TIMEOUT = 5.0

#: The ``site`` fixture: ``site(dist, version, modules, entry_points)`` installs one.
DistMaker = Callable[..., Path]


def connect(address: Any, timeout: float = TIMEOUT) -> socket.socket:
    """A blocking client socket with a timeout, to a TCP tuple or a UNIX path."""
    if isinstance(address, str):
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(timeout)
        sock.connect(address)
        return sock
    return socket.create_connection(address[:2], timeout=timeout)


def recv_until_closed(sock: socket.socket, limit: int = 1 << 24) -> bytes:
    """Read until the peer closes (or resets); returns what came."""
    out = bytearray()
    while len(out) < limit:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        out += chunk
    return bytes(out)


class ServerProcess:
    """``reactorkit run`` in a subprocess, with its stderr log captured."""

    LISTENING = re.compile(r"listening: (\S+) handler=(\S+) on (\S+)")

    def __init__(
        self, args: list[str], env: dict[str, str] | None = None, cwd: str | None = None
    ) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reactorkit", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=cwd,
        )
        self.log: list[str] = []
        self.addresses: dict[str, str] = {}
        self._pump: threading.Thread | None = None

    def wait_serving(self, count: int, timeout: float = 15.0) -> dict[str, str]:
        """Read the log until ``count`` listeners report their address."""
        assert self.proc.stderr is not None
        deadline = time.monotonic() + timeout
        while len(self.addresses) < count:
            if time.monotonic() > deadline:
                raise TimeoutError("server did not start:\n" + "".join(self.log))
            line = self.proc.stderr.readline()
            if not line:
                raise RuntimeError("server exited:\n" + "".join(self.log))
            self.log.append(line)
            match = self.LISTENING.search(line)
            if match:
                self.addresses[match.group(1)] = match.group(3)
        return self.addresses

    def keep_reading_log(self) -> None:
        """Read the log from a thread from now on, so a chatty server never blocks on a full pipe.

        :meth:`terminate` and :meth:`wait_exit` still return the whole log.
        """
        assert self.proc.stderr is not None
        stderr = self.proc.stderr

        def pump() -> None:
            for line in stderr:
                self.log.append(line)

        self._pump = threading.Thread(target=pump, daemon=True)
        self._pump.start()

    def _finish(self, timeout: float) -> None:
        # Not communicate(): it reads the pipe's fd directly, so the lines
        # readline() had already buffered (the one after "listening", say) were lost.
        if self._pump is None:
            self.keep_reading_log()
        assert self._pump is not None
        stdout = self.proc.stdout
        drain = None
        if stdout is not None and not stdout.closed:
            drain = threading.Thread(target=stdout.read, daemon=True)  # a full pipe never blocks it
            drain.start()
        self.proc.wait(timeout=timeout)
        self._pump.join(timeout)
        if drain is not None:
            drain.join(timeout)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def tcp(self, name: str) -> tuple[str, int]:
        host, _, port = self.addresses[name].rpartition(":")
        return host.strip("[]"), int(port)

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> tuple[int, str]:
        """Send ``sig`` and wait; returns (exit code, rest of the log)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self._finish(timeout)
        return self.proc.returncode, "".join(self.log)

    def wait_exit(self, timeout: float = 15.0) -> tuple[int, str]:
        """Wait for the process to exit by itself; returns (exit code, rest of the log)."""
        self._finish(timeout)
        return self.proc.returncode, "".join(self.log)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=10)


def reactorkit_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m reactorkit ARGS`` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "reactorkit", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env


def write_distribution(
    root: Path, dist: str, version: str, modules: dict[str, str], entry_points: dict[str, str]
) -> Path:
    """Write modules plus a ``.dist-info`` with a ``reactorkit`` entry point table."""
    for name, source in modules.items():
        (root / f"{name}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[reactorkit]\n{lines}\n")
    return root


class PeakHeld:
    """Records, on every loop pass of a running server, the most bytes one connection held.

    Args:
        srv: the server (``reactorkit.testing.serve``).
        held: what one connection holds: its unsent output plus whatever
            input its handler has not dispatched yet.
        queued: optional, the requests one connection has waiting; the
            most is kept in ``peak_queue``.
    """

    def __init__(
        self,
        srv: Any,
        held: Callable[[Any], int],
        queued: Callable[[Any], int] | None = None,
    ) -> None:
        self.srv = srv
        self._held = held
        self._queued = queued
        self.peak = 0
        self.peak_queue = 0
        self.passes = 0
        self.running = True
        srv.call(self.sample)

    def sample(self) -> None:
        for conn in self.srv.server.connections:
            self.peak = max(self.peak, self._held(conn))
            if self._queued is not None:
                self.peak_queue = max(self.peak_queue, self._queued(conn))
        self.passes += 1
        if self.running:
            self.srv.reactor.call_soon(self.sample)

    def stop(self) -> int:
        """Stop sampling; the peak."""
        self.srv.call(lambda: setattr(self, "running", False))
        return self.peak
