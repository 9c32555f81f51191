"""Socket groups: the listening sockets a supervisor binds and its workers share.

One group per listener address. On Linux a TCP group is one
``SO_REUSEPORT`` socket per worker slot, all on one port (the kernel
spreads connections among them); a UNIX socket, a socket systemd passed, or
a platform without ``SO_REUSEPORT`` gives a group of one shared socket. See
the supervisor's theory of operation for why the supervisor, not the
workers, holds them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
from collections.abc import Mapping
from typing import Any

import attrs

from reactorkit.config import Config, ListenConfig, ListenerPlan
from reactorkit.errors import BindError
from reactorkit.listener import bind_socket, format_address

__all__ = ["SocketGroup", "bind_groups", "has_reuse_port", "stop_listening"]

log = logging.getLogger("reactorkit.supervisor")


def has_reuse_port() -> bool:
    """True where ``SO_REUSEPORT`` spreads connections (Linux >= 3.9)."""
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


@attrs.define(eq=False)
class SocketGroup:
    """The listening sockets of one listener address.

    ``shared``: one socket every worker serves; else one ``SO_REUSEPORT``
    socket per slot. ``owned``: the supervisor bound it (and unlinks a UNIX
    path at exit); False for systemd's sockets.
    """

    key: tuple[Any, ...]
    socks: list[socket.socket]
    shared: bool
    owned: bool = True

    @property
    def address(self) -> str:
        """The bound address, for logs."""
        return format_address(self.socks[0].getsockname())

    def describe(self) -> str:
        """``2 SO_REUSEPORT sockets``, ``shared socket`` or ``systemd socket``."""
        if not self.owned:
            return f"systemd socket {self.key[1]!r}"
        return "shared socket" if self.shared else f"{len(self.socks)} SO_REUSEPORT sockets"

    def fds_for(self, index: int, workers: int) -> list[int]:
        """The descriptors worker ``index`` of ``workers`` serves."""
        if self.shared:
            return [self.socks[0].fileno()]
        return [s.fileno() for j, s in enumerate(self.socks) if j % workers == index]

    def grow(self, slots: int, backlog: int) -> None:
        """Bind more ``SO_REUSEPORT`` sockets on the same port, up to ``slots``."""
        if self.shared:
            return
        host, port = self.socks[0].getsockname()[:2]
        while len(self.socks) < slots:
            self.socks.append(
                bind_socket(host=host, port=port, path=None, backlog=backlog, reuse_port=True)
            )

    def close(self) -> None:
        """Stop listening, close every socket, unlink an owned UNIX socket's path.

        An owned socket is shut down first: a worker that is still exiting
        may hold a copy, and until the last copy closed the socket would go
        on listening (and, for ``SO_REUSEPORT``, receiving its share of new
        connections) with nobody to accept them. Systemd's sockets are only
        closed: systemd keeps listening on them.
        """
        path = self.key[1] if self.key[0] == "unix" and self.owned else None
        for sock in self.socks:
            if self.owned:
                stop_listening(sock)
            sock.close()
        if path:
            with contextlib.suppress(OSError):
                os.unlink(path)


def stop_listening(sock: socket.socket) -> None:
    """Take a listening socket out of service for every process holding it.

    ``shutdown()`` on a listening socket moves it out of the LISTEN state
    (and out of its ``SO_REUSEPORT`` group) at once, whoever else holds a
    descriptor for it; new clients go to the group's other sockets, or are
    refused. Clients already queued on it are reset, as a close would.
    """
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def bind_groups(
    config: Config,
    plans: list[ListenerPlan],
    old: Mapping[str, SocketGroup],
    inherited: Mapping[str, list[socket.socket]],
    *,
    reuse_port: bool = True,
) -> dict[str, SocketGroup]:
    """The socket group of every planned listener, by listener name.

    Groups in ``old`` whose address is unchanged are reused (and grown to
    ``workers`` sockets); others are bound. Every address is tried, so one
    error names each one that failed; then only what this call bound is
    closed.

    Args:
        reuse_port: one ``SO_REUSEPORT`` socket per worker where supported;
            False binds one shared socket per listener.

    Raises:
        BindError: one line per address that failed, naming the config
            file, the listener and the address.
    """
    by_key = {g.key: g for g in old.values()}
    slots = max([config.reactor.workers] + [len(g.socks) for g in old.values()])
    table: dict[str, SocketGroup] = {}
    fresh: list[SocketGroup] = []
    failures: list[BindError] = []
    try:
        for plan in plans:
            listen = plan.config
            key = _group_key(listen, plan.port)
            group = by_key.get(key)
            if group is None:
                try:
                    group = _bind_group(
                        config, listen, key, plan.port, slots, inherited, reuse_port
                    )
                except BindError as exc:
                    failures.append(exc)
                    continue
                if group.owned:
                    fresh.append(group)
                log.info("%s: bound %s (%s)", listen.label, group.address, group.describe())
            elif group.owned:
                for sock in group.socks:
                    sock.listen(listen.backlog)
            group.grow(slots, listen.backlog)
            table[listen.name] = group
        if failures:
            raise BindError(failures[0].errno, "\n".join(str(f) for f in failures))
    except OSError as exc:
        for group in fresh:
            group.close()
        if isinstance(exc, BindError):
            raise
        raise BindError(exc.errno, f"{config.path}: {exc}") from None
    return table


def _bind_group(
    config: Config,
    listen: ListenConfig,
    key: tuple[Any, ...],
    port: int | None,
    slots: int,
    inherited: Mapping[str, list[socket.socket]],
    reuse_port: bool,
) -> SocketGroup:
    if listen.fd_name is not None:
        socks = inherited.get(listen.fd_name)
        if not socks:
            names = ", ".join(sorted(inherited)) or "none"
            raise BindError(
                None,
                f"{config.path}: {listen.label}: systemd passed no socket named "
                f"{listen.fd_name!r} (LISTEN_FDNAMES: {names})",
            )
        return SocketGroup(key=key, socks=socks[:1], shared=True, owned=False)
    where = listen.path if listen.path else f"{listen.host}:{port}"
    try:
        if listen.path is not None or not reuse_port or not has_reuse_port():
            sock = bind_socket(
                host=listen.host, port=port, path=listen.path, backlog=listen.backlog
            )
            return SocketGroup(key=key, socks=[sock], shared=True)
        if port:
            # SO_REUSEPORT would let us join a stranger's group on this
            # port; a plain bind first fails if anyone listens there.
            bind_socket(host=listen.host, port=port, path=None, backlog=1).close()
        first = bind_socket(
            host=listen.host, port=port, path=None, backlog=listen.backlog, reuse_port=True
        )
    except OSError as exc:
        raise BindError(
            exc.errno,
            f"{config.path}: {listen.label}: cannot listen on {where}: {exc.strerror or exc}",
        ) from None
    group = SocketGroup(key=key, socks=[first], shared=False)
    group.grow(slots, listen.backlog)
    return group


def _group_key(listen: ListenConfig, port: int | None) -> tuple[Any, ...]:
    if listen.fd_name is not None:
        return ("fd", listen.fd_name)
    if listen.path is not None:
        return ("unix", listen.path)
    if not port:  # port 0: a fresh free port per listener, kept across reloads
        return ("tcp0", listen.host, listen.name)
    return ("tcp", listen.host, port)
