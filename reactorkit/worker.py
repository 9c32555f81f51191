"""The worker side of ``workers = N``, and single-process runs under systemd.

A worker is ``python -m reactorkit run`` started by the supervisor with
``REACTORKIT_WORKER`` in its environment: a JSON object naming the config
text the supervisor validated, the listening sockets it inherited (by
listener name), and two pipes:

* ``ready``: the worker writes one byte once its reactor runs with every
  listener registered, then closes it. Closing without a byte means it
  failed to start (its errors are on the shared stderr).
* ``alive``: the read end of a pipe only the supervisor can write to. It
  becomes readable (EOF) when the supervisor is gone, however it died; the
  worker then shuts down gracefully instead of serving on as an orphan.

Signals: SIGTERM/SIGINT shut down gracefully as ``reactorkit run`` does
(a second one aborts). :data:`RETIRE_SIGNAL` (SIGUSR1) retires the worker
after a reload or a removed slot: :meth:`Server.drain` stops accepting and
lets every connection finish what it started.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import signal
import socket
from collections.abc import Mapping, Sequence
from typing import Any

from reactorkit import logfmt, systemd
from reactorkit.config import Config
from reactorkit.hookspecs import hookimpl
from reactorkit.server import Server

__all__ = [
    "LOG_FORMAT",
    "RETIRE_SIGNAL",
    "WORKER_ENV",
    "is_worker",
    "run_single",
    "run_worker",
    "setup_logging",
    "worker_spec",
]

log = logging.getLogger("reactorkit.worker")

#: The environment variable that makes ``reactorkit run`` a worker.
WORKER_ENV = "REACTORKIT_WORKER"
#: Sent by the supervisor: stop accepting, drain, exit.
RETIRE_SIGNAL = signal.SIGUSR1
#: Supervisor and worker log lines carry the process id.
LOG_FORMAT = "%(asctime)s %(levelname)-7s [%(process)d] %(name)s: %(message)s"


def is_worker() -> bool:
    """True in a process the supervisor started as a worker."""
    return WORKER_ENV in os.environ


def setup_logging(level: str, log_format: str = "text") -> None:
    """Log to stderr with the pid in every line (``log_format``: text or json)."""
    logfmt.setup_logging(level, log_format, pid=True)


def run_worker() -> int:
    """Serve as a worker until told to stop; returns the exit code.

    Raises:
        ConfigErrors, PluginError, BindError: the config does not resolve
            against the plugins installed now (the supervisor logs the exit).
    """
    spec: dict[str, Any] = json.loads(os.environ.pop(WORKER_ENV))
    setup_logging(spec["log_level"])
    text, path = spec["config"], spec["path"]
    config = Config.default() if text is None else Config.from_text(text, path=path)
    setup_logging(spec["log_level"], config.reactor.log_format)
    sockets = {name: [_inherit(fd) for fd in fds] for name, fds in spec["sockets"].items()}
    ready_fd, alive_fd = spec["ready"], spec["alive"]
    server = Server.from_sockets(config, sockets)
    reactor = server.reactor
    if server.observatory is not None and spec.get("peers"):
        # Siblings and the supervisor ask this worker for its numbers here.
        server.observatory.worker = spec["index"]
        server.observatory.serve_peers(spec["peers"])

    def supervisor_gone(mask: int) -> None:
        reactor.unregister(alive_fd)
        if not server.is_shutting_down:
            log.warning("worker %d: the supervisor is gone; shutting down", spec["index"])
            server.shutdown()

    def retire(signum: int) -> None:
        if server.is_shutting_down:
            return
        log.info(
            "worker %d retiring: no longer accepting; draining %d connections",
            spec["index"],
            len(server.connections),
        )
        server.drain()

    def report_ready() -> None:
        with contextlib.suppress(OSError):
            os.write(ready_fd, b"R")
        os.close(ready_fd)

    reactor.register(alive_fd, selectors.EVENT_READ, supervisor_gone)
    reactor.add_signal_handler(RETIRE_SIGNAL, retire)
    # Runs on the first pass, after serve_forever installed the signal
    # handlers: the supervisor may send RETIRE_SIGNAL as soon as it reads this.
    reactor.call_soon(report_ready)
    count = len(server.listeners)
    log.info("worker %d serving %d %s", spec["index"], count, _listeners(count))
    server.serve_forever()
    log.info("worker %d stopped", spec["index"])
    return 0


def worker_spec(
    *,
    index: int,
    config_text: str | None,
    config_path: str,
    log_level: str,
    sockets: Mapping[str, Sequence[int]],
    ready: int,
    alive: int,
    peers: str | None = None,
) -> str:
    """The ``REACTORKIT_WORKER`` value :func:`run_worker` reads."""
    return json.dumps(
        {
            "index": index,
            "config": config_text,
            "path": config_path,
            "log_level": log_level,
            "sockets": {name: list(fds) for name, fds in sockets.items()},
            "ready": ready,
            "alive": alive,
            "peers": peers,
        }
    )


def run_single(
    config: Config,
    sockets: Mapping[str, Sequence[socket.socket]],
    *,
    early_signals: list[int] | None = None,
) -> int:
    """``workers = 1`` under systemd: serve ``sockets``, notify READY/STOPPING.

    Args:
        config: the config to serve.
        sockets: every listener's listening socket, by name (the inherited
            ones systemd passed, the others bound by the caller).
        early_signals: from :func:`reactorkit.server.catch_early_signals`.
    """
    server = Server.from_sockets(config, sockets)
    if config.reactor.control_socket is not None:
        server.serve_control(config.reactor.control_socket, source=config.path)
    server.plugins.pm.register(_StoppingNotifier(), name="reactorkit-systemd-notify")
    server.reactor.call_soon(systemd.notify, f"READY=1\nMAINPID={os.getpid()}")
    count = len(server.listeners)
    log.info("serving %d %s (pid %d)", count, _listeners(count), os.getpid())
    server.serve_forever(early_signals=early_signals)
    log.info("stopped")
    return 0


class _StoppingNotifier:
    """Tells systemd ``STOPPING=1`` as the shutdown begins."""

    @hookimpl
    def reactorkit_reactor_stopping(self, reactor: object) -> None:
        systemd.notify("STOPPING=1")


def _inherit(fd: int) -> socket.socket:
    sock = socket.socket(fileno=fd)
    sock.set_inheritable(False)
    sock.setblocking(False)
    return sock


def _listeners(count: int) -> str:
    return "listener" if count == 1 else "listeners"
