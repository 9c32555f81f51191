"""``reactorkit status``: a running server's numbers, as a table or JSON.

It asks the control socket (``[reactor] control_socket``, see
:mod:`reactorkit.control`) for every process's snapshot. ``--watch``
redraws the table every ``--interval`` seconds, like ``top``, with rates
per second computed between two refreshes (and keeps trying while the
server restarts); ``--json`` prints the raw reply
(one JSON document per line with ``--watch``) for scripts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from reactorkit.config import Config
from reactorkit.control import query

__all__ = ["add_command", "render"]

#: Seconds status waits for the reply (the supervisor gives its workers 2 s).
STATUS_TIMEOUT = 5.0
_CLEAR = "\x1b[H\x1b[2J"
_SNAPSHOT_KEYS = frozenset({"pid", "worker", "time", "uptime", "loop", "process", "listeners"})


def add_command(subparsers: Any) -> None:
    """Add ``status`` to the CLI's subcommands."""
    parser = subparsers.add_parser(
        "status",
        help="show a running server's listeners, connections, rates and loop lag",
        description=(
            "Ask a running server over its control socket ([reactor] control_socket) "
            "for its numbers: every worker's, with workers."
        ),
    )
    parser.add_argument(
        "config", nargs="?", help="the TOML config the server runs (names the socket)"
    )
    parser.add_argument("--socket", metavar="PATH", help="the control socket (instead of a config)")
    parser.add_argument("--json", action="store_true", help="print the reply as JSON")
    parser.add_argument("--watch", action="store_true", help="refresh until interrupted")
    parser.add_argument(
        "--interval", type=_seconds, default=1.0, metavar="SECONDS", help="--watch refresh period"
    )
    parser.add_argument(
        "--count", type=int, default=0, metavar="N", help="--watch: stop after N refreshes"
    )
    parser.set_defaults(func=_run)


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:  # also NaN
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text!r}")
    return value


def _socket_path(args: argparse.Namespace) -> str | None:
    if args.socket:
        return str(args.socket)
    if not args.config:
        print("reactorkit: error: status needs a CONFIG or --socket PATH", file=sys.stderr)
        return None
    config = Config.from_toml(args.config)
    if config.reactor.control_socket is None:
        print(
            f"reactorkit: error: {args.config}: [reactor] control_socket is not set, so the "
            "server has no control socket; set it (e.g. control_socket = "
            '"/run/reactorkit/control.sock") and restart the server',
            file=sys.stderr,
        )
        return None
    return config.reactor.control_socket


def _run(args: argparse.Namespace) -> int:
    path = _socket_path(args)
    if path is None:
        return 1
    previous: dict[str, Any] | None = None
    shown = 0
    while True:
        try:
            reply = query(path, "all", timeout=STATUS_TIMEOUT)
        except (OSError, ValueError) as exc:
            print(
                f"reactorkit: error: cannot reach the control socket {path}: {exc}", file=sys.stderr
            )
            if not (args.watch and shown):
                return 1
            # --watch that has reached the server: it may be restarting; keep trying.
            shown += 1
            if args.count and shown >= args.count:
                return 1
            previous = None
            time.sleep(args.interval)
            continue
        if isinstance(reply, dict) and "error" in reply:
            print(f"reactorkit: error: {path}: {reply['error']}", file=sys.stderr)
            return 1
        text = None
        if _is_reply(reply):
            with contextlib.suppress(KeyError, TypeError, ValueError, AttributeError):
                text = "" if args.json else render(reply["processes"], previous)
        if text is None:  # another program's socket, or a server of another version
            print(
                f"reactorkit: error: {path}: unexpected reply (is it a reactorkit control "
                f"socket?): {json.dumps(reply)[:200]}",
                file=sys.stderr,
            )
            return 1
        if args.json:
            print(json.dumps(reply) if args.watch else json.dumps(reply, indent=2), flush=True)
        else:
            if args.watch and sys.stdout.isatty():
                text = _CLEAR + text
            print(text, flush=True)
        shown += 1
        if not args.watch or (args.count and shown >= args.count):
            return 0
        previous = reply
        time.sleep(args.interval)


def _is_reply(reply: Any) -> bool:
    """True for the shape of an ``all`` reply: ``{"processes": [snapshot, ...]}``."""
    processes = reply.get("processes") if isinstance(reply, dict) else None
    return isinstance(processes, list) and all(
        isinstance(p, dict) and p.keys() >= _SNAPSHOT_KEYS for p in processes
    )


def render(processes: Sequence[dict[str, Any]], previous: dict[str, Any] | None = None) -> str:
    """The table ``status`` prints: listeners (all processes summed), then processes.

    Args:
        processes: the snapshots of one ``all`` reply.
        previous: the reply before, for rates per second (None: rates show ``-``).
    """
    before = _totals(previous["processes"]) if previous else {}
    now = _totals(processes)
    elapsed = 0.0
    if previous and processes and previous["processes"]:
        elapsed = processes[0]["time"] - previous["processes"][0]["time"]
    lines = [
        f"{'LISTENER':<16} {'HANDLER':<12} {'OPEN':>6} {'ACCEPTED':>9} {'CONN/S':>7} "
        f"{'IN B/S':>9} {'OUT B/S':>9} {'REFUSED':>7} {'LIMITS':>6} {'ERRORS':>6}"
    ]
    for name, row in now.items():
        old = before.get(name)

        def rate(key: str, row: dict[str, Any] = row, old: Any = old) -> str:
            if old is None or elapsed <= 0:
                return "-"
            return f"{max(0.0, (row[key] - old[key]) / elapsed):.0f}"

        lines.append(
            f"{name:<16} {row['handler']:<12} {row['open']:>6} {row['accepted']:>9} "
            f"{rate('accepted'):>7} {rate('bytes_received'):>9} {rate('bytes_sent'):>9} "
            f"{row['refused']:>7} {row['limits']:>6} {row['errors']:>6}"
        )
    lines.append("")
    lines.append(
        f"{'WORKER':>6} {'PID':>8} {'UPTIME':>8} {'LAG LAST':>9} {'LAG MAX':>9} "
        f"{'TIMERS':>6} {'POOL':>5} {'RSS MB':>7} {'FDS':>5} {'CPU S':>7}"
    )
    for snapshot in processes:
        loop, process = snapshot["loop"], snapshot["process"]
        rss = process.get("rss_bytes")
        lines.append(
            f"{snapshot['worker']:>6} {snapshot['pid']:>8} {snapshot['uptime']:>7.0f}s "
            f"{loop['lag_last'] * 1000:>7.1f}ms {loop['lag_max'] * 1000:>7.1f}ms "
            f"{loop['timers']:>6} {loop['threads_busy']:>5} "
            f"{(rss or 0) / 1e6:>7.1f} {process.get('open_fds') or 0:>5} "
            f"{process['cpu_seconds']:>7.2f}"
        )
    buses = [(s["worker"], bus) for s in processes for bus in s.get("buses", ())]
    if buses:
        lines.append("")
        lines.append(
            f"{'CHAT BUS':<16} {'WORKER':>6} {'STATE':<5} {'PUBLISHED':>9} {'RECEIVED':>9} "
            f"{'DROPPED':>7} {'MALFORMED':>9}"
        )
        for worker, bus in buses:
            lines.append(
                f"{bus['name']:<16} {worker:>6} {'up' if bus['up'] else 'down':<5} "
                f"{bus['published']:>9} {bus['received']:>9} {bus['dropped']:>7} "
                f"{bus['malformed']:>9}"
            )
    return "\n".join(lines)


def _totals(processes: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for snapshot in processes:
        for listener in snapshot["listeners"]:
            row = rows.setdefault(
                listener["name"],
                {
                    "handler": listener["handler"],
                    "open": 0,
                    "accepted": 0,
                    "bytes_received": 0,
                    "bytes_sent": 0,
                    "refused": 0,
                    "limits": 0,
                    "errors": 0,
                },
            )
            row["open"] += listener["open"]
            row["accepted"] += listener["accepted"]
            row["bytes_received"] += listener["bytes_received"]
            row["bytes_sent"] += listener["bytes_sent"]
            row["refused"] += (
                listener["refused"] + listener["tls_failures"] + listener["proxy_failures"]
            )
            row["limits"] += sum(listener["closed_by_limit"].values())
            row["errors"] += listener["errors"]
    return rows
