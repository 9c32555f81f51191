"""The access log of http-lite: one line per response, common log format plus time and scheme.

::

    127.0.0.1 - - [25/Nov/2026:04:27:01 +0000] "GET /healthz HTTP/1.1" 200 3 0.297ms http

Lines go to the ``reactorkit.access`` logger at INFO; nothing is formatted
while that logger is disabled.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import reactorkit
from reactorkit.http11.responses import nbytes

__all__ = ["access_log", "body_size", "log_response"]

access_log = logging.getLogger("reactorkit.access")


def log_response(
    request: reactorkit.Request | None,
    status: int,
    size: int,
    elapsed: float,
    peer: Any,
    scheme: str,
    connection: Any = None,
) -> None:
    """Log one response: ``size`` body bytes sent, ``elapsed`` seconds since the request began.

    ``request`` is None for an error answered before a request could be
    read (its request line is logged as ``-``).
    """
    if not access_log.isEnabledFor(logging.INFO):
        return
    host = peer[0] if isinstance(peer, tuple) else "unix"
    if request is None:
        line = "-"
    else:
        query = "?" + request.query_string if request.query_string else ""
        line = f"{request.method} {request.raw_path}{query} HTTP/{request.http_version}"
    stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())
    access_log.info(
        '%s - - [%s] "%s" %d %d %.3fms %s',
        host,
        stamp,
        line,
        status,
        size,
        elapsed * 1000,
        scheme,
        extra=reactorkit.access_fields(connection, request, status, size, elapsed * 1000),
    )


def body_size(request: reactorkit.Request | None, response: reactorkit.Response) -> int:
    """The body bytes a response in hand carries (0 for HEAD, 204, 304 or an iterable)."""
    body = response.body
    if (request is not None and request.method == "HEAD") or response.status in (204, 304):
        return 0
    if isinstance(body, str):
        return len(body.encode(errors="replace"))
    return nbytes(body) if isinstance(body, (bytes, bytearray, memoryview)) else 0
