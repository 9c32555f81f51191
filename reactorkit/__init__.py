"""reactorkit: plugin-driven network servers on the Reactor pattern.

The public API: everything a handler or plugin needs is importable from here.
Handlers (built-in ones included) import nothing else from the package.
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from reactorkit.chatbus import BusListener
from reactorkit.chatbus import ChatBus
from reactorkit.chatbus import ChatEvent
from reactorkit.chatbus import LocalBus
from reactorkit.chatbus import LocalHub
from reactorkit.chatbus import RedisBus
from reactorkit.chatbus import running_buses
from reactorkit.commands import CommandContext
from reactorkit.commands import LineCommand
from reactorkit.commands import split_args
from reactorkit.config import Config
from reactorkit.connection import Connection
from reactorkit.connection import format_peer
from reactorkit.errors import BindError
from reactorkit.errors import CommandError
from reactorkit.errors import ConfigError
from reactorkit.errors import ConfigErrors
from reactorkit.errors import ConnectError
from reactorkit.errors import HttpError
from reactorkit.errors import HttpProtocolError
from reactorkit.errors import PluginError
from reactorkit.errors import PluginLoadError
from reactorkit.errors import ReactorkitError
from reactorkit.handler import DEFAULT_MAX_LINE
from reactorkit.handler import Handler
from reactorkit.handler import HandlerType
from reactorkit.handler import LineHandler
from reactorkit.handler import NoOptions
from reactorkit.hookspecs import hookimpl
from reactorkit.hookspecs import hookspec
from reactorkit.listener import Listener
from reactorkit.observe import RequestStats
from reactorkit.observe import access_fields
from reactorkit.observe import connection_fields
from reactorkit.observe import limit_closed
from reactorkit.observe import request_stats
from reactorkit.plugins import Contribution
from reactorkit.plugins import Plugins
from reactorkit.plugins import load_plugins
from reactorkit.ratelimit import TokenBucket
from reactorkit.reactor import Future
from reactorkit.reactor import Reactor
from reactorkit.reactor import TimerHandle
from reactorkit.server import Server
from reactorkit.transport import Transport
from reactorkit.web import Headers
from reactorkit.web import Request
from reactorkit.web import Response
from reactorkit.web import Route
from reactorkit.web import as_response
from reactorkit.web import json_response

try:
    __version__ = _version("reactorkit")
except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
    __version__ = "0+unknown"

__all__ = [
    "DEFAULT_MAX_LINE",
    "BindError",
    "BusListener",
    "ChatBus",
    "ChatEvent",
    "CommandContext",
    "CommandError",
    "Config",
    "ConfigError",
    "ConfigErrors",
    "ConnectError",
    "Connection",
    "Contribution",
    "Future",
    "Handler",
    "HandlerType",
    "Headers",
    "HttpError",
    "HttpProtocolError",
    "LineCommand",
    "LineHandler",
    "Listener",
    "LocalBus",
    "LocalHub",
    "NoOptions",
    "PluginError",
    "PluginLoadError",
    "Plugins",
    "Reactor",
    "ReactorkitError",
    "RedisBus",
    "Request",
    "RequestStats",
    "Response",
    "Route",
    "Server",
    "TimerHandle",
    "TokenBucket",
    "Transport",
    "__version__",
    "access_fields",
    "as_response",
    "connection_fields",
    "format_peer",
    "hookimpl",
    "hookspec",
    "json_response",
    "limit_closed",
    "load_plugins",
    "request_stats",
    "running_buses",
    "split_args",
]
