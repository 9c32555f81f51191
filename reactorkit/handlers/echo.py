"""echo: the Echo Protocol of RFC 862 over TCP.

"Once a connection is established any data received is sent back. This
continues until the calling user terminates the connection." (RFC 862)

Flow control is what keeps a client that sends but never reads from
growing the server's memory: when the write buffer passes the high water
mark, reading pauses until it drains.
"""

from __future__ import annotations

import reactorkit


class EchoHandler(reactorkit.Handler):
    """Send every byte back as it arrives."""

    # No per-connection __dict__ (Handler has slots too): an idle echo
    # connection costs its handler 56 bytes.
    __slots__ = ("data_received",)

    def connection_made(self, connection: reactorkit.Transport) -> None:
        self.connection = connection
        # The hot path: bytes go straight to write(), one Python call per read.
        # Set through the slot itself: a subclass's own data_received (with
        # a __dict__, a plain assignment would shadow it) stays in charge, and
        # its super().data_received(data) is this write.
        _DATA_RECEIVED_SLOT.__set__(self, connection.write)

    def pause_writing(self) -> None:
        self.connection.pause_reading()

    def resume_writing(self) -> None:
        self.connection.resume_reading()


_DATA_RECEIVED_SLOT = EchoHandler.__dict__["data_received"]


@reactorkit.hookimpl
def reactorkit_handler_types() -> list[reactorkit.HandlerType]:
    return [
        reactorkit.HandlerType(
            name="echo",
            handler=EchoHandler,
            description="RFC 862 echo: sends back every byte it receives",
            default_port=7007,
        )
    ]
