"""``reactorkit connect``: a line-oriented client every machine with Python has.

It pipes standard input to a TCP or UNIX socket and the socket to standard
output, like ``nc``, but with one behaviour everywhere: at the end of its
input it half-closes the socket (``shutdown(SHUT_WR)``), keeps printing what
the server still sends, and exits 0 when the server closes. So
``printf 'HELP\\r\\n' | reactorkit connect 127.0.0.1:7071`` prints the whole
answer and returns, and an interactive ``reactorkit connect 127.0.0.1:7070``
chats until Ctrl-D or the server hangs up.

Standard input is read by a helper thread with blocking reads, because
regular files and terminals cannot be registered with every selector.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import threading
from typing import Any

__all__ = ["add_command", "parse_address", "pipe"]

#: How long to wait for the TCP handshake (or the UNIX connect) by default.
DEFAULT_CONNECT_TIMEOUT = 10.0
_CHUNK = 65536


def add_command(subparsers: Any) -> None:
    """Add ``connect`` to the CLI's subcommands."""
    parser = subparsers.add_parser(
        "connect",
        help="pipe stdin to a server and its answers to stdout (like nc)",
        description=(
            "Connect to ADDRESS, send standard input, print what the server sends. "
            "At the end of input the sending side is shut down; the command exits 0 "
            "when the server closes the connection."
        ),
    )
    parser.add_argument("address", help="HOST:PORT, [IPV6]:PORT or unix:/path/to.sock")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_CONNECT_TIMEOUT,
        help=f"seconds to wait for the connection (default: {DEFAULT_CONNECT_TIMEOUT:g})",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        address = parse_address(args.address)
    except ValueError as exc:
        print(f"reactorkit: error: {exc}", file=sys.stderr)
        return 2
    return pipe(address, timeout=args.timeout)


def parse_address(text: str) -> tuple[str, int] | str:
    """``"host:port"`` → ``(host, port)``; ``"unix:/path"`` → ``"/path"``.

    Raises:
        ValueError: the text is neither form; the message says what was expected.
    """
    if text.startswith("unix:"):
        path = text.removeprefix("unix:")
        if not path:
            raise ValueError(f"address {text!r}: expected unix:/path/to.sock")
        return path
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"address {text!r}: expected HOST:PORT (e.g. 127.0.0.1:7007, [::1]:7007) "
            "or unix:/path/to.sock"
        )
    return host, int(port)


def pipe(
    address: tuple[str, int] | str,
    *,
    timeout: float = DEFAULT_CONNECT_TIMEOUT,
    stdin_fd: int | None = None,
    stdout_fd: int | None = None,
) -> int:
    """Connect, copy stdin to the socket and the socket to stdout; returns the exit code.

    Raises:
        OSError: the connection could not be made (the message names the address).
    """
    stdin_fd = sys.stdin.fileno() if stdin_fd is None else stdin_fd
    stdout_fd = sys.stdout.fileno() if stdout_fd is None else stdout_fd
    sock = _connect(address, timeout)
    with sock:
        # Interactive use may sit idle for hours; only the connect is timed.
        sock.settimeout(None)
        sender = threading.Thread(
            target=_send_input, args=(stdin_fd, sock), name="reactorkit-connect-stdin", daemon=True
        )
        sender.start()
        while True:
            try:
                data = sock.recv(_CHUNK)
            except ConnectionResetError:
                print("reactorkit: connection reset by the server", file=sys.stderr)
                return 1
            if not data:
                return 0
            _write_all(stdout_fd, data)


def _connect(address: tuple[str, int] | str, timeout: float) -> socket.socket:
    where = f"unix:{address}" if isinstance(address, str) else _format(address)
    try:
        if isinstance(address, str):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect(address)
            except BaseException:
                sock.close()
                raise
            return sock
        return socket.create_connection(address, timeout=timeout)
    except TimeoutError:
        raise OSError(f"cannot connect to {where}: timed out after {timeout:g}s") from None
    except OSError as exc:
        raise OSError(f"cannot connect to {where}: {exc.strerror or exc}") from None


def _format(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _send_input(stdin_fd: int, sock: socket.socket) -> None:
    try:
        while True:
            data = os.read(stdin_fd, _CHUNK)
            if not data:
                break
            sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        # The server closed first (EPIPE, ECONNRESET) or the socket is gone
        # because the main thread returned: what it sent is still printed.
        return


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
