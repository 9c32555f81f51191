"""line-command over real sockets: pipelining, STATS, blocking order, plugin commands."""

from __future__ import annotations

import contextlib
import select
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import reactorkit
from reactorkit.testing import RunningServer, serve
from tests.helpers import (
    DistMaker,
    PeakHeld,
    child_env,
    connect,
    reactorkit_cli,
    recv_until_closed,
    write_distribution,
)

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
    # check reports it as run does (it used to pass: the table was built only when serving).
    for command in ("check", "run"):
        result = reactorkit_cli(command, str(config), env=env)
        assert result.returncode == 1, (command, result.stderr)
        lines = result.stderr.splitlines()
        assert lines[0] == (
            f"reactorkit: error: {config}: listen[0] 'line-command': "
            "line command 'FLIP' is defined twice:"
        ), command
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


# -- bounded memory, answers to the end, deadlines, flood control ------------


class Slow:
    """A plugin with a blocking SLOW command that waits for the test's signal."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def slow(self, ctx: reactorkit.CommandContext) -> str:
        self.started.set()
        assert self.release.wait(10)
        return "slow done"

    @reactorkit.hookimpl
    def reactorkit_line_commands(self) -> list[reactorkit.LineCommand]:
        return [reactorkit.LineCommand(name="SLOW", function=self.slow, blocking=True)]


def read_until_closed(sock: socket.socket) -> list[str]:
    return recv_until_closed(sock).decode().split("\r\n")[:-1]


def test_requests_before_shut_wr_are_all_answered_in_order_then_closed() -> None:
    plugin = Slow()
    with serve(handler="line-command", plugins=[plugin]) as srv, connect(srv.address()) as sock:
        sock.sendall(b"SLOW\r\nPING\r\nECHO a\r\n")
        sock.shutdown(socket.SHUT_WR)
        assert plugin.started.wait(5)
        plugin.release.set()
        assert read_until_closed(sock) == ["+slow done", "+PONG", "+a"]


def test_graceful_shutdown_answers_every_request_received() -> None:
    plugin = Slow()
    with serve(handler="line-command", plugins=[plugin]) as srv, connect(srv.address()) as sock:
        sock.sendall(b"SLOW\r\nPING\r\nECHO a\r\n")
        assert plugin.started.wait(5)
        srv.call(srv.server.shutdown)
        plugin.release.set()
        assert read_until_closed(sock) == ["+slow done", "+PONG", "+a"]
        srv.thread.join(5)
        assert not srv.thread.is_alive()


# SLOW blocks until the test's gate socket sends a byte: connecting to the
# gate tells the test the command started, the byte releases it.
SLOW_GATE_PLUGIN = """
import os
import socket
import reactorkit

def slow(ctx):
    with socket.create_connection(("127.0.0.1", int(os.environ["RK_GATE_PORT"])), 10) as gate:
        assert gate.recv(1) == b"!"
    return "slow done"

@reactorkit.hookimpl
def reactorkit_line_commands():
    return [reactorkit.LineCommand(name="SLOW", function=slow, blocking=True)]
"""


def test_sigterm_through_reactorkit_run_answers_every_request_received(
    run_server: Any, tmp_path: Path
) -> None:
    (tmp_path / "rk_slow_gate.py").write_text(SLOW_GATE_PLUGIN)
    config = tmp_path / "c.toml"
    config.write_text(
        '[reactor]\nplugins = ["rk_slow_gate"]\n[[listen]]\nhandler = "line-command"\nport = 0\n'
    )
    with socket.create_server(("127.0.0.1", 0)) as gate_server:
        gate_server.settimeout(5)
        env = child_env(PYTHONPATH=str(tmp_path), RK_GATE_PORT=str(gate_server.getsockname()[1]))
        server = run_server("run", str(config), env=env)
        server.wait_serving(1)
        with connect(server.tcp("line-command")) as sock:
            sock.sendall(b"SLOW\r\nPING\r\nECHO a\r\n")
            gate, _ = gate_server.accept()  # SLOW is running: all three were read
            with gate:
                server.proc.send_signal(signal.SIGTERM)
                assert server.proc.stderr is not None
                while "SIGTERM received" not in (line := server.proc.stderr.readline()):
                    assert line, "the server exited:\n" + "".join(server.log)
                    server.log.append(line)
                gate.sendall(b"!")
                assert read_until_closed(sock) == ["+slow done", "+PONG", "+a"]
        code, log = server.wait_exit()
    assert code == 0, log


def test_a_line_not_finished_in_time_is_refused_and_closed() -> None:
    options = {"line_timeout": 0.2}
    with serve(handler="line-command", options=options) as srv, connect(srv.address()) as sock:
        sock.sendall(b"PING\r\nPI")
        assert read_until_closed(sock) == [
            "+PONG",
            "-ERR line timeout: a request line must be completed within 0.2 seconds",
        ]


def flood_until_paused(
    srv: RunningServer, sock: socket.socket, payload: bytes, timeout: float = 30
) -> int:
    """Send ``payload`` without reading until it is all sent or the server stops reading.

    Returns the bytes sent.
    """
    sock.setblocking(False)
    view = memoryview(payload)
    sent = 0
    deadline = time.monotonic() + timeout
    while sent < len(payload):
        assert time.monotonic() < deadline, "the flood neither went through nor was paused"
        _, writable, _ = select.select([], [sock], [], 0.2)
        if writable:
            with contextlib.suppress(BlockingIOError):
                sent += sock.send(view[sent : sent + 65536])
        elif not srv.call(lambda: all(c.is_reading for c in srv.server.connections)):
            break  # the kernel takes no more and the server stopped reading
    sock.setblocking(True)
    return sent


def never_reading_client(address: Any) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(5)
    sock.connect(address[:2])
    return sock


def PeakBuffer(srv: RunningServer) -> PeakHeld:
    """The most one line-command connection held: output plus input not yet dispatched as lines."""
    return PeakHeld(
        srv,
        lambda conn: conn.get_write_buffer_size() + len(conn.handler._line_buffer),
        lambda conn: len(getattr(conn.handler, "_queue", ())),
    )


def test_a_client_sending_help_but_never_reading_is_bounded_and_others_are_served() -> None:
    options = {"rate": 0}
    with serve(handler="line-command", options=options) as srv:
        with connect(srv.address()) as probe:
            probe.sendall(b"HELP\r\n")
            reply_size = len("\r\n".join(read_lines(probe, 7))) + 2
        flooder = never_reading_client(srv.address())
        with flooder:
            peak = PeakBuffer(srv)
            flood_until_paused(srv, flooder, b"HELP\r\n" * (3 * 1024 * 1024 // 6))
            (conn,) = srv.call(lambda: list(srv.server.connections))
            assert srv.call(lambda: conn.is_reading) is False
            with connect(srv.address()) as other:  # others are served meanwhile
                other.sendall(b"PING\r\nHELP PING\r\n")
                assert read_lines(other, 2)[0] == "+PONG"
            bound = conn.high_water + conn.max_read + 4096 + reply_size  # 4096: max_line_length
            assert peak.stop() <= bound
            assert peak.passes > 10


def test_a_client_pinging_but_never_reading_is_bounded_then_answered_in_full() -> None:
    options = {"rate": 0}
    with serve(handler="line-command", options=options) as srv:
        flooder = never_reading_client(srv.address())
        with flooder:
            peak = PeakBuffer(srv)
            sent = flood_until_paused(srv, flooder, b"PING\r\n" * (8 * 1024 * 1024 // 6))
            (conn,) = srv.call(lambda: list(srv.server.connections))
            assert srv.call(lambda: conn.is_reading) is False
            with connect(srv.address()) as other:
                other.sendall(b"PING\r\n")
                assert read_lines(other, 1) == ["+PONG"]
            assert peak.stop() <= conn.high_water + conn.max_read + 4096 + len(b"+PONG\r\n")
            # Now it reads: reading resumes and every request it sent is answered.
            flooder.shutdown(socket.SHUT_WR)
            replies = recv_until_closed(flooder)
        assert replies == b"+PONG\r\n" * (sent // 6)


def test_requests_behind_a_blocking_one_queue_up_to_max_pending_then_are_all_answered() -> None:
    plugin = Slow()
    options = {"rate": 0, "max_pending": 16}
    with serve(handler="line-command", options=options, plugins=[plugin]) as srv:
        flooder = never_reading_client(srv.address())
        with flooder:
            peak = PeakBuffer(srv)
            flooder.sendall(b"SLOW\r\n")
            assert plugin.started.wait(5)
            sent = flood_until_paused(srv, flooder, b"PING\r\n" * (8 * 1024 * 1024 // 6))
            with connect(srv.address()) as other:  # served while SLOW blocks this one
                other.sendall(b"PING\r\n")
                assert read_lines(other, 1) == ["+PONG"]
            plugin.release.set()
            flooder.shutdown(socket.SHUT_WR)
            replies = recv_until_closed(flooder)
            assert peak.stop() <= 64 * 1024 + 65536 + 4096 + len(b"+PONG\r\n")
        assert peak.peak_queue == 16
        assert replies == b"+slow done\r\n" + b"+PONG\r\n" * (sent // 6)


# A client in its own process that pipelines PING as fast as it can and
# reads the replies, until its stdin closes (or 60 s pass).
FLOODER = """
import select, socket, sys, threading, time
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
got = 0
def read():
    global got
    while True:
        try:
            data = sock.recv(1 << 20)
        except OSError:
            return
        if not data:
            return
        got += data.count(b"\\n")
threading.Thread(target=read, daemon=True).start()
batch = b"PING\\r\\n" * 10000
sent = 0
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    if sent == 5 * len(batch):
        print("flooding", flush=True)
    if select.select([sys.stdin], [], [], 0)[0]:
        break
    sock.sendall(batch)
    sent += len(batch)
print(sent // 6, got, flush=True)
"""


def round_trips(address: tuple[str, int], clients: int = 3, count: int = 200) -> list[float]:
    """``clients`` threads, each ``count`` sequential ECHO round trips; their latencies."""
    latencies: list[float] = []
    errors: list[BaseException] = []

    def one() -> None:
        try:
            with connect(address) as sock:
                for i in range(count):
                    started = time.perf_counter()
                    sock.sendall(b"ECHO %d\r\n" % i)
                    assert read_lines(sock, 1) == [f"+{i}"]
                    latencies.append(time.perf_counter() - started)
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    assert len(latencies) == clients * count
    return sorted(latencies)


@pytest.mark.parametrize("rate", [None, 0], ids=["default-rate", "rate-off"])
def test_a_flooding_client_does_not_starve_the_others(
    run_server: Any, tmp_path: Path, rate: float | None
) -> None:
    config = tmp_path / "c.toml"
    options = "" if rate is None else f"[listen.options]\nrate = {rate}\n"
    config.write_text(f'[[listen]]\nhandler = "line-command"\nport = 0\n{options}')
    server = run_server("run", str(config))
    server.wait_serving(1)
    address = server.tcp("line-command")
    port = address[1]
    quiet = round_trips(address)
    flooder = subprocess.Popen(
        [sys.executable, "-c", FLOODER, str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert flooder.stdout is not None
        assert flooder.stdout.readline() == "flooding\n"
        flooded = round_trips(address)
    finally:
        out, _ = flooder.communicate("stop\n", timeout=30)
    pings, answered = map(int, out.split())
    assert answered > 0  # it was served too, just not at the others' expense
    # Shown (pytest -s), not asserted: the suite asserts behaviour, never time.
    print(
        f"\nline-command, 3 clients x 200 ECHO round trips, flooder rate={rate}: "
        f"p50 {_ms(quiet, 50)} -> {_ms(flooded, 50)} ms, "
        f"p99 {_ms(quiet, 99)} -> {_ms(flooded, 99)} ms (quiet -> flooded); "
        f"the flooder sent {pings} PINGs, {answered} answered"
    )


def _ms(latencies: list[float], percent: int) -> str:
    return f"{latencies[len(latencies) * percent // 100] * 1000:.2f}"


def test_line_too_long_reaches_a_client_that_keeps_writing() -> None:
    # Issue 9 item 10: closing over unread input sends RST, which destroys
    # the -ERR still waiting in the client's receive queue; the lingering
    # close delivers it. The client reads only after it stopped writing.
    with serve(handler="line-command") as srv, connect(srv.address()) as sock:
        junk = b"z" * 65536
        try:
            for _ in range(256):  # at most 16 MiB, no newline ever
                sock.sendall(junk)
        except OSError:
            pass  # reset: what a close over unread input does
        try:
            reply = recv_until_closed(sock)
        except ConnectionResetError:
            reply = b"(reset)"
    assert reply == b"-ERR line too long: the limit is 4096 bytes\r\n"
