"""bench/floor.c, the C floor of the benchmarks, builds and answers each mode over real sockets."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

FLOOR_C = Path(__file__).resolve().parents[1] / "bench" / "floor.c"


@pytest.fixture(scope="module")
def floor_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    gcc = shutil.which("gcc")
    assert gcc, "gcc is needed to build bench/floor.c (apt-get install gcc)"
    binary = tmp_path_factory.mktemp("floor") / "floor"
    subprocess.run(
        [gcc, "-O2", "-Wall", "-Werror", "-o", str(binary), str(FLOOR_C)], check=True, timeout=60
    )
    return binary


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def start_floor(floor_binary: Path) -> Iterator[Callable[[str], int]]:
    procs: list[subprocess.Popen[str]] = []

    def start(mode: str) -> int:
        port = _free_port()
        proc = subprocess.Popen(
            [str(floor_binary), mode, str(port)], stdout=subprocess.PIPE, text=True
        )
        procs.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        return port

    yield start
    for proc in procs:
        proc.kill()
        proc.wait(10)
        assert proc.stdout is not None
        proc.stdout.close()


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, f"closed after {len(data)} of {size} bytes"
        data += chunk
    return data


def test_echo_mode_returns_every_byte_even_past_the_socket_buffers(
    start_floor: Callable[[str], int],
) -> None:
    port = start_floor("echo")
    with _connect(port) as sock:
        sock.sendall(b"hello")
        assert _recv_exactly(sock, 5) == b"hello"
        # More than the kernel buffers hold: the server must keep the unsent
        # tail and stop reading until it drains, not drop or reorder bytes.
        big = bytes(range(256)) * 16_384
        sender = threading.Thread(target=sock.sendall, args=(big,))
        sender.start()
        assert _recv_exactly(sock, len(big)) == big
        sender.join(10)


def test_line_mode_answers_one_pong_per_line_across_reads(
    start_floor: Callable[[str], int],
) -> None:
    port = start_floor("line")
    with _connect(port) as sock:
        sock.sendall(b"PING\r\nPI")
        assert _recv_exactly(sock, 7) == b"+PONG\r\n"
        sock.sendall(b"NG\r\nA\nB\n")
        assert _recv_exactly(sock, 21) == b"+PONG\r\n" * 3


def test_chat_mode_broadcasts_lines_to_every_other_client(
    start_floor: Callable[[str], int],
) -> None:
    port = start_floor("chat")
    with _connect(port) as a, _connect(port) as b, _connect(port) as c:
        a.sendall(b"hi th")
        a.sendall(b"ere\r\nsecond\n")
        want = b"<guest> hi there\r\n<guest> second\r\n"
        assert _recv_exactly(b, len(want)) == want
        assert _recv_exactly(c, len(want)) == want
        b.sendall(b"x" * 70_000)  # no newline past the 64 KiB line bound
        assert b.recv(10) == b""
        c.sendall(b"still here\n")
        assert _recv_exactly(a, 20) == b"<guest> still here\r\n"


def test_http_mode_answers_each_request_head(start_floor: Callable[[str], int]) -> None:
    port = start_floor("http")
    response = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, world!"
    )
    with _connect(port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r")
        assert _recv_exactly(sock, len(response)) == response
        sock.sendall(b"\n")
        assert _recv_exactly(sock, len(response)) == response


def test_unknown_mode_is_a_usage_error(floor_binary: Path) -> None:
    result = subprocess.run(
        [str(floor_binary), "gopher", "0"], capture_output=True, text=True, timeout=10
    )
    assert result.returncode == 2
    assert "usage: floor echo|line|chat|http PORT" in result.stderr
