"""A real server in a background thread, on ephemeral ports, for tests."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from reactorkit.config import Config
from reactorkit.handler import HandlerType
from reactorkit.hookspecs import hookimpl
from reactorkit.listener import Listener
from reactorkit.plugins import load_plugins
from reactorkit.reactor import Reactor
from reactorkit.server import Server

__all__ = ["RunningServer", "serve"]

T = TypeVar("T")


class RunningServer:
    """What :func:`serve` yields: the server, its thread and its addresses."""

    def __init__(self, server: Server, thread: threading.Thread) -> None:
        self.server = server
        self.reactor = server.reactor
        self.thread = thread

    @property
    def listeners(self) -> dict[str, Listener]:
        """Listeners by name."""
        return {listener.name: listener for listener in self.server.listeners}

    def address(self, name: str | None = None) -> Any:
        """The bound address of listener ``name`` (default: the first one).

        ``(host, port)`` for TCP (IPv6 addresses as 4-tuples), a path for UNIX.
        """
        if name is None:
            return self.server.listeners[0].address
        return self.listeners[name].address

    @property
    def port(self) -> int:
        """The first listener's port."""
        return int(self.address()[1])

    def call(self, fn: Callable[..., T], *args: Any, timeout: float = 5.0) -> T:
        """Run ``fn(*args)`` on the reactor thread and return its result."""
        done = threading.Event()
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["result"] = fn(*args)
            except BaseException as exc:
                box["error"] = exc
            done.set()

        self.reactor.call_soon_threadsafe(run)
        if not done.wait(timeout):
            raise TimeoutError(f"the reactor did not run {fn!r} within {timeout}s")
        if "error" in box:
            raise box["error"]
        return box["result"]  # type: ignore[no-any-return]

    def stop(self, timeout: float = 10.0) -> None:
        """Shut down gracefully and wait for the thread."""
        if self.thread.is_alive():
            self.reactor.call_soon_threadsafe(self.server.shutdown)
            self.thread.join(timeout)
            if self.thread.is_alive():
                raise TimeoutError(f"the server did not stop within {timeout}s")


class _HandlerTypePlugin:
    def __init__(self, handler_type: HandlerType) -> None:
        self.handler_type = handler_type

    @hookimpl
    def reactorkit_handler_types(self) -> list[HandlerType]:
        return [self.handler_type]


@contextlib.contextmanager
def serve(
    config: Config | Mapping[str, Any] | str | None = None,
    *,
    handler: str | HandlerType | None = None,
    options: Mapping[str, Any] | None = None,
    plugins: Sequence[object] = (),
    entry_points: bool = True,
    shutdown_timeout: float = 5.0,
    **listen: Any,
) -> Iterator[RunningServer]:
    """Run a real server in a background thread; stop it on exit.

    Give either a whole ``config`` (a :class:`Config`, a dict shaped like the
    TOML file, or a path to one) or one ``handler`` (a handler type name, or
    a :class:`HandlerType` object that is registered for this server only)
    with its ``options`` and any other ``[[listen]]`` fields as keywords
    (``host``, ``port``, ``path``, ``max_connections``, ``idle_timeout``...).
    Ports default to 0, so the kernel picks free ones.

    Args:
        plugins: extra plugin objects to register (modules or instances with
            ``@reactorkit.hookimpl`` methods).
        entry_points: also load the installed ``reactorkit`` entry points.

    Yields:
        A :class:`RunningServer`; ``.address()`` gives the bound address.
    """
    extra: list[object] = list(plugins)
    if config is None:
        if handler is None:
            raise TypeError("serve() needs a config or a handler")
        if isinstance(handler, HandlerType):
            extra.append(_HandlerTypePlugin(handler))
            handler_name = handler.name
        else:
            handler_name = handler
        table: dict[str, Any] = {"handler": handler_name, "port": 0, **listen}
        if "path" in table:
            table.pop("port")
        if options:
            table["options"] = dict(options)
        config = {"reactor": {"shutdown_timeout": shutdown_timeout}, "listen": [table]}
    if isinstance(config, str):
        config = Config.from_toml(config)
    elif not isinstance(config, Config):
        config = Config.from_dict(config, path="<test config>")
    loaded = load_plugins(config.reactor.plugins, entry_points=entry_points)
    for index, plugin in enumerate(extra):
        loaded.pm.register(plugin, name=f"test-plugin-{index}")
    reactor = Reactor(threads=config.reactor.threads)
    try:
        server = Server.from_config(config, plugins=loaded, reactor=reactor)
    except BaseException:
        reactor.close()
        raise
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"install_signal_handlers": False},
        name="reactorkit-test-server",
        daemon=True,
    )
    thread.start()
    running = RunningServer(server, thread)
    try:
        yield running
    finally:
        running.stop()
        reactor.close()  # ours: the server leaves a reactor it was given open
