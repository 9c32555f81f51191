"""The chat bus: what joins the chat rooms of several processes or hosts into one.

Theory of operation
-------------------
* Chat talks to a :class:`ChatBus` (a ``typing.Protocol``): it publishes each
  message, action, join, leave, nick change and private message once as a
  :class:`ChatEvent`, and the bus calls it back (:class:`BusListener`) with
  the events other processes published, and when it goes down or comes back.
* Two implementations share one core: :class:`RedisBus` (Redis pub/sub,
  for real) and :class:`LocalBus` (an in-process :class:`LocalHub`, for
  tests). They are interchangeable: the chat cannot tell which it has.
* Each bus has an ``origin`` id; every event carries it and a per-origin
  sequence number. A bus drops its own echoes, so nothing is delivered
  twice, and it counts sequence gaps (events lost while Redis was away).
  One publisher per process on one connection keeps per-sender order.
* Presence: every ``presence_interval`` seconds each bus publishes its
  members, one message per room plus the list of its rooms (so no message
  grows with the server). Joins, leaves and nick changes keep the mirror
  current in between. A peer not heard from for ``3 * presence_interval``
  seconds is dropped and its members leave ("their server stopped
  answering"), so a dead process's members vanish within
  ``4 * presence_interval`` seconds. A bus that (re)connects says ``hello``
  and every peer answers with its members at once.
* Presence is bounded: at most ``MAX_PEERS`` servers, ``MAX_PEER_ROOMS``
  rooms each and ``MAX_PEER_ROOM_MEMBERS`` members per room are kept, so a
  buggy or hostile publisher on the same Redis cannot grow it without limit.
  Control characters in received strings (CR, LF, NUL, ESC...) are replaced
  by U+FFFD, so a publisher cannot forge lines in a chat client's stream.
* While the transport is down the bus knows nothing about its peers: their
  members are forgotten (``/who`` shows only local people) and publishing
  is refused, not queued.

Wire format: one compact JSON object per pub/sub message, ``{"o": origin,
"q": seq, "k": kind, ...}``, on ``PREFIX + "room:" + room`` for room events
and ``PREFIX + "ctl"`` for presence and private messages.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol, final

import attrs

if TYPE_CHECKING:
    from reactorkit.reactor import Reactor, TimerHandle
    from reactorkit.redis import RedisClient, RedisStats

__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_PRESENCE_INTERVAL",
    "KINDS",
    "MAX_PEERS",
    "MAX_PEER_ROOMS",
    "MAX_PEER_ROOM_MEMBERS",
    "BusListener",
    "BusStats",
    "ChatBus",
    "ChatEvent",
    "LocalBus",
    "LocalHub",
    "RedisBus",
    "bus_snapshots",
    "check_prefix",
    "running_buses",
]

log = logging.getLogger("reactorkit.chatbus")

DEFAULT_PREFIX = "reactorkit:chat:"
DEFAULT_PRESENCE_INTERVAL = 5.0
#: The event kinds chat publishes; "msg" is a private message to ``target``.
KINDS = frozenset({"say", "me", "join", "leave", "nick", "msg"})
_PREFIX_RE = re.compile(r"[A-Za-z0-9:_.-]{1,64}\Z")
#: Control characters (tab aside) a received string may not carry: CR/LF
#: would forge lines in a client's stream. Replaced, as chat does for input.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
#: What a peer's origin id may look like (this module makes 12 hex digits).
_ORIGIN_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}\Z")
_LOG_INTERVAL = 30.0
#: Other servers one bus keeps presence for; more are ignored (and counted).
MAX_PEERS = 1024
#: Rooms, and members per room, kept for one peer.
MAX_PEER_ROOMS = 10_000
MAX_PEER_ROOM_MEMBERS = 10_000


@attrs.frozen(kw_only=True)
class ChatEvent:
    """One thing that happened in a room, as it crosses the bus.

    Attributes:
        kind: one of :data:`KINDS`.
        room: the room's name (lowercase, no ``#``); empty for ``msg``.
        nick: who did it.
        text: the message or action; the new nick for ``nick``; for
            ``leave`` the rest of the line after "left" (``(quit)``,
            ``for #room``).
        target: the recipient of a ``msg``.
        origin: the publishing bus's id; filled in on receipt.
    """

    kind: str
    room: str = ""
    nick: str
    text: str = ""
    target: str = ""
    origin: str = ""


class BusListener(Protocol):
    """What the bus calls back: implemented by chat's rooms."""

    def bus_event(self, event: ChatEvent) -> None:
        """An event another process published (never one's own)."""

    def bus_state_changed(self, up: bool, reason: str) -> None:
        """The bus came up (``True``) or went down; called on changes only."""

    def bus_members(self) -> Iterable[tuple[str, str]]:
        """This process's members as ``(room, nick)`` pairs, for presence."""


class ChatBus(Protocol):
    """What chat needs from a bus; :class:`RedisBus` and :class:`LocalBus` provide it."""

    origin: str

    @property
    def is_up(self) -> bool:
        """True while events cross to other processes."""

    def start(self, listener: BusListener) -> None:
        """Connect, and call ``listener`` from now on."""

    def publish(self, event: ChatEvent) -> bool:
        """Send ``event`` to every other process; False when it was dropped (bus down)."""

    def remote_members(self, room: str) -> list[str]:
        """Nicks in ``room`` on other processes, as last heard."""

    def has_remote_nick(self, nick: str) -> bool:
        """True when ``nick`` (any case) is in use on another process."""

    def close(self) -> None:
        """Say goodbye to the peers and disconnect for good."""


@attrs.define(eq=False)
class BusStats:
    """Counters of one bus."""

    published: int = 0
    dropped: int = 0
    received: int = 0
    own_echoes: int = 0
    gaps: int = 0
    malformed: int = 0


@attrs.define(eq=False)
class _Peer:
    """Another process on the bus, as last heard."""

    last_seen: float
    seq: int = 0
    rooms: dict[str, dict[str, str]] = attrs.field(factory=dict)  # room -> lower nick -> nick


def check_prefix(prefix: str) -> str:
    """Return ``prefix`` if it is a usable channel prefix.

    Raises:
        ValueError: it is empty, too long, or holds characters Redis patterns
            treat specially (``*?[]``) or whitespace.
    """
    if not _PREFIX_RE.match(prefix):
        raise ValueError(f"channel prefix must be 1-64 letters, digits or ':_.-', got {prefix!r}")
    return prefix


def running_buses() -> list[tuple[str, bool]]:
    """``(name, is_up)`` of every chat bus started in this process and not closed.

    What ``GET /healthz`` reports, so an operator (or a load balancer's
    health check) sees whether the rooms still span the other servers.
    """
    return sorted((bus.name, bus.is_up) for bus in _RUNNING)


def bus_snapshots() -> list[dict[str, Any]]:
    """State and counters of every chat bus running in this process.

    What ``reactorkit status`` shows (and ``--json`` prints) per process:
    ``name``, ``up``, the :class:`BusStats` counters (``dropped`` counts the
    events a down or full bus did not send) and, for a Redis bus, the client's
    own counters under ``redis``.
    """
    snapshots = []
    for bus in sorted(_RUNNING, key=lambda b: b.name):
        entry: dict[str, Any] = {"name": bus.name, "up": bus.is_up, **attrs.asdict(bus.stats)}
        if isinstance(bus, RedisBus):
            entry["redis"] = attrs.asdict(bus.redis_stats)
        snapshots.append(entry)
    return snapshots


#: Buses started and not closed, in this process (weak: a dropped bus leaves).
_RUNNING: weakref.WeakSet[_BusCore] = weakref.WeakSet()


class _BusCore:
    """Origin ids, encoding, echo dropping, presence: everything but the transport."""

    def __init__(
        self,
        reactor: Reactor,
        *,
        name: str,
        prefix: str = DEFAULT_PREFIX,
        presence_interval: float = DEFAULT_PRESENCE_INTERVAL,
    ) -> None:
        self.reactor = reactor
        self.name = name
        self.prefix = check_prefix(prefix)
        self.presence_interval = presence_interval
        self.origin = uuid.uuid4().hex[:12]
        self.stats = BusStats()
        self._listener: BusListener | None = None
        self._up = False
        self._closed = False
        self._seq = 0
        self._peers: dict[str, _Peer] = {}
        self._timer: TimerHandle | None = None
        self._last_malformed_log = float("-inf")
        self._ctl = (prefix + "ctl").encode()
        self._own_prefix = b'{"o":"%s",' % self.origin.encode()

    # -- the ChatBus API ---------------------------------------------------

    @property
    def is_up(self) -> bool:
        return self._up

    def start(self, listener: BusListener) -> None:
        self._listener = listener
        _RUNNING.add(self)
        self._timer = self.reactor.call_later(self.presence_interval, self._heartbeat)
        self._start_transport()

    def publish(self, event: ChatEvent) -> bool:
        if self._closed:
            return False
        body: dict[str, Any] = {"k": event.kind, "n": event.nick}
        if event.text:
            body["t"] = event.text
        if event.kind == "msg":
            body["to"] = event.target
            return self._send(self._ctl, body)
        body["r"] = event.room
        return self._send(self._room_channel(event.room), body)

    def remote_members(self, room: str) -> list[str]:
        return [nick for peer in self._peers.values() for nick in peer.rooms.get(room, {}).values()]

    def has_remote_nick(self, nick: str) -> bool:
        lower = nick.lower()
        return any(lower in members for p in self._peers.values() for members in p.rooms.values())

    def close(self) -> None:
        if self._closed:
            return
        _RUNNING.discard(self)
        if self._up:
            self._send(self._ctl, {"k": "bye"})
        self._closed = True
        self._up = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._peers.clear()
        self._stop_transport()

    # -- what a transport implements --------------------------------------

    def _start_transport(self) -> None:
        raise NotImplementedError

    def _stop_transport(self) -> None:
        raise NotImplementedError

    def _transmit(self, channel: bytes, payload: bytes) -> bool:
        raise NotImplementedError

    # -- what a transport calls -------------------------------------------

    def _transport_changed(self, up: bool, reason: str) -> None:
        if self._closed or up == self._up:
            return
        self._up = up
        if up:
            log.info("chat bus %s: up (origin %s)", self.name, self.origin)
            self._send(self._ctl, {"k": "hello"})
            self._announce_members()
        else:
            log.warning(
                "chat bus %s: down (%s): rooms are local to this process until it is back",
                self.name,
                reason,
            )
            self._peers.clear()  # nothing known about them any more
        if self._listener is not None:
            self._deliver(self._listener.bus_state_changed, up, reason)

    def _payload_received(self, payload: bytes) -> None:
        if self._closed:
            return
        if payload.startswith(self._own_prefix):  # our own echo, told without parsing
            self.stats.own_echoes += 1
            return
        try:
            body = json.loads(payload)
            origin = body["o"]
            seq = body["q"]
            kind = body["k"]
            if not (isinstance(origin, str) and isinstance(seq, int) and isinstance(kind, str)):
                raise TypeError("bad field types")
            if not _ORIGIN_RE.match(origin):  # it is logged: no CR/LF, no megabytes
                raise ValueError("bad origin")
        except (ValueError, KeyError, TypeError) as exc:
            self._malformed(payload, exc)
            return
        if origin == self.origin:
            self.stats.own_echoes += 1
            return
        self.stats.received += 1
        peer = self._peers.get(origin)
        if peer is None:
            if len(self._peers) >= MAX_PEERS:
                self._malformed(payload, OverflowError(f"more than {MAX_PEERS} servers"))
                return
            peer = self._peers[origin] = _Peer(last_seen=self.reactor.time, seq=seq - 1)
            if kind in KINDS:
                self._send(self._ctl, {"k": "hello"})  # a peer we missed: ask for its members
        if seq > peer.seq + 1:
            self.stats.gaps += seq - peer.seq - 1
        peer.seq = max(peer.seq, seq)
        peer.last_seen = self.reactor.time
        try:
            self._dispatch(origin, peer, kind, body)
        except (KeyError, TypeError, AttributeError) as exc:
            self._malformed(payload, exc)

    # -- internals ---------------------------------------------------------

    def _dispatch(self, origin: str, peer: _Peer, kind: str, body: dict[str, Any]) -> None:
        if kind == "hello":
            self._announce_members()
        elif kind == "state":
            room = _text(body["r"])
            if room in peer.rooms or len(peer.rooms) < MAX_PEER_ROOMS:
                nicks = body["m"][:MAX_PEER_ROOM_MEMBERS]
                peer.rooms[room] = {_text(n).lower(): _text(n) for n in nicks}
        elif kind == "rooms":
            keep = {_text(r) for r in body["rs"]}
            for room in [r for r in peer.rooms if r not in keep]:
                del peer.rooms[room]
        elif kind == "bye":
            self._forget(origin, "(server shutting down)")
        elif kind in KINDS:
            event = ChatEvent(
                kind=kind,
                room=_text(body.get("r", "")),
                nick=_text(body["n"]),
                text=_text(body.get("t", "")),
                target=_text(body.get("to", "")),
                origin=origin,
            )
            self._track(peer, event)
            if self._listener is not None:
                self._deliver(self._listener.bus_event, event)
        # An unknown kind is a newer peer's: ignored, not an error.

    def _track(self, peer: _Peer, event: ChatEvent) -> None:
        members: dict[str, str] | None
        if event.kind == "join":
            if event.room not in peer.rooms and len(peer.rooms) >= MAX_PEER_ROOMS:
                return
            members = peer.rooms.setdefault(event.room, {})
            if len(members) < MAX_PEER_ROOM_MEMBERS:
                members[event.nick.lower()] = event.nick
        elif event.kind == "leave":
            members = peer.rooms.get(event.room)
            if members is not None:
                members.pop(event.nick.lower(), None)
                if not members:
                    del peer.rooms[event.room]
        elif event.kind == "nick":
            members = peer.rooms.get(event.room)
            if members is not None:
                members.pop(event.nick.lower(), None)
                members[event.text.lower()] = event.text

    def _forget(self, origin: str, reason: str) -> None:
        peer = self._peers.pop(origin, None)
        if peer is None or self._listener is None:
            return
        for room, members in peer.rooms.items():
            for nick in members.values():
                leave = ChatEvent(kind="leave", room=room, nick=nick, text=reason, origin=origin)
                self._deliver(self._listener.bus_event, leave)

    def _deliver(self, callback: Callable[..., object], *args: Any) -> None:
        # The chat's own failure stays here: it must not cost the bus its
        # connection (and every other room its delivery).
        try:
            callback(*args)
        except Exception:
            log.exception(
                "chat bus %s: %s%r raised; event skipped", self.name, callback.__name__, args
            )

    def _heartbeat(self) -> None:
        self._timer = self.reactor.call_later(self.presence_interval, self._heartbeat)
        if not self._up:
            return
        self._announce_members()
        deadline = self.reactor.time - 3 * self.presence_interval
        for origin in [o for o, p in self._peers.items() if p.last_seen < deadline]:
            log.warning(
                "chat bus %s: no word from server %s for %.0fs: its members leave",
                self.name,
                origin,
                3 * self.presence_interval,
            )
            self._forget(origin, "(their server stopped answering)")

    def _announce_members(self) -> None:
        if self._listener is None:
            return
        rooms: dict[str, list[str]] = {}
        for room, nick in self._listener.bus_members():
            rooms.setdefault(room, []).append(nick)
        for room, nicks in rooms.items():
            self._send(self._ctl, {"k": "state", "r": room, "m": nicks})
        self._send(self._ctl, {"k": "rooms", "rs": list(rooms)})

    def _send(self, channel: bytes, body: dict[str, Any]) -> bool:
        if not self._up:
            self.stats.dropped += 1
            return False
        self._seq += 1
        # The origin goes first, so every receiver spots its own echoes by prefix.
        payload = (
            self._own_prefix
            + b'"q":%d,' % self._seq
            + json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()[1:]
        )
        if self._transmit(channel, payload):
            self.stats.published += 1
            return True
        self.stats.dropped += 1
        return False

    def _room_channel(self, room: str) -> bytes:
        return f"{self.prefix}room:{room}".encode()

    def _malformed(self, payload: bytes, exc: Exception) -> None:
        self.stats.malformed += 1
        now = self.reactor.time
        if now - self._last_malformed_log >= _LOG_INTERVAL:
            self._last_malformed_log = now
            log.warning(
                "chat bus %s: ignoring a malformed message (%s: %s): %r (%d so far)",
                self.name,
                type(exc).__name__,
                exc,
                payload[:80],
                self.stats.malformed,
            )


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return _CONTROL.sub("\ufffd", value)


@final
class RedisBus(_BusCore):
    """A chat bus over Redis pub/sub (``PSUBSCRIBE PREFIX*``, ``PUBLISH``).

    Needs the ``hiredis`` package (``pip install 'reactorkit[redis]'``).

    Args:
        reactor: the reactor that runs it.
        url: ``redis://[user:password@]host[:port][/db]`` or ``unix://...``;
            see :meth:`reactorkit.redis.RedisAddress.from_url`.
        name: a label for log lines (the listener's name).
        prefix: prepended to every channel, so several chats can share a Redis.
        presence_interval: seconds between presence heartbeats.
        reconnect_max: the cap on reconnect delays, in seconds.
        max_buffer: bytes that may wait to be sent to Redis; past it
            events are dropped and counted.
    """

    def __init__(
        self,
        reactor: Reactor,
        url: str,
        *,
        name: str = "chat",
        prefix: str = DEFAULT_PREFIX,
        presence_interval: float = DEFAULT_PRESENCE_INTERVAL,
        reconnect_max: float | None = None,
        max_buffer: int | None = None,
    ) -> None:
        super().__init__(reactor, name=name, prefix=prefix, presence_interval=presence_interval)
        from reactorkit.redis import RedisAddress, RedisClient

        limits: dict[str, Any] = {}
        if reconnect_max is not None:
            limits["reconnect_max"] = reconnect_max
        if max_buffer is not None:
            limits["max_buffer"] = max_buffer
        self.client: RedisClient = RedisClient(
            reactor,
            RedisAddress.from_url(url),
            patterns=[f"{self.prefix}*".encode()],
            on_message=self._message,
            on_state=self._transport_changed,
            name=name,
            **limits,
        )

    @staticmethod
    def check_prefix(prefix: str) -> str:
        """Return ``prefix`` if it is a usable channel prefix; see :func:`check_prefix`."""
        return check_prefix(prefix)

    @staticmethod
    def check_url(url: str) -> str:
        """Return ``url`` if a :class:`RedisBus` can use it.

        Raises:
            ValueError: the URL is malformed (the message hides any password),
                or the ``hiredis`` package is not installed.
        """
        from reactorkit.redis import HIREDIS_MISSING, RedisAddress

        RedisAddress.from_url(url, environ={})
        if HIREDIS_MISSING is not None:
            raise ValueError(HIREDIS_MISSING)
        return url

    @property
    def redis_stats(self) -> RedisStats:
        """The Redis client's own counters (connects, drops...)."""
        return self.client.stats

    def _start_transport(self) -> None:
        self.client.start()

    def _stop_transport(self) -> None:
        self.client.close()

    def _transmit(self, channel: bytes, payload: bytes) -> bool:
        return self.client.publish(channel, payload)

    def _message(self, channel: bytes, payload: bytes) -> None:
        self._payload_received(payload)

    def __repr__(self) -> str:
        return f"<RedisBus {self.name} {self.client.address} up={self._up}>"


@final
class LocalHub:
    """An in-process stand-in for Redis: buses on one hub see each other's events.

    Delivery is asynchronous, like the real thing: each bus receives on its
    reactor's next pass. :meth:`set_up` simulates Redis going away and back.
    """

    def __init__(self) -> None:
        self.buses: list[LocalBus] = []
        self.is_up = True

    def set_up(self, up: bool) -> None:
        """Make every bus on the hub go down (False) or come back (True)."""
        self.is_up = up
        for bus in list(self.buses):
            bus.reactor.call_soon(bus._transport_changed, up, "hub up" if up else "hub down")

    def _deliver(self, payload: bytes) -> None:
        for bus in list(self.buses):
            bus.reactor.call_soon(bus._payload_received, payload)


@final
class LocalBus(_BusCore):
    """A chat bus on a :class:`LocalHub`, in this process; for tests.

    Args:
        reactor: the reactor that runs it.
        hub: the hub it shares with the other buses.
        name, prefix, presence_interval: as for :class:`RedisBus`.
    """

    def __init__(
        self,
        reactor: Reactor,
        hub: LocalHub,
        *,
        name: str = "chat",
        prefix: str = DEFAULT_PREFIX,
        presence_interval: float = DEFAULT_PRESENCE_INTERVAL,
    ) -> None:
        super().__init__(reactor, name=name, prefix=prefix, presence_interval=presence_interval)
        self.hub = hub

    def _start_transport(self) -> None:
        self.hub.buses.append(self)
        if self.hub.is_up:
            self.reactor.call_soon(self._transport_changed, True, "attached")

    def _stop_transport(self) -> None:
        if self in self.hub.buses:
            self.hub.buses.remove(self)

    def _transmit(self, channel: bytes, payload: bytes) -> bool:
        if not self.hub.is_up or self not in self.hub.buses:
            return False
        self.hub._deliver(payload)
        return True
