"""line-command: a line protocol (SMTP / Redis-inline style) whose commands come from plugins.

A request is one line, ``COMMAND arg arg ...`` (command names are
case-insensitive; see :func:`reactorkit.commands.split_args` for quoting).
Every request gets exactly one reply, in request order, even when requests
are pipelined and some of them are blocking commands running on the thread
pool. Replies:

* ``+text`` success (``+OK`` when there is nothing to say);
* ``-ERR message`` failure; the connection stays open (except after an
  over-long line);
* ``*N`` followed by exactly N lines: a multi-line success.

Reply text never contains CR or LF (they are replaced by spaces), so the
format is machine-parseable line by line. The protocol is described in
``docs/handlers/line-command.md``.
"""

from __future__ import annotations

import collections
import datetime
import logging
import time
from collections.abc import Sequence
from typing import Any

import attrs

import reactorkit

__all__ = ["CommandTable", "LineCommandHandler", "LineCommandOptions"]

log = logging.getLogger("reactorkit.line_command")

DEFAULT_MAX_PENDING = 128


@attrs.frozen(kw_only=True)
class LineCommandOptions:
    """Options of the ``line-command`` handler type (``[listen.options]``)."""

    commands: list[str] = attrs.field(factory=list)
    max_line_length: int = attrs.field(default=4096, validator=attrs.validators.ge(16))
    banner: str = ""
    max_pending: int = attrs.field(default=DEFAULT_MAX_PENDING, validator=attrs.validators.ge(1))


@attrs.define(eq=False)
class CommandTable:
    """The enabled commands of one listener, with where each came from."""

    options: LineCommandOptions
    commands: dict[str, reactorkit.LineCommand]
    sources: dict[str, str]
    listener: reactorkit.Listener | None = None

    @classmethod
    def from_listener(cls, listener: reactorkit.Listener) -> CommandTable:
        """Collect ``reactorkit_line_commands()`` from every plugin.

        Raises:
            PluginError: two plugins define one command, or the allow-list
                names a command nobody provides.
        """
        if listener.plugins is None:
            found = [reactorkit.Contribution(c, "line-command", None) for c in BUILTINS]
        else:
            found = listener.plugins.collect("reactorkit_line_commands")
        return cls.build(listener.options, found, listener=listener)

    @classmethod
    def build(
        cls,
        options: LineCommandOptions,
        contributions: Sequence[reactorkit.Contribution],
        *,
        listener: reactorkit.Listener | None = None,
    ) -> CommandTable:
        """Build the table from collected contributions (see :meth:`from_listener`)."""
        commands: dict[str, reactorkit.LineCommand] = {}
        sources: dict[str, str] = {}
        for contribution in contributions:
            command = contribution.item
            if not isinstance(command, reactorkit.LineCommand):
                raise reactorkit.PluginError(
                    f"{contribution.source}: reactorkit_line_commands() must return "
                    f"LineCommand objects, got {command!r}"
                )
            if command.name in commands:
                raise reactorkit.PluginError(
                    f"line command {command.name!r} is defined twice:\n"
                    f"  by {sources[command.name]}\n"
                    f"  and by {contribution.source}\n"
                    "uninstall one of them, or leave one out of the listener's "
                    "options.commands"
                )
            commands[command.name] = command
            sources[command.name] = contribution.source
        if options.commands:
            wanted = [name.upper() for name in options.commands]
            unknown = [name for name in wanted if name not in commands]
            if unknown:
                raise reactorkit.PluginError(
                    f"line-command options.commands names unknown commands: "
                    f"{', '.join(unknown)} (installed: {', '.join(sorted(commands))})"
                )
            commands = {name: commands[name] for name in wanted}
        return cls(options=options, commands=commands, sources=sources, listener=listener)


class LineCommandHandler(reactorkit.LineHandler):
    """One client of the line-command protocol."""

    def __init__(self, table: CommandTable) -> None:
        super().__init__(table, max_line_length=table.options.max_line_length)
        self.table = table
        self._queue: collections.deque[bytes] = collections.deque()
        self._busy = False  # a blocking command is in flight
        self._paused = False
        # Replies to the requests of one read, written with one write() (one
        # send for a whole pipelined batch); None outside data_received.
        self._out: list[bytes] | None = None

    def connection_made(self, connection: reactorkit.Transport) -> None:
        self.connection = connection
        if self.table.options.banner:
            self._reply(self.table.options.banner)

    def data_received(self, data: bytes) -> None:
        if self._out is not None:  # re-entrant: the outer call flushes
            super().data_received(data)
            return
        self._out = []
        try:
            super().data_received(data)
        finally:
            self._flush()
            self._out = None

    def _write(self, reply: bytes) -> None:
        if self._out is not None:
            self._out.append(reply)
        else:
            self.connection.write(reply)

    def _flush(self) -> None:
        if self._out:
            self.connection.write(b"".join(self._out))
            self._out.clear()

    def line_too_long(self, length: int) -> None:
        self._flush()
        self.connection.write(
            b"-ERR line too long: the limit is %d bytes\r\n" % self.max_line_length
        )
        self.connection.close()

    def line_received(self, line: bytes) -> None:
        if self._busy:
            # Keep request order: wait for the blocking command's reply.
            self._queue.append(line)
            if len(self._queue) >= self.table.options.max_pending and not self._paused:
                self._paused = True
                self.connection.pause_reading()
            return
        self._execute(line)

    def _execute(self, raw: bytes) -> None:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            self._error("syntax error: the request is not valid UTF-8")
            return
        try:
            words = reactorkit.split_args(text)
        except reactorkit.CommandError as exc:
            self._error(str(exc))
            return
        if not words:
            self._error("empty request; HELP lists the commands")
            return
        name = words[0].upper()
        command = self.table.commands.get(name)
        if command is None:
            shown = words[0] if len(words[0]) <= 64 else words[0][:64] + "..."
            self._error(f"unknown command {shown!r}; HELP lists the commands")
            return
        args = tuple(words[1:])
        if not command.accepts(len(args)):
            self._error(f"wrong number of arguments for {name}; usage: {command.usage}")
            return
        context = reactorkit.CommandContext(
            command=command,
            args=args,
            connection=self.connection,
            listener=self.table.listener,
            commands=self.table.commands,
            sources=self.table.sources,
        )
        if command.blocking:
            self._busy = True
            future = self.connection.reactor.run_in_thread(command.function, context)
            future.add_done_callback(lambda f: self._blocking_done(command, f))
            return
        try:
            reply = command.function(context)
        except reactorkit.CommandError as exc:
            self._error(str(exc))
        except Exception:
            self._internal_error(command)
        else:
            self._reply(reply)
            if command is QUIT:
                self._flush()
                self.connection.close()

    def _blocking_done(
        self, command: reactorkit.LineCommand, future: reactorkit.Future[Any]
    ) -> None:
        self._busy = False
        if self.connection.is_closing():
            return
        error = future.exception()
        if isinstance(error, reactorkit.CommandError):
            self._error(str(error))
        elif error is not None:
            self._internal_error(command, error)
        else:
            self._reply(future.result())
        # Run what was queued meanwhile, until the next blocking command.
        while self._queue and not self._busy and not self.connection.is_closing():
            self._execute(self._queue.popleft())
        if self._paused and len(self._queue) < self.table.options.max_pending:
            self._paused = False
            self.connection.resume_reading()

    # -- replies -------------------------------------------------------------

    def _reply(self, reply: object) -> None:
        if reply is None:
            self._write(b"+OK\r\n")
        elif isinstance(reply, str):
            self._write(b"+" + _clean(reply) + b"\r\n")
        elif isinstance(reply, (list, tuple)):
            lines = [_clean(str(item)) for item in reply]
            self._write(b"*%d\r\n" % len(lines) + b"".join(x + b"\r\n" for x in lines))
        else:
            self._write(b"+" + _clean(str(reply)) + b"\r\n")

    def _error(self, message: str) -> None:
        self._write(b"-ERR " + _clean(message) + b"\r\n")

    def _internal_error(
        self, command: reactorkit.LineCommand, error: BaseException | None = None
    ) -> None:
        log.error(
            "command %s (%s) raised for %s",
            command.name,
            self.table.sources.get(command.name, "?"),
            self.connection.peername,
            exc_info=error if error is not None else True,
        )
        if self.table.listener is not None:
            self.table.listener.stats.errors += 1
        self._error(f"internal error in {command.name}; the server log has the details")


def _clean(text: str) -> bytes:
    if "\r" in text or "\n" in text:
        text = text.replace("\r", " ").replace("\n", " ")
    return text.encode("utf-8", "replace")


# -- the built-in commands ---------------------------------------------------


def _help(ctx: reactorkit.CommandContext) -> list[str] | str:
    def describe(name: str) -> str:
        command = ctx.commands[name]
        return f"{command.usage} - {command.help} [{ctx.sources.get(name, '?')}]"

    if ctx.args:
        name = ctx.args[0].upper()
        if name not in ctx.commands:
            raise reactorkit.CommandError(f"unknown command {ctx.args[0]!r}")
        return describe(name)
    return [describe(name) for name in sorted(ctx.commands)]


def _ping(ctx: reactorkit.CommandContext) -> str:
    return ctx.args[0] if ctx.args else "PONG"


def _echo(ctx: reactorkit.CommandContext) -> str:
    return " ".join(ctx.args)


def _time(ctx: reactorkit.CommandContext) -> str:
    now = time.time()
    stamp = datetime.datetime.fromtimestamp(now, datetime.UTC).isoformat(timespec="milliseconds")
    return f"{stamp.replace('+00:00', 'Z')} {now:.6f}"


def _quit(ctx: reactorkit.CommandContext) -> str:
    return "BYE"


def _stats(ctx: reactorkit.CommandContext) -> list[str]:
    listener = ctx.listener
    if listener is None:
        raise reactorkit.CommandError("no listener statistics here")
    return [
        f"listener {listener.name}",
        f"open_connections {listener.open_connections}",
        f"total_connections {listener.stats.total_connections}",
        f"bytes_received {listener.bytes_received}",
        f"bytes_sent {listener.bytes_sent}",
        f"errors {listener.stats.errors}",
    ]


QUIT = reactorkit.LineCommand(name="QUIT", function=_quit, help="say goodbye and close")
BUILTINS = (
    reactorkit.LineCommand(
        name="HELP", function=_help, args="[COMMAND]", help="list commands, or describe one"
    ),
    reactorkit.LineCommand(
        name="PING", function=_ping, args="[TEXT]", help="answer PONG (or TEXT)"
    ),
    reactorkit.LineCommand(
        name="ECHO", function=_echo, args="TEXT...", help="answer the arguments, joined by spaces"
    ),
    reactorkit.LineCommand(
        name="TIME", function=_time, help="the server's time: ISO 8601 UTC and Unix seconds"
    ),
    QUIT,
    reactorkit.LineCommand(
        name="STATS",
        function=_stats,
        help="this listener's counters: connections, bytes in and out, errors",
    ),
)


@reactorkit.hookimpl
def reactorkit_line_commands() -> list[reactorkit.LineCommand]:
    return list(BUILTINS)


@reactorkit.hookimpl
def reactorkit_handler_types() -> list[reactorkit.HandlerType]:
    return [
        reactorkit.HandlerType(
            name="line-command",
            handler=LineCommandHandler,
            options=LineCommandOptions,
            state=CommandTable.from_listener,
            description="a line protocol (+OK/-ERR replies) whose commands come from plugins",
            default_port=7071,
        )
    ]
