"""The config model: TOML in, validated attrs objects out, precise errors.

Loading happens in two steps. :meth:`Config.from_toml` checks the shape of
the file (the ``[reactor]`` table and each ``[[listen]]`` entry) without
knowing any plugin. :func:`plan_listeners` then resolves each listener's
handler type and builds its options object from ``[listen.options]``, and
checks what binding a UNIX socket path needs from the filesystem (an
existing, writable directory), so ``check`` finds what ``run`` would. Both
collect every problem before raising :class:`ConfigErrors`, so
``reactorkit check`` can list them all at once.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import stat
import tomllib
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from reactorkit.access import parse_networks
from reactorkit.edge import DEFAULT_PROXY_TIMEOUT
from reactorkit.errors import ConfigError, ConfigErrors
from reactorkit.listener import DEFAULT_BACKLOG, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS
from reactorkit.logfmt import LOG_FORMATS
from reactorkit.options import Problems, build_options, did_you_mean, is_int, is_number
from reactorkit.plugins import Contribution
from reactorkit.reactor import DEFAULT_THREADS
from reactorkit.tls import (
    CLIENT_AUTH,
    TLS_VERSIONS,
    TLSConfig,
    check_tls_files,
)

__all__ = [
    "DEFAULT_CONFIG_NAME",
    "DEFAULT_CONFIG_TOML",
    "DEFAULT_HOST",
    "DEFAULT_SHUTDOWN_TIMEOUT",
    "LOG_LEVELS",
    "MAX_WORKERS",
    "Config",
    "ListenConfig",
    "ListenerPlan",
    "ReactorConfig",
    "build_options",
    "cpu_count",
    "plan_listeners",
]

log = logging.getLogger("reactorkit.config")

LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_SHUTDOWN_TIMEOUT = 10.0
DEFAULT_HOST = "127.0.0.1"
DEFAULT_CONFIG_NAME = "<default config>"

#: What ``reactorkit run`` serves when given no file.
DEFAULT_CONFIG_TOML = """\
[reactor]
log_level = "info"
shutdown_timeout = 10.0

[[listen]]
handler = "echo"
host = "127.0.0.1"
port = 7007

[[listen]]
handler = "chat"
host = "127.0.0.1"
port = 7070

[[listen]]
handler = "line-command"
host = "127.0.0.1"
port = 7071

[[listen]]
handler = "http-lite"
host = "127.0.0.1"
port = 8080
"""

_REACTOR_KEYS = (
    "log_level",
    "shutdown_timeout",
    "threads",
    "plugins",
    "workers",
    "log_format",
    "control_socket",
)
MAX_WORKERS = 1024
_LISTEN_KEYS = (
    "name",
    "handler",
    "host",
    "port",
    "path",
    "fd_name",
    "backlog",
    "max_connections",
    "idle_timeout",
    "options",
    "allow",
    "deny",
    "proxy_protocol",
    "proxy_from",
    "proxy_timeout",
    "tls",
)
_TLS_KEYS = ("cert", "key", "ca", "client_auth", "min_version", "alpn", "handshake_timeout")
_PROXY_MODES = ("v1", "v2", "any")


@attrs.frozen(kw_only=True)
class ReactorConfig:
    """The ``[reactor]`` table."""

    log_level: str = "info"
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
    threads: int = DEFAULT_THREADS
    plugins: tuple[str, ...] = ()
    #: Worker processes; 1 = today's single process, no supervisor.
    workers: int = 1
    #: ``text`` or ``json`` (reactorkit.logfmt).
    log_format: str = "text"
    #: A UNIX socket path for ``reactorkit status``; None = off (reactorkit.control).
    control_socket: str | None = None


@attrs.frozen(kw_only=True)
class ListenConfig:
    """One ``[[listen]]`` entry, shape-checked but not yet resolved.

    ``port`` is None when the entry gave none (the handler type's default
    port is used) or when ``path`` names a UNIX socket. ``fd_name`` names a
    socket inherited from systemd (``LISTEN_FDNAMES``) instead of an address.
    """

    index: int
    name: str
    handler: str
    host: str = DEFAULT_HOST
    port: int | None = None
    path: str | None = None
    fd_name: str | None = None
    backlog: int = DEFAULT_BACKLOG
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    options: Mapping[str, Any] = attrs.field(factory=dict, eq=False, hash=False)
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    proxy_protocol: str | None = None
    proxy_from: tuple[str, ...] = ()
    proxy_timeout: float = DEFAULT_PROXY_TIMEOUT
    tls: TLSConfig | None = None

    @property
    def label(self) -> str:
        """``listen[0] 'echo'``: how messages name this entry."""
        return f"listen[{self.index}] {self.name!r}"

    def edge_options(self) -> dict[str, Any]:
        """The :class:`~reactorkit.Listener` keywords for ACL, PROXY and TLS."""
        return {
            "allow": self.allow,
            "deny": self.deny,
            "proxy_protocol": self.proxy_protocol,
            "proxy_from": self.proxy_from,
            "proxy_timeout": self.proxy_timeout,
            "tls": self.tls,
        }


@attrs.frozen(kw_only=True)
class Config:
    """A whole config file: ``[reactor]`` plus the ``[[listen]]`` entries."""

    path: str
    reactor: ReactorConfig
    listeners: tuple[ListenConfig, ...]
    is_default: bool = False

    @classmethod
    def from_toml(cls, path: str) -> Config:
        """Read and shape-check a TOML file.

        Raises:
            ConfigErrors: every problem found, each naming file, listener, field.
        """
        return cls.from_dict(cls._read(path), path=path)

    @classmethod
    def check_toml(cls, path: str | None) -> tuple[Config | None, list[ConfigError]]:
        """Read a TOML file (None: the default config) and keep going past problems.

        Returns:
            The config made of the entries that are well-formed (None when the
            file cannot be read at all), and every problem found. ``reactorkit
            check`` resolves the well-formed listeners too, to report all at once.
        """
        if path is None:
            return cls.default(), []
        try:
            data = cls._read(path)
        except ConfigErrors as exc:
            return None, exc.errors
        problems = Problems(path)
        config = cls._from_dict(data, path, problems)
        return config, problems.errors

    @classmethod
    def from_text(cls, text: str, *, path: str) -> Config:
        """Parse and shape-check TOML text read from ``path`` earlier.

        A supervisor hands its workers the text it validated, so a worker
        restarted later serves that config even if the file changed since.

        Raises:
            ConfigErrors: the text is not TOML, or every shape problem found.
        """
        return cls.from_dict(_parse(text, path), path=path)

    @staticmethod
    def read_text(path: str) -> str:
        """The config file's text.

        Raises:
            ConfigErrors: the file is missing or cannot be read.
        """
        try:
            with open(path, "rb") as f:
                return f.read().decode("utf-8")
        except FileNotFoundError:
            raise _file_error(path, "file not found") from None
        except OSError as exc:
            raise _file_error(path, f"cannot be read: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise _file_error(path, f"is not valid TOML: not UTF-8 ({exc})") from None

    @classmethod
    def _read(cls, path: str) -> dict[str, Any]:
        return _parse(cls.read_text(path), path)

    @classmethod
    def default(cls) -> Config:
        """The built-in config ``reactorkit run`` serves with no file."""
        config = cls.from_dict(tomllib.loads(DEFAULT_CONFIG_TOML), path=DEFAULT_CONFIG_NAME)
        return attrs.evolve(config, is_default=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, path: str) -> Config:
        """Shape-check an already parsed TOML document.

        Raises:
            ConfigErrors: every problem found.
        """
        problems = Problems(path)
        config = cls._from_dict(data, path, problems)
        problems.raise_if_any()
        return config

    def with_workers(self, workers: int) -> Config:
        """This config with ``[reactor] workers`` overridden (``--workers``).

        Raises:
            ConfigErrors: a listener cannot run with that many workers.
        """
        problems = Problems(self.path)
        _check_workers(self.listeners, workers, problems, field="--workers")
        problems.raise_if_any()
        return attrs.evolve(self, reactor=attrs.evolve(self.reactor, workers=workers))

    @classmethod
    def _from_dict(cls, data: Mapping[str, Any], path: str, problems: Problems) -> Config:
        for key in data:
            if key not in ("reactor", "listen"):
                problems.unknown(None, key, ("reactor", "listen"), what="top-level table")
        reactor = _reactor_config(data.get("reactor", {}), problems)
        raw_listeners = data.get("listen", [])
        listeners: list[ListenConfig] = []
        if not isinstance(raw_listeners, list):
            problems.add(None, "listen", "must be an array of tables ([[listen]])", raw_listeners)
        else:
            if not raw_listeners:
                problems.add(
                    None, "listen", "needs at least one [[listen]] entry", None, show_got=False
                )
            for index, table in enumerate(raw_listeners):
                listener = _listen_config(index, table, problems)
                if listener is not None:
                    listeners.append(listener)
        _check_duplicates(listeners, problems)
        _check_workers(listeners, reactor.workers, problems, field="reactor.workers")
        return cls(path=path, reactor=reactor, listeners=tuple(listeners))


@attrs.frozen(kw_only=True)
class ListenerPlan:
    """A listener resolved against the installed plugins, ready to bind."""

    config: ListenConfig
    handler_type: Any  # reactorkit.HandlerType
    provider: Contribution
    options: Any

    @property
    def port(self) -> int | None:
        """The configured port, else the handler type's default port."""
        if self.config.path is not None or self.config.fd_name is not None:
            return None
        if self.config.port is not None:
            return self.config.port
        return self.handler_type.default_port  # type: ignore[no-any-return]


def plan_listeners(
    config: Config,
    handler_types: Mapping[str, Contribution],
    *,
    load_errors: Sequence[Exception] = (),
    skip_missing: bool = False,
) -> list[ListenerPlan]:
    """Resolve each listener's handler type and options.

    Args:
        config: a shape-checked config.
        handler_types: from :meth:`reactorkit.plugins.Plugins.handler_types`.
        load_errors: plugin load failures, quoted when a handler is missing.
        skip_missing: warn about and skip listeners whose handler is not
            installed (the default config does this) instead of failing.

    Raises:
        ConfigErrors: every listener problem found.
    """
    problems = Problems(config.path)
    plans: list[ListenerPlan] = []
    for listen in config.listeners:
        provider = handler_types.get(listen.handler)
        if provider is None:
            if skip_missing:
                log.warning(
                    "%s: handler %r is not installed; skipping it", listen.label, listen.handler
                )
                continue
            known = sorted(handler_types)
            hint = did_you_mean(listen.handler, known)
            if load_errors:
                hint = "; ".join(([hint] if hint else []) + [f"note: {e}" for e in load_errors])
            problems.add(
                listen.label,
                "handler",
                f"must name an installed handler type ({', '.join(known) or 'none installed'})",
                listen.handler,
                hint=hint,
            )
            continue
        handler_type = provider.item
        options = build_options(handler_type.options, listen.options, problems, listen.label)
        if (
            listen.path is None
            and listen.fd_name is None
            and listen.port is None
            and handler_type.default_port is None
        ):
            problems.add(
                listen.label,
                "port",
                f"is required (handler type {handler_type.name!r} has no default port)",
                None,
                show_got=False,
            )
            continue
        unix_problem = _unix_path_problem(listen.path) if listen.path is not None else None
        if unix_problem is not None:
            problems.add(listen.label, "path", unix_problem, listen.path)
        elif listen.tls is not None and not _tls_files_ok(listen, problems):
            continue
        elif options is not None:
            plans.append(
                ListenerPlan(
                    config=listen, handler_type=handler_type, provider=provider, options=options
                )
            )
    problems.raise_if_any()
    return plans


# -- internals -------------------------------------------------------------

#: sun_path holds 108 bytes on Linux, the last one a NUL.
_MAX_UNIX_PATH = 107


def _unix_path_problem(path: str) -> str | None:
    """What would make binding a UNIX socket at ``path`` fail, or None."""
    if len(os.fsencode(path)) > _MAX_UNIX_PATH:
        return f"must be at most {_MAX_UNIX_PATH} bytes long (the limit of a UNIX socket path)"
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        return f"must be in an existing directory: {parent!r} does not exist (create it first)"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"must be in a directory this user can write: {parent!r} is not writable"
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return None
    if not stat.S_ISSOCK(mode):
        return "must not name an existing file that is not a socket"
    return None


def _file_error(path: str, expected: str) -> ConfigErrors:
    """An error about the whole file (missing, unreadable, not TOML): no listener, no field."""
    return ConfigErrors(
        [ConfigError(path=path, listener=None, field=None, expected=expected, show_got=False)]
    )


def _parse(text: str, path: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _file_error(path, f"is not valid TOML: {exc}") from None


def _reactor_config(table: Any, problems: Problems) -> ReactorConfig:
    if not isinstance(table, dict):
        problems.add(None, "reactor", "must be a table", table)
        return ReactorConfig()
    values: dict[str, Any] = {}
    for key, value in table.items():
        field = f"reactor.{key}"
        if key not in _REACTOR_KEYS:
            problems.unknown(None, field, _REACTOR_KEYS, what="[reactor] key")
        elif key == "log_level":
            if value not in LOG_LEVELS:
                problems.add(
                    None,
                    field,
                    f"must be one of {', '.join(LOG_LEVELS)}",
                    value,
                    hint=did_you_mean(str(value), LOG_LEVELS),
                )
            else:
                values[key] = value
        elif key == "log_format":
            if value in LOG_FORMATS:
                values[key] = value
            else:
                problems.add(None, field, f"must be one of {', '.join(LOG_FORMATS)}", value)
        elif key == "control_socket":
            problem = (
                _unix_path_problem(value)
                if isinstance(value, str) and value
                else "must be a filesystem path (string)"
            )
            if problem is None:
                values[key] = value
            else:
                problems.add(None, field, problem, value)
        elif key == "shutdown_timeout":
            if is_number(value) and value >= 0:
                values[key] = float(value)
            else:
                problems.add(None, field, "must be a number of seconds >= 0", value)
        elif key == "threads":
            if is_int(value) and 1 <= value <= 1024:
                values[key] = value
            else:
                problems.add(None, field, "must be an integer 1-1024", value)
        elif key == "workers":
            if value == "auto":
                values[key] = cpu_count()
            elif is_int(value) and 1 <= value <= MAX_WORKERS:
                values[key] = value
            else:
                problems.add(
                    None, field, f'must be an integer 1-{MAX_WORKERS} or "auto" (CPU count)', value
                )
        elif key == "plugins":
            if isinstance(value, list) and all(isinstance(v, str) and v for v in value):
                values[key] = tuple(value)
            else:
                problems.add(None, field, "must be a list of module names (strings)", value)
    return ReactorConfig(**values)


def _listen_config(index: int, table: Any, problems: Problems) -> ListenConfig | None:
    if not isinstance(table, dict):
        problems.add(f"listen[{index}]", None, "must be a table", table)
        return None
    handler = table.get("handler")
    name = table.get("name", handler)
    label = f"listen[{index}] {name!r}" if isinstance(name, str) else f"listen[{index}]"
    count = len(problems.errors)
    for key in table:
        if key not in _LISTEN_KEYS:
            problems.unknown(label, key, _LISTEN_KEYS, what="listener key")
    if not isinstance(handler, str) or not handler:
        problems.add(
            label,
            "handler",
            "is required: the name of a handler type (e.g. 'echo')",
            handler,
            show_got=handler is not None,
        )
    if "name" in table and (not isinstance(table["name"], str) or not table["name"]):
        problems.add(label, "name", "must be a non-empty string", table["name"])
    values: dict[str, Any] = {}
    host, port, path = table.get("host"), table.get("port"), table.get("path")
    fd_name = table.get("fd_name")
    if fd_name is not None:
        if not isinstance(fd_name, str) or not fd_name or ":" in fd_name:
            problems.add(
                label,
                "fd_name",
                "must be the name of a socket systemd passes (FileDescriptorName=, no ':')",
                fd_name,
            )
        elif "host" in table or "port" in table or "path" in table:
            problems.add(
                label,
                "fd_name",
                "cannot be combined with host/port/path: the inherited socket is already bound",
                fd_name,
            )
        else:
            values["fd_name"] = fd_name
    if path is not None:
        if not isinstance(path, str) or not path:
            problems.add(label, "path", "must be a filesystem path (string)", path)
        elif "host" in table or "port" in table:
            problems.add(
                label,
                "path",
                "cannot be combined with host/port: choose a UNIX socket or TCP",
                path,
            )
        else:
            values["path"] = path
    if host is not None:
        if not isinstance(host, str) or not _is_host(host):
            problems.add(
                label,
                "host",
                "must be an IP address (e.g. '127.0.0.1', '::1') or 'localhost'",
                host,
            )
        else:
            values["host"] = host
    if port is not None:
        if is_int(port) and 0 <= port <= 65535:
            values["port"] = port
        else:
            problems.add(label, "port", "must be an integer 0-65535 (0 picks a free port)", port)
    for key, low in (("backlog", 1), ("max_connections", 1)):
        if key in table:
            if is_int(table[key]) and table[key] >= low:
                values[key] = table[key]
            else:
                problems.add(label, key, f"must be an integer >= {low}", table[key])
    if "idle_timeout" in table:
        value = table["idle_timeout"]
        if is_number(value) and value >= 0:
            values["idle_timeout"] = float(value)
        else:
            problems.add(
                label, "idle_timeout", "must be a number of seconds >= 0 (0 = never)", value
            )
    values.update(_edge_values(label, table, problems))
    options = table.get("options", {})
    if not isinstance(options, dict):
        problems.add(label, "options", "must be a table ([listen.options])", options)
        options = {}
    if len(problems.errors) > count or not isinstance(handler, str):
        return None
    return ListenConfig(
        index=index,
        name=name if isinstance(name, str) else handler,
        handler=handler,
        options=options,
        **values,
    )


def _edge_values(label: str, table: Mapping[str, Any], problems: Problems) -> dict[str, Any]:
    """Validate allow/deny, the PROXY keys and ``[listen.tls]``."""
    values: dict[str, Any] = {}
    for key in ("allow", "deny", "proxy_from"):
        if key not in table:
            continue
        value = table[key]
        if not isinstance(value, list):
            problems.add(label, key, "must be a list of CIDRs (e.g. ['10.0.0.0/8', '::1'])", value)
            continue
        try:
            parse_networks(value)
        except ValueError as exc:
            problems.add(label, key, f"must be a list of CIDRs: {exc}", value)
            continue
        values[key] = tuple(value)
    if "proxy_protocol" in table:
        mode = table["proxy_protocol"]
        if mode not in _PROXY_MODES:
            problems.add(label, "proxy_protocol", "must be 'v1', 'v2' or 'any'", mode)
        elif not table.get("proxy_from"):
            problems.add(
                label,
                "proxy_from",
                "is required with proxy_protocol: the addresses of the trusted proxies",
                None,
                hint="e.g. proxy_from = ['127.0.0.1/32'] for a local HAProxy",
                show_got=False,
            )
        else:
            values["proxy_protocol"] = mode
    elif "proxy_from" in table:
        problems.add(
            label, "proxy_from", "only makes sense with proxy_protocol", table["proxy_from"]
        )
    if "proxy_timeout" in table:
        value = table["proxy_timeout"]
        if is_number(value) and value > 0:
            values["proxy_timeout"] = float(value)
        else:
            problems.add(label, "proxy_timeout", "must be a number of seconds > 0", value)
    if "tls" in table:
        tls = _tls_config(label, table["tls"], problems)
        if tls is not None:
            values["tls"] = tls
    return values


def _tls_config(label: str, table: Any, problems: Problems) -> TLSConfig | None:
    if not isinstance(table, dict):
        problems.add(label, "tls", "must be a table ([listen.tls])", table)
        return None
    count = len(problems.errors)
    for key in table:
        if key not in _TLS_KEYS:
            problems.unknown(label, f"tls.{key}", _TLS_KEYS, what="[listen.tls] key")
    values: dict[str, Any] = {}
    if not isinstance(table.get("cert"), str) or not table["cert"]:
        problems.add(
            label,
            "tls.cert",
            "is required: a PEM certificate file",
            table.get("cert"),
            show_got="cert" in table,
        )
    for key in ("cert", "key", "ca"):
        if key in table:
            if isinstance(table[key], str) and table[key]:
                values[key] = table[key]
            elif key != "cert":
                problems.add(label, f"tls.{key}", "must be a PEM file path (string)", table[key])
    for key, choices in (("client_auth", CLIENT_AUTH), ("min_version", TLS_VERSIONS)):
        if key in table:
            if table[key] in choices:
                values[key] = table[key]
            else:
                names = ", ".join(repr(c) for c in choices)
                problems.add(label, f"tls.{key}", f"must be one of {names}", table[key])
    if values.get("client_auth", "none") != "none" and "ca" not in values:
        problems.add(
            label,
            "tls.ca",
            "is required with client_auth: the CA that signs client certs",
            None,
            show_got=False,
        )
    if "alpn" in table:
        alpn = table["alpn"]
        if isinstance(alpn, list) and all(isinstance(p, str) and 0 < len(p) < 256 for p in alpn):
            values["alpn"] = tuple(alpn)
        else:
            problems.add(label, "tls.alpn", "must be a list of protocol names", alpn)
    if "handshake_timeout" in table:
        value = table["handshake_timeout"]
        if is_number(value) and value > 0:
            values["handshake_timeout"] = float(value)
        else:
            problems.add(label, "tls.handshake_timeout", "must be a number of seconds > 0", value)
    if len(problems.errors) > count:
        return None
    return TLSConfig(**values)


def _tls_files_ok(listen: ListenConfig, problems: Problems) -> bool:
    assert listen.tls is not None
    try:
        warnings = check_tls_files(listen.tls)
    except ValueError as exc:
        problems.add(listen.label, "tls", str(exc), None, show_got=False)
        return False
    for warning in warnings:
        log.warning("%s: %s", listen.label, warning)
    return True


def _check_duplicates(listeners: Sequence[ListenConfig], problems: Problems) -> None:
    names: dict[str, ListenConfig] = {}
    addresses: list[tuple[ListenConfig, Any]] = []
    for listen in listeners:
        if listen.name in names:
            problems.add(
                listen.label,
                "name",
                f"must be unique: {names[listen.name].label} has the same name",
                listen.name,
            )
        names[listen.name] = listen
        if listen.fd_name is not None:
            key: Any = ("fd", listen.fd_name)
        elif listen.path is not None:
            key = ("unix", listen.path)
        elif listen.port:  # port 0 (or default) never collides
            key = ("tcp", listen.host, listen.port)
        else:
            continue
        for other, other_key in addresses:
            if _same_address(key, other_key):
                host = other.host
                where = f"[{host}]:{other.port}" if ":" in host else f"{host}:{other.port}"
                shown = other.path if other.path is not None else where
                if other.fd_name is not None:
                    shown = f"systemd socket {other.fd_name!r}"
                field = "fd_name" if listen.fd_name else "path" if listen.path else "port"
                problems.add(
                    listen.label,
                    field,
                    f"must be a free address: {other.label} already listens on {shown}",
                    listen.fd_name or listen.path or listen.port,
                )
                break
        addresses.append((listen, key))


def _same_address(a: Any, b: Any) -> bool:
    if a[0] != b[0]:
        return False
    if a[0] in ("unix", "fd"):
        return bool(a[1] == b[1])
    if a[2] != b[2]:
        return False
    host_a, host_b = _normal_host(a[1]), _normal_host(b[1])
    if host_a == host_b:
        return True
    # A wildcard address overlaps every address of its family.
    for wildcard, other in ((host_a, host_b), (host_b, host_a)):
        if wildcard.is_unspecified and wildcard.version == other.version:
            return True
    return False


def _check_workers(
    listeners: Sequence[ListenConfig], workers: int, problems: Problems, *, field: str
) -> None:
    # Chat rooms live in one process: with several workers each would hold
    # its own rooms and users on different workers would never meet.
    if workers <= 1:
        return
    for listen in listeners:
        if listen.handler == "chat" and not listen.options.get("bus"):
            problems.add(
                listen.label,
                "handler",
                f"cannot run with {field} = {workers}: chat rooms live in one process "
                "and would split between the workers (users on different workers "
                "would never meet); use workers = 1, or set options.bus",
                listen.handler,
            )


def cpu_count() -> int:
    """The CPUs this process may run on (``workers = "auto"``)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1  # pragma: no cover - platforms without affinity


def _normal_host(host: str) -> Any:
    return ipaddress.ip_address("127.0.0.1" if host == "localhost" else host)


def _is_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
