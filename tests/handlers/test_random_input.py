"""Random bytes, split anywhere, never make a built-in handler raise."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

import reactorkit
from reactorkit.handlers.chat import ChatHandler, ChatOptions, ChatRooms
from reactorkit.handlers.echo import EchoHandler
from reactorkit.handlers.http_lite import HttpHandler, HttpOptions, HttpSite
from reactorkit.handlers.line_command import (
    BUILTINS,
    CommandTable,
    LineCommandHandler,
    LineCommandOptions,
)
from reactorkit.testing import FakeConnection


def make_handlers() -> list[reactorkit.Handler]:
    rooms = ChatRooms(options=ChatOptions(max_line_length=64, rate=1000, burst=1000))
    commands = CommandTable.build(
        LineCommandOptions(max_line_length=64),
        [reactorkit.Contribution(c, "line-command", None) for c in BUILTINS],
    )
    routes = HttpSite.build(HttpOptions(max_request_line=128, max_header_size=256), [])
    return [EchoHandler(), ChatHandler(rooms), LineCommandHandler(commands), HttpHandler(routes)]


# Bytes that matter to the parsers, mixed with anything at all.
chunks = st.lists(
    st.one_of(
        st.binary(max_size=40),
        st.sampled_from(
            [
                b"\r\n",
                b"\n",
                b"/",
                b'"',
                b"'",
                b"GET / HTTP/1.1\r\n",
                b"\r\n\r\n",
                b"Content-Length: 5\r\n",
                b"Transfer-Encoding: chunked\r\n",
                b"/join x\n",
                b"/nick \xff\n",
                b'ECHO "a\n',
                b"\x00",
                b"\xc3",
            ]
        ),
    ),
    max_size=30,
)


@settings(max_examples=150, deadline=None)
@given(parts=chunks, eof=st.booleans())
def test_random_input_never_raises(parts: list[bytes], eof: bool) -> None:
    for handler in make_handlers():
        conn = FakeConnection(handler)
        for part in itertools.chain(parts):
            if conn.closed or not conn.is_reading:
                break
            if part:
                conn.feed(part)
        if eof and not conn.closed:
            conn.feed_eof()
