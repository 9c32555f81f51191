"""A plugin raising everywhere it can, under `reactorkit run`: 100 other clients never notice."""

from __future__ import annotations

import http.client
import selectors
import signal
import socket
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ServerProcess, child_env, connect, recv_until_closed

CHAOS_PLUGIN = '''
"""Raises in every hook and callback it can."""

import time

import reactorkit

COUNT = [0]


@reactorkit.hookimpl
def reactorkit_reactor_started(reactor):
    raise RuntimeError("chaos: reactor_started")


@reactorkit.hookimpl
def reactorkit_reactor_stopping(reactor):
    raise RuntimeError("chaos: reactor_stopping")


@reactorkit.hookimpl
def reactorkit_connection_made(listener, connection):
    raise RuntimeError("chaos: connection_made hook")


@reactorkit.hookimpl
def reactorkit_connection_lost(listener, connection, reason):
    raise RuntimeError("chaos: connection_lost hook")


class Chaos(reactorkit.Handler):
    def __init__(self, state=None):
        COUNT[0] += 1
        if COUNT[0] % 5 == 0:
            raise RuntimeError("chaos: __init__")
        super().__init__(state)

    def connection_made(self, connection):
        super().connection_made(connection)
        if COUNT[0] % 5 == 1:
            raise RuntimeError("chaos: connection_made")

    def data_received(self, data):
        reactor = self.connection.reactor
        if data.startswith(b"raise"):
            raise RuntimeError("chaos: data_received")
        if data.startswith(b"timer"):
            reactor.call_later(0, self.boom)
        elif data.startswith(b"soon"):
            reactor.call_soon(self.boom)
        elif data.startswith(b"thread"):
            reactor.run_in_thread(self.fail).add_done_callback(lambda f: f.result())
        elif data.startswith(b"flood"):
            # More than any kernel send buffer takes at once (tcp_wmem's
            # maximum is 4 MiB): the rest is buffered and pause_writing raises.
            self.connection.write(b"x" * (16 << 20))
        else:
            self.connection.write(data)
        return None

    def boom(self):
        raise RuntimeError("chaos: scheduled callback")

    def fail(self):
        raise RuntimeError("chaos: thread work")

    def pause_writing(self):
        raise RuntimeError("chaos: pause_writing")

    def eof_received(self):
        raise RuntimeError("chaos: eof_received")

    def connection_lost(self, exc):
        raise RuntimeError("chaos: connection_lost")

    def shutdown_requested(self):
        raise RuntimeError("chaos: shutdown_requested")


@reactorkit.hookimpl
def reactorkit_handler_types():
    return [reactorkit.HandlerType(name="chaos", handler=Chaos, description="raises")]


def boom(ctx):
    raise RuntimeError("chaos: command")


def nap(ctx):
    time.sleep(30)
    return "rested"


@reactorkit.hookimpl
def reactorkit_line_commands():
    return [
        reactorkit.LineCommand(name="BOOM", function=boom, help="raises"),
        reactorkit.LineCommand(name="NAP", function=nap, help="blocks 30 s", blocking=True),
    ]


def route_boom(request):
    raise RuntimeError("chaos: route")


@reactorkit.hookimpl
def reactorkit_http_routes():
    return [reactorkit.Route(method="GET", path="/boom", function=route_boom)]
'''

CONFIG = """
[reactor]
plugins = ["chaos_plugin"]
shutdown_timeout = {shutdown_timeout}

[[listen]]
handler = "echo"
port = 0
max_connections = 1000

[[listen]]
handler = "chaos"
port = 0

[[listen]]
handler = "line-command"
port = 0
[listen.options]
commands = ["PING", "BOOM", "NAP"]

[[listen]]
handler = "http-lite"
port = 0
"""

CLIENTS = 100
ROUNDS = 20


@pytest.fixture
def chaos_server(tmp_path: Path, run_server: Any) -> Any:
    def start(shutdown_timeout: float = 10.0) -> ServerProcess:
        (tmp_path / "chaos_plugin.py").write_text(CHAOS_PLUGIN)
        config = tmp_path / "chaos.toml"
        config.write_text(textwrap.dedent(CONFIG.format(shutdown_timeout=shutdown_timeout)))
        proc: ServerProcess = run_server(
            "run", str(config), env=child_env(PYTHONPATH=str(tmp_path))
        )
        proc.wait_serving(4)
        proc.keep_reading_log()  # tracebacks by the hundred: never let the pipe fill
        return proc

    return start


def talk(address: tuple[str, int], errors: list[str], stop: threading.Event) -> int:
    """100 echo clients doing round trips from one thread; returns how many."""
    selector = selectors.DefaultSelector()
    socks = [connect(address) for _ in range(CLIENTS)]
    done = 0
    try:
        for rnd in range(ROUNDS):
            if stop.is_set():
                break
            for i, sock in enumerate(socks):
                sock.sendall(b"%d:%d\n" % (rnd, i))
            for i, sock in enumerate(socks):
                want = b"%d:%d\n" % (rnd, i)
                got = b""
                while len(got) < len(want):
                    chunk = sock.recv(64)
                    if not chunk:
                        errors.append(f"client {i} closed in round {rnd}")
                        return done
                    got += chunk
                if got != want:
                    errors.append(f"client {i} round {rnd}: {got!r}")
                done += 1
    except OSError as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        for sock in socks:
            sock.close()
        selector.close()
    return done


def chaos(proc: ServerProcess, stop: threading.Event, report: dict[str, Any]) -> None:
    """Hit every raising path, over and over, until the talkers finish.

    ``report["rounds"]`` counts the rounds done; a failed check ends the
    thread with its message in ``report["error"]`` (the test asserts both).
    """
    chaos_addr = proc.tcp("chaos")
    lc_addr = proc.tcp("line-command")
    http_host, http_port = proc.tcp("http-lite")
    deadline = time.monotonic() + 30
    report["running"].set()
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            for word in (b"raise", b"timer", b"soon", b"thread", b"hello"):
                try:
                    with connect(chaos_addr) as sock:
                        sock.sendall(word)
                        sock.shutdown(socket.SHUT_WR)  # eof_received raises too
                        recv_until_closed(sock)
                except OSError:
                    pass  # the chaos listener may reset us: that is its business
            try:
                with connect(chaos_addr) as sock:
                    sock.sendall(b"flood")
                    # The reply passes high water at once, the handler's
                    # pause_writing raises and the server aborts us.
                    recv_until_closed(sock)
            except OSError:
                pass
            with connect(lc_addr) as sock:
                sock.sendall(b"BOOM\r\nPING\r\n")
                reply = b""
                while reply.count(b"\r\n") < 2:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    reply += chunk
                assert b"+PONG" in reply, reply  # a raising command costs one -ERR
            conn = http.client.HTTPConnection(http_host, http_port, timeout=5)
            conn.request("GET", "/boom")
            assert conn.getresponse().status == 500
            conn.close()
            report["rounds"] += 1
    except BaseException as exc:  # reported by the test thread
        report["error"] = f"{type(exc).__name__}: {exc}"


# Every place the chaos plugin raises, as its log line names it.
CHAOS_WHERE = (
    "reactor_started",
    "reactor_stopping",
    "connection_made hook",
    "connection_lost hook",
    "__init__",
    "connection_made",
    "data_received",
    "scheduled callback",
    "thread work",
    "pause_writing",
    "eof_received",
    "connection_lost",
    "shutdown_requested",
    "command",
    "route",
)


@pytest.mark.slow
def test_a_plugin_raising_everywhere_never_disturbs_the_other_clients(chaos_server: Any) -> None:
    proc = chaos_server()
    errors: list[str] = []
    stop = threading.Event()
    report: dict[str, Any] = {"rounds": 0, "error": None, "running": threading.Event()}
    chaos_thread = threading.Thread(target=chaos, args=(proc, stop, report), daemon=True)
    chaos_thread.start()
    assert report["running"].wait(10)  # the talk below overlaps the chaos
    try:
        done = talk(proc.tcp("echo"), errors, stop)
    finally:
        stop.set()
        chaos_thread.join(30)
    assert not chaos_thread.is_alive()
    assert report["error"] is None, report
    assert report["rounds"] >= 1  # the chaos ran while the 100 clients talked
    assert errors == []
    assert done == CLIENTS * ROUNDS
    # Still serving after all of it; a chaos connection open at SIGTERM makes
    # shutdown_requested raise; then a clean exit.
    # Each socket tried is closed here, the one held open at SIGTERM last (a
    # "with" would close only the first: the ones after it leaked, and the
    # ResourceWarning failed whichever test the GC ran in).
    held: socket.socket | None = None
    try:
        for _ in range(5):  # __init__ or connection_made raises for 2 in 5 connections
            held = connect(proc.tcp("chaos"))
            try:
                held.sendall(b"hi")
                if held.recv(2) == b"hi":
                    break
            except (ConnectionResetError, BrokenPipeError):
                # Closed with "hi" unread in the kernel (it came before the
                # close): a reset, not an EOF. Either way, the next one.
                pass
            held.close()
            held = None
        with connect(proc.tcp("echo")) as sock:
            sock.sendall(b"after\n")
            assert sock.recv(10) == b"after\n"
        code, log = proc.terminate()
    finally:
        if held is not None:
            held.close()
    assert code == 0, log
    assert "Traceback" in log  # the failures were logged...
    missing = [where for where in CHAOS_WHERE if f"chaos: {where}" not in log]
    assert not missing, missing
    assert "plugin 'chaos_plugin'" in log  # ...with the plugin's name
    assert "stopped" in log


def test_shutdown_ends_by_its_deadline_even_with_blocking_work_running(chaos_server: Any) -> None:
    proc = chaos_server(shutdown_timeout=1.0)
    with connect(proc.tcp("line-command")) as sock:
        sock.sendall(b"NAP\r\n")  # blocks a pool thread for 30 s
        with connect(proc.tcp("echo")) as probe:  # the loop is not blocked by it
            probe.sendall(b"x")
            assert probe.recv(1) == b"x"
        started = time.monotonic()
        code, log = proc.terminate(timeout=10)  # TimeoutExpired: the process overran
    assert code == 0, log
    assert time.monotonic() - started < 8
    assert "shutdown timeout" in log


def test_sigterm_right_after_listening_is_a_graceful_shutdown(
    tmp_path: Path, run_server: Any
) -> None:
    config = tmp_path / "echo.toml"
    config.write_text('[[listen]]\nhandler = "echo"\nport = 0\n')
    proc: ServerProcess = run_server("run", str(config))
    assert proc.proc.stderr is not None
    while "listening:" not in proc.proc.stderr.readline():
        pass
    proc.proc.send_signal(signal.SIGTERM)  # before the loop has installed its handlers
    code, log = proc.wait_exit()
    assert code == 0, log
    assert "stopped" in log


def test_sighup_without_workers_is_logged_and_serving_goes_on(
    tmp_path: Path, run_server: Any
) -> None:
    config = tmp_path / "echo.toml"
    config.write_text('[[listen]]\nhandler = "echo"\nport = 0\n')
    proc: ServerProcess = run_server("run", str(config))
    proc.wait_serving(1)
    proc.keep_reading_log()
    with connect(proc.tcp("echo")) as sock:  # a round trip: the loop's handlers are in
        sock.sendall(b"a")
        assert sock.recv(1) == b"a"
        proc.proc.send_signal(signal.SIGHUP)
        sock.sendall(b"b")
        assert sock.recv(1) == b"b"  # the process and this connection live on
    code, log = proc.terminate()
    assert code == 0, log
    assert "SIGHUP: this process has no supervisor" in log


def test_sighup_right_after_listening_is_not_fatal(tmp_path: Path, run_server: Any) -> None:
    config = tmp_path / "echo.toml"
    config.write_text('[[listen]]\nhandler = "echo"\nport = 0\n')
    proc: ServerProcess = run_server("run", str(config))
    assert proc.proc.stderr is not None
    # "listening:" is logged while binding, before the loop's handlers are in
    # place; the signal may land in that window (caught early) or just after.
    first = proc.proc.stderr.readline()
    proc.log.append(first)
    listening = ServerProcess.LISTENING.search(first)
    assert listening, first
    proc.addresses[listening.group(1)] = listening.group(3)
    proc.proc.send_signal(signal.SIGHUP)
    proc.keep_reading_log()
    with connect(proc.tcp("echo")) as sock:
        sock.sendall(b"a")
        assert sock.recv(1) == b"a"
    code, log = proc.terminate()
    assert code == 0, log
    assert "SIGHUP: this process has no supervisor" in log
