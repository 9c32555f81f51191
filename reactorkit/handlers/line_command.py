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
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import attrs

import reactorkit

__all__ = ["CommandTable", "LineCommandHandler", "LineCommandOptions"]

log = logging.getLogger("reactorkit.line_command")

DEFAULT_MAX_PENDING = 128
DEFAULT_LINE_TIMEOUT = 30.0
DEFAULT_RATE = 10000.0
DEFAULT_BURST = 1000
_CommandContext = reactorkit.CommandContext

# Replies gathered for one write() at most (bytes), while the kernel keeps up.
_MAX_BATCH = 16 * 1024
# The encoded-reply cache of a table: at most this many replies, each at most
# _CACHED_REPLY characters (a bound a client cannot push past: ~40 KB).
_MAX_CACHED_REPLIES = 256
_CACHED_REPLY = 64
_NO_MAX_ARGS = 1 << 62


@attrs.frozen(kw_only=True)
class LineCommandOptions:
    """Options of the ``line-command`` handler type (``[listen.options]``)."""

    commands: list[str] = attrs.field(factory=list)
    max_line_length: int = attrs.field(default=4096, validator=attrs.validators.ge(16))
    banner: str = ""
    max_pending: int = attrs.field(default=DEFAULT_MAX_PENDING, validator=attrs.validators.ge(1))
    line_timeout: float = attrs.field(
        default=DEFAULT_LINE_TIMEOUT, validator=attrs.validators.ge(0)
    )
    rate: float = attrs.field(default=DEFAULT_RATE, validator=attrs.validators.ge(0))
    burst: int = attrs.field(default=DEFAULT_BURST, validator=attrs.validators.ge(1))


@attrs.define(eq=False)
class CommandTable:
    """The enabled commands of one listener, with where each came from."""

    options: LineCommandOptions
    commands: dict[str, reactorkit.LineCommand]
    sources: dict[str, str]
    listener: reactorkit.Listener | None = None
    #: name -> (command, min args, max args) for the commands the handler's
    #: one-line fast path may run: neither blocking nor QUIT.
    fast: dict[str, tuple[reactorkit.LineCommand, int, int]] = attrs.field(init=False)
    #: Simple-string reply -> its encoded ``+reply\r\n`` (bounded, see above).
    #: Only replies without CR or LF are kept, so a hit needs no other check.
    replies: dict[str, bytes] = attrs.field(init=False, factory=dict)

    def __attrs_post_init__(self) -> None:
        self.fast = {
            name: (
                command,
                command.min_args,
                _NO_MAX_ARGS if command.max_args is None else command.max_args,
            )
            for name, command in self.commands.items()
            if not command.blocking and command is not QUIT
        }

    def encode_reply(self, reply: str) -> bytes:
        """``+reply\r\n`` for a reply without CR or LF, remembered if short."""
        data = self.replies.get(reply)
        if data is None:
            data = f"+{reply}\r\n".encode("utf-8", "replace")
            if (
                len(reply) <= _CACHED_REPLY
                and len(self.replies) < _MAX_CACHED_REPLIES
                and "\r" not in reply
                and "\n" not in reply  # a hit is written unchecked (see replies)
            ):
                self.replies[reply] = data
        return data

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
    def check(cls, options: LineCommandOptions, plugins: reactorkit.Plugins) -> None:
        """Raise what :meth:`from_listener` would, before anything binds (``check``)."""
        cls.build(options, plugins.collect("reactorkit_line_commands"))

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
    """One client of the line-command protocol.

    Requests run one at a time, in order. A request that cannot run yet (a
    blocking command is in flight, or the client is over its ``rate``) waits
    in a queue; reading pauses when that queue reaches ``max_pending``, when
    the rate limit holds it, or when unsent replies pass the connection's
    high-water mark (see :class:`reactorkit.LineHandler`), and resumes as it
    drains. At EOF, on a graceful shutdown and before closing for bad input,
    every request already received is answered first.
    """

    def __init__(self, table: CommandTable) -> None:
        options = table.options
        super().__init__(
            table, max_line_length=options.max_line_length, line_timeout=options.line_timeout
        )
        self.table = table
        self._queue: collections.deque[bytes] = collections.deque()
        self._busy = False  # a blocking command is in flight
        self._output_paused = False  # unsent replies are above the high-water mark
        self._bucket: reactorkit.TokenBucket | None = None
        self._throttle: reactorkit.TimerHandle | None = None  # wakes the queue up
        self._finishing = False  # close once the queue is answered
        self._last_words = b""  # written just before that close
        # Replies of one round of requests, sent with one write(); a round is
        # one read or one pass over the queue.
        self._batching = False
        self._out: list[bytes] = []
        self._out_size = 0
        # The context reused by argument-less calls (the fast path, data_received).
        self._bare_context: reactorkit.CommandContext | None = None

    def connection_made(self, connection: reactorkit.Transport) -> None:
        self.connection = connection
        options = self.table.options
        if options.rate > 0:
            self._bucket = reactorkit.TokenBucket(
                options.rate, options.burst, connection.reactor.time
            )
        if options.banner:
            self._reply(options.banner)

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        if self._throttle is not None:
            self._throttle.cancel()
            self._throttle = None

    def pause_writing(self) -> None:
        super().pause_writing()
        self._output_paused = True

    def resume_writing(self) -> None:
        super().resume_writing()
        self._output_paused = False
        if self._queue:
            self.connection.reactor.call_soon(_call_weakly, weakref.WeakMethod(self._run_queue))

    # -- output ----------------------------------------------------------------

    def _write(self, reply: bytes) -> None:
        if not self._batching:
            self.connection.write(reply)
            return
        out = self._out
        out.append(reply)
        self._out_size += len(reply)
        # Gather only while the kernel takes everything: once the connection
        # buffers, each reply goes out alone, so pause_writing() stops the
        # round within one reply of the high-water mark. Only _flush writes
        # while a round gathers, so the buffer cannot grow between flushes:
        # checking at the first reply after each flush is enough.
        if self._out_size >= _MAX_BATCH or (
            len(out) == 1 and self.connection.get_write_buffer_size()
        ):
            self._flush()

    def _flush(self) -> None:
        out = self._out
        if out:
            data = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            self._out_size = 0
            self.connection.write(data)

    def lines_dispatched(self) -> None:
        self._batching = False
        out = self._out
        if out:  # _flush, inline
            data = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            self._out_size = 0
            self.connection.write(data)

    # -- input -----------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        """One read; the common case, one whole request line, runs right here.

        That case (nothing buffered, queued, held or in flight; one line
        ending the read; an enabled, non-blocking command with the right
        number of arguments, and a token when ``rate`` is on) is framing,
        :meth:`line_received` and ``_execute`` folded into one method: at
        one request per read, each Python call saved is paid per request.
        Everything else, and every error, takes the general path of
        :class:`reactorkit.LineHandler` with the same checks and replies.
        """
        end = len(data) - 1
        if (
            end < 0
            or data.find(b"\n") != end  # not exactly one LF-terminated line
            or self._dispatching
            or self._held
            or self._discarding
            or self._line_buffer
            or self._queue
            or self._busy
            or self._batching
            or self.delimiter != b"\n"
        ):
            super().data_received(data)
            return
        if end and data[end - 1] == 13:
            end -= 1
        connection = self.connection
        if end > self.max_line_length or connection.is_closing():
            super().data_received(data)
            return
        try:
            text = data.decode("utf-8")  # split() drops the CR LF with the spaces
        except UnicodeDecodeError:
            text = '"'  # the general path answers it
        words = [] if '"' in text or "'" in text else text.split()
        table = self.table
        if words:
            # Names are upper case: most clients send them so, and upper()
            # would copy the word only to find it unchanged.
            fast = table.fast
            entry = fast.get(words[0]) or fast.get(words[0].upper())
        else:
            entry = None
        if entry is None or not entry[1] <= len(words) - 1 <= entry[2]:
            super().data_received(data)  # quotes, unknown, arity, blocking, QUIT...
            return
        bucket = self._bucket
        if bucket is not None and not bucket.take(connection.reactor.time):
            super().data_received(data)  # queued until a token comes (_admitted)
            return
        command = entry[0]
        self._dispatching = True  # a re-entrant data_received only appends
        try:
            try:
                if command.takes_context:
                    if len(words) > 1:
                        context = _CommandContext(
                            command,
                            tuple(words[1:]),
                            connection,
                            table.listener,
                            table.commands,
                            table.sources,
                        )
                    else:
                        # No arguments: the context of the last such call of
                        # this command serves again (see CommandContext).
                        context = self._bare_context  # type: ignore[assignment]
                        if context is None or context.command is not command or context.args:
                            context = self._bare_context = _CommandContext(
                                command,
                                (),
                                connection,
                                table.listener,
                                table.commands,
                                table.sources,
                            )
                    reply = command.function(context)
                else:
                    reply = command.function()
            except reactorkit.CommandError as exc:
                self._error(str(exc))
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException:  # as _execute
                self._internal_error(command)
            else:
                encoded = table.replies.get(reply) if type(reply) is str else None
                if encoded is not None:  # pre-encoded (+PONG\r\n): no CR or LF in it
                    connection.write(encoded)
                elif type(reply) is str and "\r" not in reply and "\n" not in reply:
                    connection.write(table.encode_reply(reply))
                else:
                    self._reply(reply)
            if self._line_buffer:  # the command fed the handler more
                self._dispatch_lines()
        finally:
            self._dispatching = False
        if self._batching:  # only if _dispatch_lines ran: else nothing is gathered
            self.lines_dispatched()

    def line_too_long(self, length: int) -> None:
        reactorkit.limit_closed(self.connection, "line_too_long", f"{length} bytes")
        self._finish(b"-ERR line too long: the limit is %d bytes\r\n" % self.max_line_length)

    def line_timed_out(self) -> None:
        reactorkit.limit_closed(self.connection, "line_timeout")
        self._finish(
            b"-ERR line timeout: a request line must be completed within %g seconds\r\n"
            % self.line_timeout
        )

    def lines_finished(self) -> None:
        self._finish()

    def _finish(self, last_words: bytes = b"") -> None:
        # No more input; answer what was received, then close.
        self.pause_lines()
        self._finishing = True
        if last_words and not self._last_words:
            self._last_words = last_words
        if not self._queue and not self._busy:
            self._flush()
            self.connection.write(self._last_words)
            self.connection.close()

    def _dispatch_lines(self) -> None:
        # Several lines may be dispatched in this round: gather their replies
        # (see _write). One line per read, the common case, is written at once.
        self._batching = True
        super()._dispatch_lines()

    def line_received(self, line: bytes) -> None:
        if self._queue or self._busy or (self._bucket is not None and not self._admitted()):
            # Keep request order: wait for the blocking command, or a token.
            self._queue.append(line)
            if self._throttle is not None or len(self._queue) >= self.table.options.max_pending:
                self.pause_lines()
            return
        self._execute(line)

    def _admitted(self) -> bool:
        bucket = self._bucket
        if bucket is None:
            return True
        reactor = self.connection.reactor
        if bucket.take(reactor.time):
            return True
        if self._throttle is None:
            # Held weakly: a pending wake-up never keeps a dropped handler alive.
            self._throttle = reactor.call_later(
                bucket.delay(reactor.time), _call_weakly, weakref.WeakMethod(self._throttle_over)
            )
        return False

    def _throttle_over(self) -> None:
        self._throttle = None
        self._run_queue()

    def _run_queue(self) -> None:
        """Run queued requests until a blocking one, an empty bucket or a full buffer."""
        queue = self._queue
        connection = self.connection
        self._batching = True
        try:
            while queue and not self._busy and not self._output_paused:
                if connection.is_closing() or not self._admitted():
                    break
                self._execute(queue.popleft())
        finally:
            self._batching = False
            self._flush()
        if connection.is_closing():
            return
        if self._finishing:
            if not queue and not self._busy:
                self._finish()
        elif self._throttle is None and len(queue) < self.table.options.max_pending:
            self.resume_lines()

    def _execute(self, raw: bytes) -> None:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            self._error("syntax error: the request is not valid UTF-8")
            return
        if '"' in text or "'" in text:
            try:
                words = reactorkit.split_args(text)
            except reactorkit.CommandError as exc:
                self._error(str(exc))
                return
        else:
            words = text.split()  # split_args without quotes, minus a call
        if not words:
            self._error("empty request; HELP lists the commands")
            return
        table = self.table
        command = table.commands.get(words[0].upper())
        if command is None:
            shown = words[0] if len(words[0]) <= 64 else words[0][:64] + "..."
            self._error(f"unknown command {shown!r}; HELP lists the commands")
            return
        if not command.accepts(len(words) - 1):
            self._error(f"wrong number of arguments for {command.name}; usage: {command.usage}")
            return
        # Positional: a keyword call costs more than the command itself.
        context = _CommandContext(
            command,
            tuple(words[1:]) if len(words) > 1 else (),
            self.connection,
            table.listener,
            table.commands,
            table.sources,
        )
        if command.blocking:
            self._busy = True
            future = self.connection.reactor.run_in_thread(command.call, context)
            future.add_done_callback(lambda f: self._blocking_done(command, f))
            return
        try:
            reply = command.call(context)
        except reactorkit.CommandError as exc:
            self._error(str(exc))
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:  # asyncio.CancelledError too, as a blocking one would
            self._internal_error(command)
        else:
            if type(reply) is str and "\r" not in reply and "\n" not in reply:
                # _reply and _write, inline: this runs per request.
                data = table.encode_reply(reply)
                if self._batching:
                    self._write(data)
                else:
                    self.connection.write(data)
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
        self._run_queue()

    # -- replies -------------------------------------------------------------

    def _reply(self, reply: object) -> None:
        if isinstance(reply, str):
            if "\r" in reply or "\n" in reply:
                reply = reply.replace("\r", " ").replace("\n", " ")
            self._write(f"+{reply}\r\n".encode("utf-8", "replace"))
        elif reply is None:
            self._write(b"+OK\r\n")
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


def _call_weakly(method: weakref.WeakMethod[Callable[[], object]]) -> None:
    bound = method()
    if bound is not None:
        bound()


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


def _time() -> str:
    now = time.time()
    stamp = datetime.datetime.fromtimestamp(now, datetime.UTC).isoformat(timespec="milliseconds")
    return f"{stamp.replace('+00:00', 'Z')} {now:.6f}"


def _quit() -> str:
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
            check=CommandTable.check,
            description="a line protocol (+OK/-ERR replies) whose commands come from plugins",
            default_port=7071,
        )
    ]
