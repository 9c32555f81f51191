"""kvstore: an in-memory key-value store reached through line-command and http-lite.

It adds commands to reactorkit's line-command handler and routes to its
HTTP-lite handler; it has no handler type of its own. Commands and routes
run on the reactor thread (none is blocking), so the store needs no lock.
"""

from __future__ import annotations

import reactorkit

__version__ = "1.0.0"

MAX_KEYS = 10_000
MAX_VALUE = 64 * 1024


class Store:
    """A bounded dict of str to str."""

    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def set(self, key: str, value: str) -> None:
        if len(value.encode()) > MAX_VALUE:
            raise reactorkit.CommandError(f"value too large (limit {MAX_VALUE} bytes)")
        if key not in self.data and len(self.data) >= MAX_KEYS:
            raise reactorkit.CommandError(f"store full ({MAX_KEYS} keys)")
        self.data[key] = value


STORE = Store()


def cmd_set(ctx: reactorkit.CommandContext) -> None:
    STORE.set(ctx.args[0], ctx.args[1])


def cmd_get(ctx: reactorkit.CommandContext) -> str:
    try:
        return STORE.data[ctx.args[0]]
    except KeyError:
        raise reactorkit.CommandError(f"no such key: {ctx.args[0]}") from None


def cmd_del(ctx: reactorkit.CommandContext) -> str:
    return str(sum(STORE.data.pop(key, None) is not None for key in ctx.args))


def cmd_keys(ctx: reactorkit.CommandContext) -> list[str]:
    prefix = ctx.args[0] if ctx.args else ""
    return sorted(key for key in STORE.data if key.startswith(prefix))


def cmd_incr(ctx: reactorkit.CommandContext) -> str:
    key = ctx.args[0]
    try:
        value = int(STORE.data.get(key, "0")) + 1
    except ValueError:
        raise reactorkit.CommandError(f"value of {key} is not an integer") from None
    STORE.set(key, str(value))
    return str(value)


def http_all(request: reactorkit.Request) -> reactorkit.Response:
    return reactorkit.json_response(STORE.data)


def http_one(request: reactorkit.Request) -> reactorkit.Response:
    key = request.captures["key"]
    if key not in STORE.data:
        return reactorkit.json_response({"error": f"no such key: {key}"}, status=404)
    return reactorkit.json_response({"key": key, "value": STORE.data[key]})


@reactorkit.hookimpl
def reactorkit_line_commands() -> list[reactorkit.LineCommand]:
    return [
        reactorkit.LineCommand(
            name="SET", function=cmd_set, args="KEY VALUE", help="store VALUE under KEY"
        ),
        reactorkit.LineCommand(
            name="GET", function=cmd_get, args="KEY", help="the value stored under KEY"
        ),
        reactorkit.LineCommand(
            name="DEL",
            function=cmd_del,
            args="KEY...",
            help="delete keys; answers how many existed",
        ),
        reactorkit.LineCommand(
            name="KEYS",
            function=cmd_keys,
            args="[PREFIX]",
            help="every key (starting with PREFIX), sorted",
        ),
        reactorkit.LineCommand(
            name="INCR", function=cmd_incr, args="KEY", help="add one to an integer value"
        ),
    ]


@reactorkit.hookimpl
def reactorkit_http_routes() -> list[reactorkit.Route]:
    return [
        reactorkit.Route(method="GET", path="/kv", function=http_all),
        reactorkit.Route(method="GET", path="/kv/{key}", function=http_one),
    ]
