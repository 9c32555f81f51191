"""systemd integration: socket activation and ``Type=notify``, standard library only.

* :func:`listen_fds` takes the sockets systemd passed (``LISTEN_PID``,
  ``LISTEN_FDS``, ``LISTEN_FDNAMES``; sd_listen_fds(3)), grouped by name. A
  listener with ``fd_name = "web"`` serves the socket named ``web``
  (``FileDescriptorName=web`` in the ``.socket`` unit).
* :func:`notify` sends a state (``READY=1``, ``RELOADING=1``,
  ``STOPPING=1``; sd_notify(3)) to ``NOTIFY_SOCKET``, a UNIX datagram socket
  (a leading ``@`` means the abstract namespace). Without ``NOTIFY_SOCKET``
  it does nothing, so callers never check whether systemd is there.
"""

from __future__ import annotations

import logging
import os
import socket
import time

__all__ = ["SD_LISTEN_FDS_START", "listen_fds", "notify", "notify_reloading"]

log = logging.getLogger("reactorkit.systemd")

#: The first descriptor systemd passes (sd_listen_fds(3)).
SD_LISTEN_FDS_START = 3


def listen_fds(environ: dict[str, str] | None = None) -> dict[str, list[socket.socket]]:
    """The sockets systemd passed to this process, by name.

    Unnamed sockets are called ``"unknown"``, as systemd does. The variables
    are removed from the environment so no child mistakes them for its own,
    and the descriptors are made non-inheritable (a supervisor passes them on
    explicitly).

    Args:
        environ: the environment to read and clean (default ``os.environ``).

    Returns:
        An empty dict when systemd passed nothing to this process
        (``LISTEN_PID`` missing or naming another process).
    """
    env = os.environ if environ is None else environ
    pid, count = env.pop("LISTEN_PID", ""), env.pop("LISTEN_FDS", "")
    names_value = env.pop("LISTEN_FDNAMES", "")
    if not pid.isdigit() or int(pid) != os.getpid() or not count.isdigit():
        return {}
    names = names_value.split(":") if names_value else []
    found: dict[str, list[socket.socket]] = {}
    for index in range(int(count)):
        fd = SD_LISTEN_FDS_START + index
        name = names[index] if index < len(names) and names[index] else "unknown"
        try:
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            log.warning("systemd passed fd %d (%r) that is not a socket: %s", fd, name, exc)
            continue
        sock.set_inheritable(False)
        sock.setblocking(False)
        found.setdefault(name, []).append(sock)
    return found


def notify(state: str, environ: dict[str, str] | None = None) -> bool:
    """Send ``state`` (e.g. ``"READY=1"``) to systemd's ``NOTIFY_SOCKET``.

    Returns:
        True when a notification was sent; False when there is no
        ``NOTIFY_SOCKET`` or sending failed (logged; never raised: a
        service must not die because its supervisor's socket is gone).
    """
    env = os.environ if environ is None else environ
    address = env.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address[0] == "@":
        address = "\0" + address[1:]  # the abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.settimeout(1.0)
            sock.sendto(state.encode(), address)
    except OSError as exc:
        log.warning("cannot notify systemd (%s) of %r: %s", address, state, exc)
        return False
    return True


def notify_reloading(environ: dict[str, str] | None = None) -> bool:
    """Send ``RELOADING=1`` with the ``MONOTONIC_USEC`` that ``Type=notify-reload`` needs."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify(f"RELOADING=1\nMONOTONIC_USEC={usec}", environ)
