"""Server: a reactor, the listeners a config plans, and graceful shutdown.

``Server.from_config`` loads plugins, resolves the config and binds every
listener before the loop starts, so a bad config or an address in use fails
before anything serves. ``serve_forever`` runs the reactor with SIGTERM and
SIGINT routed to :meth:`Server.shutdown`:

1. every listener accepts the clients already queued in the kernel (a
   close would reset them), reads what they sent, and closes its socket;
2. ``reactorkit_reactor_stopping`` is called (a plugin that raises is
   logged and skipped: shutdown goes on);
3. each open connection's handler gets ``shutdown_requested()`` (whose
   default is ``connection.close()``: flush, then close), under the
   connection's failure boundary;
4. the reactor keeps running until the last connection is gone or
   ``shutdown_timeout`` passes, when the rest are aborted. Work still running
   on the thread pool is abandoned (its threads are daemons), so the process
   exits by the deadline.

A second signal during the drain aborts everything at once. Plugin code
that blocks the loop thread during the shutdown (a ``reactor_stopping`` hook
that never returns) holds both off, so under :meth:`Server.serve_forever`
a watchdog thread ends the process with exit code 1, naming the code it
was stuck in, :data:`STUCK_MARGIN` seconds after ``shutdown_timeout``.

Workers (see :mod:`reactorkit.supervisor`) build their server with
:meth:`Server.from_sockets` from sockets the supervisor (or systemd) bound,
and retire with :meth:`Server.drain`: stop accepting, let each connection
finish what it started.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import sysconfig
import threading
import traceback
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, final

from reactorkit.config import Config, ListenerPlan, plan_listeners
from reactorkit.connection import Connection
from reactorkit.errors import BindError, ConfigError, ConfigErrors, PluginError
from reactorkit.listener import Listener, bind_socket, format_address
from reactorkit.observe import Observatory
from reactorkit.plugins import Plugins, load_plugins
from reactorkit.reactor import Reactor

__all__ = ["Server", "catch_early_signals"]

log = logging.getLogger("reactorkit.server")

#: Seconds past ``shutdown_timeout`` after which a shutdown that the loop
#: cannot finish (plugin code blocking it) ends the process.
STUCK_MARGIN = 2.0


@final
class Server:
    """Everything ``reactorkit run`` starts, in one object.

    Args:
        reactor: the reactor to run on.
        plugins: the loaded plugins.
        shutdown_timeout: seconds to let connections drain on shutdown.
    """

    def __init__(
        self,
        reactor: Reactor,
        plugins: Plugins,
        *,
        shutdown_timeout: float,
        owns_reactor: bool = False,
    ) -> None:
        self.reactor = reactor
        self.plugins = plugins
        self._owns_reactor = owns_reactor
        self.shutdown_timeout = shutdown_timeout
        self.listeners: list[Listener] = []
        self._shutting_down = False
        self._deadline: Any = None
        self._exit_if_stuck = False
        self._stopped = threading.Event()
        self._asked: set[Connection] = set()
        self._silent_until = 0.0
        #: Metrics and the control socket (reactorkit.observe), when the config asks.
        self.observatory: Observatory | None = None

    @classmethod
    def from_config(
        cls, config: Config, *, plugins: Plugins | None = None, reactor: Reactor | None = None
    ) -> Server:
        """Load plugins, resolve the config and bind every listener.

        Raises:
            ConfigErrors: the config does not resolve against the plugins.
            PluginError: the plugins conflict.
            BindError: an address cannot be bound (already bound ones are closed).
        """
        server, plans = cls._prepare(config, plugins, reactor)
        try:
            if config.reactor.control_socket is not None:
                # First: once "listening" is logged, status answers too.
                server.serve_control(config.reactor.control_socket, source=config.path)
            server.bind(plans, source=config.path)
        except BaseException:
            server.close()
            raise
        return server

    @classmethod
    def _prepare(
        cls, config: Config, plugins: Plugins | None, reactor: Reactor | None
    ) -> tuple[Server, list[ListenerPlan]]:
        # What from_config and from_sockets share: plugins, plans (which run
        # the configure hooks once), and the server that will start them.
        if plugins is None:
            plugins = load_plugins(config.reactor.plugins)
        for error in plugins.load_errors:
            if error.name not in config.reactor.plugins:  # those are plan()'s errors
                log.warning("%s", error)
        plans = cls.plan(config, plugins)
        owns_reactor = reactor is None
        if reactor is None:
            reactor = Reactor(threads=config.reactor.threads)
        server = cls(
            reactor,
            plugins,
            shutdown_timeout=config.reactor.shutdown_timeout,
            owns_reactor=owns_reactor,
        )
        if config.reactor.control_socket is not None or any(
            getattr(plan.options, "metrics", False) for plan in plans
        ):
            server.observatory = Observatory(reactor, lambda: server.listeners)
            server.observatory.start()
        return server, plans

    def serve_control(self, path: str, *, source: str | None = None) -> None:
        """Answer ``reactorkit status`` on the UNIX socket ``path`` (see :mod:`reactorkit.control`).

        Raises:
            BindError: ``path`` cannot be bound (in use, not permitted...).
        """
        if self.observatory is None:
            self.observatory = Observatory(self.reactor, lambda: self.listeners)
            self.observatory.start()
        try:
            self.observatory.serve_control(path)
        except OSError as exc:
            prefix = f"{source}: " if source else ""
            raise BindError(
                exc.errno,
                f"{prefix}reactor.control_socket: cannot listen on {path}: {exc.strerror or exc}",
            ) from None

    @staticmethod
    def plan(config: Config, plugins: Plugins) -> list[ListenerPlan]:
        """Resolve the config's listeners against the plugins, binding nothing.

        This is everything ``run`` checks before binding, so ``check`` calls
        it too: a module in ``[reactor] plugins`` that does not load, the
        plugins' ``reactorkit_configure`` hooks, a listener problem, a plugin
        conflict. The built-in default config skips listeners whose handler
        is not installed; any other config fails on them.

        Raises:
            ConfigErrors: every problem with the config found, plugin modules
                it names first.
            PluginError: the plugins conflict (a name claimed twice), or a
                plugin's ``reactorkit_configure`` or collector hook raised.
        """
        problems = [
            ConfigError(
                path=config.path,
                listener=None,
                field="reactor.plugins",
                expected="must name modules that load",
                got=error.name,
                hint=(
                    f"{type(error.exception).__name__}: {error.exception}; install what "
                    "provides it, or remove it from the list"
                ),
            )
            for error in plugins.load_errors
            if error.name in config.reactor.plugins
        ]
        if not problems:
            plugins.configure(config)
        try:
            plans = plan_listeners(
                config,
                plugins.handler_types(),
                load_errors=plugins.load_errors,
                skip_missing=config.is_default,
            )
        except ConfigErrors as exc:
            problems.extend(exc.errors)
        if problems:
            raise ConfigErrors(problems)
        failures = []
        for plan in plans:
            check = plan.handler_type.check
            if check is None:
                continue
            try:
                check(plan.options, plugins)
            except PluginError as exc:
                failures.append(f"{config.path}: {plan.config.label}: {exc}")
        if failures:
            raise PluginError("\n".join(failures))
        return plans

    def bind(self, plans: Iterable[ListenerPlan], *, source: str | None = None) -> None:
        """Bind and start a listener for each plan.

        Every address is tried, so one error reports each one in use; on any
        failure the sockets already bound are closed and nothing starts.

        Args:
            plans: from :func:`reactorkit.config.plan_listeners`.
            source: the config file, named in errors.

        Raises:
            BindError: one line per address that failed, naming the config
                file, the listener and the address.
        """
        prefix = f"{source}: " if source else ""
        bound: list[tuple[ListenerPlan, socket.socket]] = []
        failures: list[tuple[int | None, str]] = []
        for plan in plans:
            listen = plan.config
            try:
                sock = bind_socket(
                    host=listen.host, port=plan.port, path=listen.path, backlog=listen.backlog
                )
            except OSError as exc:
                where = listen.path if listen.path else f"{listen.host}:{plan.port}"
                failures.append(
                    (
                        exc.errno,
                        f"{prefix}{listen.label}: cannot listen on {where}: {exc.strerror or exc}",
                    )
                )
                continue
            bound.append((plan, sock))
        if failures:
            for _, sock in bound:
                _unbind(sock)
            raise BindError(failures[0][0], "\n".join(message for _, message in failures))
        for index, (plan, sock) in enumerate(bound):
            try:
                self._start_listener(plan, sock)
            except BaseException:
                for _, rest in bound[index:]:
                    _unbind(rest)
                raise

    @classmethod
    def from_sockets(
        cls,
        config: Config,
        sockets: Mapping[str, Sequence[socket.socket]],
        *,
        plugins: Plugins | None = None,
        reactor: Reactor | None = None,
    ) -> Server:
        """Like :meth:`from_config`, but serve sockets bound by someone else.

        Args:
            config: the config; every listener must have sockets.
            sockets: listening sockets by listener name (a supervisor's or
                systemd's); each becomes a :class:`Listener` that does not
                unlink a UNIX socket's path when it closes.

        Raises:
            ConfigErrors, PluginError: as :meth:`from_config`.
            BindError: a listener has no socket.
        """
        server, plans = cls._prepare(config, plugins, reactor)
        try:
            server.adopt(plans, sockets, source=config.path)
        except BaseException:
            server.close()
            raise
        return server

    def adopt(
        self,
        plans: Iterable[ListenerPlan],
        sockets: Mapping[str, Sequence[socket.socket]],
        *,
        source: str | None = None,
    ) -> None:
        """Start a listener on each already listening socket of each plan.

        Raises:
            BindError: a plan has no socket in ``sockets``.
        """
        for plan in plans:
            listen = plan.config
            socks = sockets.get(listen.name)
            if not socks:
                prefix = f"{source}: " if source else ""
                raise BindError(None, f"{prefix}{listen.label}: no listening socket was passed")
            for sock in socks:
                self._start_listener(plan, sock, owns_path=False)

    def _start_listener(
        self, plan: ListenerPlan, sock: socket.socket, *, owns_path: bool = True
    ) -> Listener:
        # One path for bind() and adopt(): every listener option (limits,
        # ACL, PROXY, TLS) reaches bound and inherited sockets alike.
        listen = plan.config
        try:
            listener = Listener(
                self.reactor,
                name=listen.name,
                handler_type=plan.handler_type,
                options=plan.options,
                sock=sock,
                plugins=self.plugins,
                max_connections=listen.max_connections,
                idle_timeout=listen.idle_timeout,
                plugin=plan.provider.source,
                **listen.edge_options(),
            )
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # asyncio.CancelledError too
            if isinstance(exc, PluginError):
                raise PluginError(f"{listen.label}: {exc}") from exc
            raise PluginError(
                f"{listen.label}: handler type {plan.handler_type.name!r} "
                f"({plan.provider.source}) failed to set up: {type(exc).__name__}: {exc}"
            ) from exc
        listener.owns_path = owns_path
        self.listeners.append(listener)
        listener.start()
        log.info(
            "listening: %s handler=%s on %s",
            listener.name,
            plan.handler_type.name,
            format_address(listener.address),
        )
        return listener

    def drain(self, *, silent_grace: float = 1.0) -> None:
        """Stop accepting and let every connection finish what it started.

        Unlike :meth:`shutdown`, a connection that has not sent anything yet
        (just accepted; its request is probably in flight) is not asked to
        finish until it has sent something or ``silent_grace`` seconds pass,
        so a reload never closes a connection whose first request is on its
        way. The others get ``shutdown_requested()`` at once. The reactor
        stops when the last connection is gone; at ``shutdown_timeout`` the
        rest are aborted. A signal during the drain aborts everything.

        The listeners stop accepting but stay open (``is_closed`` is False)
        until the end: the service is not going away, only this process, so
        ``/healthz`` keeps answering 200 to the requests still in hand.
        """
        if self._shutting_down:
            return
        self._shutting_down = True
        for listener in self.listeners:
            # At the next readiness event the listener unregisters its
            # socket without accepting, and never resumes.
            listener.max_connections = 0
        # The deadline counts from now: a slow stopping hook uses it up.
        self._deadline = self.reactor.call_later(self.shutdown_timeout, self._drain_timed_out)
        self._start_watchdog()
        self.plugins.notify("reactorkit_reactor_stopping", reactor=self.reactor)
        self._silent_until = self.reactor.clock() + min(silent_grace, self.shutdown_timeout)
        self._drain_step()

    def _drain_step(self) -> None:
        connections = self.connections
        if not connections:
            if self._deadline is not None:
                self._deadline.cancel()
            log.info("all connections closed; stopping")
            self.reactor.stop()
            return
        quiet_over = self.reactor.clock() >= self._silent_until
        for connection in connections:
            if connection in self._asked or (connection.bytes_received == 0 and not quiet_over):
                continue
            self._asked.add(connection)
            connection.request_shutdown()
        self._asked.intersection_update(connections)
        # Polled, like _check_drained: a drain is rare.
        self.reactor.call_later(0.02, self._drain_step)

    @property
    def is_shutting_down(self) -> bool:
        """True once :meth:`shutdown` began."""
        return self._shutting_down

    @property
    def connections(self) -> list[Connection]:
        """Every open connection, all listeners together."""
        return [c for listener in self.listeners for c in listener.connections]

    def serve_forever(
        self, *, install_signal_handlers: bool = True, early_signals: list[int] | None = None
    ) -> None:
        """Run until shut down; SIGTERM/SIGINT start a graceful shutdown.

        Args:
            install_signal_handlers: route SIGTERM and SIGINT to :meth:`shutdown`.
            early_signals: the list :func:`catch_early_signals` fills: signals
                that arrived while the server was still binding are acted on
                as soon as the loop runs.
        """
        if install_signal_handlers:
            self.reactor.add_signal_handler(signal.SIGTERM, self._signal_received)
            self.reactor.add_signal_handler(signal.SIGINT, self._signal_received)
            # Without a supervisor there is nothing to reload into; SIGHUP's
            # default action would kill the process with no drain at all.
            self.reactor.add_signal_handler(signal.SIGHUP, self._hangup)
        if early_signals is not None:
            # On the first pass, when the reactor's own handlers are in place:
            # nothing that arrived before can be missed.
            self.reactor.call_soon(self._replay_signals, early_signals)
        # Only the process's own server may end the process (not one a test
        # or an embedding program runs in a thread).
        self._exit_if_stuck = install_signal_handlers
        self.plugins.notify("reactorkit_reactor_started", reactor=self.reactor)
        try:
            self.reactor.run(install_signal_handlers=install_signal_handlers)
        finally:
            self._stopped.set()
            self.close()

    def _start_watchdog(self) -> None:
        if not self._exit_if_stuck:
            return
        loop_thread = threading.get_ident()
        limit = self.shutdown_timeout + STUCK_MARGIN

        def watch() -> None:
            if self._stopped.wait(limit):
                return
            frame = sys._current_frames().get(loop_thread)
            where = "an unknown place"
            if frame is not None:
                # The innermost frame outside the standard library: the
                # plugin's own line, not threading.py's wait().
                stack = traceback.extract_stack(frame)
                stdlib = sysconfig.get_paths()["stdlib"]
                own = [f for f in stack if not f.filename.startswith(stdlib)]
                last = (own or stack)[-1]
                where = f"{last.name}() at {last.filename}:{last.lineno}"
            log.critical(
                "shutdown still running %.1fs after it began: the loop is blocked in %s "
                "(plugin code must not block the loop); exiting now",
                limit,
                where,
            )
            logging.shutdown()
            os._exit(1)

        threading.Thread(target=watch, name="reactorkit-shutdown-watchdog", daemon=True).start()

    def _hangup(self, signum: int) -> None:
        log.warning(
            "SIGHUP: this process has no supervisor to reload into (workers = 1); "
            "still serving the old config: restart it, or run with workers >= 2 to reload"
        )

    def _replay_signals(self, signals: list[int]) -> None:
        for signum in signals:
            if signum == signal.SIGHUP:
                self._hangup(signum)
            else:
                self._signal_received(signum)
        signals.clear()

    def _signal_received(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self._shutting_down:
            log.warning("%s again: aborting %d connections now", name, len(self.connections))
            self._abort_all()
            return
        log.info("%s received: shutting down gracefully (up to %.1fs)", name, self.shutdown_timeout)
        self.shutdown()

    def shutdown(self) -> None:
        """Stop accepting, ask handlers to finish, drain, then stop the reactor."""
        if self._shutting_down:
            return
        self._shutting_down = True
        for listener in self.listeners:
            listener.close(drain_backlog=True)
        # The deadline counts from now: a slow stopping hook uses it up.
        self._deadline = self.reactor.call_later(self.shutdown_timeout, self._drain_timed_out)
        self._start_watchdog()
        self.plugins.notify("reactorkit_reactor_stopping", reactor=self.reactor)
        for connection in self.connections:
            connection.request_shutdown()
        self._check_drained()

    def _check_drained(self) -> None:
        if not self.connections:
            if self._deadline is not None:
                self._deadline.cancel()
            log.info("all connections closed; stopping")
            self.reactor.stop()
        else:
            # Polled, not per-connection bookkeeping: shutdown is rare.
            self.reactor.call_later(0.02, self._check_drained)

    def _drain_timed_out(self) -> None:
        remaining = self.connections
        if remaining:
            log.warning("shutdown timeout: aborting %d connections still open", len(remaining))
        self._abort_all()

    def _abort_all(self) -> None:
        for connection in self.connections:
            connection.abort()
        self.reactor.call_soon(self.reactor.stop)

    def close(self) -> None:
        """Close every listener and connection; release the reactor if the server made it.

        A reactor passed to :meth:`from_config` stays open: it is the caller's.
        """
        if self.observatory is not None:
            self.observatory.close()  # the control socket's file goes too
        for listener in self.listeners:
            listener.close()
            for connection in list(listener.connections):
                connection.abort()
        if not self.reactor.is_running:
            # Deliver the connection_lost callbacks the aborts queued.
            self.reactor.call_soon(self.reactor.stop)
            self.reactor.run()
            if self._owns_reactor:
                self.reactor.close()


def catch_early_signals() -> list[int]:
    """Record SIGTERM/SIGINT/SIGHUP from now until :meth:`Server.serve_forever` runs.

    Between binding (when the "listening" lines are logged, and a supervisor
    may already signal) and the loop installing its handlers, the default
    action would kill the process without a graceful shutdown. Call this
    first thing, then pass the list to ``serve_forever(early_signals=...)``.
    Main thread only.
    """
    caught: list[int] = []

    def record(signum: int, frame: object) -> None:
        caught.append(signum)

    signal.signal(signal.SIGTERM, record)
    signal.signal(signal.SIGINT, record)
    signal.signal(signal.SIGHUP, record)  # its default action would kill us too
    return caught


def _unbind(sock: socket.socket) -> None:
    # Undo bind_socket() for a listener that will not start: a UNIX socket
    # leaves its file behind, which the next start would have to probe.
    if sock.family == socket.AF_UNIX:
        path = sock.getsockname()
        if isinstance(path, str) and path:
            with contextlib.suppress(OSError):
                os.unlink(path)
    sock.close()
