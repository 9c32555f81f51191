"""The response side of one http-lite connection: encode, batch, stream, log.

:class:`Output` turns each response, oldest request first, into bytes
through the sans-IO core (:meth:`reactorkit.http11.ServerConnection.send`),
gathers a batch of pipelined responses into one ``write``, streams an
iterable body at the client's pace (:class:`~.http_stream.BodyStream`) and
writes the access log line. A response the core refuses (response
splitting, a body of the wrong type) or a body that fails before its head
is answered 500 instead, logged with the route and its plugin
(:class:`~.http_site.HttpSite`). What to answer and when to close is the
handler's business; this class only knows the connection it writes to.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import final

import reactorkit
from reactorkit import http11
from reactorkit.handlers.http_access_log import body_size, log_response
from reactorkit.handlers.http_site import HttpSite, date_line
from reactorkit.handlers.http_stream import BodyStream

__all__ = ["BATCH", "Output"]

BATCH = 65536  # pipelined responses gathered before one write
_BODY = http11.State.BODY
_PROCESS_EXITS = (KeyboardInterrupt, SystemExit)
_HttpProtocolError = reactorkit.HttpProtocolError


@final
class Output:
    """Responses out, in order, for one connection.

    Args:
        site: the listener's routes and error logging.
        core: the connection's sans-IO HTTP core.
        connection: where the bytes go.
        streamed: called after each turn of a stream that :meth:`send` did
            not finish at once, so what waited behind it is answered.

    Attributes:
        paused: the connection's output is past its high-water mark.
        stream: the body being streamed, or None.
        broken: a stream failed after its head and the connection was
            aborted: nothing more is answered.
    """

    __slots__ = (
        "_connection",
        "_core",
        "_log",
        "_parts",
        "_peer",
        "_requests",
        "_scheme",
        "_site",
        "_size",
        "_streamed",
        "broken",
        "paused",
        "stream",
    )

    def __init__(
        self,
        site: HttpSite,
        core: http11.ServerConnection,
        connection: reactorkit.Transport,
        streamed: Callable[[], object],
    ) -> None:
        self._site = site
        self._core = core
        self._connection = connection
        self._streamed = streamed
        self._log = site.options.access_log
        self._requests = site.requests  # per-route metrics, None when not observed
        self._peer = connection.peername
        self._scheme = "https" if connection.is_tls else "http"
        self._parts: list[bytes] = []
        self._size = 0
        self.paused = False
        self.stream: BodyStream | None = None
        self.broken = False

    def send(
        self,
        request: reactorkit.Request | None,
        response: reactorkit.Response,
        started: float,
        close: bool,
    ) -> None:
        """Answer the oldest request with ``response`` (``close``: the last on this connection).

        The bytes are batched until :meth:`flush`; an iterable body starts
        streaming at once (:attr:`stream` is set until it ends).
        """
        core = self._core
        body = response.body
        stream = None
        if type(body) is not bytes and type(body) is not str:
            stream = BodyStream.open(response, request)
            if stream is not None and stream.failure is not None:
                self._close(stream)
                response, stream = self._site.refused(request, stream.failure), None
        try:
            data = core.send(response, date=date_line(), close=close)
        except _HttpProtocolError as exc:
            if stream is not None:
                self._close(stream)
                stream = None
            response = self._site.refused(request, exc)
            data = core.send(response, date=date_line(), close=close)
        self._parts.append(data)
        self._size += len(data)
        if self._requests is not None:
            self._requests.record(request, response.status, started)
        if stream is not None:
            if core.our_state is _BODY:
                stream.started = started
                self.stream = stream
                self.flush()
                self.pump()
                return
            self._close(stream)  # HEAD, 204, 304: the body is not sent
        if self._log:
            size = body_size(request, response) if stream is None else 0
            self._log_response(request, response.status, size, started)

    def flush_if_full(self) -> None:
        """Write the batch if it is big, or if the client is not keeping up."""
        if self._size >= BATCH or self._connection.get_write_buffer_size():
            self.flush()  # a client that does not read gets one response at a time

    def flush(self) -> None:
        """Write what is batched, in one ``write``."""
        parts = self._parts
        if parts:
            self._connection.write(parts[0] if len(parts) == 1 else b"".join(parts))
            parts.clear()
            self._size = 0

    def pump(self) -> None:
        """Write the stream's next chunks (:attr:`stream` is None once it ended or failed)."""
        stream = self.stream
        if stream is None:
            return
        connection = self._connection
        try:
            if not stream.pump(self._core, connection, self._is_paused):
                if not (self.paused or connection.is_closing()):
                    connection.reactor.call_soon(self._pump_again, stream)  # its turn is over
                return  # paused (resume_writing pumps again) or closing
        except _PROCESS_EXITS:
            raise
        except BaseException as exc:
            self._site.stream_failed(stream.request, exc)
            self.stream = None
            self.broken = True
            self._close(stream)
            connection.abort()
            return
        self.stream = None
        if self._log:
            self._log_response(stream.request, stream.status, stream.sent, stream.started)

    def close(self) -> None:
        """The connection is gone: close the body being streamed, if any."""
        if self.stream is not None:
            self._close(self.stream)
            self.stream = None

    def _is_paused(self) -> bool:
        return self.paused

    def _pump_again(self, stream: BodyStream) -> None:
        if self.stream is stream and not (self.paused or self._connection.is_closing()):
            self.pump()
            self._streamed()  # as resume_writing: what waited behind the stream

    def _close(self, stream: BodyStream) -> None:
        error = stream.close()
        if error is not None:
            self._site.close_failed(stream.request, error)

    def _log_response(
        self, request: reactorkit.Request | None, status: int, size: int, started: float
    ) -> None:
        connection = self._connection
        elapsed = connection.reactor.clock() - started
        log_response(request, status, size, elapsed, self._peer, self._scheme, connection)
