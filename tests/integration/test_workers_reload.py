"""``workers = N``: SIGHUP reloads under load, broken configs, new plugins; SIGTTIN/SIGTTOU."""

# The fixtures are imported from test_workers; tests naming them as
# parameters "redefine" them as far as the linter can tell.
# ruff: noqa: F811

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.integration.test_plugins_discovery import write_project
from tests.integration.test_workers import (
    BROKEN_STATE_PLUGIN,
    TIMEOUT,
    plugin_env,  # noqa: F401  (a fixture)
    round_trip,
    spread,
    supervised,  # noqa: F401  (a fixture)
    whoami_config,
    write_config,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="workers tests read /proc")


# -- reload -------------------------------------------------------------------


class LoadLoop:
    """Client threads doing fresh-connection HTTP requests and echo round trips."""

    def __init__(self, http_port: int, echo_port: int, threads: int = 4) -> None:
        self.http_port, self.echo_port = http_port, echo_port
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.done = Counter[str]()
        self._lock = threading.Condition()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)
        ]

    def __enter__(self) -> LoadLoop:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(30)

    def _run(self, index: int) -> None:
        deadline = time.monotonic() + 60  # bounded even if the test forgets to stop it
        count = 0
        while not self.stop.is_set() and time.monotonic() < deadline and count < 50_000:
            count += 1
            kind = "http" if (index + count) % 2 else "echo"
            try:
                if kind == "http":
                    self._http()
                else:
                    self._echo(count)
            except Exception as exc:  # every failure is the test's finding
                with self._lock:
                    self.errors.append(f"{kind}: {type(exc).__name__}: {exc}")
            else:
                with self._lock:
                    self.done[kind] += 1
                    self._lock.notify_all()

    def wait_total(self, count: int, timeout: float = 20.0) -> None:
        """Wait until ``count`` requests succeeded in all."""
        with self._lock:
            if not self._lock.wait_for(lambda: sum(self.done.values()) >= count, timeout):
                raise TimeoutError(f"load stalled at {self.done}; errors: {self.errors[:5]}")

    def _http(self) -> None:
        with socket.create_connection(("127.0.0.1", self.http_port), timeout=TIMEOUT) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 200 "), reply[:80]

    def _echo(self, count: int) -> None:
        payload = b"round trip %d\n" % count
        with socket.create_connection(("127.0.0.1", self.echo_port), timeout=TIMEOUT) as sock:
            round_trip(sock, payload)


def http_echo_config(path: Path, workers: int = 2) -> str:
    return write_config(
        path,
        f"""
        [reactor]
        workers = {workers}
        shutdown_timeout = 5
        [[listen]]
        name = "web"
        handler = "http-lite"
        port = 0
        [[listen]]
        name = "echo"
        handler = "echo"
        port = 0
        """,
    )


def test_sighup_under_load_drops_no_connection_and_fails_no_request(supervised, tmp_path) -> None:
    server = supervised(http_echo_config(tmp_path / "c.toml"))
    first = server.wait_generation(1)
    http_port, echo_port = server.ports()
    with LoadLoop(http_port, echo_port) as load:
        for generation in (2, 3):
            load.wait_total(200 * (generation - 1))  # load flows before each SIGHUP
            server.signal(signal.SIGHUP)
            pids = server.wait_generation(generation)
        load.wait_total(sum(load.done.values()) + 200)  # and after the last one
    assert load.errors == [], load.errors[:10]
    assert load.done["http"] > 200, load.done
    assert load.done["echo"] > 200, load.done
    assert not set(first) & set(pids)
    server.wait_for("retired")
    assert server.children() >= set(pids)


def test_sighup_with_a_broken_config_keeps_the_old_workers_serving(
    supervised, plugin_env, tmp_path
) -> None:
    path = tmp_path / "c.toml"
    server = supervised(whoami_config(path), env=plugin_env)
    pids = server.wait_generation(1)
    port = server.port()
    path.write_text("[reactor]\nworkers = 2\n[[listen]\nhandler = ")
    server.signal(signal.SIGHUP)
    server.wait_for(r"reload failed: .*c\.toml: is not valid TOML")
    server.wait_for(r"reload failed: the old workers keep serving")
    assert set(spread(port, 40)) <= set(pids)
    # A config that parses but does not resolve is refused the same way.
    whoami_config(path, extra='[[listen]]\nname = "x"\nhandler = "no-such-handler"\nport = 0\n')
    server.signal(signal.SIGHUP)
    server.wait_for(r"reload failed: .*'x': handler must name an installed handler type")
    server.wait_for(r"reload failed: the old workers keep serving")
    assert server.children() == set(pids)
    assert set(spread(port, 40)) == set(pids)


def test_a_reload_whose_workers_cannot_start_keeps_the_old_ones_and_every_socket_served(
    supervised, plugin_env, tmp_path
) -> None:
    (Path(plugin_env["PYTHONPATH"]) / "rk_broken.py").write_text(BROKEN_STATE_PLUGIN)
    path = tmp_path / "c.toml"
    server = supervised(whoami_config(path), env=plugin_env)
    pids = server.wait_generation(1)
    port = server.port()
    # Three workers (a third socket on the port) and a listener that cannot start.
    whoami_config(
        path,
        workers=3,
        extra='[[listen]]\nname = "b"\nhandler = "broken"\nport = 0\n',
    )
    path.write_text(path.read_text().replace('"rk_crash"]', '"rk_crash", "rk_broken"]'))
    server.signal(signal.SIGHUP)
    server.wait_for(r"exited with code 1 before it was ready")
    server.wait_for(r"reload failed: the old workers keep serving")
    # The socket bound for the third worker was closed again: every
    # connection reaches one of the old workers (none waits on an orphan).
    assert set(spread(port, 90)) == set(pids)
    for _ in range(2):  # the other new workers are stopped too
        server.wait_for(r"worker \d \(pid \d+\) (killed by SIGTERM|exited with code)")
    assert server.children() == set(pids)


SHOUT = """
import reactorkit

class Shout(reactorkit.Handler):
    def data_received(self, data):
        self.connection.write(data.upper())

@reactorkit.hookimpl
def reactorkit_handler_types():
    return [reactorkit.HandlerType(name="shout", handler=Shout)]
"""


def test_reload_runs_plugins_installed_since_the_start(supervised, plugin_env, tmp_path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    env = dict(plugin_env, PYTHONPATH=f"{plugin_env['PYTHONPATH']}{os.pathsep}{site}")
    path = tmp_path / "c.toml"
    server = supervised(whoami_config(path), env=env)
    server.wait_generation(1)
    # pip installs a real distribution (entry point and all) while it runs.
    project = write_project(tmp_path, "reactorkit-shout", "reactorkit_shout", SHOUT, "1.0")
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    pip += ["--disable-pip-version-check", "--target", str(site), str(project)]
    installed = subprocess.run(pip, capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr
    whoami_config(path, extra='[[listen]]\nname = "shout"\nhandler = "shout"\nport = 0\n')
    server.signal(signal.SIGHUP)
    server.wait_generation(2)
    shout_port = server.ports()[-1]
    with socket.create_connection(("127.0.0.1", shout_port), timeout=TIMEOUT) as sock:
        sock.sendall(b"hello")
        assert sock.recv(16) == b"HELLO"


# -- resize -------------------------------------------------------------------


def test_sigttin_adds_a_worker_and_sigttou_removes_one(supervised, plugin_env, tmp_path) -> None:
    server = supervised(whoami_config(tmp_path / "c.toml"), env=plugin_env)
    two = server.wait_generation(1)
    port = server.port()
    server.signal(signal.SIGTTIN)
    three = server.wait_generation(2)
    assert len(three) == 3
    assert set(two) < set(three)
    assert server.children() == set(three)
    assert set(spread(port, 300)) == set(three)
    server.signal(signal.SIGTTOU)
    back = server.wait_generation(3)
    assert len(back) == 2
    server.wait_for("retired")
    server.wait_for("retired")
    assert server.children() == set(back)
    # The removed slot's socket stays open (closing it would reset its
    # queue); a remaining worker serves it, so every connection is answered.
    assert set(spread(port, 100)) == set(back)


def test_sighups_during_a_reload_coalesce_into_one_more(supervised, plugin_env, tmp_path) -> None:
    server = supervised(whoami_config(tmp_path / "c.toml"), env=plugin_env)
    server.wait_generation(1)
    server.signal(signal.SIGHUP)
    server.wait_for(r"generation 2: starting")
    for _ in range(30):
        server.signal(signal.SIGHUP)
    server.wait_generation(2)
    server.wait_generation(3)
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    log = "".join(server.log)
    assert "generation 4" not in log
    assert log.count("reload requested during a roll; it follows") == 1


class KeepAliveLoop(LoadLoop):
    """HTTP only, each thread on one keep-alive connection (reopened after Connection: close)."""

    def __init__(self, http_port: int, threads: int = 4) -> None:
        super().__init__(http_port, 0, threads)
        self._local = threading.local()

    def _run(self, index: int) -> None:
        self._local.conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=TIMEOUT)
        try:
            super()._run(index * 2 + 1)  # odd: every request is an HTTP one
        finally:
            self._local.conn.close()

    def _echo(self, count: int) -> None:
        self._http()

    def _http(self) -> None:
        conn = self._local.conn
        conn.request("GET", "/healthz")  # reconnects by itself after a Connection: close
        response = conn.getresponse()
        response.read()
        assert response.status == 200, response.status


def test_sighup_under_keepalive_load_fails_no_request(supervised, tmp_path) -> None:
    # An old worker closing an idle keep-alive connection at once raced the
    # client's next request; the drain grace answers it with Connection: close.
    server = supervised(http_echo_config(tmp_path / "c.toml"))
    server.wait_generation(1)
    http_port, _ = server.ports()
    with KeepAliveLoop(http_port) as load:
        for generation in (2, 3):
            load.wait_total(300 * (generation - 1))
            server.signal(signal.SIGHUP)
            server.wait_generation(generation)
        load.wait_total(sum(load.done.values()) + 300)
    assert load.errors == [], load.errors[:10]


LISTENERS = 100


def test_sighup_and_sigttin_as_soon_as_the_ports_are_bound_follow_the_first_roll(
    supervised, plugin_env, tmp_path
) -> None:
    # Between binding (the "bound" lines) and the loop's own handlers, the
    # default actions applied: SIGHUP killed the supervisor, SIGTTIN stopped it.
    # Many listeners widen that window: the signals land while they bind.
    extra = "".join(
        f'[[listen]]\nname = "l{i}"\nhandler = "whoami"\nport = 0\n' for i in range(LISTENERS)
    )
    server = supervised(whoami_config(tmp_path / "c.toml", extra=extra), env=plugin_env)
    server.wait_for(r"bound 127\.0\.0\.1:\d+")
    # SIGHUP first: a reload applies the file's `workers` again, so the order
    # matters, and whether the two land together (the kernel then delivers the
    # lower number, SIGHUP, first) or apart, this order is the one that arrives.
    server.signal(signal.SIGHUP)
    server.signal(signal.SIGTTIN)
    first = server.wait_generation(1)
    assert len(first) == 2
    server.wait_generation(2)
    last = server.wait_generation(3)
    assert len(last) == 3
    assert set(spread(server.port(), 60)) == set(last)
    server.signal(signal.SIGTERM)
    assert server.wait_exit() == 0
