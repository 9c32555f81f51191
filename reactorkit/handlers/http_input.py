"""The request side of one http-lite connection: the core's events made into requests.

:class:`Input` pulls the events of the sans-IO core
(:class:`reactorkit.http11.ServerConnection`): a head, its body in pieces,
its end, or a protocol error. It hands each complete request, as routes see
it (:class:`reactorkit.Request`), to the connection's
:class:`~.http_output.Output`, in order, while fewer than ``max_pending``
wait there. It keeps the request whose body is arriving and whether its
client waits for ``100 Continue``. When to read and when to close is the
handler's business.
"""

from __future__ import annotations

from typing import Any, final

import reactorkit
from reactorkit import http11
from reactorkit.handlers.http_output import Output
from reactorkit.web import build_request

__all__ = ["Input"]

_REQUEST, _END, _DATA, _ERROR = http11.Request, http11.EndOfMessage, http11.Data, http11.Error


@final
class Input:
    """Complete requests in, in order, for one connection.

    Args:
        core: the connection's sans-IO HTTP core.
        connection: the connection (its reactor, peer and TLS are read).
        listener: what :attr:`reactorkit.Request.listener` says.
        out: where complete requests (and errors) go.
        max_pending: how many may wait there before :meth:`pull` stops.

    Attributes:
        head: the request whose body is arriving, or None.
        started: the reactor time the last head completed.
        want_continue: the client of :attr:`head` waits for ``100 Continue``.
    """

    __slots__ = (
        "_body",
        "_core",
        "_listener",
        "_max_pending",
        "_out",
        "_peer",
        "_reactor",
        "_scheme",
        "head",
        "started",
        "want_continue",
    )

    def __init__(
        self,
        core: http11.ServerConnection,
        connection: reactorkit.Transport,
        listener: reactorkit.Listener | None,
        out: Output,
        max_pending: int,
    ) -> None:
        self._core = core
        self._reactor = connection.reactor
        self._peer = connection.peername
        self._scheme = "https" if connection.is_tls else "http"
        self._listener = listener
        self._out = out
        self._max_pending = max_pending
        self.head: http11.Request | None = None
        self.started = 0.0
        self._body = bytearray()  # not a list: a body in many small reads stays its size
        self.want_continue = False

    def pull(self) -> bool:
        """Hand what the core has to the output, until ``max_pending`` wait there.

        Returns:
            True if it stopped because ``max_pending`` wait (the core may
            have more); False when the core needs more bytes, the client
            closed, or an error was queued.
        """
        core, out = self._core, self._out
        queue = out.queue
        while len(queue) < self._max_pending:
            event: Any = core.next_event()
            kind = type(event)
            if kind is _REQUEST:
                self.head, self.started = event, self._reactor.time
                self.want_continue = event.expects_continue
            elif kind is _END:
                out.add(self._request(event), self.started)
            elif kind is _DATA:
                self._body += event.data
            else:
                if kind is _ERROR:
                    queue.append((event, self._reactor.time))
                    self.head, self.want_continue = None, False
                return False
        return True

    def fail(self, status: int, reason: str) -> None:
        """Give up on the client's side (a timeout): its error is queued, to answer in turn."""
        self._out.queue.append((self._core.fail(status, reason), self._reactor.time))
        self.head, self.want_continue = None, False

    def request_of(self, head: http11.Request) -> reactorkit.Request:
        """The request routes see for ``head``, a request without a body."""
        return build_request(
            head.method,
            head.path,
            head.query,
            head.headers,
            head.host,
            head.http_version,
            self._scheme,
            self._peer,
            self._listener,
        )

    def _request(self, end: http11.EndOfMessage) -> reactorkit.Request:
        head = self.head
        assert head is not None
        self.head, self.want_continue = None, False
        request = self.request_of(head)
        if self._body:
            request.body, self._body = bytes(self._body), bytearray()
        if end.trailers:
            request.trailers = reactorkit.Headers(end.trailers)
        return request
