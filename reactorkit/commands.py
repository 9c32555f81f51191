"""The line-command contract: what ``reactorkit_line_commands()`` returns.

A plugin declares each command as a :class:`LineCommand`: a name, an
argument spec that gives both the usage line and the arity, one line of
help and a function. The function receives a :class:`CommandContext` and
returns the reply: ``None`` (``+OK``), a string (``+string``) or a list of
strings (a multi-line reply). Raising :class:`CommandError` answers
``-ERR message``; any other exception answers ``-ERR internal error`` and
is logged with its traceback.

This module is sans-IO: it never touches sockets or the reactor.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from reactorkit.errors import CommandError

if TYPE_CHECKING:
    from reactorkit.connection import Connection
    from reactorkit.listener import Listener

__all__ = ["CommandContext", "CommandError", "CommandFunction", "LineCommand", "split_args"]

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*\Z")
_SPEC_WORD = re.compile(r"(\[)?([A-Za-z][A-Za-z0-9_-]*)(\.\.\.)?(\])?\Z")

Reply = str | Sequence[str] | None
#: ``function(ctx)``, or ``function()`` when it takes no parameter.
CommandFunction = Callable[..., Reply]


def _arity(spec: str) -> tuple[int, int | None]:
    """``"KEY [VALUE]"`` -> (1, 2); ``"TEXT..."`` -> (1, None); ``"[ARG...]"`` -> (0, None)."""
    low, high = 0, 0
    unbounded = False
    optional_seen = False
    for word in spec.split():
        match = _SPEC_WORD.match(word)
        if not match or bool(match.group(1)) != bool(match.group(4)):
            raise ValueError(
                f"bad argument spec word {word!r} in {spec!r}: use NAME, "
                "[NAME], NAME... or [NAME...]"
            )
        optional = bool(match.group(1))
        if unbounded:
            raise ValueError(f"nothing may follow a repeated argument in {spec!r}")
        if optional:
            optional_seen = True
        elif optional_seen:
            raise ValueError(f"required arguments must come before optional ones in {spec!r}")
        if not optional:
            low += 1
        high += 1
        unbounded = bool(match.group(3))
    return low, None if unbounded else high


def _upper(name: str) -> str:
    return name.upper()


def _check_name(instance: Any, attribute: Any, value: str) -> None:
    if not _NAME.match(value):
        raise ValueError(
            f"command name must be letters, digits, _ or -, starting with a letter, got {value!r}"
        )


def _check_function(instance: Any, attribute: Any, value: Any) -> None:
    if inspect.iscoroutinefunction(value) or inspect.isasyncgenfunction(value):
        name = getattr(value, "__qualname__", repr(value))
        raise TypeError(
            f"{name} is async def: line commands are called synchronously; "
            "use def, with blocking=True for blocking work"
        )


def _takes_parameter(function: Any) -> bool:
    # Decided once, when the command is declared: a function with an empty
    # signature is called without a context (one object fewer per request).
    try:
        return bool(inspect.signature(function).parameters)
    except (TypeError, ValueError):  # no signature to read (some builtins): pass one
        return True


@attrs.frozen(kw_only=True)
class LineCommand:
    """One command of the line-command protocol.

    Attributes:
        name: the command word; matched case-insensitively (shown upper case).
        function: called with a :class:`CommandContext`; returns the reply.
            A function that takes no parameter at all (``def ping():``) is
            called without one, and the handler builds no context for it.
        args: the argument spec, e.g. ``"KEY [VALUE]"``: ``NAME`` is required,
            ``[NAME]`` optional, ``NAME...`` one or more, ``[NAME...]`` any
            number. It is the usage line shown on a wrong number of arguments.
        help: one line, shown by ``HELP``.
        blocking: run ``function`` through ``reactor.run_in_thread`` (for
            blocking I/O or CPU-heavy work); replies stay in request order.
    """

    name: str = attrs.field(validator=_check_name, converter=_upper)
    function: CommandFunction = attrs.field(validator=_check_function)
    args: str = ""
    help: str = ""
    blocking: bool = False
    min_args: int = attrs.field(init=False)
    max_args: int | None = attrs.field(init=False)
    #: False when ``function`` takes no parameter: it is called as ``function()``.
    takes_context: bool = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        low, high = _arity(self.args)
        object.__setattr__(self, "min_args", low)
        object.__setattr__(self, "max_args", high)
        object.__setattr__(self, "takes_context", _takes_parameter(self.function))

    def call(self, context: CommandContext) -> Reply:
        """Run ``function`` with ``context``, or with nothing if it takes no parameter."""
        if self.takes_context:
            return self.function(context)
        return self.function()

    @property
    def usage(self) -> str:
        """``NAME ARGS``."""
        return f"{self.name} {self.args}".strip()

    def accepts(self, count: int) -> bool:
        """True if ``count`` arguments fit the spec."""
        return count >= self.min_args and (self.max_args is None or count <= self.max_args)


# Not kw_only: the handler builds one per request, positionally (cheaper).
@attrs.define(eq=False)
class CommandContext:
    """What a command function receives.

    Attributes:
        command: the :class:`LineCommand` being run.
        args: the arguments, quotes removed.
        connection: the client's connection (``peername``, ``reactor``...).
            Blocking commands run on a worker thread: they must not call
            its methods, only read what they need.
        listener: the listener the client came through (its ``stats``), or
            None when the handler runs without one (tests).
        commands: every enabled command by name, for introspection (``HELP``).
        sources: where each command came from, by name (``plugin 'x' (dist)``).

    Treat it as read-only: a connection's handler may pass the same context
    to successive calls of a command that got no arguments.
    """

    command: LineCommand
    args: tuple[str, ...]
    connection: Connection | Any
    listener: Listener | None
    commands: dict[str, LineCommand]
    sources: dict[str, str]


def split_args(line: str) -> list[str]:
    """Split a request line into words, honouring quotes.

    Words are separated by spaces or tabs. A word may be quoted to hold
    spaces: ``"..."`` understands the escapes ``\\"``, ``\\\\``, ``\\n``,
    ``\\t`` and ``\\r``; ``'...'`` is taken literally. A closing quote must be
    followed by whitespace or the end of the line (as in Redis).

    Raises:
        CommandError: unbalanced quotes, or a quote glued to a word.
    """
    if '"' not in line and "'" not in line:
        return line.split()
    words: list[str] = []
    i, n = 0, len(line)
    escapes = {'"': '"', "\\": "\\", "n": "\n", "t": "\t", "r": "\r"}
    while i < n:
        while i < n and line[i] in " \t":
            i += 1
        if i >= n:
            break
        quote = line[i]
        if quote in "\"'":
            i += 1
            word: list[str] = []
            while True:
                if i >= n:
                    raise CommandError("syntax error: unbalanced quotes")
                char = line[i]
                if char == quote:
                    i += 1
                    break
                if char == "\\" and quote == '"' and i + 1 < n and line[i + 1] in escapes:
                    word.append(escapes[line[i + 1]])
                    i += 2
                    continue
                word.append(char)
                i += 1
            if i < n and line[i] not in " \t":
                raise CommandError("syntax error: a closing quote must be followed by a space")
            words.append("".join(word))
        else:
            start = i
            while i < n and line[i] not in " \t":
                if line[i] in "\"'":
                    raise CommandError("syntax error: a quote must start a word")
                i += 1
            words.append(line[start:i])
    return words
