"""A streamed response body of http-lite: an iterable of bytes, sent at the client's pace.

The first chunk is pulled before the response head is sent
(:meth:`BodyStream.open`): an iterable that raises at once, or whose first
chunk is not bytes (a ``str``, say), is found while a clean 500 can still
be answered. A later failure (the iterator raises, a chunk is not bytes,
fewer or more bytes than a declared ``Content-Length``) comes after the
head: the handler logs it, naming the route and its plugin, and aborts the
connection, so the client sees a truncated body (a chunked body without
its last chunk), never a wrong one taken for whole.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final, final

import reactorkit
from reactorkit import http11
from reactorkit.http11.responses import nbytes

__all__ = ["TURN", "BodyStream"]

_BYTES = (bytes, bytearray, memoryview)
_NOT_SENT = frozenset({204, 304})
_END: Final = object()
TURN: Final = 64  # chunks written per pump() before other connections get the loop
_PROCESS_EXITS = (KeyboardInterrupt, SystemExit)


@final
class BodyStream:
    """The iterable body of one response, its first chunk already pulled.

    Attributes:
        request: what it answers (None for an error response).
        status: the response's status.
        failure: why the body cannot be sent (set by :meth:`open`; answer
            a 500 instead), or None.
        sent: body bytes sent so far.
        started: when the request began (the handler sets it, for the log).
    """

    __slots__ = ("_body", "_chunks", "_first", "failure", "request", "sent", "started", "status")

    def __init__(
        self, body: Any, chunks: Iterator[Any], request: reactorkit.Request | None, status: int
    ) -> None:
        self._body = body
        self._chunks = chunks
        self._first: Any = _END
        self.request = request
        self.status = status
        self.failure: Exception | None = None
        self.sent = 0
        self.started = 0.0

    @classmethod
    def open(
        cls, response: reactorkit.Response, request: reactorkit.Request | None
    ) -> BodyStream | None:
        """The stream of ``response``'s body, or None if it is not an iterable to stream.

        The first chunk is pulled now, unless the body will not be sent
        (HEAD, 204, 304): then the stream only closes it.
        """
        body = response.body
        if isinstance(body, (str, *_BYTES)):
            return None
        try:
            chunks = iter(body)
        except _PROCESS_EXITS:
            raise
        except BaseException as exc:
            if not isinstance(body, Iterable):
                return None  # not iterable: ServerConnection.send refuses it, with its type
            stream = cls(body, iter(()), request, response.status)  # its __iter__ raised
            stream.failure = reactorkit.HttpProtocolError(f"the body raised {exc!r}")
            stream.failure.__cause__ = exc
            return stream
        stream = cls(body, chunks, request, response.status)
        if response.status in _NOT_SENT or (request is not None and request.method == "HEAD"):
            return stream
        try:
            first = next(chunks, _END)
        except _PROCESS_EXITS:
            raise
        except BaseException as exc:
            stream.failure = reactorkit.HttpProtocolError(f"the body raised {exc!r}")
            stream.failure.__cause__ = exc
            return stream
        if first is not _END and not isinstance(first, _BYTES):
            stream.failure = reactorkit.HttpProtocolError(
                f"a streamed body must yield bytes, its first chunk is a {type(first).__name__}"
            )
        stream._first = first
        return stream

    def pump(
        self,
        core: http11.ServerConnection,
        connection: reactorkit.Transport,
        paused: Callable[[], bool],
    ) -> bool:
        """Write chunks until the body ends (True) or this turn stops (False).

        A turn stops when writing pauses, the connection closes, or ``TURN``
        chunks are written: a body of tiny or empty chunks never fills the
        socket, so it would never pause, and would hold the loop; after a
        full turn the caller pumps again on the loop's next pass.

        Raises:
            Exception: whatever the iterable raised, or
                :class:`~reactorkit.HttpProtocolError` from the core (a chunk
                that is not bytes, a length that does not match).
        """
        for _ in range(TURN):
            if paused() or connection.is_closing():
                return False
            chunk = self._first
            if chunk is _END:
                chunk = next(self._chunks, _END)
                if chunk is _END:
                    connection.write(core.send_end())
                    return True
            else:
                self._first = _END
            data = core.send_data(chunk)
            self.sent += nbytes(chunk)
            connection.write(data)
        return False

    def close(self) -> Exception | None:
        """Close the iterable (a file, a generator) whether or not it was sent.

        Returns:
            What a ``close()`` raised (the route's bug, for the caller to
            log), or None.
        """
        sources = (self._chunks,) if self._body is self._chunks else (self._chunks, self._body)
        error = None
        for source in sources:
            try:
                close = getattr(source, "close", None)
                if close is not None:
                    close()
            except Exception as exc:
                error = error or exc
        return error
