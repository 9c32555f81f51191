"""Transport: what a handler sees of its connection, as one typing.Protocol.

Both :class:`reactorkit.Connection` (a real socket) and
:class:`reactorkit.testing.FakeConnection` (memory) implement it, and mypy
checks both against it, so a handler tested on the fake behaves the same on
a socket. Handlers should use nothing else of their connection.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from reactorkit.reactor import Reactor

__all__ = ["Transport"]


class Transport(Protocol):
    """The connection API a handler may use.

    Ordering guarantees both implementations keep:

    * ``connection_lost`` is delivered on a later loop pass than the
      ``close()``/``abort()`` that caused it, never inside the caller;
    * after ``eof_received`` nothing more is read (``is_reading`` is False);
    * once ``is_closing()`` is true, ``write`` is silently ignored.
    """

    #: The reactor this connection runs on (timers, threads).
    reactor: Reactor
    #: The listener that accepted it (its ``name``, ``options``, ``stats``), or None.
    listener: Any
    #: The peer's address as ``accept()`` returned it.
    peername: Any
    #: The local address.
    sockname: Any
    bytes_received: int
    bytes_sent: int
    high_water: int
    low_water: int

    @property
    def peer_certificate(self) -> dict[str, Any] | None:
        """The client's verified certificate (``SSLObject.getpeercert()``) with
        mutual TLS; None on plain connections or when the client sent none."""

    @property
    def alpn_protocol(self) -> str | None:
        """The protocol ALPN negotiated (``"http/1.1"``), or None."""

    @property
    def is_tls(self) -> bool:
        """True if the connection is TLS (``https`` rather than ``http``)."""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send ``data`` (buffered when the peer is slow); ignored once closing."""

    def writelines(self, chunks: Iterable[bytes | bytearray | memoryview]) -> None:
        """Write every chunk, in order."""

    def close(self) -> None:
        """Stop reading, flush what is buffered, then close."""

    def abort(self) -> None:
        """Close at once, dropping what is buffered."""

    def is_closing(self) -> bool:
        """True once ``close()``/``abort()`` was called or the peer went away."""

    @property
    def state(self) -> str:
        """``"open"``, ``"closing"``, ``"lingering"`` or ``"closed"``."""

    def pause_reading(self) -> None:
        """Stop delivering ``data_received`` until :meth:`resume_reading`."""

    def resume_reading(self) -> None:
        """Deliver ``data_received`` again."""

    @property
    def is_reading(self) -> bool:
        """True unless reading is paused, EOF arrived, or the connection is closing."""

    def get_write_buffer_size(self) -> int:
        """Bytes written but not yet taken by the peer."""

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """Set the water marks that drive ``pause_writing``/``resume_writing``."""
