"""The events of :mod:`reactorkit.http11`: what ``next_event()`` returns.

Plain data, sans-IO: no socket, timer or logger here.
"""

from __future__ import annotations

from typing import Final, final

import attrs

__all__ = [
    "CLOSED",
    "END",
    "NEED_DATA",
    "ConnectionClosed",
    "Data",
    "EndOfMessage",
    "Error",
    "Event",
    "NeedData",
    "Request",
]


@final
class Request:
    """A request head, validated (the body follows as :class:`Data`).

    Attributes:
        method: ``"GET"``...
        target: the request target as sent.
        path: the path of the target, percent-encoding kept (``/`` for
            absolute-form without a path; ``*`` for ``OPTIONS *``).
        query: the query string, without ``?`` (empty if none).
        host: the authority: absolute-form's, else the Host field's.
        headers: the fields in arrival order, names as sent.
        http_version: ``"1.1"`` or ``"1.0"``.
        keep_alive: the connection may be reused after this request.
        expects_continue: an HTTP/1.1 client waits for ``100 Continue``.
    """

    __slots__ = (
        "expects_continue",
        "headers",
        "host",
        "http_version",
        "keep_alive",
        "method",
        "path",
        "query",
        "target",
    )

    def __init__(
        self,
        method: str,
        target: str,
        path: str,
        query: str,
        host: str,
        headers: list[tuple[str, str]],
        http_version: str,
        keep_alive: bool,
        expects_continue: bool,
    ) -> None:
        self.method = method
        self.target = target
        self.path = path
        self.query = query
        self.host = host
        self.headers = headers
        self.http_version = http_version
        self.keep_alive = keep_alive
        self.expects_continue = expects_continue

    def __repr__(self) -> str:
        return f"Request({self.method} {self.target} HTTP/{self.http_version})"


@attrs.frozen
class Data:
    """A piece of a request body."""

    data: bytes


@attrs.frozen
class EndOfMessage:
    """The end of a request; ``trailers`` are a chunked body's trailer fields (never headers)."""

    trailers: tuple[tuple[str, str], ...] = ()


@attrs.frozen
class ConnectionClosed:
    """The client closed its side and every request before that was pulled."""


@attrs.frozen
class Error:
    """The client broke the protocol; answer ``status`` and close. Nothing follows it.

    Attributes:
        status: 400, 408, 413, 414, 417, 431, 501 or 505.
        reason: a short plain-text explanation for the client.
    """

    status: int
    reason: str


class NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


#: :meth:`ServerConnection.next_event`: nothing more until more bytes are fed.
NEED_DATA: Final = NeedData()

Event = Request | Data | EndOfMessage | ConnectionClosed | Error
END = EndOfMessage()
CLOSED = ConnectionClosed()
