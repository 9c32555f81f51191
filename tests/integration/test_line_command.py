"""line-command over real sockets: pipelining, STATS, blocking order, plugin commands."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import reactorkit
from reactorkit.testing import serve
from tests.helpers import DistMaker, connect, reactorkit_cli, write_distribution

# A third-party plugin that adds commands through a real entry point.
KV_PLUGIN = """
    import threading
    import reactorkit

    STORE = {}
    GATE = threading.Event()

    def kv_set(ctx):
        STORE[ctx.args[0]] = ctx.args[1]
        return None

    def kv_get(ctx):
        if ctx.args[0] not in STORE:
            raise reactorkit.CommandError(f"no such key: {ctx.args[0]}")
        return STORE[ctx.args[0]]

    def gate(ctx):
        GATE.wait(5)
        return "gate passed"

    @reactorkit.hookimpl
    def reactorkit_line_commands():
        return [
            reactorkit.LineCommand(name="TSET", function=kv_set, args="KEY VALUE",
                                   help="store a value"),
            reactorkit.LineCommand(name="TGET", function=kv_get, args="KEY",
                                   help="read a value"),
            reactorkit.LineCommand(name="GATE", function=gate, blocking=True,
                                   help="wait until the test opens the gate"),
        ]
"""


def read_lines(sock, count: int) -> list[str]:  # type: ignore[no-untyped-def]
    data = b""
    while data.count(b"\r\n") < count:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {data!r}"
        data += chunk
    return data.decode().split("\r\n")[:-1]


def test_builtins_and_pipelining_over_a_real_socket() -> None:
    with serve(handler="line-command") as srv, connect(srv.address()) as sock:
        sock.sendall(b"PING\r\n" + b"".join(b"ECHO %d\r\n" % i for i in range(500)))
        lines = read_lines(sock, 501)
        assert lines == ["+PONG"] + [f"+{i}" for i in range(500)]


def test_stats_reports_the_listeners_counters() -> None:
    with serve(handler="line-command") as srv:
        with connect(srv.address()) as first:
            first.sendall(b"PING\r\n")
            assert read_lines(first, 1) == ["+PONG"]
        with connect(srv.address()) as sock:
            sock.sendall(b"STATS\r\n")
            lines = read_lines(sock, 7)
        assert lines[0] == "*6"
        stats = dict(line.split(" ", 1) for line in lines[1:])
        assert stats["listener"] == "line-command"
        assert stats["open_connections"] == "1"
        assert stats["total_connections"] == "2"
        assert int(stats["bytes_received"]) >= len(b"PING\r\nSTATS\r\n")
        assert int(stats["bytes_sent"]) >= len(b"+PONG\r\n")
        assert stats["errors"] == "0"


def test_quit_closes_after_the_reply() -> None:
    with serve(handler="line-command") as srv, connect(srv.address()) as sock:
        sock.sendall(b"QUIT\r\nPING\r\n")
        assert read_lines(sock, 1) == ["+BYE"]
        assert sock.recv(100) == b""


def test_over_long_line_gets_an_error_and_is_closed() -> None:
    options = {"max_line_length": 64}
    with serve(handler="line-command", options=options) as srv, connect(srv.address()) as sock:
        sock.sendall(b"ECHO " + b"x" * 1000)
        assert read_lines(sock, 1) == ["-ERR line too long: the limit is 64 bytes"]
        assert sock.recv(100) == b""


def test_plugin_commands_through_a_real_entry_point_and_blocking_order(
    site: DistMaker,
) -> None:
    site("rk-kv-test", "0.4", {"rk_kv_test": KV_PLUGIN}, {"kv-test": "rk_kv_test"})
    options = {"banner": "kv ready"}
    with serve(handler="line-command", options=options) as srv, connect(srv.address()) as sock:
        assert read_lines(sock, 1) == ["+kv ready"]
        sock.sendall(b'TSET greeting "hello world"\r\nTGET greeting\r\nTGET nope\r\n')
        assert read_lines(sock, 3) == ["+OK", "+hello world", "-ERR no such key: nope"]
        sock.sendall(b"HELP TGET\r\n")
        assert read_lines(sock, 1) == [
            "+TGET KEY - read a value [plugin 'kv-test' (rk-kv-test 0.4)]"
        ]
        # A blocking command between fast ones: replies stay in order, and
        # other clients are served meanwhile.
        sock.sendall(b"PING first\r\nGATE\r\nPING after\r\nECHO last\r\n")
        assert read_lines(sock, 1) == ["+first"]
        with connect(srv.address()) as other:
            assert read_lines(other, 1) == ["+kv ready"]
            other.sendall(b"PING other\r\n")
            assert read_lines(other, 1) == ["+other"]
        import rk_kv_test  # type: ignore[import-not-found]

        rk_kv_test.GATE.set()
        assert read_lines(sock, 3) == ["+gate passed", "+after", "+last"]


def test_duplicate_command_from_two_plugins_fails_at_startup(tmp_path: Path) -> None:
    write_distribution(
        tmp_path,
        "rk-dup-one",
        "1.0",
        {"rk_dup_one": DUP.format(name="FLIP")},
        {"dup-one": "rk_dup_one"},
    )
    write_distribution(
        tmp_path,
        "rk-dup-two",
        "2.0",
        {"rk_dup_two": DUP.format(name="flip")},
        {"dup-two": "rk_dup_two"},
    )
    config = tmp_path / "c.toml"
    config.write_text('[[listen]]\nhandler = "line-command"\nport = 0\n')
    import os

    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    started = time.monotonic()
    result = reactorkit_cli("run", str(config), env=env)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert lines[0] == (
        "reactorkit: error: listen[0] 'line-command': line command 'FLIP' is defined twice:"
    )
    assert lines[1].startswith("reactorkit: error:   by plugin 'dup-")
    assert lines[2].startswith("reactorkit: error:   and by plugin 'dup-")
    assert {line.split("(")[1] for line in lines[1:3]} == {"rk-dup-one 1.0)", "rk-dup-two 2.0)"}
    assert lines[3] == (
        "reactorkit: error: uninstall one of them, or leave one out of the listener's "
        "options.commands"
    )
    assert time.monotonic() - started < 30


DUP = textwrap.dedent("""
    import reactorkit

    @reactorkit.hookimpl
    def reactorkit_line_commands():
        return [reactorkit.LineCommand(name="{name}", function=lambda ctx: "flipped")]
""")


def test_raising_command_counts_an_error_and_keeps_the_connection() -> None:
    class Plugin:
        @reactorkit.hookimpl
        def reactorkit_line_commands(self) -> list[reactorkit.LineCommand]:
            return [reactorkit.LineCommand(name="BOOM", function=lambda ctx: 1 / 0)]

    with serve(handler="line-command", plugins=[Plugin()]) as srv:
        with connect(srv.address()) as sock:
            sock.sendall(b"BOOM\r\nSTATS\r\n")
            lines = read_lines(sock, 8)
        assert lines[0] == "-ERR internal error in BOOM; the server log has the details"
        assert "errors 1" in lines
