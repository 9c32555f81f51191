"""chat: a multi-client line chat that works with ``nc`` or ``telnet`` as the client.

Input lines end in LF or CRLF, output lines in CRLF; text is UTF-8 and
invalid bytes are replaced, never fatal. Plain lines are messages to the
sender's room; lines starting with ``/`` are commands (``/help`` lists them).
The protocol is described in ``docs/handlers/chat.md``.

Output conventions, so a script can tell lines apart:

* ``<nick> text`` a message, ``* nick action`` an action (``/me``);
* ``*nick* text`` a private message to you, ``-> *nick* text`` its echo;
* ``* ...`` news from the server (joins, leaves, replies to commands);
* ``! ...`` an error or a warning.

Limits (options): line length, the time to finish a line, flood control
(a token bucket per connection), a slow consumer's unsent output, clients
per room, rooms. A client that sends but never reads stops being read once
its unsent output passes the high-water mark (see ``reactorkit.LineHandler``)
and is disconnected past ``max_output_buffer``.
Room state lives in one :class:`ChatRooms` per listener.

With the ``bus`` option, rooms span every server on the same Redis: each
message, action, join, leave and nick change is also published once on a
:class:`reactorkit.ChatBus`, and what other servers publish is delivered to
the local members (:meth:`ChatRooms.bus_event`).
"""

from __future__ import annotations

import collections
import logging
import re
import weakref
from collections.abc import Iterator

import attrs

import reactorkit

__all__ = ["ChatHandler", "ChatOptions", "ChatRooms", "Room"]

log = logging.getLogger("reactorkit.chat")


LOBBY = "lobby"
NICK_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]*\Z")
ROOM_RE = re.compile(r"#?([A-Za-z0-9_-]+)\Z")
MAX_ROOM_NAME = 32
# Broadcasts that plugins' send_bytes may make in answer to one line.
MAX_CHAINED_BROADCASTS = 1000
# C0 controls (but tab), DEL and the C1 controls (U+0080-U+009F: U+009B is
# CSI, ESC [ to terminals that take 8-bit controls) would let one user drive
# another's terminal.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")

HELP = (
    "* commands:",
    "*   /nick NAME       change your nick (letters, digits, _ and -; starts with a letter)",
    "*   /join ROOM       join (or create) a room; everyone starts in #lobby",
    "*   /rooms           list rooms and how many are in each",
    "*   /who             list who is in your room",
    "*   /msg NICK text   send a private message",
    "*   /me action       send an action: * you action",
    "*   /quit [message]  leave",
    "*   /help            this list",
)


@attrs.frozen(kw_only=True)
class ChatOptions:
    """Options of the ``chat`` handler type (``[listen.options]``)."""

    max_line_length: int = attrs.field(default=1024, validator=attrs.validators.ge(16))
    line_timeout: float = attrs.field(default=60.0, validator=attrs.validators.ge(0))
    max_nick_length: int = attrs.field(default=16, validator=attrs.validators.ge(1))
    rate: float = attrs.field(default=5.0, validator=attrs.validators.gt(0))
    burst: int = attrs.field(default=10, validator=attrs.validators.ge(1))
    flood_strikes: int = attrs.field(default=5, validator=attrs.validators.ge(1))
    max_output_buffer: int = attrs.field(default=256 * 1024, validator=attrs.validators.ge(1024))
    max_room_clients: int = attrs.field(default=100, validator=attrs.validators.ge(1))
    max_rooms: int = attrs.field(default=1000, validator=attrs.validators.ge(1))
    bus: str = attrs.field(default="", validator=lambda _i, _a, v: _check_bus(v))
    bus_prefix: str = attrs.field(
        default="reactorkit:chat:", validator=lambda _i, _a, v: _check_prefix(v)
    )
    bus_presence_interval: float = attrs.field(default=5.0, validator=attrs.validators.ge(0.05))
    bus_reconnect_max: float = attrs.field(default=5.0, validator=attrs.validators.ge(0.05))
    #: ``/who`` shows each member of this server with its address, as IRC's
    #: WHO shows hosts (behind a PROXY-protocol balancer: the client's own).
    who_addresses: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))


def _check_bus(url: str) -> None:
    if url:
        try:
            reactorkit.RedisBus.check_url(url)
        except ValueError as exc:
            raise ValueError(f"'bus' {exc}") from None


def _check_prefix(prefix: str) -> None:
    try:
        reactorkit.RedisBus.check_prefix(prefix)
    except ValueError as exc:
        raise ValueError(f"'bus_prefix' {exc}") from None


# Rooms with a bus, so the reactor_stopping hook can close their buses.
_BUSSED: weakref.WeakSet[ChatRooms] = weakref.WeakSet()


@attrs.define(eq=False)
class Room:
    """A room and its members, in joining order."""

    name: str
    members: dict[ChatHandler, None] = attrs.field(factory=dict)

    @property
    def label(self) -> str:
        return f"#{self.name}"


@attrs.define(eq=False)
class ChatRooms:
    """Every room and nick of one listener: the state its handlers share."""

    options: ChatOptions
    rooms: dict[str, Room] = attrs.field(factory=dict)
    nicks: dict[str, ChatHandler] = attrs.field(factory=dict)
    guests: int = 0
    bus: reactorkit.ChatBus | None = None
    _bus_reactor: reactorkit.Reactor | None = attrs.field(default=None, init=False)
    _bus_was_up: bool = attrs.field(default=False, init=False)
    #: Set once a handler of a ChatHandler subclass joins: broadcast then
    #: checks each receiver's class (a subclass may have its own send_bytes).
    subclassed: bool = attrs.field(default=False, init=False)
    _delivering: bool = attrs.field(default=False, init=False)
    _chained: int = attrs.field(default=0, init=False)
    _pending: collections.deque[tuple[Room, str, ChatHandler | None]] = attrs.field(
        factory=collections.deque, init=False
    )

    @classmethod
    def from_listener(cls, listener: reactorkit.Listener) -> ChatRooms:
        rooms = cls(options=listener.options)
        options: ChatOptions = listener.options
        if options.bus:
            bus = reactorkit.RedisBus(
                listener.reactor,
                options.bus,
                name=listener.name,
                prefix=options.bus_prefix,
                presence_interval=options.bus_presence_interval,
                reconnect_max=options.bus_reconnect_max,
            )
            rooms.attach_bus(bus, listener.reactor)
        return rooms

    def guest_nick(self) -> str:
        # With a bus, a suffix of this server's id keeps guests of two servers apart.
        suffix = f"-{self.bus.origin[:4]}" if self.bus is not None else ""
        while True:
            self.guests += 1
            nick = f"guest{self.guests}{suffix}"
            if not self.is_taken(nick):
                return nick

    def is_taken(self, nick: str) -> bool:
        """True when ``nick`` is in use here or (with a bus) on another server."""
        return nick.lower() in self.nicks or (
            self.bus is not None and self.bus.has_remote_nick(nick)
        )

    def room(self, name: str) -> Room | None:
        """The room called ``name`` (lowercase, no ``#``), created if there is space."""
        room = self.rooms.get(name)
        if room is None:
            if len(self.rooms) >= self.options.max_rooms:
                return None
            room = self.rooms[name] = Room(name)
        return room

    def leave(self, handler: ChatHandler, room: Room) -> None:
        room.members.pop(handler, None)
        if not room.members and room.name != LOBBY:
            del self.rooms[room.name]

    def broadcast(self, room: Room, text: str, exclude: ChatHandler | None = None) -> None:
        """Send one line to every member but ``exclude``; encoded once for all.

        A broadcast made while one is being delivered (a plugin's
        ``send_bytes`` answering) waits until that one reached everybody: no
        member sees an answer before the line it answers.
        """
        if self._delivering:
            if self._chained >= MAX_CHAINED_BROADCASTS:
                # Two bots answering each other: fail the one answering now.
                raise RuntimeError(f"more than {MAX_CHAINED_BROADCASTS} broadcasts answer one line")
            self._chained += 1
            self._pending.append((room, text, exclude))
            return
        self._delivering = True
        self._chained = 0
        pending = self._pending
        limit = self.options.max_output_buffer
        subclassed = self.subclassed
        try:
            while True:
                data = text.encode("utf-8", "replace") + b"\r\n"
                for member in list(room.members):
                    if member is not exclude:
                        if subclassed and type(member) is not ChatHandler:
                            _send_through(member, data)  # a subclass may have its own
                            continue
                        # send_bytes, inline: this runs once per receiver. write()
                        # ignores a closing connection; only an open one can be slow.
                        connection = member.connection
                        connection.write(data)
                        if (
                            connection.get_write_buffer_size() > limit
                            and not connection.is_closing()
                        ):
                            member.too_slow()
                if not pending:
                    return
                room, text, exclude = pending.popleft()
                subclassed = self.subclassed  # an answer may have come with a newcomer
        finally:
            self._delivering = False
            if pending:  # a delivery raised: drop what waited on it
                pending.clear()

    # -- the bus (reactorkit.BusListener) ----------------------------------

    def attach_bus(self, bus: reactorkit.ChatBus, reactor: reactorkit.Reactor) -> None:
        """Share these rooms with other servers through ``bus``; closed on shutdown."""
        self.bus = bus
        self._bus_reactor = reactor
        self._bus_was_up = False
        _BUSSED.add(self)
        bus.start(self)

    def publish(self, kind: str, room: str, nick: str, text: str = "", target: str = "") -> bool:
        """Tell the other servers; False when there is no bus or it dropped the event."""
        if self.bus is None:
            return False
        event = reactorkit.ChatEvent(kind=kind, room=room, nick=nick, text=text, target=target)
        return self.bus.publish(event)

    def bus_event(self, event: reactorkit.ChatEvent) -> None:
        # Clipped to what a local client may send: one huge PUBLISH must not
        # become a huge line to every member.
        nick = event.nick[: self.options.max_nick_length]
        text = event.text[: self.options.max_line_length]
        if event.kind == "msg":
            target = self.nicks.get(event.target.lower())
            if target is not None:
                _send_through(target, f"*{nick}* {text}\r\n".encode("utf-8", "replace"))
            return
        room = self.rooms.get(event.room)
        if room is None:
            return  # nobody here is in that room
        kind = event.kind
        if kind == "say":
            line = f"<{nick}> {text}"
        elif kind == "me":
            line = f"* {nick} {text}"
        elif kind == "join":
            line = f"* {nick} joined #{event.room}"
        elif kind == "leave":
            line = f"* {nick} left {text}"
        elif kind == "nick":
            line = f"* {nick} is now {text}"
        else:
            return  # a kind a newer server knows
        self.broadcast(room, line)

    def bus_state_changed(self, up: bool, reason: str) -> None:
        if up and not self._bus_was_up:
            self._bus_was_up = True
            return  # the first connect is not news
        notice = (
            "* other servers are reachable again"
            if up
            else "! other servers are unreachable: only people on this server see messages now"
        )
        for room in list(self.rooms.values()):
            self.broadcast(room, notice)

    def bus_members(self) -> Iterator[tuple[str, str]]:
        for room in self.rooms.values():
            for member in room.members:
                yield room.name, member.nick

    def close_bus(self) -> None:
        """Say goodbye to the other servers and disconnect (at shutdown)."""
        if self.bus is not None:
            self.bus.close()


class ChatHandler(reactorkit.LineHandler):
    """One chat client."""

    def __init__(self, rooms: ChatRooms) -> None:
        super().__init__(
            rooms,
            max_line_length=rooms.options.max_line_length,
            line_timeout=rooms.options.line_timeout,
        )
        self.rooms = rooms
        if type(self) is not ChatHandler:
            rooms.subclassed = True
        self.options = rooms.options
        self.nick = ""
        self.room: Room | None = None
        self.quit_reason = "disconnected"
        self._bucket: reactorkit.TokenBucket | None = None  # made with the connection
        self._strikes = 0

    # -- connection callbacks ---------------------------------------------

    def connection_made(self, connection: reactorkit.Transport) -> None:
        self.connection = connection
        self._bucket = reactorkit.TokenBucket(
            self.options.rate, self.options.burst, connection.reactor.time
        )
        self.nick = self.rooms.guest_nick()
        self.rooms.nicks[self.nick.lower()] = self
        lobby = self.rooms.room(LOBBY)
        assert lobby is not None  # the lobby is never deleted, so never refused
        if len(lobby.members) >= self.options.max_room_clients:
            self.say("! the server is full, try again later")
            connection.close()
            return
        self.say(f"* welcome to reactorkit chat, {self.nick}! you are in #lobby")
        self.say("* change your nick with /nick NAME; /help lists the commands")
        self._enter(lobby)

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        if self.room is not None:
            room, self.room = self.room, None
            self.rooms.leave(self, room)
            self.rooms.broadcast(room, f"* {self.nick} left ({self.quit_reason})")
            self.rooms.publish("leave", room.name, self.nick, f"({self.quit_reason})")
        if self.rooms.nicks.get(self.nick.lower()) is self:
            del self.rooms.nicks[self.nick.lower()]

    def line_too_long(self, length: int) -> None:
        self.quit_reason = "line too long"
        reactorkit.limit_closed(self.connection, "line_too_long", f"{length} bytes")
        self.say(f"! line too long: the limit is {self.max_line_length} bytes; disconnecting")
        self.connection.close()

    def line_timed_out(self) -> None:
        self.quit_reason = "line timeout"
        reactorkit.limit_closed(self.connection, "line_timeout")
        self.say(f"! line not finished within {self.line_timeout:g} seconds; disconnecting")
        self.connection.close()

    def shutdown_requested(self) -> None:
        self.quit_reason = "server shutting down"
        self.say("* the server is shutting down, goodbye")
        self.connection.close()

    # -- output ------------------------------------------------------------

    def send_bytes(self, data: bytes) -> None:
        """Write a pre-encoded line; disconnect a client whose output piles up."""
        connection = self.connection
        if connection.is_closing():
            return
        connection.write(data)
        if connection.get_write_buffer_size() > self.options.max_output_buffer:
            self.too_slow()

    def too_slow(self) -> None:
        """Disconnect this client: its unsent output passed ``max_output_buffer``."""
        connection = self.connection
        reactorkit.limit_closed(
            connection,
            "slow_consumer",
            f"{self.nick}: {connection.get_write_buffer_size()} bytes unsent",
        )
        self.quit_reason = "too slow reading"
        connection.abort()

    def say(self, text: str) -> None:
        """Send one line to this client."""
        self.send_bytes(text.encode("utf-8", "replace") + b"\r\n")

    # -- input -------------------------------------------------------------

    def line_received(self, line: bytes) -> None:
        if not self._admit():
            return
        text = line.decode("utf-8", "replace")
        # No control character is printable: most lines skip the regex's
        # per-character scan (TAB, allowed, is not printable either).
        if not text.isprintable():
            text = _CONTROL.sub("\ufffd", text)
        text = text.strip()
        if not text:
            return
        if text.startswith("/") and not text.startswith("//"):
            name, _, rest = text[1:].partition(" ")
            command = getattr(self, f"cmd_{name.lower()}", None) if name.isalnum() else None
            if command is None:
                self.say(f"! unknown command /{name}; /help lists the commands")
            else:
                command(rest.strip())
            return
        if text.startswith("//"):
            text = text[1:]  # "//x" sends a message starting with "/x"
        if self.room is not None:
            self.rooms.broadcast(self.room, f"<{self.nick}> {text}", exclude=self)
            self.rooms.publish("say", self.room.name, self.nick, text)

    def _admit(self) -> bool:
        # `rate` lines per second with bursts of `burst`; over it, dropped.
        assert self._bucket is not None  # lines only come after connection_made
        if self._bucket.take(self.connection.reactor.time):
            self._strikes = 0
            return True
        self._strikes += 1
        if self._strikes >= self.options.flood_strikes:
            self.quit_reason = "flooding"
            reactorkit.limit_closed(self.connection, "flood")
            self.say("! disconnected for flooding")
            self.connection.close()
        else:
            self.say(
                f"! slow down: at most {self.options.rate:g} lines per second "
                "(that line was dropped)"
            )
        return False

    # -- commands ----------------------------------------------------------

    def cmd_help(self, args: str) -> None:
        for line in HELP:
            self.say(line)

    def cmd_nick(self, args: str) -> None:
        new = args.strip()
        limit = self.options.max_nick_length
        if not new:
            self.say(f"* you are {self.nick}; usage: /nick NAME")
        elif len(new) > limit or not NICK_RE.match(new):
            self.say(
                f"! invalid nick {new!r}: 1-{limit} letters, digits, _ or -, starting with a letter"
            )
        elif (new.lower() in self.rooms.nicks and self.rooms.nicks[new.lower()] is not self) or (
            self.rooms.bus is not None and self.rooms.bus.has_remote_nick(new)
        ):
            self.say(f"! nick {new} is taken")
        elif new != self.nick:
            old = self.nick
            del self.rooms.nicks[old.lower()]
            self.rooms.nicks[new.lower()] = self
            self.nick = new
            self.say(f"* you are now {new}")
            if self.room is not None:
                self.rooms.broadcast(self.room, f"* {old} is now {new}", exclude=self)
                self.rooms.publish("nick", self.room.name, old, new)

    def cmd_join(self, args: str) -> None:
        match = ROOM_RE.match(args.strip())
        if not match or len(match.group(1)) > MAX_ROOM_NAME:
            self.say(
                f"! invalid room {args.strip()!r}: 1-{MAX_ROOM_NAME} letters, digits, "
                "_ or -; usage: /join ROOM"
            )
            return
        name = match.group(1).lower()
        if self.room is not None and self.room.name == name:
            self.say(f"* you are already in #{name}")
            return
        existing = self.rooms.rooms.get(name)
        if existing is not None and len(existing.members) >= self.options.max_room_clients:
            self.say(f"! #{name} is full ({self.options.max_room_clients} clients)")
            return
        room = self.rooms.room(name)
        if room is None:
            self.say(f"! too many rooms ({self.options.max_rooms}); join an existing one")
            return
        old = self.room
        if old is not None:
            self.room = None
            self.rooms.leave(self, old)
            self.rooms.broadcast(old, f"* {self.nick} left for #{name}")
        self._enter(room)
        if old is not None:
            # After the join: a server that shows "left for #x" knows who is in #x.
            self.rooms.publish("leave", old.name, self.nick, f"for #{name}")

    def _enter(self, room: Room) -> None:
        self.rooms.broadcast(room, f"* {self.nick} joined {room.label}")
        self.rooms.publish("join", room.name, self.nick)
        room.members[self] = None
        self.room = room
        others = len(room.members) - 1 + len(self._remote_members())
        self.say(f"* you are now in {room.label} ({others} other{'s' * (others != 1)} here)")

    def cmd_rooms(self, args: str) -> None:
        listing = ", ".join(f"#{r.name} ({len(r.members)})" for r in self.rooms.rooms.values())
        self.say(f"* rooms: {listing}")

    def cmd_who(self, args: str) -> None:
        if self.room is not None:
            local = [m.nick for m in self.room.members]
            if self.rooms.options.who_addresses:
                local = [f"{m.nick} ({m.address()})" for m in self.room.members]
            names = ", ".join(local + self._remote_members())
            self.say(f"* in {self.room.label}: {names}")

    def address(self) -> str:
        """The host this member connects from (the PROXY header's, when one came)."""
        peer = self.connection.peername if self.connection is not None else None
        return str(peer[0]) if isinstance(peer, tuple) and peer else "local"

    def _remote_members(self) -> list[str]:
        if self.rooms.bus is None or self.room is None:
            return []
        return self.rooms.bus.remote_members(self.room.name)

    def cmd_msg(self, args: str) -> None:
        nick, _, text = args.partition(" ")
        text = text.strip()
        if not nick or not text:
            self.say("! usage: /msg NICK text")
            return
        target = self.rooms.nicks.get(nick.lower())
        if target is None and self.rooms.bus is not None and self.rooms.bus.has_remote_nick(nick):
            if self.rooms.publish("msg", "", self.nick, text, target=nick):
                self.say(f"-> *{nick}* {text}")
            else:
                self.say(f"! cannot reach {nick}: other servers are unreachable")
            return
        if target is None:
            self.say(f"! no such nick: {nick}")
            return
        _send_through(target, f"*{self.nick}* {text}\r\n".encode("utf-8", "replace"))
        self.say(f"-> *{target.nick}* {text}")

    def cmd_me(self, args: str) -> None:
        if not args:
            self.say("! usage: /me action")
        elif self.room is not None:
            self.rooms.broadcast(self.room, f"* {self.nick} {args}", exclude=self)
            self.rooms.publish("me", self.room.name, self.nick, args)

    def cmd_quit(self, args: str) -> None:
        self.quit_reason = f"quit: {args}" if args else "quit"
        self.say("* bye")
        self.connection.close()


def _send_through(member: ChatHandler, data: bytes) -> None:
    # A plugin's send_bytes raising is that receiver's failure, not the
    # sender's: its connection is closed and logged, the broadcast goes on.
    # As wide as the connection's own failure boundary.
    try:
        member.send_bytes(data)
        # Its send_bytes may write past super()'s check: the limit holds anyway.
        connection = member.connection
        if (
            connection.get_write_buffer_size() > member.options.max_output_buffer
            and not connection.is_closing()
        ):
            member.too_slow()
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        connection = member.connection
        failed = getattr(connection, "callback_failed", None)
        if failed is not None:
            failed(member.send_bytes, exc)
            return
        # The TLS layer (or a test double) has no such hook: the same log line, then abort.
        listener = getattr(connection, "listener", None)
        log.error(
            "handler %s.send_bytes raised on listener %r, peer %s; closing the connection",
            type(member).__name__,
            getattr(listener, "name", None),
            getattr(connection, "peername", None),
            exc_info=exc,
        )
        connection.abort()


@reactorkit.hookimpl
def reactorkit_handler_types() -> list[reactorkit.HandlerType]:
    return [
        reactorkit.HandlerType(
            name="chat",
            handler=ChatHandler,
            options=ChatOptions,
            state=ChatRooms.from_listener,
            description="multi-client chat with rooms, nicks and private messages (nc/telnet)",
            default_port=7070,
        )
    ]


@reactorkit.hookimpl
def reactorkit_reactor_stopping(reactor: reactorkit.Reactor) -> None:
    # Before the connections drain: the peers hear one "bye" and let this
    # server's members leave, instead of a leave line per closing client.
    for rooms in list(_BUSSED):
        if rooms._bus_reactor is reactor:
            rooms.close_bus()
            _BUSSED.discard(rooms)
