"""Static files for http-lite: safe path resolution, validators, ranges, streaming.

No request path can leave the root. A path is refused (403) when, after one
round of percent-decoding, it holds a NUL, a backslash, an encoded slash or
backslash, or a ``.`` or ``..`` segment; what remains is resolved with
symlinks followed and must still lie inside the (resolved) root, so a
symlink pointing outside is refused too.

Bodies are streamed in ``CHUNK`` byte reads from an open file, at the pace
the client reads (the handler pumps the iterator on ``resume_writing``);
a file is never read whole into memory.

Validators and ranges follow RFC 9110: ``ETag``/``If-None-Match`` (section
13.1.2, weak comparison), ``Last-Modified``/``If-Modified-Since`` (13.1.3),
and a single ``bytes`` range (14.1.2) answered with 206, or 416 with
``Content-Range: bytes */size`` when it cannot be satisfied. Several ranges
are answered with the whole file (200), which the RFC allows.
"""

from __future__ import annotations

import email.utils
import mimetypes
import os
import re
import stat
from collections.abc import Iterator
from typing import BinaryIO

import reactorkit

__all__ = ["CHUNK", "StaticFiles"]

CHUNK = 64 * 1024
_RANGE = re.compile(r"bytes=(\d*)-(\d*)\Z")
_FORBIDDEN_ENCODED = ("%2f", "%5c", "%00")


class StaticFiles:
    """Serves the files under ``root`` for GET and HEAD.

    Args:
        root: the directory to serve; resolved once, symlinks followed.
    """

    def __init__(self, root: str) -> None:
        self.root = os.path.realpath(root)

    def resolve(self, raw_path: str) -> tuple[int, str | None]:
        """Map a request path to a file: (status, path); status is 200, 403 or 404."""
        lowered = raw_path.lower()
        if any(bad in lowered for bad in _FORBIDDEN_ENCODED):
            return 403, None
        try:
            path = _percent_decode(raw_path)
        except ValueError:
            return 403, None
        if "\x00" in path or "\\" in path:
            return 403, None
        segments = [s for s in path.split("/") if s]
        if any(s in (".", "..") for s in segments):
            return 403, None
        candidate = os.path.join(self.root, *segments)
        real = os.path.realpath(candidate)
        if real != self.root and not real.startswith(self.root + os.sep):
            return 403, None
        try:
            st = os.stat(real)
        except (FileNotFoundError, NotADirectoryError):
            return 404, None
        except OSError:
            return 403, None
        if stat.S_ISDIR(st.st_mode):
            index = os.path.join(real, "index.html")
            if not os.path.isfile(index):
                return 404, None
            real = index
        elif not stat.S_ISREG(st.st_mode):
            return 403, None
        elif path.endswith("/"):
            return 404, None  # a file is not a directory: /f.txt/ names nothing
        return 200, real

    def respond(self, request: reactorkit.Request) -> reactorkit.Response | None:
        """The response for ``request``, or None when no file matches (so 404/405 apply)."""
        status, path = self.resolve(request.raw_path)
        if status == 404:
            return None
        if path is None:
            return reactorkit.Response(status=403, body="forbidden\n")
        try:
            handle = open(path, "rb")  # noqa: SIM115 - closed by the streaming iterator
        except OSError:
            return reactorkit.Response(status=403, body="forbidden\n")
        st = os.fstat(handle.fileno())
        size = st.st_size
        etag = f'"{st.st_mtime_ns:x}-{size:x}"'
        modified = email.utils.formatdate(st.st_mtime, usegmt=True)
        content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
        if content_type.startswith("text/") or content_type in (
            "application/javascript",
            "application/json",
        ):
            content_type += "; charset=utf-8"
        headers = [("ETag", etag), ("Last-Modified", modified), ("Accept-Ranges", "bytes")]
        if _not_modified(request, etag, st.st_mtime):
            handle.close()
            return reactorkit.Response(status=304, headers=headers)
        start, end = 0, size
        status = 200
        range_header = request.headers.get("range")
        if range_header is not None and _if_range_holds(request, etag, modified):
            parsed = _parse_range(range_header, size)
            if parsed == "unsatisfiable":
                handle.close()
                return reactorkit.Response(
                    status=416,
                    body="range not satisfiable\n",
                    headers=[("Content-Range", f"bytes */{size}")],
                )
            if isinstance(parsed, tuple):
                start, end = parsed
                status = 206
                headers.append(("Content-Range", f"bytes {start}-{end - 1}/{size}"))
        headers.append(("Content-Length", str(end - start)))
        return reactorkit.Response(
            status=status,
            body=_FileChunks(handle, start, end),
            headers=headers,
            content_type=content_type,
        )


def _percent_decode(path: str) -> str:
    raw = path.encode("latin-1")
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i] == 0x25:  # "%"
            pair = raw[i + 1 : i + 3]
            if len(pair) != 2:
                raise ValueError("truncated percent-escape")
            out.append(int(pair, 16))
            i += 3
        else:
            out.append(raw[i])
            i += 1
    return out.decode("utf-8", "strict")


def _not_modified(request: reactorkit.Request, etag: str, mtime: float) -> bool:
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None:
        if if_none_match.strip() == "*":
            return True
        tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
        return etag in tags
    since = request.headers.get("if-modified-since")
    if since is not None:
        try:
            when = email.utils.parsedate_to_datetime(since)
        except (TypeError, ValueError, IndexError):
            return False
        return int(mtime) <= when.timestamp()
    return False


def _if_range_holds(request: reactorkit.Request, etag: str, modified: str) -> bool:
    if_range = request.headers.get("if-range")
    return if_range is None or if_range.strip() in (etag, modified)


def _parse_range(value: str, size: int) -> tuple[int, int] | str | None:
    """(start, end) for one satisfiable range, "unsatisfiable", or None to ignore it."""
    match = _RANGE.match(value.strip())
    if not match:
        return None  # several ranges or another unit: serve the whole file
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        count = int(last)
        if count == 0:
            return "unsatisfiable"
        return max(0, size - count), size
    start = int(first)
    end = min(int(last) + 1, size) if last else size
    if start >= size or (last and int(last) < start):
        return "unsatisfiable"
    return start, end


class _FileChunks:
    """The bytes ``[start, end)`` of an open file, ``CHUNK`` at a time.

    ``close()`` (called by the handler when the body is not sent, e.g. for
    HEAD, or when the client goes away) closes the file even if no chunk
    was ever read.
    """

    def __init__(self, handle: BinaryIO, start: int, end: int) -> None:
        self._handle = handle
        self._remaining = end - start
        handle.seek(start)

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._remaining > 0:
            chunk = self._handle.read(min(CHUNK, self._remaining))
            if chunk:
                self._remaining -= len(chunk)
                return chunk
        self.close()  # done, or the file shrank meanwhile
        raise StopIteration

    def close(self) -> None:
        self._handle.close()
