"""``workers = N``: the supervisor's process tree, crash restarts, reload, resize, shutdown."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import select
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import child_env, reactorkit_cli

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="workers tests read /proc")

TIMEOUT = 5.0

# A handler that tells the client which process serves it, then echoes.
WHOAMI_PLUGIN = """
import os
import reactorkit

class WhoAmI(reactorkit.Handler):
    def connection_made(self, connection):
        super().connection_made(connection)
        connection.write(b"%d\\n" % os.getpid())

    def data_received(self, data):
        self.connection.write(data)

@reactorkit.hookimpl
def reactorkit_handler_types():
    return [reactorkit.HandlerType(name="whoami", handler=WhoAmI)]
"""

# Exits the worker RK_CRASH_AFTER seconds after its reactor started.
CRASH_PLUGIN = """
import os
import reactorkit

@reactorkit.hookimpl
def reactorkit_reactor_started(reactor):
    after = os.environ.get("RK_CRASH_AFTER")
    if after:
        reactor.call_later(float(after), os._exit, 3)
"""


class Supervised:
    """``reactorkit run`` with workers, its log read by a thread, its tree killed at the end."""

    def __init__(
        self, args: list[str], env: dict[str, str] | None = None, prefix: list[str] | None = None
    ) -> None:
        # prefix: a program that starts reactorkit itself (systemd-socket-activate).
        self.proc = subprocess.Popen(
            [*(prefix or []), sys.executable, "-m", "reactorkit", "run", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[tuple[float, str]] = queue.Queue()
        self.log: list[str] = []
        self.pids_seen: set[int] = set()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put((time.monotonic(), line))
        self.lines.put((time.monotonic(), ""))

    def wait_for(self, pattern: str, timeout: float = 20.0) -> tuple[float, re.Match[str]]:
        """Read log lines until one matches; returns (arrival time, match)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no log line matching {pattern!r}:\n" + "".join(self.log))
            try:
                when, line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if not line:
                raise RuntimeError(f"exited before {pattern!r}:\n" + "".join(self.log))
            self.log.append(line)
            self.pids_seen.update(int(p) for p in re.findall(r"\(pid (\d+)\)", line))
            match = regex.search(line)
            if match:
                return when, match

    def read_to_end(self, timeout: float = 20.0) -> str:
        """Read the log until every process holding it has exited; returns all of it."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("log still open:\n" + "".join(self.log))
            try:
                _, line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if not line:
                return "".join(self.log)
            self.log.append(line)

    def wait_generation(self, generation: int, timeout: float = 30.0) -> list[int]:
        """Wait until ``generation`` serves; returns its worker pids."""
        _, match = self.wait_for(
            rf"generation {generation} serving: \d+ workers \(pids ([\d, ]+)\)", timeout
        )
        return [int(p) for p in match.group(1).split(", ")]

    def port(self, name_pattern: str = r"127\.0\.0\.1") -> int:
        for line in self.log:
            match = re.search(rf"bound {name_pattern}:(\d+)", line)
            if match:
                return int(match.group(1))
        raise AssertionError("no bound address logged:\n" + "".join(self.log))

    def ports(self) -> list[int]:
        return [int(m) for line in self.log for m in re.findall(r"bound [\d.]+:(\d+)", line)]

    def children(self) -> set[int]:
        """The supervisor's child processes, from /proc."""
        path = f"/proc/{self.proc.pid}/task/{self.proc.pid}/children"
        with open(path) as f:
            return {int(p) for p in f.read().split()}

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait_exit(self, timeout: float = 30.0) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(timeout)
        while True:
            try:
                _, line = self.lines.get_nowait()
            except queue.Empty:
                break
            self.log.append(line)
        return code

    def kill_tree(self) -> None:
        pids = set(self.pids_seen)
        with contextlib.suppress(OSError):
            pids |= self.children()
        for pid in pids | {self.proc.pid}:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        self._reader.join(10)  # ends when the last process holding the pipe is gone
        if self.proc.stderr is not None:
            self.proc.stderr.close()


@pytest.fixture
def supervised() -> Iterator[Callable[..., Supervised]]:
    """Start supervised servers; every process of every tree is killed in teardown."""
    started: list[Supervised] = []

    def start(
        *args: str, env: dict[str, str] | None = None, prefix: list[str] | None = None
    ) -> Supervised:
        server = Supervised(list(args), env=env, prefix=prefix)
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill_tree()


@pytest.fixture
def closing() -> Iterator[list[socket.socket]]:
    """Client sockets a test opens: closed in teardown even when the test fails."""
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


@pytest.fixture
def plugin_env(tmp_path: Path) -> dict[str, str]:
    """PYTHONPATH with the test plugin modules (named in configs' [reactor] plugins)."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "rk_whoami.py").write_text(WHOAMI_PLUGIN)
    (plugins / "rk_crash.py").write_text(CRASH_PLUGIN)
    return child_env(PYTHONPATH=str(plugins))


def write_config(path: Path, body: str) -> str:
    path.write_text(textwrap.dedent(body))
    return str(path)


def whoami_config(path: Path, *, workers: int = 2, extra: str = "", port: int = 0) -> str:
    return write_config(
        path,
        f"""
        [reactor]
        workers = {workers}
        plugins = ["rk_whoami", "rk_crash"]
        shutdown_timeout = 5
        [[listen]]
        handler = "whoami"
        port = {port}
        """
        + textwrap.dedent(extra),
    )


def whoami(port: int) -> tuple[socket.socket, int]:
    """Connect; returns the socket and the pid of the worker serving it."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    try:
        line = b""
        while not line.endswith(b"\n"):
            chunk = sock.recv(64)
            assert chunk, "closed before saying which worker it is"
            line += chunk
    except BaseException:
        sock.close()  # not left to the garbage collector (a warning in some later test)
        raise
    return sock, int(line)


def round_trip(sock: socket.socket, payload: bytes = b"ping") -> None:
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = sock.recv(len(payload) - len(got))
        assert chunk, "connection closed mid round trip"
        got += chunk
    assert got == payload


def spread(port: int, count: int) -> Counter[int]:
    """Open ``count`` connections one after another; connections per worker pid."""
    pids: Counter[int] = Counter()
    for _ in range(count):
        sock, pid = whoami(port)
        sock.close()
        pids[pid] += 1
    return pids


# -- the process tree ---------------------------------------------------------


def test_two_workers_are_two_children_and_connections_land_on_both(
    supervised, plugin_env, tmp_path
) -> None:
    server = supervised(whoami_config(tmp_path / "c.toml"), env=plugin_env)
    pids = server.wait_generation(1)
    assert len(pids) == 2
    assert server.children() == set(pids)
    assert f"supervisor pid {server.proc.pid}: starting 2 workers" in "".join(server.log)
    # Each worker's log lines carry its own pid.
    for pid in pids:
        assert any(f"[{pid}] reactorkit.worker: worker" in line for line in server.log)
    counts = spread(server.port(), 200)
    assert set(counts) == set(pids)
    # The kernel hashes each connection to one of the SO_REUSEPORT sockets:
    # neither worker gets fewer than a fifth (binomial, 200 draws).
    assert min(counts.values()) >= 40, counts


def test_workers_auto_is_one_per_cpu(supervised, plugin_env, tmp_path) -> None:
    config = whoami_config(tmp_path / "c.toml", workers=1)
    server = supervised("--workers", "auto", config, env=plugin_env)
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one CPU: --workers auto runs a single process")
    assert len(server.wait_generation(1)) == len(os.sched_getaffinity(0))


def test_unix_socket_is_shared_and_survives_a_reload(supervised, plugin_env, tmp_path) -> None:
    path = tmp_path / "w.sock"
    config = write_config(
        tmp_path / "c.toml",
        f"""
        [reactor]
        workers = 2
        plugins = ["rk_whoami"]
        [[listen]]
        handler = "whoami"
        path = "{path}"
        """,
    )
    server = supervised(config, env=plugin_env)
    first = server.wait_generation(1)
    assert "(shared socket)" in "".join(server.log)
    server.signal(signal.SIGHUP)
    second = server.wait_generation(2)
    server.wait_for(r"retired")
    server.wait_for(r"retired")
    assert not set(first) & set(second)
    # The retired workers closed their copies without unlinking the path.
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(TIMEOUT)
    sock.connect(str(path))
    line = sock.recv(64)
    sock.close()
    assert int(line) in second
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert not path.exists(), "the supervisor removes its UNIX socket at exit"


# -- crashes ------------------------------------------------------------------


def test_sigkilled_worker_is_replaced_within_a_second_and_the_other_never_notices(
    supervised, plugin_env, tmp_path, closing
) -> None:
    server = supervised(whoami_config(tmp_path / "c.toml"), env=plugin_env)
    victim, survivor = server.wait_generation(1)
    port = server.port()
    # Long-lived connections on the surviving worker, talking all along.
    kept: list[socket.socket] = []
    for _ in range(200):
        if len(kept) == 5:
            break
        sock, pid = whoami(port)
        closing.append(sock)
        if pid == survivor:
            kept.append(sock)
        else:
            sock.close()
    assert len(kept) == 5
    for sock in kept:
        round_trip(sock)
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    started_at, match = server.wait_for(r"started worker \d \(pid (\d+)\)")
    assert started_at - killed_at < 1.0
    replacement = int(match.group(1))
    assert f"(pid {victim}) killed by SIGKILL" in "".join(server.log)
    for sock in kept:
        round_trip(sock, b"still here")
    server.wait_for(rf"\(pid {replacement}\) ready")
    assert server.children() == {survivor, replacement}
    assert set(spread(port, 100)) == {survivor, replacement}
    for sock in kept:
        round_trip(sock)
        sock.close()


def test_a_worker_that_keeps_crashing_is_restarted_with_backoff(
    supervised, plugin_env, tmp_path
) -> None:
    env = dict(plugin_env, RK_CRASH_AFTER="0.05")
    server = supervised(whoami_config(tmp_path / "c.toml"), env=env)
    began = time.monotonic()
    delays = []
    for _ in range(3):
        _, match = server.wait_for(
            r"worker 0 \(pid \d+\) exited with code 3 .*restarting in ([\d.]+)s"
        )
        delays.append(float(match.group(1)))
    assert delays == [0.5, 1.0, 2.0]
    # Never spins: within that time only a handful of worker 0s were started.
    starts = sum(1 for line in server.log if re.search(r"started worker 0 ", line))
    assert starts <= 5, "".join(server.log)
    assert time.monotonic() - began < 30
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0


def test_workers_that_cannot_start_make_the_supervisor_exit_1(
    supervised, plugin_env, tmp_path
) -> None:
    # The config resolves (the supervisor checks that) but the handler
    # type's shared state cannot be built: only the workers find out.
    (Path(plugin_env["PYTHONPATH"]) / "rk_broken.py").write_text(BROKEN_STATE_PLUGIN)
    config = write_config(
        tmp_path / "c.toml",
        """
        [reactor]
        workers = 2
        plugins = ["rk_broken"]
        [[listen]]
        handler = "broken"
        port = 0
        """,
    )
    result = reactorkit_cli("run", config, env=plugin_env, timeout=60)
    assert result.returncode == 1
    assert "failed to set up: ZeroDivisionError" in result.stderr
    assert "exited with code 1 before it was ready" in result.stderr
    assert "the workers could not start; exiting" in result.stderr


BROKEN_STATE_PLUGIN = """
import reactorkit

@reactorkit.hookimpl
def reactorkit_handler_types():
    return [
        reactorkit.HandlerType(name="broken", handler=reactorkit.Handler, state=lambda l: 1 / 0)
    ]
"""


# -- shutdown -----------------------------------------------------------------


def test_sigterm_drains_every_worker_and_exits_zero(supervised, plugin_env, tmp_path) -> None:
    server = supervised(whoami_config(tmp_path / "c.toml"), env=plugin_env)
    pids = server.wait_generation(1)
    sock, _ = whoami(server.port())
    server.signal(signal.SIGTERM)
    assert sock.recv(16) == b""  # the worker closed it gracefully
    sock.close()
    assert server.wait_exit() == 0
    log = "".join(server.log)
    for pid in pids:
        assert f"(pid {pid}) exited with code 0" in log
    assert "stopped" in log


def test_a_sigterm_right_after_binding_is_kept_and_shuts_down_cleanly(
    supervised, plugin_env, tmp_path
) -> None:
    server = supervised(whoami_config(tmp_path / "c.toml"), env=plugin_env)
    server.wait_for(r"bound 127\.0\.0\.1:\d+")  # logged before the supervisor's loop runs
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    log = "".join(server.log)
    assert "SIGTERM: stopping" in log
    assert "stopped" in log


STUCK_PLUGIN = """
import time
import reactorkit

@reactorkit.hookimpl
def reactorkit_reactor_stopping(reactor):
    time.sleep(3600)  # a plugin that blocks the loop: the worker never exits by itself
"""


def test_workers_still_running_at_shutdown_timeout_are_killed(
    supervised, plugin_env, tmp_path
) -> None:
    (Path(plugin_env["PYTHONPATH"]) / "rk_stuck.py").write_text(STUCK_PLUGIN)
    config = write_config(
        tmp_path / "c.toml",
        """
        [reactor]
        workers = 2
        plugins = ["rk_stuck"]
        shutdown_timeout = 0.5
        [[listen]]
        handler = "echo"
        port = 0
        """,
    )
    server = supervised(config, env=plugin_env)
    pids = server.wait_generation(1)
    began = time.monotonic()
    server.signal(signal.SIGTERM)
    assert server.wait_exit(timeout=20) == 0
    assert time.monotonic() - began < 10
    log = "".join(server.log)
    for pid in pids:
        assert f"(pid {pid}) still running: killing it" in log
        assert f"(pid {pid}) killed by SIGKILL" in log


BIG_REPLY_PLUGIN = """
import reactorkit

class BigReply(reactorkit.Handler):
    def data_received(self, data):
        self.connection.write(b"R" * (32 * 1024 * 1024))

@reactorkit.hookimpl
def reactorkit_handler_types():
    return [reactorkit.HandlerType(name="big-reply", handler=BigReply)]
"""


def test_a_second_sigterm_aborts_at_once(supervised, plugin_env, tmp_path, closing) -> None:
    (Path(plugin_env["PYTHONPATH"]) / "rk_big_reply.py").write_text(BIG_REPLY_PLUGIN)
    config = write_config(
        tmp_path / "c.toml",
        """
        [reactor]
        workers = 2
        plugins = ["rk_big_reply"]
        shutdown_timeout = 60
        [[listen]]
        handler = "big-reply"
        port = 0
        """,
    )
    server = supervised(config, env=plugin_env)
    server.wait_generation(1)
    port = server.port()
    # Clients that never read: their workers cannot finish draining.
    clients = closing
    for _ in range(4):
        sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        sock.sendall(b"go\n")
        assert sock.recv(1) == b"R"
        clients.append(sock)
    server.signal(signal.SIGTERM)
    server.wait_for(r"SIGTERM: stopping 2 workers")
    began = time.monotonic()
    server.signal(signal.SIGTERM)
    assert server.wait_exit(timeout=20) == 0
    assert time.monotonic() - began < 10, "the second signal did not abort"
    assert "SIGTERM again: workers abort their connections now" in "".join(server.log)
    for sock in clients:
        sock.close()


def test_a_worker_whose_supervisor_is_killed_shuts_down(supervised, plugin_env, tmp_path) -> None:
    server = supervised(whoami_config(tmp_path / "c.toml"), env=plugin_env)
    pids = server.wait_generation(1)
    # A pidfd becomes readable when its process terminates (not our child:
    # the workers are the supervisor's, reparented once it dies).
    pidfds = [os.pidfd_open(pid) for pid in pids]
    try:
        server.proc.kill()
        server.proc.wait(10)
        # The workers still hold the log pipe: it ends when both have exited.
        log = server.read_to_end()
        assert log.count("the supervisor is gone; shutting down") == 2, log
        for pid in pids:
            assert re.search(rf"\[{pid}\] reactorkit.worker: worker \d stopped", log), log
        for pidfd in pidfds:
            readable, _, _ = select.select([pidfd], [], [], 10)
            assert readable, "a worker outlived its supervisor"
    finally:
        for pidfd in pidfds:
            os.close(pidfd)


# -- config -------------------------------------------------------------------


def test_chat_with_two_workers_is_a_config_error_naming_the_listener(tmp_path) -> None:
    config = write_config(
        tmp_path / "c.toml",
        """
        [[listen]]
        name = "rooms"
        handler = "chat"
        port = 0
        """,
    )
    result = reactorkit_cli("run", "--workers", "2", config)
    assert result.returncode == 1
    assert "listen[0] 'rooms': handler cannot run with --workers = 2" in result.stderr
    assert (
        "rooms would split" in result.stderr or "would split between the workers" in result.stderr
    )


def test_workers_option_rejects_nonsense() -> None:
    result = reactorkit_cli("run", "--workers", "many")
    assert result.returncode == 2
    assert 'must be an integer 1-1024 or "auto"' in result.stderr


def test_workers_apply_the_listeners_access_control(supervised, tmp_path) -> None:
    # Workers start listeners on inherited sockets (Server.adopt): the
    # listener's allow/deny must reach them as it does a bound socket.
    config = write_config(
        tmp_path / "c.toml",
        """
        [reactor]
        workers = 2
        [[listen]]
        handler = "echo"
        port = 0
        deny = ["127.0.0.1/32"]
        """,
    )
    server = supervised(config)
    server.wait_generation(1)
    port = server.port()
    for _ in range(10):  # connections land on both workers: each refuses
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            with contextlib.suppress(ConnectionResetError):
                sock.sendall(b"hello")
            try:
                reply = sock.recv(10)
            except ConnectionResetError:
                reply = b""
            assert reply == b"", "a denied client was served"


CONFIGURE_COUNTER = """
import os
import reactorkit

@reactorkit.hookimpl
def reactorkit_configure(config):
    with open(os.environ["RK_CONFIGURE_LOG"], "a") as f:
        f.write(f"{os.getpid()}\\n")
"""


def test_each_process_runs_the_configure_hooks_once(supervised, plugin_env, tmp_path) -> None:
    (Path(plugin_env["PYTHONPATH"]) / "rk_configure.py").write_text(CONFIGURE_COUNTER)
    record = tmp_path / "configured"
    config = write_config(
        tmp_path / "c.toml",
        """
        [reactor]
        workers = 2
        plugins = ["rk_configure"]
        [[listen]]
        handler = "echo"
        port = 0
        """,
    )
    server = supervised(config, env={**plugin_env, "RK_CONFIGURE_LOG": str(record)})
    pids = server.wait_generation(1)
    calls = Counter(record.read_text().split())
    for pid in pids:
        assert calls[str(pid)] == 1, calls
