"""HTTP/1.1 for a server, sans-IO: bytes in, events out; responses in, bytes out.

:class:`ServerConnection` never touches a socket, a timer or a logger. The
caller feeds it what it read (:meth:`~ServerConnection.feed`, and
:meth:`~ServerConnection.feed_eof`), pulls events with
:meth:`~ServerConnection.next_event` (:class:`Request`, :class:`Data`,
:class:`EndOfMessage`, :class:`ConnectionClosed`, :class:`Error` or
:data:`NEED_DATA`) and turns responses into bytes with
:meth:`~ServerConnection.send`. The shape is h11's; the state of each side is
a :class:`State` and the transitions are two tables,
:data:`CLIENT_TRANSITIONS` and :data:`SERVER_TRANSITIONS` (``state.py``).

Framing, in one place:

* The request line is checked here before anything else sees it: it must
  end in CRLF (RFC 9112 section 2.2, a bare LF or CR is a 400) and name
  ``HTTP/1.1`` or ``HTTP/1.0`` (another HTTP version is a 505, another
  protocol such as ``RTSP/1.0`` a 400).
* A read that holds exactly one simple head (``GET``/``HEAD``, plain
  origin-form target, visible-ASCII fields, no body) is recognised by one
  regular expression (``head.simple_head``); the rest goes to llhttp:
* The head is tokenized by httptools (llhttp), fed exactly the head's bytes
  (this module finds the blank line that ends it, remembering how far it
  searched), so llhttp's strictness about field syntax applies: obs-fold,
  NUL, bad tokens, ``Content-Length`` with ``Transfer-Encoding``, repeated
  or signed ``Content-Length``, obfuscated ``Transfer-Encoding`` are 400s.
* The body is framed here, from the head's fields: ``Content-Length`` is
  counted, ``chunked`` is decoded by ``framing.ChunkedReader``. So an
  ``Upgrade`` request (ignored, RFC 9110 section 7.8) keeps its body as a
  body, and a chunk size over the body limit is a 413 as soon as its line
  is read.
* Requests are read ahead of the responses (pipelining): every request the
  caller pulled and has not answered is counted in
  :attr:`ServerConnection.pending`, and :meth:`ServerConnection.send`
  answers the oldest, so keep-alive, HEAD and HTTP/1.0 rules follow it.

Memory: the receive buffer holds at most one head (``max_request_line`` +
``max_header_size``) beyond what the caller has fed and not pulled; a body
is handed out as :class:`Data` as it arrives.

The package, one job per module: ``events`` (what comes out), ``state``
(the states and their tables), ``head`` (the checks of a request head, and
simple heads), ``framing`` (request-line and target checks, chunked
decoding, limits), ``responses`` (response encoding and its checks),
``connection`` (:class:`ServerConnection`, which applies them).
"""

from reactorkit.http11.connection import ServerConnection
from reactorkit.http11.events import NEED_DATA
from reactorkit.http11.events import ConnectionClosed
from reactorkit.http11.events import Data
from reactorkit.http11.events import EndOfMessage
from reactorkit.http11.events import Error
from reactorkit.http11.events import Event
from reactorkit.http11.events import Request
from reactorkit.http11.framing import DEFAULT_MAX_BODY_SIZE
from reactorkit.http11.framing import DEFAULT_MAX_HEADER_SIZE
from reactorkit.http11.framing import DEFAULT_MAX_HEADERS
from reactorkit.http11.framing import DEFAULT_MAX_REQUEST_LINE
from reactorkit.http11.framing import Limits
from reactorkit.http11.responses import status_line
from reactorkit.http11.state import CLIENT_TRANSITIONS
from reactorkit.http11.state import SERVER_TRANSITIONS
from reactorkit.http11.state import State

__all__ = [
    "CLIENT_TRANSITIONS",
    "DEFAULT_MAX_BODY_SIZE",
    "DEFAULT_MAX_HEADERS",
    "DEFAULT_MAX_HEADER_SIZE",
    "DEFAULT_MAX_REQUEST_LINE",
    "NEED_DATA",
    "SERVER_TRANSITIONS",
    "ConnectionClosed",
    "Data",
    "EndOfMessage",
    "Error",
    "Event",
    "Limits",
    "Request",
    "ServerConnection",
    "State",
    "status_line",
]
