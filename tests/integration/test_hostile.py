"""Issue 9's promises attacked through ``reactorkit run``, as a careless plugin author would."""

from __future__ import annotations

import signal
import socket
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import ServerProcess, child_env, connect, recv_until_closed

# asyncio.CancelledError is a BaseException, not an Exception: plugin code
# that wraps asyncio (or raises GeneratorExit, or its own BaseException
# subclass) lets it escape. It is a plugin failure like any other; only
# KeyboardInterrupt and SystemExit belong to the process.
CARELESS_PLUGIN = """
import asyncio
import os
import sys

import reactorkit

WHERE = os.environ["CARELESS"]


def careless(where):
    if WHERE == where:
        raise asyncio.CancelledError("careless: " + where)


@reactorkit.hookimpl
def reactorkit_reactor_stopping(reactor):
    careless("reactor_stopping hook")


@reactorkit.hookimpl
def reactorkit_connection_made(listener, connection):
    if listener.name == "careless":
        careless("connection_made hook")


@reactorkit.hookimpl
def reactorkit_connection_lost(listener, connection, reason):
    if listener.name == "careless":
        careless("connection_lost hook")


class Careless(reactorkit.Handler):
    def __init__(self, state=None):
        careless("__init__")
        super().__init__(state)

    def connection_made(self, connection):
        self.connection = connection
        careless("connection_made")

    def data_received(self, data):
        if data == b"sys.exit in a thread":
            # argparse in a blocking call exits on bad input; result() re-raises
            future = self.connection.reactor.run_in_thread(sys.exit, 2)
            future.add_done_callback(lambda f: f.result())
            return
        self.connection.write(data)
        careless("data_received")

    def eof_received(self):
        careless("eof_received")

    def connection_lost(self, exc):
        careless("connection_lost")

    def shutdown_requested(self):
        careless("shutdown_requested")
        self.connection.close()


def cancel(ctx):
    raise asyncio.CancelledError("careless: command")


@reactorkit.hookimpl
def reactorkit_line_commands():
    return [
        reactorkit.LineCommand(name="CANCEL", function=cancel, help="raises"),
        reactorkit.LineCommand(name="BCANCEL", function=cancel, help="raises", blocking=True),
    ]


@reactorkit.hookimpl
def reactorkit_handler_types():
    return [reactorkit.HandlerType(name="careless", handler=Careless, description="raises")]
"""

CONFIG = """
[reactor]
plugins = ["careless_plugin"]
shutdown_timeout = 8

[[listen]]
name = "careless"
handler = "careless"
port = 0
max_connections = 1

[[listen]]
name = "echo"
handler = "echo"
port = 0

[[listen]]
name = "line-command"
handler = "line-command"
port = 0
"""

# Where the failure costs the client its connection (it is closed at once)...
FATAL_TO_THE_CONNECTION = {"__init__", "connection_made"}
WHERES = [
    "__init__",
    "connection_made",
    "data_received",
    "eof_received",
    "connection_lost",
    "shutdown_requested",
    "connection_made hook",
    "connection_lost hook",
    "reactor_stopping hook",
]


def start_careless(tmp_path: Path, run_server: Any, where: str) -> ServerProcess:
    (tmp_path / "careless_plugin.py").write_text(CARELESS_PLUGIN)
    config = tmp_path / "careless.toml"
    config.write_text(textwrap.dedent(CONFIG))
    proc: ServerProcess = run_server(
        "run", str(config), env=child_env(PYTHONPATH=str(tmp_path), CARELESS=where)
    )
    proc.wait_serving(3)
    proc.keep_reading_log()
    return proc


def round_trip_or_closed(address: Any) -> bytes:
    """Send ``hi``, half-close, return everything until the server closes."""
    with connect(address) as sock:
        try:
            sock.sendall(b"hi")
            sock.shutdown(socket.SHUT_WR)
        except OSError:  # already closed (and reset: "hi" was never read)
            pass
        return recv_until_closed(sock)


@pytest.mark.parametrize("where", WHERES)
def test_a_base_exception_from_plugin_code_costs_one_connection_at_most(
    tmp_path: Path, run_server: Any, where: str
) -> None:
    proc = start_careless(tmp_path, run_server, where)
    careless, echo = proc.tcp("careless"), proc.tcp("echo")
    # max_connections = 1: each client gets in only if the one before was
    # fully accounted for, and each is answered or closed, never left hanging.
    expected = b"" if where in FATAL_TO_THE_CONNECTION else b"hi"
    for _ in range(3):
        assert round_trip_or_closed(careless) == expected
    # SIGTERM with a client of each listener open: both are told, the
    # process exits well before shutdown_timeout (8 s), not stuck.
    with connect(careless) as held, connect(echo) as other:
        other.sendall(b"x")
        assert other.recv(1) == b"x"
        if where not in FATAL_TO_THE_CONNECTION:
            held.sendall(b"y")
            assert held.recv(1) == b"y"
        started = time.monotonic()
        proc.proc.send_signal(signal.SIGTERM)
        assert recv_until_closed(other) == b""  # the echo client was asked to finish
        recv_until_closed(held)
    code, log = proc.wait_exit(timeout=12)
    assert code == 0, log
    assert time.monotonic() - started < 6, log
    assert "shutdown timeout" not in log
    assert f"careless: {where}" in log, log  # the failure was logged...
    assert "Traceback" in log
    assert "plugin 'careless_plugin'" in log  # ...with the plugin's name


def test_a_command_raising_a_base_exception_costs_one_error_reply(
    tmp_path: Path, run_server: Any
) -> None:
    proc = start_careless(tmp_path, run_server, "command")
    with connect(proc.tcp("line-command")) as sock:
        sock.sendall(b"CANCEL\r\nBCANCEL\r\nPING\r\n")
        sock.shutdown(socket.SHUT_WR)
        replies = recv_until_closed(sock).split(b"\r\n")
    assert [r[:4] for r in replies] == [b"-ERR", b"-ERR", b"+PON", b""], replies
    code, log = proc.terminate()
    assert code == 0, log
    assert "command CANCEL (plugin 'careless_plugin') raised" in log, log
    assert "command BCANCEL (plugin 'careless_plugin') raised" in log, log


def test_sys_exit_on_a_pool_thread_costs_one_connection_not_the_server(
    tmp_path: Path, run_server: Any
) -> None:
    # SystemExit on a worker thread ends that thread in Python; carried to
    # the reactor thread by the future, it stopped the whole server (exit 2).
    proc = start_careless(tmp_path, run_server, "none")
    with connect(proc.tcp("careless")) as sock:
        sock.sendall(b"sys.exit in a thread")
        assert recv_until_closed(sock) == b""
    assert round_trip_or_closed(proc.tcp("careless")) == b"hi"  # still serving
    code, log = proc.terminate()
    assert code == 0, log
    assert "SystemExit" in log
