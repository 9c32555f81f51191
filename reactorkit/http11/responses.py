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

__all__ = [
    "CONTINUE",
    "LENGTH_LINES",
    "NO_BODY_STATUS",
    "PREFIXES",
    "content_type_line",
    "encode_fields",
    "flat",
    "length_line",
    "nbytes",
    "plain_prefix",
    "status_line",
]

CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"
NO_BODY_STATUS = frozenset({204, 304})
OWNED = frozenset({"content-length", "transfer-encoding", "connection", "date", "server"})
_STATUS_LINES: dict[int, bytes] = {}
_CONTENT_TYPES: dict[str, bytes] = {}
_CACHED = 256  # content types (and prefixes per type) kept: a route that varies them is not
# The status and content-type lines of a response with a body, by content
# type then status: the common response is one dict lookup each, no encoding.
PREFIXES: dict[str | None, dict[int, bytes]] = {}
LENGTH_LINES = [b"content-length: %d\r\n\r\n" % n for n in range(1024)]


def status_line(status: int) -> bytes:
    """``HTTP/1.1 <status> <reason>\\r\\n``, encoded once per status code."""
    line = _STATUS_LINES.get(status)
    if line is None:
        reason = Response(status=status).reason
        line = _STATUS_LINES[status] = b"HTTP/1.1 %d %s\r\n" % (status, reason.encode())
    return line


def content_type_line(value: str) -> bytes:
    """``content-type: <value>\\r\\n``, checked like any field value."""
    line = _CONTENT_TYPES.get(value)
    if line is None:
        line = b"content-type: %s\r\n" % encode_value(value)
        if len(_CONTENT_TYPES) < _CACHED:
            _CONTENT_TYPES[value] = line
    return line


def plain_prefix(status: int, content_type: str | None) -> bytes | None:
    """The status line and content-type line of a response with a body, or None.

    None when the status is not a final one with a body (200-599 but 204
    and 304) or the content type is not a ``str``: the caller takes the
    general path, which explains the refusal. ``None`` as content type is
    ``application/octet-stream``.

    Raises:
        HttpProtocolError: the content type holds CR, LF or another control.
    """
    if type(status) is not int or not (content_type is None or type(content_type) is str):
        return None
    by_status = PREFIXES.get(content_type)
    if by_status is not None:
        prefix = by_status.get(status)
        if prefix is not None:
            return prefix
    if not 200 <= status <= 599 or status in NO_BODY_STATUS:
        return None
    value = "application/octet-stream" if content_type is None else content_type
    prefix = status_line(status) + content_type_line(value)
    if by_status is None:
        if len(PREFIXES) >= _CACHED:
            return prefix
        by_status = PREFIXES[content_type] = {}
    by_status[status] = prefix
    return prefix


def nbytes(data: bytes | bytearray | memoryview) -> int:
    """The size in bytes of a body: ``len()`` of a memoryview counts its items, not bytes."""
    return data.nbytes if type(data) is memoryview else len(data)


def flat(view: memoryview) -> memoryview | bytes:
    """``view`` as one dimension of bytes, so ``len()`` and slicing count bytes.

    A contiguous view is cast (no copy); a strided one (``b[::2]``, which
    ``b"".join()`` and a transport's slicing cannot use) is copied.
    """
    if view.format == "B" and view.ndim == 1 and view.c_contiguous:
        return view
    return view.cast("B") if view.c_contiguous else view.tobytes()


def length_line(size: int) -> bytes:
    """``content-length: <size>``, then the blank line that ends the head."""
    return LENGTH_LINES[size] if size < 1024 else b"content-length: %d\r\n\r\n" % size


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
    if type(fields) is not list:
        try:
            items = iter(fields)
        except TypeError:
            raise HttpProtocolError(f"headers {fields!r:.80} are not (name, value) pairs") from None
        try:
            fields = list(items)
        except Exception as exc:  # a route's generator that fails
            raise HttpProtocolError(f"the headers raised {exc!r}") from exc
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
