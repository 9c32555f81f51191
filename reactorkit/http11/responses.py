"""Response encoding for :mod:`reactorkit.http11`: status lines and checked header fields.

Sans-IO: a :class:`~reactorkit.Response`'s fields in, bytes out, or
:class:`~reactorkit.HttpProtocolError` for a field that would break the
framing (response splitting).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from reactorkit.errors import HttpProtocolError
from reactorkit.http11.framing import BAD_VALUE, TOKEN
from reactorkit.web import Response

__all__ = ["CONTINUE", "NO_BODY_STATUS", "content_type_line", "encode_fields", "status_line"]

CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
NO_BODY_STATUS = frozenset({204, 304})
OWNED = frozenset({"content-length", "transfer-encoding", "connection", "date", "server"})
_STATUS_LINES: dict[int, bytes] = {}
_CONTENT_TYPES: dict[str, bytes] = {}


def status_line(status: int) -> bytes:
    """``HTTP/1.1 <status> <reason>\\r\\n``, encoded once per status code."""
    line = _STATUS_LINES.get(status)
    if line is None:
        reason = Response(status=status).reason
        line = _STATUS_LINES[status] = b"HTTP/1.1 %d %s\r\n" % (status, reason.encode())
    return line


def content_type_line(value: str) -> bytes:
    line = _CONTENT_TYPES.get(value)
    if line is None:
        line = b"content-type: %s\r\n" % encode_value(value)
        if len(_CONTENT_TYPES) < 256:  # a route that varies it is not cached
            _CONTENT_TYPES[value] = line
    return line


def encode_value(value: str) -> bytes:
    if not isinstance(value, str):
        raise HttpProtocolError(f"header value {value!r} is not a str")
    if BAD_VALUE.search(value):
        raise HttpProtocolError(f"header value {value!r} holds CR, LF, NUL or another control")
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        raise HttpProtocolError(f"header value {value!r} is not latin-1") from None


def encode_fields(fields: Iterable[tuple[str, str]], parts: list[bytes]) -> bytes | None:
    """Append ``fields`` to ``parts``; returns a Content-Length value given among them."""
    declared = None
    for field in fields:
        try:
            name, value = field
            raw = name.encode("latin-1", "replace")
        except (TypeError, ValueError, AttributeError):
            raise HttpProtocolError(f"header field {field!r} is not a (name, value) pair") from None
        if not TOKEN.match(raw):
            raise HttpProtocolError(f"header name {name!r} is not a token")
        encoded = encode_value(value)
        lower = name.lower()
        if lower in OWNED:
            if lower == "content-length":
                if not encoded.isdigit():
                    raise HttpProtocolError(f"Content-Length {value!r} is not a number")
                declared = encoded
            continue  # the server writes these itself
        parts.append(b"%s: %s\r\n" % (raw, encoded))
    return declared
