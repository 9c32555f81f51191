"""Helpers for testing handlers: without sockets, and with a real server.

* :class:`FakeConnection` drives a handler in memory (in the spirit of
  Twisted's ``StringTransport``): feed it bytes, read back what the handler
  wrote, see whether it closed or paused. Its reactor runs on a
  :class:`FakeClock`, so timeouts are tested by advancing time, not sleeping.
* :func:`serve` runs a real reactor with real listeners on ephemeral ports
  in a background thread and stops it cleanly on exit.
"""

from reactorkit.testing.fake import FakeClock
from reactorkit.testing.fake import FakeConnection
from reactorkit.testing.fake import run_once
from reactorkit.testing.fake import run_until
from reactorkit.testing.server import RunningServer
from reactorkit.testing.server import serve

__all__ = [
    "FakeClock",
    "FakeConnection",
    "RunningServer",
    "run_once",
    "run_until",
    "serve",
]
