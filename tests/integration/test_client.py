"""reactorkit connect against real servers: pipes both ways, half-closes, exits when closed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from reactorkit.client import parse_address
from tests.helpers import ServerProcess, child_env

BYE_PLUGIN = """
import reactorkit

class Bye(reactorkit.Handler):
    def connection_made(self, connection):
        connection.write(b"bye\\r\\n")
        connection.close()

@reactorkit.hookimpl
def reactorkit_handler_types():
    return [reactorkit.HandlerType(name="bye", handler=Bye)]
"""


@pytest.fixture
def server(run_server: Any, tmp_path: Path) -> ServerProcess:
    """echo on TCP and on a UNIX socket, line-command, and a handler that hangs up at once."""
    (tmp_path / "rk_bye.py").write_text(BYE_PLUGIN)
    config = tmp_path / "c.toml"
    config.write_text(
        f"""
[reactor]
plugins = ["rk_bye"]

[[listen]]
handler = "echo"
port = 0

[[listen]]
name = "unix"
handler = "echo"
path = "{tmp_path / "echo.sock"}"

[[listen]]
handler = "line-command"
port = 0

[[listen]]
handler = "bye"
port = 0
"""
    )
    proc = run_server("run", str(config), env=child_env(PYTHONPATH=str(tmp_path)))
    proc.wait_serving(4)
    return proc


def connect_cli(address: str, data: bytes | None = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "reactorkit", "connect", address],
        input=data,
        capture_output=True,
        timeout=30,
    )


def test_everything_sent_comes_back_and_it_exits_when_the_server_closes(
    server: ServerProcess,
) -> None:
    data = os.urandom(1 << 20)
    result = connect_cli(server.addresses["echo"], data)
    assert (result.returncode, result.stderr) == (0, b"")
    assert result.stdout == data  # the half-close let echo answer everything, then close


def test_a_unix_socket(server: ServerProcess) -> None:
    result = connect_cli(server.addresses["unix"], b"over a unix socket\n")
    assert (result.returncode, result.stdout) == (0, b"over a unix socket\n")


def test_a_piped_request_gets_its_whole_answer(server: ServerProcess) -> None:
    result = connect_cli(server.addresses["line-command"], b"PING\r\nECHO a b\r\n")
    assert (result.returncode, result.stdout) == (0, b"+PONG\r\n+a b\r\n")


def test_it_exits_when_the_server_hangs_up_while_input_is_still_open(
    server: ServerProcess,
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "reactorkit", "connect", server.addresses["bye"]],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.read() == b"bye\r\n"
        assert proc.wait(timeout=30) == 0
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.kill()
        proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            assert stream is not None
            stream.close()


def test_a_refused_connection_is_one_line_and_exit_1() -> None:
    with socket.socket() as unused:  # bound, not listening: connecting is refused
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
        result = connect_cli(f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert result.stderr.decode() == (
        f"reactorkit: error: cannot connect to 127.0.0.1:{port}: Connection refused\n"
    )


@pytest.mark.parametrize("address", ["7007", "localhost", "host:port", "h:70000", "unix:"])
def test_a_malformed_address_is_a_usage_error(address: str) -> None:
    result = connect_cli(address)
    assert result.returncode == 2
    assert result.stderr.decode().startswith(f"reactorkit: error: address {address!r}: expected")


def test_addresses_parse() -> None:
    assert parse_address("127.0.0.1:7007") == ("127.0.0.1", 7007)
    assert parse_address("[::1]:80") == ("::1", 80)
    assert parse_address("unix:/run/x.sock") == "/run/x.sock"
