"""Every exception reactorkit raises, under one :class:`ReactorkitError` base.

Each class also derives from the builtin it resembles, so callers that catch
``ValueError`` or ``OSError`` keep working.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BindError",
    "CommandError",
    "ConfigError",
    "ConfigErrors",
    "ConnectError",
    "HttpError",
    "HttpProtocolError",
    "PluginError",
    "PluginLoadError",
    "ProxyProtocolError",
    "ReactorStateError",
    "ReactorkitError",
]


class ReactorkitError(Exception):
    """Base class of every error reactorkit raises on purpose."""


class ReactorStateError(ReactorkitError, RuntimeError):
    """The reactor was asked to do something its state does not allow."""


class BindError(ReactorkitError, OSError):
    """A listener's address cannot be bound (in use, not permitted...).

    ``errno`` is the underlying error's; the message names the config file,
    the listener and the address.
    """

    def __init__(self, errno: int | None, message: str) -> None:
        super().__init__(errno, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConnectError(ReactorkitError, OSError):
    """An outbound connect failed: refused, timed out, unresolvable or cancelled.

    Delivered to the caller of ``reactor.connect_tcp``/``connect_unix``, never
    raised into the loop. ``errno`` is the underlying error's (``ETIMEDOUT``
    for a timeout, ``ECANCELED`` once cancelled).

    Attributes:
        address: what was being connected to (``host:port`` or ``unix:PATH``).
        reason: why it failed, in words.
    """

    def __init__(self, errno: int | None, address: str, reason: str) -> None:
        super().__init__(errno, f"cannot connect to {address}: {reason}")
        self.address = address
        self.reason = reason

    def __str__(self) -> str:
        return f"cannot connect to {self.address}: {self.reason}"


class ConfigError(ReactorkitError, ValueError):
    """One problem in a config file.

    The structure is kept apart from the message so that the CLI and tests
    never parse strings.

    Attributes:
        path: the config file, or ``"<default config>"``.
        listener: ``"listen[1] 'web'"`` style label, or ``None`` for the
            ``[reactor]`` table and the file as a whole.
        field: the dotted key that is wrong (``"port"``, ``"options.rate"``).
        expected: what would have been accepted.
        got: the value that was found (``None`` when the key is missing).
        hint: an optional extra line, e.g. a "did you mean".
    """

    def __init__(
        self,
        *,
        path: str,
        listener: str | None,
        field: str | None,
        expected: str,
        got: Any = None,
        hint: str | None = None,
        show_got: bool = True,
    ) -> None:
        self.path = path
        self.listener = listener
        self.field = field
        self.expected = expected
        self.got = got
        self.hint = hint
        self.show_got = show_got
        super().__init__(self.message)

    @property
    def message(self) -> str:
        where = [self.path]
        if self.listener is not None:
            where.append(self.listener)
        subject = ": ".join(where)
        text = f"{subject}: {self.field + ' ' if self.field else ''}{self.expected}"
        if self.show_got:
            text += f", got {self.got!r}"
        if self.hint:
            text += f" ({self.hint})"
        return text

    def __str__(self) -> str:
        return self.message


class ConfigErrors(ReactorkitError, ValueError):
    """Every problem found in one config file; ``errors`` lists them in order."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors))


class PluginError(ReactorkitError, RuntimeError):
    """The plugins installed cannot be used together (e.g. a name claimed twice)."""


class PluginLoadError(PluginError):
    """An entry point or config-named plugin module failed to import.

    Attributes:
        name: the entry point name (or module name for config plugins).
        value: the entry point's ``module:attr`` target.
        distribution: ``"name version"`` of the distribution that declared it,
            or ``None`` for a module named in the config.
        exception: the exception the import raised.
    """

    def __init__(
        self, name: str, value: str, distribution: str | None, exception: BaseException
    ) -> None:
        self.name = name
        self.value = value
        self.distribution = distribution
        self.exception = exception
        source = f"from {distribution}" if distribution else "named in the config"
        super().__init__(
            f"plugin {name!r} ({value}, {source}) failed to load: "
            f"{type(exception).__name__}: {exception}"
        )


class CommandError(ReactorkitError, ValueError):
    """Raised by a line command to answer ``-ERR <message>``; the connection stays open."""


class HttpError(ReactorkitError, ValueError):
    """Raised by an HTTP-lite route to answer with an error status.

    HTTP-lite also raises it from its parser callbacks to stop parsing a
    request it must refuse (414, 431, 413, 505...).

    Attributes:
        status: the HTTP status code to answer with.
        message: a short plain-text body.
    """

    def __init__(self, status: int, message: str = "") -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message

    def __str__(self) -> str:
        return f"{self.status} {self.message}".strip()


class HttpProtocolError(ReactorkitError, ValueError):
    """A response HTTP-lite was asked to send would break HTTP/1.1 framing.

    Raised by :meth:`reactorkit.http11.ServerConnection.send` before any byte
    is produced: a header value with CR, LF or NUL (response splitting), a
    header name that is not a token, a streamed body longer or shorter than
    its ``Content-Length``, or a response with no request to answer. The
    handler logs it and answers 500 instead (or aborts a streamed body).
    """


class ProxyProtocolError(ReactorkitError, ValueError):
    """A PROXY protocol header is malformed, truncated or of a version not accepted.

    The connection that sent it is closed; the message says what was wrong.
    """
