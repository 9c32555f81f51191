"""HTTP-lite's handler cost in CPU instructions per request, counted by valgrind.

    python bench/http_instructions.py [--before DIR]

Feeds the HTTP benchmark's request (``GET /`` answered by
``rk_bench_routes``) to an ``HttpHandler`` on a ``FakeConnection``: no
socket, no reactor pass, only the handler's own work. ``valgrind
--tool=callgrind`` counts the instructions of two runs (1000 and 3000
requests, a reactor pass every 100 as a server's loop would run); the
difference over 2000 is the cost of one request, start-up excluded.
Unlike time, the count does not move with the machine's load, so it
compares two versions on a busy machine. With ``--before DIR`` the
reactorkit package in DIR (an older checkout) is counted too.
"""

from __future__ import annotations

# valgrind's count, run from bench/, and --before (see pass_instructions).
from pass_instructions import count_main

FEED = """
import sys
import reactorkit
import reactorkit.handlers.http_lite as http_lite
import rk_bench_routes
from reactorkit.testing import FakeConnection, run_once

found = rk_bench_routes.reactorkit_http_routes()
routes = [reactorkit.Contribution(r, "bench", None) for r in found]
options = http_lite.HttpOptions(access_log=False)
if hasattr(http_lite, "HttpSite"):
    state = http_lite.HttpSite.build(options, routes)
else:  # before issue 10
    state = http_lite.RouteTable.build(options, routes)
handler = http_lite.HttpHandler(state)
connection = FakeConnection(handler)
request = b"GET / HTTP/1.1\\r\\nHost: 127.0.0.1:8080\\r\\n\\r\\n"
for n in range(int(sys.argv[1])):
    handler.data_received(request)
    connection.written.clear()
    if n % 100 == 99:
        run_once(connection.reactor)  # as a server's loop would: timers, callbacks
"""


def main() -> None:
    count_main(__doc__, [("reactorkit http-lite", FEED)])


if __name__ == "__main__":
    main()
