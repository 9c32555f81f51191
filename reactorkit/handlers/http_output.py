"""The response side of one http-lite connection: answer in order, encode, batch, stream, log.

:class:`Output` answers the connection's complete requests strictly in
order: at once when nothing is ahead, else from its queue; a blocking
route runs on the thread pool while what follows waits. Each response goes
through the sans-IO core (:meth:`reactorkit.http11.ServerConnection.send`);
a batch of pipelined responses leaves in one ``write``; an iterable body is
streamed at the client's pace (:class:`~.http_stream.BodyStream`); the
access log line is written. A response the core refuses (response
splitting, a body of the wrong type) or a body that fails before its head
is answered 500 instead, logged with the route and its plugin
(:class:`~.http_site.HttpSite`). What is read, and when the connection
closes, is the handler's business.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Callable
from typing import Any, final

import reactorkit
from reactorkit import http11
from reactorkit.handlers.http_access_log import body_size, log_response
from reactorkit.handlers.http_site import HttpSite, date_line, error_response
from reactorkit.handlers.http_stream import BodyStream

__all__ = ["BATCH", "Output"]

BATCH = 65536  # pipelined responses gathered before one write
_BODY = http11.State.BODY
_MUST_CLOSE = http11.State.MUST_CLOSE
_ERROR = http11.Error
_Response = reactorkit.Response
_Route = reactorkit.Route
_PROCESS_EXITS = (KeyboardInterrupt, SystemExit)
_HttpProtocolError = reactorkit.HttpProtocolError


@final
class Output:
    """Responses out, in order, for one connection.

    Args:
        site: the listener's routes and error logging.
        core: the connection's sans-IO HTTP core.
        connection: where the bytes go.
        streamed: called when a blocking route's answer was sent, and after
            each turn of a stream that :meth:`send` did not finish at once,
            so what waited behind it is answered.
        is_last: once :attr:`closing`, whether the response about to be sent
            is the connection's last (nothing more was read).

    Attributes:
        queue: complete requests (or errors) waiting for their turn.
        running: a blocking route runs on the thread pool.
        closing: EOF or shutdown (the handler sets it): the last response
            says ``Connection: close``.
        paused: the connection's output is past its high-water mark.
        stream: the body being streamed, or None.
        broken: a stream failed after its head and the connection was
            aborted: nothing more is answered.
    """

    __slots__ = (
        "_connection",
        "_core",
        "_dispatch",
        "_is_last",
        "_log",
        "_max_requests",
        "_parts",
        "_peer",
        "_plain",
        "_requests",
        "_scheme",
        "_served",
        "_site",
        "_size",
        "_streamed",
        "broken",
        "closing",
        "paused",
        "queue",
        "running",
        "stream",
    )

    def __init__(
        self,
        site: HttpSite,
        core: http11.ServerConnection,
        connection: reactorkit.Transport,
        streamed: Callable[[], object],
        is_last: Callable[[], bool],
    ) -> None:
        self._site = site
        self._core = core
        self._connection = connection
        self._streamed = streamed
        self._is_last = is_last
        self._dispatch = site.dispatch
        self._max_requests = site.options.max_requests
        self._served = 0
        self._log = site.options.access_log
        self._requests = site.requests  # per-route metrics, None when not observed
        # Nothing to do for a response but write it (answer_now).
        self._plain = not (self._log or self._requests is not None or self._max_requests)
        self._peer = connection.peername
        self._scheme = "https" if connection.is_tls else "http"
        self._parts: list[bytes] = []
        self._size = 0
        self.queue: collections.deque[tuple[reactorkit.Request | http11.Error, float]] = (
            collections.deque()
        )
        self.running = False
        self.closing = False
        self.paused = False
        self.stream: BodyStream | None = None
        self.broken = False

    def is_busy(self) -> bool:
        """A blocking route runs or a body streams (or failed): nothing else is answered."""
        return self.running or self.stream is not None or self.broken

    def add(self, item: reactorkit.Request | http11.Error, started: float) -> None:
        """A complete request (or an error to answer): answered now if nothing is ahead."""
        if self.queue or self.paused or self.is_busy():
            self.queue.append((item, started))
        else:
            self.answer(item, started)
            self.flush_if_full()

    def drain(self) -> None:
        """Answer what is queued, in order, until a route blocks, a body streams or writes pause."""
        queue = self.queue
        core = self._core
        while queue and not (self.paused or self.is_busy()):
            if self._connection.is_closing() or core.our_state is _MUST_CLOSE or not core.pending:
                queue.clear()  # answered "close": what was queued is dropped
                break
            self.answer(*queue.popleft())
            self.flush_if_full()

    def answer_now(self, request: reactorkit.Request, started: float) -> bool:
        """Answer ``request``, with nothing ahead of it, and write what is ready.

        The commonest response (see
        :meth:`~reactorkit.http11.ServerConnection.send_common`) is written
        at once when nothing else is to be done for it: no access log, no
        per-route metrics, no ``max_requests``, not closing. Returns True
        when it was: the connection is as it was before the request came.
        """
        answer = self._dispatch(request)
        if self._plain and not self.closing and type(answer) is _Response:
            data = self._core.send_common(answer, date_line())
            if data is not None:
                self._connection.write(data)
                return True
        self._answer(request, answer, started)
        self.flush()
        return False

    def answer(self, item: reactorkit.Request | http11.Error, started: float) -> None:
        """Answer ``item`` now: an error's response, or what the site dispatches."""
        if type(item) is _ERROR:
            self.send(None, error_response(item.status, item.reason), started)
            return
        request: reactorkit.Request = item  # type: ignore[assignment]
        self._answer(request, self._dispatch(request), started)

    def _answer(
        self,
        request: reactorkit.Request,
        answer: reactorkit.Response | reactorkit.Route | Any,
        started: float,
    ) -> None:
        if type(answer) is _Response:
            self.send(request, answer, started)
        elif isinstance(answer, _Route):  # blocking: its answer comes later
            self.running = True
            future = self._connection.reactor.run_in_thread(answer.function, request)
            future.add_done_callback(functools.partial(self._ran, answer, request, started))
        else:
            self.send(request, answer, started)

    def _ran(
        self,
        route: reactorkit.Route,
        request: reactorkit.Request,
        started: float,
        future: reactorkit.Future[Any],
    ) -> None:
        self.running = False
        if not self._connection.is_closing():
            self.send(request, self._site.finish_blocking(route, request, future), started)
            self._streamed()

    def send(
        self, request: reactorkit.Request | None, response: reactorkit.Response, started: float
    ) -> None:
        """Answer the oldest request with ``response``.

        The bytes are batched until :meth:`flush`; an iterable body starts
        streaming at once (:attr:`stream` is set until it ends). The response
        says ``Connection: close`` if it is the last (``max_requests``, or
        the handler says so).
        """
        self._served += 1
        close = 0 < self._max_requests <= self._served or (self.closing and self._is_last())
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
