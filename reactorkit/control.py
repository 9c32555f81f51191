"""The control socket: a running server's numbers over a UNIX socket.

``[reactor] control_socket = "/run/reactorkit/control.sock"`` (off by
default) makes the server listen there, mode 0600 (only its own user, and
root, can connect; a peer of another uid that gets through anyway, through
a directory that was made permissive, is refused by ``SO_PEERCRED``). The
file is removed when the server exits. ``reactorkit status`` is its client.

The protocol is one request line (its newline, or the client's EOF, ends
it), one JSON reply, then the server closes:

* ``local``: this process's snapshot (:meth:`Observatory.snapshot`);
* ``all``: ``{"processes": [snapshot, ...]}``, every process of the service.

With workers, the supervisor serves the configured socket and answers
``all`` by asking each worker over its *peer socket*, one per worker in a
private directory (mode 0700) the supervisor makes and removes; a worker
answers ``/metrics`` the same way, so a scrape shows every worker whichever
one it lands on. Asking peers blocks, so it runs on the thread pool, every
peer at once with one short timeout; the loop never waits.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import os
import socket
import struct
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, final

from reactorkit.handler import Handler, HandlerType
from reactorkit.listener import Listener, _remove_stale_unix_socket

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAX_REPLY",
    "ControlHandler",
    "ControlSource",
    "PeerGatherer",
    "bind_private",
    "peer_path",
    "peer_paths",
    "query",
    "query_peers",
    "serve_control",
]

log = logging.getLogger("reactorkit.control")

#: Seconds a client (or a peer query) waits for a reply.
DEFAULT_TIMEOUT = 2.0
#: The largest reply a client reads (a snapshot is a few KiB per listener).
MAX_REPLY = 16 * 1024 * 1024
_MAX_REQUEST = 64
_MAX_UNIX_PATH = 107  # sun_path's 108 bytes, less the terminating NUL
_PEER_SUFFIX = ".sock"


class ControlSource:
    """What a control socket answers from (an Observatory, or the supervisor's gatherer)."""

    def snapshot(self) -> dict[str, Any]:
        """This process's snapshot (reactor thread)."""
        raise NotImplementedError

    def has_peers(self) -> bool:
        """True when ``all`` must ask other processes (then :meth:`gather` runs on a thread)."""
        raise NotImplementedError

    def gather(self, timeout: float) -> list[dict[str, Any]]:
        """Every process's snapshot; runs on the thread pool."""
        raise NotImplementedError


@final
class ControlHandler(Handler):
    """One control connection: read a command line, write one JSON line, close."""

    def __init__(self, source: Any) -> None:
        super().__init__(source)
        self.source = source
        self._buffer = b""

    def connection_made(self, connection: Any) -> None:
        self.connection = connection
        if not _same_user(connection):
            log.warning("control socket: refused a peer of another user")
            connection.abort()

    def data_received(self, data: bytes) -> None:
        if self.connection.is_closing():
            return
        self._buffer += data
        line, found, _ = self._buffer.partition(b"\n")
        if not found:
            if len(self._buffer) > _MAX_REQUEST:
                self._reply({"error": "request too long"})
            return
        self.connection.pause_reading()
        command = line.strip().decode("ascii", "replace")
        source = self.source
        if command == "local":
            self._reply(source.snapshot())
        elif command == "all":
            if source.has_peers():
                future = self.connection.reactor.run_in_thread(source.gather, DEFAULT_TIMEOUT)
                future.add_done_callback(self._gathered)
            else:
                self._reply({"processes": [source.snapshot()]})
        else:
            self._reply({"error": f"unknown command {command!r}; expected 'local' or 'all'"})

    def eof_received(self) -> bool:
        if not self._buffer:
            return False  # gone without a request (a probe, a scraper that gave up): close
        if b"\n" not in self._buffer and not self.connection.is_closing():
            self.data_received(b"\n")  # `printf local | nc -U -N`: the request is whole
        return True  # a client may shut its side after the request

    def _gathered(self, future: Any) -> None:
        if self.connection.is_closing():
            return
        error = future.exception()
        if error is not None:
            log.error("control socket: gathering the workers' numbers failed", exc_info=error)
            self._reply({"error": f"gathering failed: {error}"})
        else:
            self._reply({"processes": future.result()})

    def _reply(self, value: Any) -> None:
        self.connection.write(json.dumps(value).encode() + b"\n")
        self.connection.close()


def _same_user(connection: Any) -> bool:
    fileno = getattr(connection, "fileno", None)
    if not isinstance(fileno, int) or not hasattr(socket, "SO_PEERCRED"):
        return True
    try:
        with socket.socket(fileno=os.dup(fileno)) as sock:
            creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return False
    _, uid, _ = struct.unpack("3i", creds)
    return uid in (os.getuid(), 0)


def bind_private(path: str) -> socket.socket:
    """Bind a listening UNIX socket at ``path`` with mode 0600 from the start.

    The socket file is created under a fresh name next to ``path``,
    restricted, listening, and only then renamed into place: no client ever
    finds it with wider permissions, or bound but not yet listening.

    Raises:
        OSError: ``path`` is in use by a live server, or cannot be bound.
    """
    _remove_stale_unix_socket(path)
    directory = os.path.dirname(path) or "."
    temporary = os.path.join(directory, f".{os.getpid()}.rk-tmp")
    dir_fd = None
    if len(os.fsencode(temporary)) > _MAX_UNIX_PATH:
        # Longer than ``path`` itself, which fits: reach the directory by a
        # short name (Linux resolves /proc/self/fd/N to the open directory).
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        temporary = f"/proc/self/fd/{dir_fd}/.{os.getpid()}.rk-tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        os.fchmod(sock.fileno(), 0o600)  # Linux: the mode the file is created with
        sock.bind(temporary)
        os.chmod(temporary, 0o600)
        sock.listen(16)
        sock.setblocking(False)
        os.rename(temporary, path)
    except BaseException:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    finally:
        if dir_fd is not None:
            os.close(dir_fd)
    return sock


def serve_control(reactor: Any, path: str, source: Any) -> Callable[[], None]:
    """Listen at ``path`` (mode 0600) and answer from ``source``; returns the closer.

    The closer stops listening, aborts the control connections still open
    and removes the file (unless another server has bound that path since).
    """
    sock = bind_private(path)
    listener = Listener(
        reactor,
        name="control",
        handler_type=HandlerType(
            name="control",
            handler=ControlHandler,
            state=lambda listener: source,
            description="the control socket (reactorkit status)",
        ),
        options=None,
        sock=sock,
        max_connections=16,
        idle_timeout=DEFAULT_TIMEOUT * 5,
        plugin="reactorkit control socket",
    )
    listener.address = path  # the renamed file
    listener.owns_path = False  # close() below unlinks it, if it is still ours
    bound = os.stat(path)
    listener.start()

    def close() -> None:
        listener.close()
        for connection in list(listener.connections):
            connection.abort()
        # Removed by hand and bound again by another server: that one's now.
        with contextlib.suppress(OSError):
            now = os.stat(path)
            if (now.st_dev, now.st_ino) == (bound.st_dev, bound.st_ino):
                os.unlink(path)

    return close


# -- clients (blocking; never on the reactor thread) ---------------------------


def query(path: str, command: str = "all", *, timeout: float = DEFAULT_TIMEOUT) -> Any:
    """Send ``command`` to the control socket at ``path``; return the parsed reply.

    Raises:
        OSError: nobody listens at ``path``, or no reply came within ``timeout``.
        ValueError: the reply is not JSON, or too large.
    """
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(command.encode("ascii") + b"\n")
        chunks, size = [], 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(errno.ETIMEDOUT, f"no reply from {path} within {timeout:g}s")
            sock.settimeout(left)
            chunk = sock.recv(65536)
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_REPLY:
                raise ValueError(f"the reply from {path} is larger than {MAX_REPLY} bytes")
            chunks.append(chunk)
    return json.loads(b"".join(chunks))


def peer_paths(directory: str) -> Iterator[str]:
    """The peer sockets in ``directory`` (``w<index>-<pid>.sock``)."""
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return
    for name in names:
        if name.startswith("w") and name.endswith(_PEER_SUFFIX):
            yield os.path.join(directory, name)


def peer_path(directory: str, worker: int) -> str:
    """Where worker ``worker`` (this process) listens for its peers."""
    return os.path.join(directory, f"w{worker}-{os.getpid()}{_PEER_SUFFIX}")


def query_peers(
    directory: str, *, exclude: str | None = None, timeout: float = DEFAULT_TIMEOUT
) -> list[dict[str, Any]]:
    """Every peer's ``local`` snapshot; a peer that does not answer is skipped.

    The peers are asked at once, one thread each, so hung workers cost one
    ``timeout`` together, not one each. A socket nobody listens on any more
    (a worker that crashed) is removed.
    """
    paths = [path for path in peer_paths(directory) if path != exclude]
    if not paths:
        return []
    with ThreadPoolExecutor(min(len(paths), 64), thread_name_prefix="reactorkit-peers") as pool:
        replies = list(pool.map(functools.partial(_ask_peer, timeout=timeout), paths))
    return [reply for reply in replies if isinstance(reply, dict) and "pid" in reply]


def _ask_peer(path: str, *, timeout: float) -> Any:
    try:
        return query(path, "local", timeout=timeout)
    except ConnectionRefusedError:
        with contextlib.suppress(OSError):
            os.unlink(path)  # its worker is gone
    except (OSError, ValueError) as exc:
        log.warning("worker socket %s did not answer: %s", path, exc)
    return None


@final
class PeerGatherer(ControlSource):
    """The supervisor's side: ``all`` asks every worker in ``directory``.

    Args:
        directory: the private directory of the workers' peer sockets.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def snapshot(self) -> dict[str, Any]:
        """The supervisor itself serves nothing: its pid and its workers' sockets."""
        return {"pid": os.getpid(), "role": "supervisor", "peers": list(peer_paths(self.directory))}

    def has_peers(self) -> bool:
        """Always: the numbers are the workers'."""
        return True

    def gather(self, timeout: float) -> list[dict[str, Any]]:
        """Every worker's snapshot, by worker index."""
        snapshots = query_peers(self.directory, timeout=timeout)
        return sorted(snapshots, key=lambda s: (s["worker"], s["pid"]))
