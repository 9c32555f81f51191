"""The reactor's cost in CPU instructions per request, counted by valgrind.

    python bench/pass_instructions.py [--before DIR]

Two counts, each the difference of two runs (1000 and 3000 requests) over
2000, so start-up is excluded:

* **echo pass**: a real :class:`reactorkit.Reactor` loop, an echo
  ``Connection`` on one end of a socket pair and, in the same loop, a
  closed-loop client on the other end (64-byte requests). Each request is
  one full server pass (poll, clock, dispatch, read, write) plus the
  client's pass, which is the same code before and after a change. A
  timer is pending, as a listener's idle sweep always keeps one.
* **line-command PING**: ``PING\\r\\n`` fed to a ``LineCommandHandler`` on a
  ``FakeConnection``, one line per read, as at one request per wake-up
  (``rate = 0``): the handler's own work, no socket.

valgrind counts user-space instructions only (the kernel's share is the
same for any server). Unlike time, the counts do not move with the
machine's load: the echo pair is a UNIX ``socketpair``, whose ``send``
puts the bytes in the peer's queue before it returns, so every pass finds
its event ready (over TCP loopback a busy machine delays delivery and the
loop makes passes that find nothing: the same code counted 8 to 23
thousand per request), and the hash seed is fixed (``PYTHONHASHSEED=0``).
What stays is a few instructions from the length of the import path.
With ``--before DIR`` the reactorkit package in DIR (an older checkout) is
counted too.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent

ECHO = """
import socket, sys
import reactorkit
from reactorkit.connection import Connection
from reactorkit.handlers.echo import EchoHandler

count = int(sys.argv[1])
reactor = reactorkit.Reactor()
client, server = socket.socketpair()  # delivery is synchronous: no empty passes
for sock in (client, server):
    sock.setblocking(False)
conn = Connection(reactor, server, EchoHandler())
conn.start()
reactor.call_later(3600, print)  # a server always has a timer pending: the idle sweep
request = b"x" * 64
left = [count]

def client_ready(mask):
    client.recv(65536)
    left[0] -= 1
    if left[0]:
        client.send(request)
    else:
        reactor.stop()

reactor.register(client, 1, client_ready)
client.send(request)
reactor.run()
"""

LINE = """
import sys
import reactorkit
from reactorkit.handlers.line_command import BUILTINS, CommandTable, LineCommandHandler
from reactorkit.handlers.line_command import LineCommandOptions
from reactorkit.testing import FakeConnection, run_once

found = [reactorkit.Contribution(c, "line-command", None) for c in BUILTINS]
table = CommandTable.build(LineCommandOptions(rate=0), found)
handler = LineCommandHandler(table)
connection = FakeConnection(handler)
for n in range(int(sys.argv[1])):
    handler.data_received(b"PING\\r\\n")
    connection.written.clear()
    if n % 100 == 99:
        run_once(connection.reactor)  # as a server's loop would: timers, callbacks
"""


def instructions(feed: str, count: int, env: dict[str, str]) -> int:
    valgrind = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    out = subprocess.run(
        [*valgrind, sys.executable, "-c", feed, str(count)],
        capture_output=True,
        text=True,
        env=env,
        cwd=BENCH,  # not a checkout's root: it would shadow the --before package
        timeout=600,
        check=True,
    ).stderr
    found = re.search(r"Collected : (\d+)", out)
    if found is None:
        raise RuntimeError(f"no count in valgrind's output:\n{out}")
    return int(found.group(1))


def per_request(feed: str, env: dict[str, str]) -> float:
    return (instructions(feed, 3000, env) - instructions(feed, 1000, env)) / 2000


def count_main(doc: str | None, feeds: list[tuple[str, str]]) -> None:
    """The command line of this script and http_instructions.py: count each feed, and --before."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--before", metavar="DIR", help="also count the reactorkit in DIR")
    args = parser.parse_args()
    env = dict(os.environ, PYTHONPATH=str(BENCH), PYTHONDONTWRITEBYTECODE="1", PYTHONHASHSEED="0")
    for name, feed in feeds:
        now = per_request(feed, env)
        print(f"{name}: {now:,.0f} instructions per request")
        if args.before:
            old_env = dict(env, PYTHONPATH=f"{args.before}{os.pathsep}{BENCH}")
            old = per_request(feed, old_env)
            print(f"{name}, before: {old:,.0f} instructions per request ({now / old:.2f}x)")


def main() -> None:
    count_main(__doc__, [("echo pass", ECHO), ("line-command PING", LINE)])


if __name__ == "__main__":
    main()
