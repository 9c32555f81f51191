"""``reactorkit status`` and the control socket, against real servers (one process and workers)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import select
import socket
import stat
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import TIMEOUT, ServerProcess, connect, reactorkit_cli

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="SO_PEERCRED, /proc")

CONFIG = """
[reactor]
control_socket = "{socket}"
workers = {workers}

[[listen]]
name = "echo"
handler = "echo"
port = 0
"""


def write_config(directory: Path, workers: int = 1) -> tuple[Path, Path]:
    sock = directory / "control.sock"
    path = directory / "app.toml"
    path.write_text(CONFIG.format(socket=sock, workers=workers))
    return path, sock


def wait_workers(proc: ServerProcess, count: int) -> None:
    proc.wait_serving(1)
    while not all(f"worker {i} serving" in "".join(proc.log) for i in range(count)):
        line = proc.proc.stderr.readline()  # type: ignore[union-attr]
        assert line, "".join(proc.log)
        proc.log.append(line)
    proc.keep_reading_log()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ServerProcess, Path, Path]]:
    path, sock = write_config(tmp_path)
    proc = ServerProcess(["run", str(path)])
    try:
        proc.wait_serving(1)
        proc.keep_reading_log()
        yield proc, path, sock
    finally:
        proc.kill()


def status_json(*args: str) -> dict[str, object]:
    result = reactorkit_cli("status", *args, "--json", timeout=30)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_status_json_shows_the_open_connections(served: tuple[ServerProcess, Path, Path]) -> None:
    proc, path, _ = served
    held = [connect(proc.tcp("echo")) for _ in range(3)]
    try:
        for sock in held:  # an echo answered: the server has accepted it
            sock.sendall(b"hi")
            assert sock.recv(8) == b"hi"
        reply = status_json(str(path))
    finally:
        for sock in held:
            sock.close()
    (process,) = reply["processes"]  # type: ignore[misc]
    assert process["pid"] == proc.proc.pid
    (echo,) = process["listeners"]
    assert echo["name"] == "echo"
    assert echo["open"] == 3
    assert echo["accepted"] == 3
    assert echo["bytes_received"] == 6
    assert process["loop"]["threads"] == 8
    assert process["process"]["rss_bytes"] > 1_000_000


def test_status_table_and_watch(served: tuple[ServerProcess, Path, Path]) -> None:
    _, _, sock = served
    result = reactorkit_cli(
        "status", "--socket", str(sock), "--watch", "--count", "2", "--interval", "0.05"
    )
    assert result.returncode == 0, result.stderr
    tables = result.stdout.split("LISTENER")
    assert len(tables) == 3  # two refreshes
    first, second = tables[1], tables[2]
    assert "echo" in first
    assert "-" in first.splitlines()[1]  # no rate before a second sample
    row = next(line for line in second.splitlines() if line.startswith("echo"))
    assert row.split()[4] == "0"  # CONN/S: a rate now, and nobody connected


WATCH = ("--watch", "--interval", "0.05", "--count", "2000")


def test_watch_rides_out_a_server_restart(tmp_path: Path) -> None:
    # top keeps running while what it watches restarts; so does status --watch.
    import subprocess

    path, sock = write_config(tmp_path)
    first = ServerProcess(["run", str(path)])
    second: ServerProcess | None = None
    watch: subprocess.Popen[str] | None = None
    try:
        first.wait_serving(1)
        first.keep_reading_log()
        watch = subprocess.Popen(
            [sys.executable, "-m", "reactorkit", "status", "--socket", str(sock), "--json", *WATCH],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = watch.stdout.readline()  # type: ignore[union-attr]
        assert line, watch.stderr.read()  # type: ignore[union-attr]
        old_pid = json.loads(line)["processes"][0]["pid"]
        code, log = first.terminate()
        assert code == 0, log
        second = ServerProcess(["run", str(path)])
        second.wait_serving(1)
        second.keep_reading_log()
        for _ in range(2000):  # bounded by --count too
            line = watch.stdout.readline()  # type: ignore[union-attr]
            assert line, watch.stderr.read()  # type: ignore[union-attr]
            if json.loads(line)["processes"][0]["pid"] != old_pid:
                break
        else:
            pytest.fail("status --watch never showed the restarted server")
    finally:
        if watch is not None:
            watch.kill()
            watch.communicate(timeout=TIMEOUT)
        first.kill()
        if second is not None:
            second.kill()


def test_control_socket_is_private_and_removed_on_exit(tmp_path: Path) -> None:
    # A directory others may enter, so only the socket's own mode keeps them out.
    directory = Path(tempfile.mkdtemp(prefix="rk-status-"))
    try:
        directory.chmod(0o755)
        path, sock = write_config(directory)
        proc = ServerProcess(["run", str(path)])
        try:
            proc.wait_serving(1)
            mode = stat.S_IMODE(os.stat(sock).st_mode)
            assert stat.S_ISSOCK(os.stat(sock).st_mode)
            assert mode == 0o600
            if os.getuid() == 0:
                assert connect_as(65534, str(sock)) == errno.EACCES
            assert status_json("--socket", str(sock))["processes"]
        finally:
            code, log = proc.terminate()
        assert code == 0, log
        assert not sock.exists()
        assert [p.name for p in directory.iterdir()] == ["app.toml"]
    finally:
        for child in directory.iterdir():
            child.unlink()
        directory.rmdir()


def connect_as(uid: int, path: str) -> int:
    """Connect to ``path`` as ``uid`` in a forked child; returns the errno (0: it could)."""
    with warnings.catch_warnings():
        # 3.12+ warns about forking with threads; the child only makes system calls.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: only os-level calls, then _exit
        code = 0
        try:
            os.setuid(uid)
            sock = socket.socket(socket.AF_UNIX)
            sock.settimeout(TIMEOUT)
            sock.connect(path)
        except OSError as exc:
            code = exc.errno or 255
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_status_with_two_workers_shows_both(tmp_path: Path) -> None:
    path, sock = write_config(tmp_path, workers=2)
    proc = ServerProcess(["run", str(path)])
    try:
        wait_workers(proc, 2)
        for _ in range(4):
            with connect(proc.tcp("echo")) as client:
                client.sendall(b"x")
                assert client.recv(4) == b"x"
        reply = status_json(str(path))
        processes = reply["processes"]
        assert [p["worker"] for p in processes] == [0, 1]  # type: ignore[index]
        assert len({p["pid"] for p in processes}) == 2  # type: ignore[index]
        accepted = sum(p["listeners"][0]["accepted"] for p in processes)  # type: ignore[index]
        assert accepted == 4
        peers = [Path(p) for p in reply_peer_dirs(sock)]
    finally:
        code, log = proc.terminate()
    assert code == 0, log
    assert not sock.exists()
    for peer_dir in peers:
        assert not peer_dir.exists()  # the supervisor removed the workers' sockets


def test_status_shows_the_live_workers_when_several_hang(tmp_path: Path) -> None:
    # Each worker that does not answer is left out after 2 s; asked one
    # after another, three hung workers took 6 s and status (5 s) got nothing.
    import signal

    from reactorkit.control import query

    path, sock = write_config(tmp_path, workers=4)
    proc = ServerProcess(["run", str(path)])
    stopped: list[int] = []
    try:
        wait_workers(proc, 4)
        peers = sorted(query(str(sock), "local")["peers"])
        assert len(peers) == 4
        for peer in peers[1:]:  # w1-PID.sock, w2-..., w3-...
            pid = int(Path(peer).stem.split("-")[1])
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
        processes = status_json(str(path))["processes"]
        assert [p["worker"] for p in processes] == [0]  # type: ignore[index]
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        code, log = proc.terminate()
    assert code == 0, log


def reply_peer_dirs(sock: Path) -> set[str]:
    """The supervisor's ``local`` answer names its workers' peer sockets."""
    from reactorkit.control import query

    reply = query(str(sock), "local")
    assert reply["role"] == "supervisor"
    assert len(reply["peers"]) == 2
    return {os.path.dirname(p) for p in reply["peers"]}


def test_status_without_a_control_socket_says_how_to_get_one(tmp_path: Path) -> None:
    path = tmp_path / "app.toml"
    path.write_text('[[listen]]\nhandler = "echo"\nport = 0\n')
    result = reactorkit_cli("status", str(path))
    assert result.returncode == 1
    assert "[reactor] control_socket is not set" in result.stderr


def test_status_when_nobody_listens(tmp_path: Path) -> None:
    result = reactorkit_cli("status", "--socket", str(tmp_path / "nobody.sock"))
    assert result.returncode == 1
    assert "cannot reach the control socket" in result.stderr


def test_a_server_leaving_removes_its_own_socket_not_a_successors(tmp_path: Path) -> None:
    # The file was removed by hand (or a tmp cleaner) and a second server now
    # listens at the same path: the first one's exit must not unlink it.
    path, sock = write_config(tmp_path)
    first = ServerProcess(["run", str(path)])
    second: ServerProcess | None = None
    try:
        first.wait_serving(1)
        first.keep_reading_log()
        sock.unlink()
        second = ServerProcess(["run", str(path)])
        second.wait_serving(1)
        second.keep_reading_log()
        code, log = first.terminate()
        assert code == 0, log
        assert sock.exists()
        processes = status_json("--socket", str(sock))["processes"]
        assert [p["pid"] for p in processes] == [second.proc.pid]  # type: ignore[index]
    finally:
        first.kill()
        if second is not None:
            second.kill()


def test_a_client_that_leaves_without_a_request_frees_its_slot_at_once(
    served: tuple[ServerProcess, Path, Path],
) -> None:
    # Each of these (a probe, a scrape that gave up on a stopped worker) held
    # one of the socket's 16 connections until the 10 s idle timeout.
    _, _, path = served
    for _ in range(20):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(4)  # well under the control socket's 10 s idle timeout
            sock.connect(str(path))
            sock.shutdown(socket.SHUT_WR)
            assert read_until_closed_within(sock) == b""
    assert status_json("--socket", str(path))["processes"]


def test_a_control_socket_path_near_the_unix_limit_works(tmp_path: Path) -> None:
    # The config accepts up to 107 bytes; the bind must too, however long
    # the temporary name it binds first is.
    directory = tmp_path / ("d" * (100 - len(str(tmp_path)) - 1))
    directory.mkdir()
    path, sock = write_config(directory)
    sock = sock.with_name("c.sock")
    path.write_text(CONFIG.format(socket=sock, workers=1))
    assert len(os.fsencode(sock)) == 107
    proc = ServerProcess(["run", str(path)])
    try:
        proc.wait_serving(1)
        proc.keep_reading_log()
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
        assert status_json("--socket", str(sock))["processes"]
    finally:
        code, log = proc.terminate()
    assert code == 0, log
    assert not sock.exists()
    assert os.listdir(directory) == ["app.toml"]


def test_a_request_ended_by_eof_instead_of_a_newline_is_answered(
    served: tuple[ServerProcess, Path, Path],
) -> None:
    # printf local | nc -U -N control.sock: the request is whole at EOF.
    _, _, path = served
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(4)  # well under the control socket's 10 s idle timeout
        sock.connect(str(path))
        sock.sendall(b"local")
        sock.shutdown(socket.SHUT_WR)
        reply = read_until_closed_within(sock)
    assert json.loads(reply)["pid"] > 0


@contextlib.contextmanager
def foreign_socket(path: Path, reply: bytes) -> Iterator[None]:
    """A UNIX socket that is not a reactorkit server: it answers ``reply`` to one request."""
    import threading

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    listener.settimeout(TIMEOUT)

    def answer() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(TIMEOUT)
                conn.recv(64)
                conn.sendall(reply)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join(TIMEOUT)
        listener.close()


@pytest.mark.parametrize(
    "reply", [b"42", b"[1, 2]", b'{"foo": 1}', b'{"processes": [{"pid": 1}]}', b"null"]
)
@pytest.mark.parametrize("as_json", [False, True])
def test_status_against_a_socket_that_is_not_reactorkit(
    tmp_path: Path, reply: bytes, as_json: bool
) -> None:
    path = tmp_path / "other.sock"
    with foreign_socket(path, reply):
        result = reactorkit_cli("status", "--socket", str(path), *(["--json"] if as_json else []))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"reactorkit: error: {path}: unexpected reply")
    assert result.stderr.count("\n") == 1


def test_status_refuses_a_negative_interval() -> None:
    result = reactorkit_cli("status", "--socket", "x.sock", "--watch", "--interval", "-1")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "--interval" in result.stderr


def test_a_second_server_cannot_take_a_live_control_socket(
    served: tuple[ServerProcess, Path, Path], tmp_path: Path
) -> None:
    _, _, sock = served
    other = tmp_path / "other.toml"
    other.write_text(
        f'[reactor]\ncontrol_socket = "{sock}"\n[[listen]]\nhandler = "echo"\nport = 0\n'
    )
    result = reactorkit_cli("run", str(other), timeout=30)
    assert result.returncode == 1
    assert "reactor.control_socket: cannot listen on" in result.stderr
    assert "in use by another server" in result.stderr
    assert sock.exists()  # the first server's socket is untouched


LIMITS_CONFIG = """
[reactor]
control_socket = "{socket}"

[[listen]]
name = "quiet"
handler = "echo"
port = 0
idle_timeout = 0.2

[[listen]]
name = "strict"
handler = "chat"
port = 0
options = {{ rate = 1.0, burst = 1, flood_strikes = 2 }}

[[listen]]
name = "busy"
handler = "chat"
port = 0
options = {{ rate = 100000.0, burst = 100000, max_output_buffer = 1024 }}
"""


def read_until_closed_within(sock: socket.socket) -> bytes:
    out = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return out
        if not chunk:
            return out
        out += chunk


def test_closures_by_idle_flood_and_slow_consumer_are_counted(tmp_path: Path) -> None:
    sock_path = tmp_path / "control.sock"
    path = tmp_path / "app.toml"
    path.write_text(LIMITS_CONFIG.format(socket=sock_path))
    proc = ServerProcess(["run", str(path)])
    try:
        proc.wait_serving(3)
        proc.keep_reading_log()
        with connect(proc.tcp("quiet")) as idle:  # says nothing: closed at idle_timeout
            assert read_until_closed_within(idle) == b""
        with connect(proc.tcp("strict")) as flooder:
            flooder.sendall(b"one\r\ntwo\r\nthree\r\nfour\r\n")
            assert b"disconnected for flooding" in read_until_closed_within(flooder)
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.settimeout(TIMEOUT)
        slow.connect(proc.tcp("busy"))
        with slow, connect(proc.tcp("busy")) as talker:
            talker.sendall(b"/nick talker\r\n")
            line = b"x" * 1000 + b"\r\n"
            # The slow client reads nothing; its output passes 1 KiB once the
            # kernel buffers are full, and the server drops it. Bounded: at most
            # 20 MB said, and the talker's own echo is read along the way.
            talker.settimeout(0)
            for sent in range(20_000):
                readable, writable, _ = select.select([talker], [talker], [], TIMEOUT)
                if readable:
                    talker.recv(1 << 20)
                if writable:
                    with contextlib.suppress(BlockingIOError):
                        talker.send(line)
                if sent % 100 == 0 and "slow_consumer" in "".join(proc.log):
                    break
        deadline = time.monotonic() + TIMEOUT
        while True:
            reply = status_json("--socket", str(sock_path))
            limits = {
                listener["name"]: listener["closed_by_limit"]
                for listener in reply["processes"][0]["listeners"]  # type: ignore[index]
            }
            counted = (
                limits["quiet"]["idle"],
                limits["strict"]["flood"],
                limits["busy"]["slow_consumer"],
            )
            if counted == (1, 1, 1) or time.monotonic() > deadline:
                break
        assert counted == (1, 1, 1), "".join(proc.log)
    finally:
        proc.kill()
