"""Request heads for :mod:`reactorkit.http11`: the checks every head goes through, and simple heads.

:func:`check_head` applies what RFC 9110/9112 ask of a head once it is
tokenized (by llhttp or by :func:`simple_head`): no CONNECT, exactly one
valid Host on HTTP/1.1, the framing fields (``Content-Length``, only
``chunked`` as transfer coding, never on HTTP/1.0), ``Connection``,
``Expect``, and one of the request-target forms.

Most requests are simple: ``GET`` or ``HEAD``, an origin-form target of
plain URI characters, ``HTTP/1.1`` or ``HTTP/1.0``, fields of visible
ASCII, no body. :func:`simple_head` recognises exactly such a head, whole,
with one compiled regular expression, and splits its fields with a second
one: two C calls instead of llhttp's parse and a Python callback per field.
It is a filter, not a second parser: whatever it does not match (another
method, a body's ``Content-Length`` or ``Transfer-Encoding``, obs-fold, a
bare CR or LF, a control or non-ASCII byte, a space before a colon, a
fragment, absolute-form...) goes to llhttp as before, so it refuses exactly
what llhttp refuses. What it does match, llhttp accepts and reports the
same way (``tests/test_http11_head.py`` compares the two on generated heads):
the method, the target as sent, each field's name as sent and its value
without the whitespace around it (RFC 9110 section 5.5).

Sans-IO: bytes in, strings out; no socket, timer or logger.
"""

from __future__ import annotations

import re
from typing import Any, Final

from reactorkit.http11.events import Request
from reactorkit.http11.framing import Refused, split_target, valid_authority
from reactorkit.web import Headers

__all__ = [
    "FIELDS",
    "FRAMING_NAMES",
    "HEAD",
    "KNOWN_HOSTS",
    "QUICK",
    "FieldsText",
    "check_head",
    "known_host",
    "simple_head",
]

# The request fields the core reads itself; every other one is only passed on.
_FRAMING = frozenset({"host", "content-length", "transfer-encoding", "connection", "expect"})
# Host values already found valid (RFC 9110 section 7.2), shared by every connection.
KNOWN_HOSTS: Final[set[str]] = set()
_HOSTS_KEPT: Final = 256

_TCHAR: Final = r"!#$%&'*+.^_`|~0-9A-Za-z-"  # RFC 9110 section 5.6.2
# A field value: visible ASCII words separated by SP/HTAB; the whitespace
# around it is matched outside the group. Possessive: linear, no backtracking.
_VALUE: Final = r"(?:[\x21-\x7e]++(?:[ \t]++[\x21-\x7e]++)*+)?"
# The framing fields of a body are llhttp's to check (repeats, signs, lists).
_FIELD: Final = (
    rf"(?!(?i:content-length|transfer-encoding):)[{_TCHAR}]++:[ \t]*+{_VALUE}[ \t]*+\r\n"
)
# RFC 3986's pchar and "/" (a path), and "?" (a query): an origin-form target (no "#").
_PATH: Final = r"/[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*+"
_QUERY: Final = r"[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*+"
_TARGET: Final = rf"{_PATH}(?:\?{_QUERY})?"
HEAD: Final = re.compile(rf"(GET|HEAD) ({_TARGET}) HTTP/1\.([01])\r\n(?:{_FIELD})*+\r\n")
FIELDS: Final = re.compile(rf"([{_TCHAR}]++):[ \t]*+({_VALUE})[ \t]*+\r\n")
# The same heads as HEAD without its field groups, and with Content-Length
# and Transfer-Encoding allowed: whoever uses it looks for those itself.
# Groups: method, path, query (None without "?"), minor version.
QUICK: Final = re.compile(
    rf"(GET|HEAD) ({_PATH})(?:\?({_QUERY}))? HTTP/1\.([01])\r\n"
    rf"(?:[{_TCHAR}]++:[\t\x20-\x7e]*+\r\n)*+\r\n"
)
# In a head's lower-cased text that QUICK matched, the fields the core reads.
FRAMING_NAMES: Final = re.compile(r"\n(?:host|connection|expect|content-length|transfer-encoding):")


class FieldsText(Headers):
    """The fields of a head QUICK matched, split (by FIELDS) only when first read.

    A route that reads no header costs no list of fields. Built by
    :meth:`~reactorkit.http11.ServerConnection.receive_simple`.
    """

    __slots__ = ("_start", "_text")

    def __init__(self, text: str, start: int) -> None:
        self._text = text
        self._start = start
        self._map = None  # _items is left unset: __getattr__ fills it

    def __getattr__(self, name: str) -> Any:
        if name != "_items":
            raise AttributeError(name)
        items: list[tuple[str, str]] = FIELDS.findall(self._text, self._start)
        self._items = items
        return items


def simple_head(data: bytes) -> tuple[str, str, str, list[tuple[str, str]]] | None:
    """``(method, target, version, fields)`` of ``data`` if it is exactly one simple head.

    ``data`` must hold the head and nothing else (it ends with the blank
    line). None when it is not simple: let llhttp read it. Limits (line,
    field count, sizes) are the caller's to check.
    """
    text = data.decode("latin-1")
    match = HEAD.fullmatch(text)
    if match is None:
        return None
    method, target, minor = match.groups()
    return (
        method,
        target,
        "1.1" if minor == "1" else "1.0",
        FIELDS.findall(text, match.end(3) + 2),
    )


def known_host(host: str) -> bool:
    """Whether ``host`` is a valid Host value (RFC 9110 section 7.2), remembered once it was.

    Most requests name one of a few hosts: the set is checked first, and
    kept small (a client varying its Host cannot grow it).
    """
    if host in KNOWN_HOSTS:
        return True
    if not valid_authority(host):
        return False
    if len(KNOWN_HOSTS) >= _HOSTS_KEPT:
        KNOWN_HOSTS.clear()
    KNOWN_HOSTS.add(host)
    return True


def check_head(
    method: str, target: str, version: str, headers: list[tuple[str, str]], max_body_size: int
) -> tuple[Request, int | None]:
    """The checks every request head goes through, after llhttp or :func:`simple_head`.

    Returns:
        The request, and its body length (-1: chunked, None: no body).

    Raises:
        Refused: the status to answer (CONNECT, Host, framing, a target
            that is not one of RFC 9112's forms, a declared body too large).
    """
    if method == "CONNECT":
        raise Refused(501, "CONNECT is not supported: this server is not a proxy")
    host = ""
    hosts = 0
    length: int | None = None
    chunked = False
    keep_alive = version == "1.1"
    expects_continue = False
    for name, value in headers:
        lower = name.lower()
        if lower not in _FRAMING:
            continue
        if lower == "host":
            host = value
            hosts += 1
        elif lower == "content-length":
            length = int(value)  # llhttp checked: digits, not repeated
        elif lower == "transfer-encoding":
            if version == "1.0":  # RFC 9112 section 6.1: faulty framing
                raise Refused(400, "Transfer-Encoding in an HTTP/1.0 request")
            if value.strip().lower() != "chunked" or chunked:
                raise Refused(501, f"unsupported transfer coding: {value}")
            chunked = True
        elif lower == "connection":
            tokens = {t.strip().lower() for t in value.split(",")}
            if "close" in tokens:
                keep_alive = False
            elif "keep-alive" in tokens and version == "1.0":
                keep_alive = True
        elif lower == "expect":
            if value.strip().lower() != "100-continue":
                raise Refused(417, f"unsupported expectation: {value}")
            # RFC 9110 section 10.1.1: ignore it from an HTTP/1.0 client.
            expects_continue = version == "1.1"
    # RFC 9112 section 3.2: exactly one valid Host on HTTP/1.1.
    if hosts != 1:
        if hosts:
            raise Refused(400, "more than one Host header field")
        if version == "1.1":
            raise Refused(400, "an HTTP/1.1 request needs a Host header field")
    elif host not in KNOWN_HOSTS and not known_host(host):
        raise Refused(400, f"invalid Host: {host!r}")
    if target[:1] == "/" and "?" not in target and "#" not in target:
        path, query, authority = target, "", None  # origin-form without a query
    else:
        path, query, authority = split_target(method, target)
    limit = max_body_size
    if length is not None and length > limit:
        raise Refused(413, f"request body too large (limit {limit} bytes)")
    request = Request(
        method,
        target,
        path,
        query,
        host if authority is None else authority,
        headers,
        version,
        keep_alive,
        expects_continue,
    )
    if chunked:
        return request, -1
    return request, length or None
