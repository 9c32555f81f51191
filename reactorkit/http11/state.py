"""The states of :mod:`reactorkit.http11` and their transition tables.

What lives here: which state each side of an HTTP/1.1 connection can be in,
and the (state, what happened) -> next state tables. What it must not know:
bytes, sockets, time. The connection applies these tables; a pair missing
from a table is a bug in the core, never a client's doing.
"""

from __future__ import annotations

import enum
from typing import Final

__all__ = ["CLIENT_TRANSITIONS", "SERVER_TRANSITIONS", "State"]


class State(enum.Enum):
    """Where one side of the connection stands."""

    IDLE = "idle"  # between messages
    HEAD = "head"  # client: a request head is arriving
    BODY = "body"  # client: its body is arriving; server: a streamed body is being sent
    MUST_CLOSE = "must-close"  # no message may follow the last one
    CLOSED = "closed"  # client: EOF
    ERROR = "error"  # client: broke the protocol

    # Members are singletons: identity hashing keeps the table lookups cheap
    # (Enum's own __hash__ is a Python-level call).
    __hash__ = object.__hash__


# The transition tables: (state, what happened) -> new state. They know the
# framing rules of RFC 9112 sections 6 and 9, nothing about sockets or time.
# A pair missing from a table is a bug in this module, never a client's doing.
CLIENT_TRANSITIONS: Final = {
    (State.IDLE, "bytes"): State.HEAD,
    (State.IDLE, "eof"): State.CLOSED,
    (State.IDLE, "error"): State.ERROR,
    (State.HEAD, "head, no body"): State.IDLE,
    (State.HEAD, "head, no body, close"): State.MUST_CLOSE,
    (State.HEAD, "head, body"): State.BODY,
    (State.HEAD, "error"): State.ERROR,
    (State.HEAD, "eof"): State.ERROR,
    (State.BODY, "end"): State.IDLE,
    (State.BODY, "end, close"): State.MUST_CLOSE,
    (State.BODY, "error"): State.ERROR,
    (State.BODY, "eof"): State.ERROR,
    (State.MUST_CLOSE, "eof"): State.CLOSED,
    (State.MUST_CLOSE, "error"): State.ERROR,
}
SERVER_TRANSITIONS: Final = {
    (State.IDLE, "response"): State.IDLE,
    (State.IDLE, "response, close"): State.MUST_CLOSE,
    (State.IDLE, "response head, body follows"): State.BODY,
    (State.BODY, "end"): State.IDLE,
    (State.BODY, "end, close"): State.MUST_CLOSE,
}
