"""Request framing checks for :mod:`reactorkit.http11`: line, target, Host, chunked bodies.

Sans-IO helpers: bytes and strings in, a value or :class:`Refused` (the
status to answer) out. Scanning is linear in the bytes given.
"""

from __future__ import annotations

import collections
import re

import attrs

from reactorkit.http11.events import Data, Event

__all__ = [
    "BAD_VALUE",
    "DEFAULT_MAX_BODY_SIZE",
    "DEFAULT_MAX_HEADERS",
    "DEFAULT_MAX_HEADER_SIZE",
    "DEFAULT_MAX_REQUEST_LINE",
    "TOKEN",
    "VERSIONS",
    "ChunkedReader",
    "Limits",
    "Refused",
    "check_request_line",
    "split_target",
    "valid_authority",
]

DEFAULT_MAX_REQUEST_LINE = 8192
DEFAULT_MAX_HEADER_SIZE = 16384
DEFAULT_MAX_HEADERS = 100
DEFAULT_MAX_BODY_SIZE = 1024 * 1024
_MAX_CHUNK_LINE = 4096  # a chunk-size line with its extensions

TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")  # RFC 9110 section 5.6.2
BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # CTLs but HTAB, RFC 9110 section 5.5
_HOST = re.compile(  # RFC 9110 section 7.2: uri-host [ ":" port ]
    r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]*)(?::(\d*))?\Z"
)
_HEX = re.compile(rb"[0-9A-Fa-f]+\Z")
VERSIONS = "HTTP version not supported: HTTP/1.1 and 1.0 only"


@attrs.frozen(kw_only=True)
class Limits:
    """The bounds of one connection's input; each past its limit is an :class:`Error`."""

    max_request_line: int = DEFAULT_MAX_REQUEST_LINE  # 414
    max_header_size: int = DEFAULT_MAX_HEADER_SIZE  # 431
    max_headers: int = DEFAULT_MAX_HEADERS  # 431
    max_body_size: int = DEFAULT_MAX_BODY_SIZE  # 413


class Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason


def check_request_line(line: bytes | bytearray) -> str:
    """The HTTP version of a request line (LF excluded), or :class:`Refused`."""
    if not line.endswith(b"\r"):
        raise Refused(400, "malformed request line: it must end with CRLF")
    protocol = line[line.rfind(b" ") + 1 : -1]
    if protocol == b"HTTP/1.1":
        return "1.1"
    if protocol == b"HTTP/1.0":
        return "1.0"
    if protocol.startswith(b"HTTP/"):
        return _refuse(505, VERSIONS)
    return _refuse(400, "malformed request line: not an HTTP request")


def _refuse(status: int, reason: str) -> str:
    raise Refused(status, reason)


def valid_authority(value: str) -> bool:
    match = _HOST.match(value)
    if match is None:
        return False
    port = match.group(1)
    return not port or int(port) <= 65535


def split_target(method: str, target: str) -> tuple[str, str, str | None]:
    """(path, query, authority or None) of a request target, RFC 9112 section 3.2."""
    if target.startswith("/"):
        if "#" in target:
            raise Refused(400, "a request target has no fragment")
        path, _, query = target.partition("?")
        return path, query, None
    if target == "*":
        if method != "OPTIONS":
            raise Refused(400, "the asterisk target is for OPTIONS only")
        return "*", "", None
    scheme, sep, rest = target.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        raise Refused(400, f"unsupported request target: {target[:100]!r}")
    cut = len(rest)
    for stop in "/?#":
        found = rest.find(stop)
        if 0 <= found < cut:
            cut = found
    authority, rest = rest[:cut], rest[cut:]
    if "@" in authority or not authority or not valid_authority(authority):
        raise Refused(400, f"invalid authority in the request target: {authority[:100]!r}")
    if "#" in rest:
        raise Refused(400, "a request target has no fragment")
    path, _, query = rest.partition("?")
    return path or "/", query, authority


class ChunkedReader:
    """Decodes a chunked body (RFC 9112 section 7.1) and its trailer section."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.left_in_chunk = -1  # -1: a size line is next; -2: trailers; 0: the CRLF after data
        self.received = 0
        self.trailers: list[tuple[str, str]] = []
        self.trailer_size = 0

    def read(
        self, buffer: bytes | bytearray, pos: int, events: collections.deque[Event]
    ) -> tuple[int, bool]:
        """Decode from ``buffer[pos:]``: (bytes used, the body ended)."""
        start = pos
        end = len(buffer)
        # One Data per call, not per chunk: a body of 1-byte chunks would
        # otherwise cost an object per byte (~40x max_body_size in memory).
        data = bytearray()
        try:
            while pos < end:
                left = self.left_in_chunk
                if left > 0:
                    take = min(left, end - pos)
                    data += buffer[pos : pos + take]
                    pos += take
                    self.left_in_chunk -= take
                    continue
                newline = buffer.find(b"\n", pos)
                if newline < 0:
                    if end - pos > _MAX_CHUNK_LINE:
                        raise Refused(400, "chunk size line too long")
                    break
                line = bytes(buffer[pos:newline])
                if not line.endswith(b"\r"):
                    raise Refused(400, "malformed chunked body: bare LF")
                line = line[:-1]
                pos = newline + 1
                if left == 0:
                    if line:
                        raise Refused(400, "malformed chunked body: no CRLF after chunk data")
                    self.left_in_chunk = -1
                elif left == -1:
                    size = self._size(line)
                    self.left_in_chunk = size if size else -2
                elif self._trailer(line):
                    return pos - start, True
        finally:
            if data:  # before the end or the error, as they came
                events.append(Data(bytes(data)))
        return pos - start, False

    def _size(self, line: bytes) -> int:
        # chunk-size [ BWS ";" BWS chunk-ext ... ]; extensions are ignored
        # (RFC 9112 section 7.1.1) but must hold no control characters.
        digits, _, extensions = line.partition(b";")
        digits = digits.rstrip(b" \t")
        if not _HEX.match(digits):
            raise Refused(400, f"malformed chunk size: {digits[:20]!r}")
        if BAD_VALUE.search(extensions.decode("latin-1")):
            raise Refused(400, "malformed chunk extension")
        limit = self.limits.max_body_size
        if len(digits.lstrip(b"0")) > 16:
            raise Refused(413, f"request body too large (limit {limit} bytes)")
        size = int(digits, 16)
        self.received += size
        if self.received > limit:
            raise Refused(413, f"request body too large (limit {limit} bytes)")
        return size

    def _trailer(self, line: bytes) -> bool:
        if not line:
            return True
        self.trailer_size += len(line) + 2
        if (
            self.trailer_size > self.limits.max_header_size
            or len(self.trailers) >= self.limits.max_headers
        ):
            raise Refused(431, "trailer fields too large")
        name, colon, value = line.partition(b":")
        if not colon or not TOKEN.match(name):
            raise Refused(400, "malformed trailer field")
        text = value.strip(b" \t").decode("latin-1")
        if BAD_VALUE.search(text):
            raise Refused(400, "malformed trailer field value")
        self.trailers.append((name.decode("latin-1"), text))
        return False
