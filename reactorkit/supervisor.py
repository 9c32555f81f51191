"""Supervisor: ``workers = N`` processes sharing the listeners; restarts, reload, resize.

Theory of operation
-------------------
The supervisor binds every listening socket itself and keeps it open for
its whole life; workers only inherit them. It never accepts a connection.

* **Sockets.** A TCP listener on Linux gets one ``SO_REUSEPORT`` socket per
  worker slot, all on one port, so the kernel spreads connections among
  them by a hash of the 4-tuple. Worker ``i`` of ``n`` serves the sockets
  ``j`` with ``j % n == i``. UNIX sockets, sockets systemd passed, and
  platforms without ``SO_REUSEPORT`` have one socket that every worker
  serves (the kernel wakes the workers in turn).
* **Why the supervisor holds them.** Closing a ``SO_REUSEPORT`` socket
  resets the connections still in its accept queue. Because the supervisor
  keeps every socket open, a worker that exits (crash, reload, removal)
  closes only its own descriptor: connections queued on its socket wait for
  the next worker to serve that socket instead of being reset. Sockets are
  never closed while the supervisor runs, except those of a listener a
  reload removed from the config, and those an abandoned roll bound for
  workers that never came (nobody would accept from them). SIGTTOU removes
  a worker, not a socket: the removed slot's socket goes to a remaining
  worker (``j % n``), which is rolled to take it.
* **Workers** are ``python -m reactorkit run`` started with fork+exec
  (``subprocess`` with ``pass_fds``), so a reload runs fresh code and sees
  plugins installed since the start. Each gets a ``ready`` pipe and the
  shared ``alive`` pipe (see :mod:`reactorkit.worker`), and its own process
  group, so a terminal's Ctrl-C reaches only the supervisor, which forwards
  it once.
* **Loop.** The supervisor runs a :class:`~reactorkit.reactor.Reactor`:
  signals arrive as callbacks, ``ready`` pipes are registered readers,
  SIGCHLD (and a 1 s poll, in case signals coalesce) reaps workers.
* **Generations.** Starting, a reload (SIGHUP) and a resize (SIGTTIN,
  SIGTTOU) all *roll*: every slot whose config or sockets change gets a new
  worker; once all of them report ready, the old ones get
  :data:`~reactorkit.worker.RETIRE_SIGNAL` (stop accepting, drain). If a new
  worker dies before it is ready, the roll is abandoned and the old workers
  serve on. One roll at a time; signals that arrive during one wait
  (repeated SIGHUPs coalesce; at most :data:`MAX_QUEUED` wait).
* **Crashes.** A serving worker that dies is replaced at once; one that
  dies again within :data:`STABLE_AFTER` seconds of its start is restarted
  after an exponential backoff (logged), so a crash loop never spins.
* **Shutdown.** SIGTERM/SIGINT: workers get SIGTERM and drain as
  ``reactorkit run`` does; the supervisor exits 0 when all have, SIGKILLs
  the rest at ``shutdown_timeout`` (plus :data:`KILL_MARGIN`). A second
  signal is forwarded: the workers abort at once.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import importlib
import logging
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any, final

import attrs

from reactorkit import systemd
from reactorkit.config import MAX_WORKERS, Config, ListenerPlan
from reactorkit.control import PeerGatherer, serve_control
from reactorkit.errors import BindError, ConfigErrors, PluginError
from reactorkit.plugins import load_plugins
from reactorkit.reactor import Reactor, TimerHandle
from reactorkit.server import Server
from reactorkit.socket_groups import SocketGroup, bind_groups, stop_listening
from reactorkit.worker import RETIRE_SIGNAL, WORKER_ENV, run_single, worker_spec

__all__ = [
    "BACKOFF_FIRST",
    "BACKOFF_MAX",
    "KILL_MARGIN",
    "MAX_QUEUED",
    "READY_TIMEOUT",
    "STABLE_AFTER",
    "Supervisor",
    "is_needed",
    "serve",
]

log = logging.getLogger("reactorkit.supervisor")

#: The delay before the second restart of a worker that keeps dying.
BACKOFF_FIRST = 0.5
#: The longest delay between restarts.
BACKOFF_MAX = 30.0
#: A worker that ran this long before dying is restarted at once.
STABLE_AFTER = 10.0
#: A new worker not ready after this many seconds is killed.
READY_TIMEOUT = 60.0
#: Signals (SIGHUP, SIGTTIN, SIGTTOU) waiting for a roll to end, at most.
MAX_QUEUED = 16
#: Seconds past ``shutdown_timeout`` before remaining workers are SIGKILLed
#: (the workers abort their own connections at ``shutdown_timeout``).
KILL_MARGIN = 1.0

#: What the supervisor does on each of these signals (besides SIGTERM/SIGINT).
_REQUESTS: dict[int, str] = {
    signal.SIGHUP: "reload",
    signal.SIGTTIN: "add",
    signal.SIGTTOU: "remove",
}


@attrs.define(eq=False)
class _Worker:
    index: int
    generation: int
    proc: subprocess.Popen[bytes]
    ready_fd: int | None
    assignment: tuple[tuple[str, tuple[int, ...]], ...]
    started: float
    ready: bool = False
    retiring: bool = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def __str__(self) -> str:
        return f"worker {self.index} (pid {self.pid})"


@final
class Supervisor:
    """Runs ``config.reactor.workers`` workers until SIGTERM/SIGINT.

    Args:
        config: the validated config.
        config_text: its TOML text (None for the built-in default config),
            handed to every worker so restarts serve what was validated.
        log_level: ``--log-level``; None: each config's own ``log_level``.
        workers_override: ``--workers``, applied again on every reload.
    """

    def __init__(
        self,
        config: Config,
        *,
        config_text: str | None,
        log_level: str | None = None,
        workers_override: int | None = None,
    ) -> None:
        self.config = config
        self.config_text = config_text
        self.log_level = log_level
        self.workers_override = workers_override
        self.reactor = Reactor(threads=1)
        self.workers: list[_Worker] = []  # every live worker process
        self.active: dict[int, _Worker] = {}  # the serving worker of each slot
        self.groups: dict[str, SocketGroup] = {}  # by listener name
        self.inherited = systemd.listen_fds()
        self.exit_code = 0
        self._generation = 0
        self._rolling: dict[int, _Worker] | None = None
        self._roll_target: tuple[Config, str | None, dict[str, SocketGroup]] | None = None
        self._queued: list[str] = []
        self._sizes: dict[tuple[Any, ...], int] = {}  # socket counts before the roll
        self._crashes: dict[int, int] = {}
        self._restarts: dict[int, TimerHandle] = {}
        self._stopping = False
        self._aborting = False
        self._alive_r, self._alive_w = os.pipe()
        #: The workers' peer sockets (reactorkit.control): private, removed at exit.
        self.peer_dir = ""  # made by run()
        self._close_control: Callable[[], None] | None = None

    # -- life --------------------------------------------------------------

    def _replay_early_signals(self, signals: list[int]) -> None:
        for signum in signals:
            action = _REQUESTS.get(signum)
            if action is None:
                self._stop_signal(signum)
            else:  # once the first roll has begun (it was scheduled after this)
                self.reactor.call_soon(self._request, action)
        signals.clear()

    def run(self, *, early_signals: list[int] | None = None) -> int:
        """Bind, start the workers, serve signals until the last worker exits.

        Args:
            early_signals: SIGTERM/SIGINT caught before the loop ran; acted
                on at its first pass.

        Returns:
            0, or 1 when the first workers could not start.

        Raises:
            BindError: a listener's address cannot be bound.
            ConfigErrors, PluginError: the config does not resolve.
        """
        plans = _plan(self.config)
        self.groups = bind_groups(self.config, plans, {}, self.inherited)
        self.peer_dir = tempfile.mkdtemp(prefix="reactorkit-peers-")  # mode 0700
        if self.config.reactor.control_socket is not None:
            path = self.config.reactor.control_socket
            try:
                self._close_control = serve_control(self.reactor, path, PeerGatherer(self.peer_dir))
            except OSError as exc:
                for group in self.groups.values():
                    group.close()
                shutil.rmtree(self.peer_dir, ignore_errors=True)
                raise BindError(
                    exc.errno,
                    f"{self.config.path}: reactor.control_socket: cannot listen on {path}: "
                    f"{exc.strerror or exc}",
                ) from None
        for signum in (signal.SIGTERM, signal.SIGINT):
            self.reactor.add_signal_handler(signum, self._stop_signal)
        for request, action in _REQUESTS.items():
            self.reactor.add_signal_handler(request, functools.partial(self._on_request, action))
        self.reactor.add_signal_handler(signal.SIGCHLD, lambda s: self._reap())
        if early_signals is not None:
            # Read on the first pass, once the loop's own handlers are in
            # place (a signal landing between here and run() would otherwise
            # be recorded and never seen), and first: then no worker starts.
            self.reactor.call_soon(self._replay_early_signals, early_signals)
        self.reactor.call_soon(self._start_roll, self.config, self.config_text, self.groups)
        self._poll_children()
        log.info("supervisor pid %d: starting %d workers", os.getpid(), self.config.reactor.workers)
        try:
            self.reactor.run(install_signal_handlers=True)
        finally:
            for worker in self.workers:  # only after an error in the loop
                worker.proc.kill()
                worker.proc.wait()
            for group in self.groups.values():
                group.close()
            if self._close_control is not None:
                self._close_control()
            shutil.rmtree(self.peer_dir, ignore_errors=True)
            os.close(self._alive_r)
            os.close(self._alive_w)
            self.reactor.close()
        log.info("stopped")
        return self.exit_code

    @property
    def workers_wanted(self) -> int:
        """How many workers the current config asks for."""
        return self.config.reactor.workers

    # -- signals -----------------------------------------------------------

    def _on_request(self, action: str, signum: int) -> None:
        self._request(action)

    def _request(self, action: str) -> None:
        if self._stopping:
            return
        if self._rolling is not None:
            # Bounded: repeated reloads coalesce, resizes beyond the limit are dropped.
            if (action == "reload" and action in self._queued) or len(self._queued) >= MAX_QUEUED:
                log.warning(
                    "%s requested during a roll: already queued or too many; ignored", action
                )
            else:
                log.info("%s requested during a roll; it follows", action)
                self._queued.append(action)
            return
        if action == "reload":
            self._reload()
        elif action == "add":
            if self.workers_wanted >= MAX_WORKERS:
                log.warning("SIGTTIN ignored: already %d workers (the most)", MAX_WORKERS)
            else:
                self._resize(self.workers_wanted + 1)
        elif self.workers_wanted <= 1:
            log.warning("SIGTTOU ignored: at least one worker must run")
        else:
            self._resize(self.workers_wanted - 1)

    def _reload(self) -> None:
        log.info("SIGHUP: reloading %s", self.config.path)
        systemd.notify_reloading()
        try:
            if self.config_text is None:
                config, text = Config.default(), None
            else:
                text = Config.read_text(self.config.path)
                config = Config.from_text(text, path=self.config.path)
            if self.workers_override is not None:
                config = config.with_workers(self.workers_override)
            importlib.invalidate_caches()  # see distributions installed since
            plans = _plan(config)
            self._sizes = {g.key: len(g.socks) for g in self.groups.values()}
            groups = bind_groups(config, plans, self.groups, self.inherited)
        except (ConfigErrors, PluginError, OSError) as exc:
            self._shrink()
            for line in str(exc).splitlines():
                log.error("reload failed: %s", line)
            log.error("reload failed: the old workers keep serving the old config")
            systemd.notify("READY=1")
            return
        self._start_roll(config, text, groups)

    def _resize(self, workers: int) -> None:
        log.info("workers %d -> %d", self.workers_wanted, workers)
        config = attrs.evolve(
            self.config, reactor=attrs.evolve(self.config.reactor, workers=workers)
        )
        try:
            self._sizes = {g.key: len(g.socks) for g in self.groups.values()}
            groups = bind_groups(config, _plan(config), self.groups, self.inherited)
        except (ConfigErrors, PluginError, OSError) as exc:
            self._shrink()
            log.error("cannot resize: %s", exc)
            return
        self._start_roll(config, self.config_text, groups, keep_unchanged=True)

    def _stop_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self._stopping:
            if not self._aborting:
                self._aborting = True
                log.warning("%s again: workers abort their connections now", name)
                for worker in self.workers:
                    self._signal(worker, signal.SIGTERM)
                self.reactor.call_later(KILL_MARGIN, self._kill_all)
            return
        self._stopping = True
        timeout = self.config.reactor.shutdown_timeout
        log.info("%s: stopping %d workers (up to %.1fs)", name, len(self.workers), timeout)
        systemd.notify("STOPPING=1")
        for timer in self._restarts.values():
            timer.cancel()
        self._restarts.clear()
        for worker in self.workers:
            if not worker.retiring:  # a retiring worker already drains; SIGTERM would abort it
                self._signal(worker, signal.SIGTERM)
        self.reactor.call_later(timeout + KILL_MARGIN, self._kill_all)
        self._maybe_done()

    def _kill_all(self) -> None:
        for worker in self.workers:
            log.warning("%s still running: killing it", worker)
            self._signal(worker, signal.SIGKILL)

    def _maybe_done(self) -> None:
        if self._stopping and not self.workers:
            self.reactor.stop()

    @staticmethod
    def _signal(worker: _Worker, signum: int) -> None:
        # send_signal() checks the process was not reaped (its pid reused).
        with contextlib.suppress(ProcessLookupError):
            worker.proc.send_signal(signum)

    # -- rolls -------------------------------------------------------------

    def _start_roll(
        self,
        config: Config,
        text: str | None,
        groups: dict[str, SocketGroup],
        *,
        keep_unchanged: bool = False,
    ) -> None:
        if self._stopping:
            return
        self._generation += 1
        n = config.reactor.workers
        self._rolling = {}
        self._roll_target = (config, text, groups)
        for index in range(n):
            current = self.active.get(index)
            assignment = _assignment(groups, index, n)
            if keep_unchanged and current is not None and current.assignment == assignment:
                continue
            try:
                self._rolling[index] = self._spawn(index, config, text, groups)
            except OSError as exc:  # out of processes, memory or descriptors
                self._abandon_roll(f"cannot start worker {index}: {exc}")
                return
        log.info(
            "generation %d: starting %d of %d workers",
            self._generation,
            len(self._rolling),
            n,
        )
        self._roll_progress()

    def _roll_progress(self) -> None:
        if self._rolling is None or any(
            not w.ready or w not in self.workers for w in self._rolling.values()
        ):
            return
        assert self._roll_target is not None
        config, text, groups = self._roll_target
        first = not self.active
        n = config.reactor.workers
        for index, worker in list(self.active.items()):
            if index >= n or index in self._rolling:
                del self.active[index]
                self._retire(worker)
        self.active.update(self._rolling)
        for index in [i for i in self._restarts if i >= n or i in self._rolling]:
            self._restarts.pop(index).cancel()
        for name, group in self.groups.items():
            if group not in groups.values() and group.owned:
                log.info("listener %r no longer served on %s: closing it", name, group.address)
                group.close()
        self.config, self.config_text, self.groups = config, text, groups
        self._rolling, self._roll_target, self._sizes = None, None, {}
        pids = ", ".join(str(w.pid) for _, w in sorted(self.active.items()))
        log.info("generation %d serving: %d workers (pids %s)", self._generation, n, pids)
        systemd.notify(
            f"READY=1\nSTATUS={n} workers" + (f"\nMAINPID={os.getpid()}" if first else "")
        )
        if self._queued:
            self.reactor.call_soon(self._request, self._queued.pop(0))

    def _abandon_roll(self, reason: str) -> None:
        assert self._rolling is not None
        assert self._roll_target is not None
        first = not self.active
        log.error("%s", reason)
        for worker in self._rolling.values():
            self._signal(worker, signal.SIGTERM)  # a no-op for one already reaped
        _, _, groups = self._roll_target
        for group in groups.values():
            if group not in self.groups.values() and group.owned:
                group.close()
        self._shrink()
        self._rolling, self._roll_target = None, None
        if first:
            log.error("the workers could not start; exiting")
            self.exit_code = 1
            self._stopping = True
            self._maybe_done()
            return
        log.error("reload failed: the old workers keep serving the old config")
        systemd.notify("READY=1")
        if self._queued:
            self.reactor.call_soon(self._request, self._queued.pop(0))

    def _shrink(self) -> None:
        # An abandoned roll may have grown SO_REUSEPORT groups for workers
        # that never came: no one would accept from those sockets, and the
        # kernel would keep hashing connections to them. Take them out of
        # the group now (a failed worker may still hold a copy), then close.
        for group in self.groups.values():
            size = self._sizes.get(group.key, len(group.socks))
            for sock in group.socks[size:]:
                stop_listening(sock)
                sock.close()
            del group.socks[size:]
        self._sizes = {}

    def _retire(self, worker: _Worker) -> None:
        worker.retiring = True
        log.info("retiring %s: it stops accepting and drains", worker)
        self._signal(worker, RETIRE_SIGNAL)

    # -- workers -----------------------------------------------------------

    def _spawn(
        self, index: int, config: Config, text: str | None, groups: Mapping[str, SocketGroup]
    ) -> _Worker:
        n = config.reactor.workers
        sockets = {name: g.fds_for(index, n) for name, g in groups.items()}
        ready_r, ready_w = os.pipe()
        env = dict(os.environ)
        env[WORKER_ENV] = worker_spec(
            index=index,
            config_text=text,
            config_path=config.path,
            log_level=self.log_level or config.reactor.log_level,
            sockets=sockets,
            ready=ready_w,
            alive=self._alive_r,
            peers=self.peer_dir,
        )
        fds = [fd for group_fds in sockets.values() for fd in group_fds]
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "reactorkit", "run"],
                env=env,
                stdin=subprocess.DEVNULL,
                pass_fds=[*fds, ready_w, self._alive_r],
                process_group=0,
            )
        finally:
            os.close(ready_w)
        worker = _Worker(
            index=index,
            generation=self._generation,
            proc=proc,
            ready_fd=ready_r,
            assignment=_assignment(groups, index, n),
            started=time.monotonic(),
        )
        self.workers.append(worker)
        self.reactor.register(ready_r, selectors.EVENT_READ, lambda mask: self._ready_event(worker))
        self.reactor.call_later(READY_TIMEOUT, self._ready_timed_out, worker)
        log.info("started %s", worker)
        return worker

    def _ready_event(self, worker: _Worker) -> None:
        assert worker.ready_fd is not None
        try:
            data = os.read(worker.ready_fd, 16)
        except OSError as exc:
            if exc.errno == errno.EAGAIN:
                return
            data = b""
        self._close_ready(worker)
        if not data:
            return  # it is exiting; _reap reports it
        worker.ready = True
        log.info("%s ready", worker)
        self._roll_progress()

    def _close_ready(self, worker: _Worker) -> None:
        if worker.ready_fd is not None:
            self.reactor.unregister(worker.ready_fd)
            os.close(worker.ready_fd)
            worker.ready_fd = None

    def _ready_timed_out(self, worker: _Worker) -> None:
        if not worker.ready and worker in self.workers:
            log.error("%s not ready after %.0fs: killing it", worker, READY_TIMEOUT)
            self._signal(worker, signal.SIGKILL)

    def _poll_children(self) -> None:
        self._reap()
        self.reactor.call_later(1.0, self._poll_children)

    def _reap(self) -> None:
        for worker in list(self.workers):
            if worker.proc.poll() is not None:
                self._exited(worker)

    def _exited(self, worker: _Worker) -> None:
        self.workers.remove(worker)
        self._close_ready(worker)
        code = worker.proc.returncode
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
        if self._stopping:
            log.info("%s %s", worker, how)
            self._maybe_done()
            return
        if worker.retiring:
            log.info("%s retired (%s)", worker, how)
            return
        in_roll = self._rolling is not None and self._rolling.get(worker.index) is worker
        if in_roll and not worker.ready:
            self._abandon_roll(f"{worker} {how} before it was ready")
            return
        if not in_roll and self.active.get(worker.index) is not worker:
            log.warning("%s %s", worker, how)
            return
        self._schedule_restart(worker.index, f"{worker} {how}", time.monotonic() - worker.started)

    def _schedule_restart(self, index: int, what: str, uptime: float) -> None:
        crashes = 1 if uptime >= STABLE_AFTER else self._crashes.get(index, 0) + 1
        self._crashes[index] = crashes
        delay = 0.0 if crashes == 1 else min(BACKOFF_FIRST * 2 ** (crashes - 2), BACKOFF_MAX)
        if delay:
            log.error(
                "%s after %.1fs (%d times in a row); restarting in %.1fs",
                what,
                uptime,
                crashes,
                delay,
            )
        else:
            log.error("%s; restarting it", what)
        self._restarts[index] = self.reactor.call_later(delay, self._restart, index)

    def _restart(self, index: int) -> None:
        self._restarts.pop(index, None)
        if self._stopping:
            return
        if self._rolling is not None and index in self._rolling:
            if self._rolling[index] in self.workers:
                return
            assert self._roll_target is not None
            config, text, groups = self._roll_target  # it crashed after it was ready
            slots = self._rolling
        elif index >= self.workers_wanted or self.active.get(index) in self.workers:
            return  # the slot was removed, or a roll already replaced it
        else:
            config, text, groups = self.config, self.config_text, self.groups
            slots = self.active
        try:
            slots[index] = self._spawn(index, config, text, groups)
        except OSError as exc:  # out of processes, memory or descriptors
            self._schedule_restart(index, f"cannot start worker {index}: {exc}", 0.0)


def serve(
    config: Config,
    *,
    log_level: str | None = None,
    workers_override: int | None = None,
    early_signals: list[int] | None = None,
) -> int:
    """``reactorkit run`` with workers or under systemd; returns the exit code.

    ``workers > 1`` runs a :class:`Supervisor`; ``workers = 1`` serves in
    this process, with systemd's sockets and notifications. ``early_signals``
    (from :func:`reactorkit.server.catch_early_signals`) are acted on as soon
    as the loop runs; with workers, SIGHUP/SIGTTIN/SIGTTOU are recorded in
    it too from here on, and follow the first roll.

    Raises:
        ConfigErrors, PluginError, BindError: as ``reactorkit run``.
    """
    if config.reactor.workers > 1 and early_signals is not None:
        # From here to the loop (binding logs the ports), SIGHUP's default
        # action would kill the supervisor and SIGTTIN/SIGTTOU's stop it.
        _catch_early_requests(early_signals)
    text = None
    if not config.is_default:
        # Workers get the text validated here, not whatever the file says later.
        text = Config.read_text(config.path)
        config = Config.from_text(text, path=config.path)
        if workers_override is not None:
            config = config.with_workers(workers_override)
    if config.reactor.workers > 1:
        supervisor = Supervisor(
            config, config_text=text, log_level=log_level, workers_override=workers_override
        )
        return supervisor.run(early_signals=early_signals)
    groups = bind_groups(config, _plan(config), {}, systemd.listen_fds(), reuse_port=False)
    try:
        sockets = {name: g.socks for name, g in groups.items()}
        return run_single(config, sockets, early_signals=early_signals)
    finally:
        for group in groups.values():
            group.close()


def _catch_early_requests(caught: list[int]) -> None:
    def record(signum: int, frame: object) -> None:
        caught.append(signum)

    for signum in _REQUESTS:
        signal.signal(signum, record)


def is_needed(config: Config) -> bool:
    """True when ``reactorkit run`` must go through :func:`serve`.

    That is with several workers, or under systemd (inherited sockets, a
    ``NOTIFY_SOCKET``); otherwise the server runs exactly as without workers.
    """
    return (
        config.reactor.workers > 1
        or any(listen.fd_name is not None for listen in config.listeners)
        or "LISTEN_FDS" in os.environ
        or "NOTIFY_SOCKET" in os.environ
    )


def _plan(config: Config) -> list[ListenerPlan]:
    return Server.plan(config, load_plugins(config.reactor.plugins))


def _assignment(
    groups: Mapping[str, SocketGroup], index: int, workers: int
) -> tuple[tuple[str, tuple[int, ...]], ...]:
    return tuple(sorted((name, tuple(g.fds_for(index, workers))) for name, g in groups.items()))
