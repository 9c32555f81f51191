"""ServerConnection: the server side of one HTTP/1.1 connection, sans-IO.

See :mod:`reactorkit.http11` for the theory of operation.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from typing import final

import httptools

from reactorkit.errors import HttpProtocolError
from reactorkit.http11.events import (
    CLOSED,
    END,
    NEED_DATA,
    Data,
    EndOfMessage,
    Error,
    Event,
    NeedData,
    Request,
)
from reactorkit.http11.framing import (
    VERSIONS,
    ChunkedReader,
    Limits,
    Refused,
    check_request_line,
)
from reactorkit.http11.head import (
    FRAMING_NAMES,
    KNOWN_HOSTS,
    QUICK,
    FieldsText,
    check_head,
    known_host,
    simple_head,
)
from reactorkit.http11.responses import (
    CONTINUE,
    LENGTH_LINES,
    NO_BODY_STATUS,
    PREFIXES,
    content_type_line,
    encode_fields,
    flat,
    length_line,
    plain_prefix,
    status_line,
)
from reactorkit.http11.state import CLIENT_TRANSITIONS, SERVER_TRANSITIONS, State
from reactorkit.web import Headers, Response

__all__ = ["ServerConnection"]

_IDLE = State.IDLE
_HEAD = State.HEAD
_BODY = State.BODY
# The common path's transitions, read from the tables once (the tables stay the rule).
_HEAD_DONE = CLIENT_TRANSITIONS[_HEAD, "head, no body"]
_HEAD_DONE_CLOSE = CLIENT_TRANSITIONS[_HEAD, "head, no body, close"]
# Methods decoded once; another token is decoded per request.
_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")}
_new = object.__new__
# What receive_simple's search of a head finds in the heads it takes: one
# Host, and at most one Connection (which must then say keep-alive).
_HOST_ONLY = ["\nhost:"]
_HOST_AND_CONNECTION = (["\nhost:", "\nconnection:"], ["\nconnection:", "\nhost:"])
# Per request not yet answered: (is HEAD, HTTP/1.0, keep-alive), shared, not rebuilt.
_RECORDS = [(bool(i & 4), bool(i & 2), bool(i & 1)) for i in range(8)]
_KEEP_ALIVE = _RECORDS[1]  # a keep-alive HTTP/1.1 request other than HEAD: the commonest


def _llhttp(owner: ServerConnection) -> httptools.HttpRequestParser:
    """A new llhttp parser reporting to ``owner``, lenient about keep-alive.

    Whether the connection stays open is the core's decision
    (:func:`~reactorkit.http11.head.check_head` reads Connection, RFC 9110
    section 7.6.1), and once it is "close" llhttp is fed nothing more. llhttp
    decides too, and differently (it takes ``Proxy-Connection`` for
    ``Connection``): without the leniency it refuses the next request the
    core kept the connection open for, but only when llhttp read the head
    before it, so the answer would depend on how the reads fall.
    """
    parser = httptools.HttpRequestParser(owner)
    parser.set_dangerous_leniencies(lenient_keep_alive=True)
    return parser


@final
class ServerConnection:
    """The server side of one HTTP/1.x connection.

    Args:
        limits: the input bounds.
    """

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits if limits is not None else Limits()
        self.their_state = State.IDLE
        self.our_state = State.IDLE
        self._buffer: bytes | bytearray = b""
        self._pos = 0
        self._eof = False
        self._events: collections.deque[Event] = collections.deque()
        # Per request not yet answered: (is HEAD, HTTP/1.0, keep-alive); an
        # Error is answered too, with keep-alive off.
        self._unanswered: collections.deque[tuple[bool, bool, bool]] = collections.deque()
        self._parser = _llhttp(self)
        # The head being read.
        self._line_end = 0
        self._version = ""
        self._fed = 0  # bytes of the buffer already given to llhttp
        self._scanned = 0  # where the search for the blank line resumes
        self._url = b""
        self._fields: list[tuple[str, str]] = []  # decoded as llhttp reports them
        self._head_done = False
        self._max_body = self.limits.max_body_size
        # A head this short is within every size limit: simple_head may read it.
        self._simple_max = min(self.limits.max_request_line, self.limits.max_header_size)
        self._max_lines = self.limits.max_headers + 2  # the request line, fields, the blank line
        self._few_fields = 4 * self.limits.max_headers  # a head this short has no more fields
        # The body being read.
        self._remaining = 0  # Content-Length still to come
        self._chunked: ChunkedReader | None = None
        self._close_after = False
        self._continue_owed = False
        # The response being streamed.
        self._stream_chunked = False
        self._stream_left: int | None = None
        self._close_after_response = False

    # -- input --------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Add bytes read from the client (nothing is parsed until :meth:`next_event`)."""
        if not data or self.their_state in (State.ERROR, State.CLOSED, State.MUST_CLOSE):
            return  # after the last request, bytes are read and dropped
        if self._pos >= len(self._buffer):
            self._buffer = data
            self._pos = 0
            self._fed = self._scanned = 0
            return
        if isinstance(self._buffer, bytes) or self._pos:
            self._buffer = bytearray(memoryview(self._buffer)[self._pos :])
            self._fed -= self._pos
            self._scanned -= self._pos
            if self._line_end:
                self._line_end -= self._pos
            self._pos = 0
        self._buffer += data

    def receive_request(self, data: bytes) -> Request | None:
        """Feed ``data``; if it is exactly one whole request without a body, return it.

        The fast path of the common case (a keep-alive GET in one read): the
        request is complete, no :class:`EndOfMessage` follows it and nothing
        else is queued; answer it with :meth:`send` as usual. In every other
        case (part of a head, a body, pipelined requests, bytes already
        buffered, a protocol error) the data is only fed and None returned:
        pull the events with :meth:`next_event`.
        """
        if (
            self.their_state is not _IDLE
            or self._events
            or self._pos < len(self._buffer)
            or type(data) is not bytes
            or len(data) < 5
            or data.find(b"\r\n\r\n") != len(data) - 4  # exactly one blank line: at the end
            or data[0] == 13
        ):
            self.feed(data)
            return None
        if len(data) <= self._simple_max:
            head = simple_head(data)
            if head is not None and len(head[3]) <= self.limits.max_headers:
                return self._simple_request(*head)
        self._buffer = data
        self._pos = 0
        return self._whole_head(data)

    def receive_simple(self, data: bytes) -> tuple[str, str, str, Headers, str, str] | None:
        """The commonest request in one step: ``(method, path, query, headers, host, version)``.

        If ``data`` is exactly one simple head (see
        :func:`~reactorkit.http11.head.simple_head`) with one valid Host field,
        no Expect field and no Connection field but ``Connection:
        keep-alive``, arriving with nothing buffered or
        queued, the request is taken (complete, no body: answer it with
        :meth:`send`) and its parts returned: the path and query as sent, the
        fields as :class:`~reactorkit.Headers` split when first read. No event
        is made. Anything else returns None and takes nothing: use
        :meth:`receive_request` or :meth:`feed`. What it returns is what
        :meth:`receive_request` gives (``tests/test_http11_head.py``).
        """
        if (
            self.their_state is not _IDLE
            or self._events
            or self._pos < len(self._buffer)
            or type(data) is not bytes
            or len(data) > self._simple_max
        ):
            return None
        text = data.decode("latin-1")
        match = QUICK.fullmatch(text)  # exactly one head: it ends at the only blank line
        if match is None:
            return None
        # Field names are tokens right after a line's LF and values hold no
        # LF: a field is found by its LF. Host once; Connection at most once,
        # saying only keep-alive (browsers and ab send it), which changes
        # nothing on HTTP/1.1 and keeps an HTTP/1.0 connection.
        low = text.lower()
        found = FRAMING_NAMES.findall(low)
        if found == _HOST_ONLY:
            keep_alive = None
        elif found in _HOST_AND_CONNECTION:
            start = low.find("\nconnection:") + 12
            if low[start : low.find("\r", start)].strip(" \t") != "keep-alive":
                return None  # close, upgrade, a list: check_head reads it
            keep_alive = True
        else:
            return None
        if len(data) > self._few_fields and text.count("\n") > self._max_lines:
            return None
        start = low.find("\nhost:") + 6
        host = text[start : text.find("\r", start)].strip(" \t")
        if host not in KNOWN_HOSTS and not known_host(host):
            return None
        method, path, query, minor = match.groups()
        old = minor == "0"
        if keep_alive is None:  # no Connection field: HTTP/1.1 keeps it, HTTP/1.0 closes
            keep_alive = not old
        self._unanswered.append(_RECORDS[(method == "HEAD") * 4 + old * 2 + keep_alive])
        self.their_state = _HEAD_DONE if keep_alive else _HEAD_DONE_CLOSE
        self._buffer = b""
        self._pos = 0
        headers = _new(FieldsText)  # FieldsText(text, start), without the call to __init__
        headers._text = text
        headers._start = match.end(4) + 2
        headers._map = None
        return method, path, query or "", headers, host, "1.0" if old else "1.1"

    def feed_eof(self) -> None:
        """The client shut down its sending side."""
        self._eof = True

    @property
    def buffered(self) -> int:
        """Bytes fed and not yet turned into events."""
        return len(self._buffer) - self._pos

    @property
    def pending(self) -> int:
        """Requests (and errors) pulled with :meth:`next_event` and not yet answered."""
        return len(self._unanswered)

    def next_event(self) -> Event | NeedData:
        """The next event, or :data:`NEED_DATA` when more bytes are needed."""
        events = self._events
        if events:
            return events.popleft()
        buffer = self._buffer
        pos = self._pos
        if pos >= len(buffer) and not self._eof:
            return NEED_DATA
        state = self.their_state
        if (
            state is _IDLE
            and not pos
            and type(buffer) is bytes
            and buffer.endswith(b"\r\n\r\n")
            and buffer.find(b"\r\n\r\n") == len(buffer) - 4
            and buffer[0] != 13
        ):
            request = self._whole_head(buffer)  # a read holding exactly one head: most
            if request is not None:
                return self._complete(request)
        elif state is _IDLE or state is _HEAD:
            self._read_head()
        elif state is _BODY:
            self._read_body()
        if events:
            return events.popleft()
        if self._eof:
            state = self.their_state
            if state is State.MUST_CLOSE or (state is _IDLE and not self.buffered):
                self.their_state = CLIENT_TRANSITIONS[state, "eof"]
                return CLOSED
            if state is _HEAD or state is _BODY:
                return self._fail(400, "the connection closed in the middle of a request")
        return NEED_DATA

    def fail(self, status: int, reason: str) -> Error:
        """Give up on the client's side (e.g. a timeout): the :class:`Error` to answer."""
        return self._fail(status, reason)

    def _fail(self, status: int, reason: str) -> Error:
        if self.their_state is State.BODY:
            self._unanswered.pop()  # the request being received is answered by the error
        self.their_state = State.ERROR
        self._buffer = b""
        self._pos = 0
        self._unanswered.append((False, False, False))
        return Error(status, reason)

    # -- the head -----------------------------------------------------------

    def _read_head(self) -> None:
        buffer = self._buffer
        pos = self._pos
        end = len(buffer)
        if self.their_state is State.IDLE:
            # RFC 9112 section 2.2: ignore empty lines before a request line.
            while buffer[pos : pos + 2] == b"\r\n":
                pos += 2
            self._pos = pos
            if pos >= end or (pos + 1 == end and buffer[pos] == 13):  # none, or a lone CR
                return
            self.their_state = CLIENT_TRANSITIONS[State.IDLE, "bytes"]
            self._line_end = 0
            self._fed = self._scanned = pos
            self._url = b""
            self._fields = []
            self._head_done = False
        limits = self.limits
        blank = -1
        if not self._line_end:
            newline = buffer.find(b"\n", max(self._scanned, pos))
            if newline >= 0:
                self._line_end = newline + 1
                self._scanned = max(pos, newline - 1)
            else:
                self._scanned = end
        if self._line_end:  # a blank line can only follow the request line
            blank = buffer.find(b"\r\n\r\n", max(self._scanned, pos))
        stop = end if blank < 0 else blank + 4
        renew = False
        if self._fed == 0 and stop == end and isinstance(buffer, bytes):
            view: bytes | memoryview = buffer  # the common case: one whole head per read
        else:
            view = memoryview(buffer)[self._fed : stop]
        try:
            self._parser.feed_data(view)
        except httptools.HttpParserUpgrade:
            renew = True  # the head is complete; Upgrade is ignored (RFC 9110 section 7.8)
        except httptools.HttpParserError as exc:
            self._events.append(self._parse_error(exc))
            return
        finally:
            if isinstance(view, memoryview):
                view.release()
        self._fed = stop
        if len(self._url) > limits.max_request_line:
            self._events.append(self._fail(414, "request target too long"))
            return
        if len(self._fields) > limits.max_headers:
            self._events.append(self._fail(431, "too many header fields"))
            return
        if blank < 0:
            self._scanned = max(pos, end - 3)
            if not self._line_end and end - pos > limits.max_request_line + 32:
                self._events.append(self._fail(414, "request line too long"))
            elif self._line_end and end - self._line_end > limits.max_header_size:
                self._events.append(self._fail(431, "request header fields too large"))
            return
        self._head_read(pos, stop, renew)

    def _whole_head(self, buffer: bytes) -> Request | None:
        """Parse ``buffer``, exactly one head from the start of a request.

        Returns the request if it has no body (complete: the caller emits it,
        with :data:`END` if it pulls events); otherwise queues what came (the
        request, or an error) and returns None. A simple head within every
        limit is checked by :func:`~reactorkit.http11.head.simple_head`,
        anything else by llhttp.
        """
        if len(buffer) <= self._simple_max:
            head = simple_head(buffer)
            if head is not None and len(head[3]) <= self.limits.max_headers:
                return self._simple_request(*head)
        self.their_state = _HEAD
        self._url = b""
        self._fields = []
        self._head_done = False
        renew = False
        try:
            self._parser.feed_data(buffer)
        except httptools.HttpParserUpgrade:
            renew = True  # the head is complete; Upgrade is ignored (RFC 9110 section 7.8)
        except httptools.HttpParserError as exc:
            self._events.append(self._parse_error(exc))
            return None
        line_end = self._line_end = buffer.find(b"\n") + 1
        end = len(buffer)
        limits = self.limits
        try:
            if (
                len(self._url) > limits.max_request_line
                or line_end > limits.max_request_line + 33
                or len(self._fields) > limits.max_headers
                or not self._head_done
                or end - line_end > limits.max_header_size
            ):
                self._check_sizes(0, end)  # raises the right refusal
            self._version = (
                "1.1"
                if buffer.startswith(b" HTTP/1.1\r\n", line_end - 11)
                else check_request_line(buffer[: line_end - 1])
            )
            request, body = self._check_parsed()
        except Refused as refused:
            self._events.append(self._fail(refused.status, refused.reason))
            return None
        self._pos = end
        if renew:
            self._parser = _llhttp(self)
        if self._accept(request, body):
            self._buffer = b""
            self._pos = 0
            return request
        if self._pos >= len(self._buffer):
            self._buffer = b""
            self._pos = 0
        return None

    def _simple_request(
        self, method: str, target: str, version: str, fields: list[tuple[str, str]]
    ) -> Request | None:
        """The request of a head :func:`simple_head` read (no body), or None if refused."""
        self._version = version
        try:
            request, _ = check_head(method, target, version, fields, self._max_body)
        except Refused as refused:
            self.their_state = _HEAD
            self._events.append(self._fail(refused.status, refused.reason))
            return None
        # No body: simple_head leaves Content-Length and Transfer-Encoding to llhttp.
        keep_alive = request.keep_alive
        self._unanswered.append(
            _RECORDS[(method == "HEAD") * 4 + (version == "1.0") * 2 + keep_alive]
        )
        self.their_state = _HEAD_DONE if keep_alive else _HEAD_DONE_CLOSE
        self._buffer = b""
        self._pos = 0
        return request

    def _complete(self, request: Request) -> Request:
        # A bodyless request pulled through next_event(): END follows it.
        self._events.append(END)
        if self.their_state is State.MUST_CLOSE:
            self._buffer = b""  # a pipelined request after "close" is never read
            self._pos = 0
        return request

    def _parse_error(self, exc: httptools.HttpParserError) -> Error:
        if str(exc) == "Invalid HTTP version":
            return self._fail(505, VERSIONS)
        return self._fail(400, f"malformed request: {exc}")

    def _check_sizes(self, start: int, stop: int) -> None:
        """The limits of a head that llhttp read from ``start`` to ``stop``, or :class:`Refused`."""
        limits = self.limits
        if len(self._url) > limits.max_request_line:
            raise Refused(414, "request target too long")
        # The line as a whole, as _read_head bounds one still arriving: else
        # padding (spaces llhttp skips) passes in one read and not in two.
        if self._line_end - 1 - start > limits.max_request_line + 32:
            raise Refused(414, "request line too long")
        if len(self._fields) > limits.max_headers:
            raise Refused(431, "too many header fields")
        if not self._head_done:  # llhttp agrees the head ended, or it is a bug
            raise Refused(400, "malformed request head")
        if stop - self._line_end > limits.max_header_size:
            raise Refused(431, "request header fields too large")

    def _head_read(self, pos: int, stop: int, renew: bool) -> None:
        """The head ``buffer[pos:stop]`` went through llhttp: check it, emit the request."""
        try:
            self._check_sizes(pos, stop)
            self._version = check_request_line(self._buffer[pos : self._line_end - 1])
            request, body = self._check_parsed()
        except Refused as refused:
            self._events.append(self._fail(refused.status, refused.reason))
            return
        self._pos = stop
        if renew:
            self._parser = _llhttp(self)
        if self._accept(request, body):
            self._events.append(request)
            self._complete(request)
        if self._pos >= len(self._buffer):
            self._buffer = b""
            self._pos = 0

    def _accept(self, request: Request, body: int | None) -> bool:
        """Count ``request`` as unanswered and follow its body: True if it has none.

        With a body, the request is queued and the body is read next.
        """
        keep_alive = request.keep_alive
        self._unanswered.append(
            _RECORDS[(request.method == "HEAD") * 4 + (self._version == "1.0") * 2 + keep_alive]
        )
        if body is None:
            self.their_state = _HEAD_DONE if keep_alive else _HEAD_DONE_CLOSE
            return True
        self._events.append(request)
        self._close_after = not keep_alive
        self.their_state = CLIENT_TRANSITIONS[State.HEAD, "head, body"]
        self._parser = _llhttp(self)  # llhttp never sees bodies
        self._continue_owed = request.expects_continue
        if body < 0:
            self._chunked = ChunkedReader(self.limits)
        else:
            self._remaining = body
            self._chunked = None
        return False

    # llhttp callbacks: they only record; checks run once the head is complete.

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        # llhttp strips the leading whitespace of a value, not the trailing
        # (RFC 9110 section 5.5: neither is part of it).
        self._fields.append((name.decode("latin-1"), value.rstrip(b" \t").decode("latin-1")))

    def on_headers_complete(self) -> None:
        self._head_done = True

    def _check_parsed(self) -> tuple[Request, int | None]:
        """:func:`~reactorkit.http11.head.check_head` of what llhttp read."""
        raw_method = self._parser.get_method()
        method = _METHODS.get(raw_method) or raw_method.decode("ascii")
        return check_head(
            method, self._url.decode("latin-1"), self._version, self._fields, self._max_body
        )

    # -- the body -----------------------------------------------------------

    def _read_body(self) -> None:
        buffer = self._buffer
        pos = self._pos
        available = len(buffer) - pos
        if not available:
            return
        chunked = self._chunked
        if chunked is None:
            take = min(available, self._remaining)
            self._remaining -= take
            self._pos = pos + take
            self._events.append(Data(bytes(buffer[pos : pos + take])))
            if not self._remaining:
                self._end_message()
        else:
            try:
                used, done = chunked.read(buffer, pos, self._events)
            except Refused as refused:
                self._events.append(self._fail(refused.status, refused.reason))
                return
            self._pos = pos + used
            if done:
                self._end_message(tuple(chunked.trailers))
        self._continue_owed = False
        if self._pos >= len(self._buffer):
            self._buffer = b""
            self._pos = 0

    def _end_message(self, trailers: tuple[tuple[str, str], ...] = ()) -> None:
        self._events.append(EndOfMessage(trailers) if trailers else END)
        state = self.their_state
        if state is State.HEAD:
            what = "head, no body, close" if self._close_after else "head, no body"
        else:
            what = "end, close" if self._close_after else "end"
        self.their_state = CLIENT_TRANSITIONS[state, what]
        self._chunked = None
        self._continue_owed = False
        if self.their_state is State.MUST_CLOSE:
            self._buffer = b""  # a pipelined request after "close" is never read
            self._pos = 0

    def send_continue(self) -> bytes:
        """``100 Continue`` if the request being received waits for it and is next to answer.

        It is sent at most once, never to HTTP/1.0, and never once the body
        started or an earlier request is still unanswered. Else ``b""``.
        """
        if self._continue_owed and len(self._unanswered) == 1 and self.our_state is State.IDLE:
            self._continue_owed = False
            return CONTINUE
        return b""

    # -- output -------------------------------------------------------------

    def send_common(self, response: Response, date: bytes) -> bytes | None:
        """The bytes of the commonest response, or None: then use :meth:`send`.

        The commonest response has its body in hand (``bytes`` or ``str``),
        no fields of its own, a status with a body, and answers a keep-alive
        HTTP/1.1 request that is not ``HEAD``: it is made of pre-encoded
        lines and leaves the connection as it was. Anything else is None,
        nothing sent; :meth:`send` answers it or explains the refusal.
        """
        unanswered = self._unanswered
        if (
            not unanswered
            or unanswered[0] is not _KEEP_ALIVE
            or self.our_state is not _IDLE
            or response.headers
        ):
            return None
        body = response.body
        content_type = response.content_type
        if type(body) is not bytes:
            if type(body) is not str:
                return None
            try:
                body = body.encode()
            except UnicodeEncodeError:
                return None
            if content_type is None:
                content_type = "text/plain; charset=utf-8"
        # What plain_prefix() would look up; a content type of another type
        # (a list is unhashable) takes the general path, which refuses it.
        status = response.status
        by_status = (
            PREFIXES.get(content_type)
            if content_type is None or type(content_type) is str
            else None
        )
        prefix = by_status.get(status) if by_status and type(status) is int else None
        if prefix is None:
            try:
                prefix = plain_prefix(status, content_type)
            except HttpProtocolError:
                return None  # send() refuses it
            if prefix is None:
                return None
        unanswered.popleft()  # our state stays IDLE: the response is whole
        size = len(body)
        return b"".join(
            (prefix, date, LENGTH_LINES[size] if size < 1024 else length_line(size), body)
        )

    def send(self, response: Response, *, date: bytes = b"", close: bool = False) -> bytes:
        """The bytes of ``response`` to the oldest unanswered request.

        A ``bytes``/``str`` body is included; an iterable body is not: send
        its chunks with :meth:`send_data` and finish with :meth:`send_end`.

        Args:
            response: what to answer.
            date: the ``Date``/``Server`` field lines to include, CRLF-ended.
            close: end the connection after this response.

        Raises:
            HttpProtocolError: no request is waiting for an answer, a body is
                still being streamed, the status is not final (200-599), or
                a field or the body has the wrong type or is not valid (CR,
                LF, NUL, a bad name): nothing was sent, answer something else.
        """
        if not close:
            data = self.send_common(response, date)
            if data is not None:
                return data
        unanswered = self._unanswered
        if not unanswered or self.our_state is not _IDLE:
            raise HttpProtocolError(f"no request to answer (server state {self.our_state.value})")
        is_head, old, keep_alive = unanswered[0]
        status = response.status
        body = response.body
        content_type = response.content_type
        if isinstance(body, str):
            try:
                body = body.encode()
            except UnicodeEncodeError as exc:
                raise HttpProtocolError(f"a str body that UTF-8 cannot encode: {exc}") from None
            if content_type is None:
                content_type = "text/plain; charset=utf-8"
        if type(status) is not int and isinstance(status, int) and type(status) is not bool:
            # An IntEnum (HTTPStatus.CREATED): the int it holds. A subclass's
            # own __int__ is a route's code (it may raise): it is not called.
            status = int.__int__(status)
        if type(status) is not int or not 200 <= status <= 599:
            # RFC 9110 section 15: a final status is 2xx-5xx; a 1xx here
            # would be read as interim and the next response taken for this one.
            raise HttpProtocolError(f"status {status!r} is not a final status (200-599)")
        if not isinstance(body, (str, bytes, bytearray, memoryview, Iterable)):
            raise HttpProtocolError(f"a body of type {type(body).__name__} is not bytes")
        if content_type is not None and not isinstance(content_type, str):
            raise HttpProtocolError(f"content_type {content_type!r} is not a str")
        parts = [status_line(status), date]
        declared: bytes | None = None
        if response.headers:
            declared = encode_fields(response.headers, parts)
        if type(body) is memoryview:
            body = flat(body)  # type: ignore[assignment]  # Body says Iterable[bytes]
        streamed = not isinstance(body, (bytes, bytearray, memoryview))
        self._stream_chunked = False
        self._stream_left = None
        if status in NO_BODY_STATUS or status < 200:
            streamed = False
            body = b""
        else:
            parts.append(content_type_line(content_type or "application/octet-stream"))
            if not streamed:
                parts.append(b"content-length: %d\r\n" % len(body))  # type: ignore[arg-type]
            elif declared is not None:
                parts.append(b"content-length: %s\r\n" % declared)
                self._stream_left = int(declared)
            elif old:
                keep_alive = False  # RFC 9112 section 6.3: the close ends the body
            else:
                parts.append(b"transfer-encoding: chunked\r\n")
                self._stream_chunked = True
        keep_alive = keep_alive and not close
        if not keep_alive:
            parts.append(b"connection: close\r\n")
        elif old:
            parts.append(b"connection: keep-alive\r\n")
        parts.append(b"\r\n")
        self._unanswered.popleft()
        if streamed and not is_head:
            what = "response head, body follows"
            self._close_after_response = not keep_alive
        else:
            what = "response" if keep_alive else "response, close"
            if not is_head:
                parts.append(body)  # type: ignore[arg-type]
        self.our_state = SERVER_TRANSITIONS[State.IDLE, what]
        if not keep_alive:
            self._stop_reading()
        return b"".join(parts)

    def _stop_reading(self) -> None:
        # The response says "close": no later request will be answered, so
        # none is read (RFC 9112 section 9.6).
        self._unanswered.clear()
        self._events.clear()
        self._buffer = b""
        self._pos = 0
        if self.their_state not in (State.CLOSED, State.ERROR):
            self.their_state = State.MUST_CLOSE

    def send_data(self, data: bytes | bytearray | memoryview) -> bytes | bytearray | memoryview:
        """The bytes for one chunk of a streamed body.

        Raises:
            HttpProtocolError: more than the declared ``Content-Length``.
        """
        if self.our_state is not State.BODY:
            raise HttpProtocolError("no streamed body in progress")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise HttpProtocolError(f"a body chunk must be bytes, got a {type(data).__name__}")
        if type(data) is memoryview:
            data = flat(data)
        size = len(data)
        if not size:
            return b""
        if self._stream_chunked:
            return b"%x\r\n%s\r\n" % (size, data)
        if self._stream_left is not None:
            self._stream_left -= size
            if self._stream_left < 0:
                raise HttpProtocolError("the body is longer than its Content-Length")
        return data

    def send_end(self) -> bytes:
        """The bytes that end a streamed body.

        Raises:
            HttpProtocolError: fewer bytes than the declared ``Content-Length``
                (the connection cannot be reused: abort it).
        """
        if self.our_state is not State.BODY:
            raise HttpProtocolError("no streamed body in progress")
        close = self._close_after_response
        self.our_state = SERVER_TRANSITIONS[State.BODY, "end, close" if close else "end"]
        if self._stream_left:
            self.our_state = State.MUST_CLOSE
            raise HttpProtocolError("the body is shorter than its Content-Length")
        return b"0\r\n\r\n" if self._stream_chunked else b""
