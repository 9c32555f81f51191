"""The exact check of a simple request head, for :mod:`reactorkit.http11`: one regex, no llhttp.

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
same way (``tests/test_http11.py`` compares the two on generated heads):
the method, the target as sent, each field's name as sent and its value
without the whitespace around it (RFC 9110 section 5.5).

Sans-IO: bytes in, strings out; no socket, timer or logger.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["simple_head"]

_TCHAR: Final = r"!#$%&'*+.^_`|~0-9A-Za-z-"  # RFC 9110 section 5.6.2
# A field value: visible ASCII words separated by SP/HTAB; the whitespace
# around it is matched outside the group. Possessive: linear, no backtracking.
_VALUE: Final = r"(?:[\x21-\x7e]++(?:[ \t]++[\x21-\x7e]++)*+)?"
# The framing fields of a body are llhttp's to check (repeats, signs, lists).
_FIELD: Final = (
    rf"(?!(?i:content-length|transfer-encoding):)[{_TCHAR}]++:[ \t]*+{_VALUE}[ \t]*+\r\n"
)
# RFC 3986's pchar, "/" and "?": what an origin-form target holds (no "#").
_TARGET: Final = r"/[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*+"
_HEAD = re.compile(rf"(GET|HEAD) ({_TARGET}) HTTP/1\.([01])\r\n(?:{_FIELD})*+\r\n")
_FIELDS = re.compile(rf"([{_TCHAR}]++):[ \t]*+({_VALUE})[ \t]*+\r\n")


def simple_head(data: bytes) -> tuple[str, str, str, list[tuple[str, str]]] | None:
    """``(method, target, version, fields)`` of ``data`` if it is exactly one simple head.

    ``data`` must hold the head and nothing else (it ends with the blank
    line). None when it is not simple: let llhttp read it. Limits (line,
    field count, sizes) are the caller's to check.
    """
    text = data.decode("latin-1")
    match = _HEAD.fullmatch(text)
    if match is None:
        return None
    method, target, minor = match.groups()
    return (
        method,
        target,
        "1.1" if minor == "1" else "1.0",
        _FIELDS.findall(text, match.end(3) + 2),
    )
