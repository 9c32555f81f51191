"""The plugin contract: every hook reactorkit calls, with its reference.

A plugin is a module (or any object) with functions decorated by
``reactorkit.hookimpl`` whose names match the specs below. Plugins are found
through the ``reactorkit`` entry point group and the config's ``plugins``
list. Hook functions may accept any subset of the arguments named here.

Hooks are never called on the readiness path: collectors run once at
startup, lifecycle hooks once per server, observation hooks once per
connection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from reactorkit.commands import LineCommand
    from reactorkit.config import Config
    from reactorkit.connection import Connection
    from reactorkit.handler import HandlerType
    from reactorkit.listener import Listener
    from reactorkit.reactor import Reactor
    from reactorkit.web import Route

__all__ = ["PROJECT_NAME", "hookimpl", "hookspec"]

PROJECT_NAME = "reactorkit"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# -- collectors: called once at startup --------------------------------------


@hookspec
def reactorkit_handler_types() -> list[HandlerType]:
    """Return the handler types this plugin provides.

    Each name must be unique across every installed plugin; two plugins
    claiming one name is a startup error that names both distributions.

    Returns:
        A list of :class:`reactorkit.HandlerType`.
    """
    raise NotImplementedError


@hookspec
def reactorkit_line_commands() -> list[LineCommand]:
    """Return commands for the line-command handler.

    Command names are case-insensitive and unique across plugins; a name
    defined twice is a startup error naming both plugins.

    Returns:
        A list of :class:`reactorkit.LineCommand`.
    """
    raise NotImplementedError


@hookspec
def reactorkit_http_routes() -> list[Route]:
    """Return routes for the HTTP-lite handler.

    Two plugins routing the same method and path pattern is a startup error
    naming both.

    Returns:
        A list of :class:`reactorkit.Route`.
    """
    raise NotImplementedError


# -- lifecycle: called once per server ------------------------------------


@hookspec
def reactorkit_configure(config: Config) -> None:
    """Called once the config is loaded and validated, before anything binds.

    Args:
        config: the validated :class:`reactorkit.Config`.
    """


@hookspec
def reactorkit_reactor_started(reactor: Reactor) -> None:
    """Called once every listener is bound, just before the loop starts.

    Args:
        reactor: the :class:`reactorkit.Reactor` about to run; schedule timers
            or start background work on it here.
    """


@hookspec
def reactorkit_reactor_stopping(reactor: Reactor) -> None:
    """Called when a graceful shutdown begins, after listeners stop accepting.

    Args:
        reactor: the :class:`reactorkit.Reactor`; it keeps running while
            connections drain, up to the shutdown timeout.
    """


# -- observation: once per connection, never per message -------------------


@hookspec
def reactorkit_connection_made(listener: Listener, connection: Connection) -> None:
    """Called for every accepted connection, before its handler's ``connection_made``.

    Args:
        listener: the :class:`reactorkit.Listener` that accepted it.
        connection: the new :class:`reactorkit.Connection`.
    """


@hookspec
def reactorkit_connection_lost(
    listener: Listener, connection: Connection, reason: BaseException | None
) -> None:
    """Called for every connection after it closed and its handler was told.

    Args:
        listener: the :class:`reactorkit.Listener` that accepted it.
        connection: the closed :class:`reactorkit.Connection` (counters final).
        reason: the socket error that ended it, or None for a clean close.
    """
