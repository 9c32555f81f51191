"""A Redis client on the reactor: RESP3 over one outbound connection, pub/sub and commands.

Theory of operation
-------------------
* One :class:`RedisClient` keeps one connection, made with
  ``reactor.connect_tcp``/``connect_unix``: the ordinary
  :class:`~reactorkit.connection.Connection`, so flow control and limits are
  the inbound ones. Replies are framed by ``hiredis.Reader``, the sans-IO RESP
  parser the Redis project maintains.
* The session speaks RESP3 (``HELLO 3``, Redis >= 6), where pub/sub messages
  arrive as *push* frames apart from replies, so one connection both
  subscribes and publishes. Replies match commands in FIFO order; pushes go
  to ``on_message``.
* Handshake, pipelined at connect: ``HELLO 3 [AUTH user password]``,
  ``SELECT db`` (when not 0), one ``PSUBSCRIBE`` per pattern. The client is
  *up* once every pattern is confirmed; a pattern list is re-sent on every
  reconnect, so subscriptions survive a restart of Redis.
* Bounds a client (or a slow Redis) cannot push past: commands are refused
  (dropped, counted, logged at a limited rate) while the client is not up,
  when ``max_buffer`` bytes are already waiting to be sent, or when
  ``max_pending`` replies are outstanding. An unfinished reply larger than
  ``max_reply`` bytes is a protocol error. Nothing is queued while Redis is
  down: pub/sub is at-most-once, and stale messages replayed minutes later
  would be worse than lost ones.
* Liveness: a ``PING`` every ``ping_interval`` seconds while up; no answer by
  the next one (or no finished handshake within ``connect_timeout``) aborts
  the connection. Any loss reconnects after a capped exponential backoff
  with jitter (:func:`backoff_delay`), forever, until :meth:`RedisClient.close`.
* Logging is rate limited: one warning when Redis becomes unreachable, then
  at most one "still unreachable" line per ``RECONNECT_LOG_INTERVAL``, and
  one line when it is back. The password never appears in a log line, a
  ``repr`` or an error message.
"""

from __future__ import annotations

import logging
import os
import random
import urllib.parse
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast, final

import attrs

try:
    import hiredis
except ImportError:  # the reactorkit[redis] extra is not installed; RedisClient says so
    hiredis = None  # type: ignore[assignment]

from reactorkit.errors import ConnectError
from reactorkit.handler import Handler

if TYPE_CHECKING:
    from reactorkit.connector import Connector
    from reactorkit.reactor import Reactor, TimerHandle
    from reactorkit.transport import Transport

__all__ = [
    "DEFAULT_MAX_BUFFER",
    "DEFAULT_MAX_PENDING",
    "DEFAULT_MAX_REPLY",
    "DEFAULT_PING_INTERVAL",
    "DEFAULT_RECONNECT_MAX",
    "DEFAULT_RECONNECT_MIN",
    "HIREDIS_MISSING",
    "PASSWORD_ENV",
    "RECONNECT_LOG_INTERVAL",
    "RedisAddress",
    "RedisClient",
    "RedisStats",
    "backoff_delay",
]

log = logging.getLogger("reactorkit.redis")

#: Bytes of commands that may wait in the connection's write buffer.
DEFAULT_MAX_BUFFER = 1 << 20
#: Commands that may wait for their replies.
DEFAULT_MAX_PENDING = 10_000
#: Bytes one unfinished reply (or push message) may hold.
DEFAULT_MAX_REPLY = 1 << 20
DEFAULT_PING_INTERVAL = 5.0
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_RECONNECT_MIN = 0.1
DEFAULT_RECONNECT_MAX = 5.0
#: Seconds between two "still unreachable" / "dropping" warnings.
RECONNECT_LOG_INTERVAL = 30.0
#: Why the client cannot run when ``hiredis`` is missing, or None when it is installed.
HIREDIS_MISSING = (
    "the Redis client needs the hiredis package: pip install 'reactorkit[redis]'"
    if hiredis is None
    else None
)
#: The environment variable read for the password when the URL has none.
PASSWORD_ENV = "REACTORKIT_REDIS_PASSWORD"

MessageCallback = Callable[[bytes, bytes], object]  # (channel, payload)
StateCallback = Callable[[bool, str], object]  # (is_up, reason)
ReplyCallback = Callable[[Any], object]

# Client states, in order of a normal life.
_IDLE = "idle"
_CONNECTING = "connecting"
_HANDSHAKE = "handshake"
_UP = "up"
_WAITING = "waiting"  # down, a reconnect is scheduled
_CLOSED = "closed"


@attrs.frozen(kw_only=True)
class RedisAddress:
    """Where Redis is and how to log in; parsed from a URL by :meth:`from_url`.

    ``str()`` gives the URL with the password replaced by ``***``.
    """

    host: str | None = None
    port: int = 6379
    path: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)

    @classmethod
    def from_url(cls, url: str, *, environ: Mapping[str, str] | None = None) -> RedisAddress:
        """Parse ``redis://[user:password@]host[:port][/db]`` or ``unix://[user:password@]/path[?db=N]``.

        Without a password in the URL, ``$REACTORKIT_REDIS_PASSWORD`` is used
        when set (so the secret need not sit in a config file).

        Raises:
            ValueError: the URL is not one of those forms; the message never
                contains the password.
        """
        env = os.environ if environ is None else environ
        parts = urllib.parse.urlsplit(url)
        shown = _redact(url)
        expected = "redis://[user:password@]host[:port][/db] or unix://[user:password@]/path"
        username = urllib.parse.unquote(parts.username) if parts.username else None
        password = urllib.parse.unquote(parts.password) if parts.password is not None else None
        if password is None and env.get(PASSWORD_ENV):
            password = env[PASSWORD_ENV]
        query = urllib.parse.parse_qs(parts.query)
        if parts.scheme == "redis":
            try:
                port = parts.port or 6379
            except ValueError:
                raise ValueError(f"bad port in {shown!r}: expected {expected}") from None
            if not parts.hostname:
                raise ValueError(f"no host in {shown!r}: expected {expected}")
            db_text = parts.path.strip("/") or query.get("db", ["0"])[0]
            return cls(
                host=parts.hostname,
                port=port,
                db=_db_number(db_text, shown),
                username=username,
                password=password,
            )
        if parts.scheme == "unix":
            if not parts.path:
                raise ValueError(f"no socket path in {shown!r}: expected {expected}")
            return cls(
                path=parts.path,
                db=_db_number(query.get("db", ["0"])[0], shown),
                username=username,
                password=password,
            )
        raise ValueError(f"unsupported URL {shown!r}: expected {expected}")

    def __str__(self) -> str:
        auth = ""
        if self.username or self.password:
            auth = (self.username or "") + (":***" if self.password else "") + "@"
        if self.path is not None:
            db = f"?db={self.db}" if self.db else ""
            return f"unix://{auth}{self.path}{db}"
        host = f"[{self.host}]" if self.host and ":" in self.host else self.host
        return f"redis://{auth}{host}:{self.port}/{self.db}"


def _redact(url: str) -> str:
    """``url`` for an error message: whatever sits before the last ``@`` is credentials.

    Worked on the raw text, not on ``urlsplit``'s parts: a password with an
    unescaped ``/``, ``?`` or ``#`` (or one given where the user name goes)
    is not where the parser looks for a password, and would be shown.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    userinfo, _, after = rest.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    shown = f"{user}:***" if colon else "***"
    return f"{scheme}{sep}{shown}@{after}"


def _db_number(text: str, shown: str) -> int:
    if not text.isdigit():
        raise ValueError(f"database in {shown!r} must be a number 0-15 or so, got {text!r}")
    return int(text)


def backoff_delay(attempt: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Seconds to wait before reconnect ``attempt`` (0 for the first).

    Exponential (``base * 2**attempt``), capped at ``cap``, with "equal
    jitter": a uniform pick in the upper half, so a fleet of servers that lost
    Redis together does not reconnect in step, and no wait exceeds ``cap``.
    """
    ceiling = min(cap, base * 2.0 ** min(attempt, 32))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


@attrs.define(eq=False)
class RedisStats:
    """Counters one :class:`RedisClient` keeps; logs and tests read them."""

    connects: int = 0
    failed_connects: int = 0
    disconnects: int = 0
    commands: int = 0
    dropped: int = 0
    messages: int = 0


class _RedisProtocol(Handler):
    """The handler on the client's connection: RESP in, replies and pushes out."""

    def __init__(self, client: RedisClient) -> None:
        super().__init__(client)
        self.client = client
        self.reader = hiredis.Reader()
        self.pending: deque[ReplyCallback | None] = deque()
        self.lost = False

    def connection_made(self, connection: Transport) -> None:
        self.connection = connection

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        client = self.client
        while not self.connection.is_closing():
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:
                self.fail(f"protocol error: {exc}")
                return
            if reply is False:
                break
            if isinstance(reply, hiredis.PushNotification):
                client._push_received(self, reply)
            elif not self.pending:
                self.fail(f"unexpected reply with no command waiting: {_short(reply)}")
                return
            else:
                callback = self.pending.popleft()
                if callback is not None:
                    callback(reply)
        if reader.len() > client.max_reply:
            self.fail(f"reply larger than {client.max_reply} bytes")

    def fail(self, reason: str) -> None:
        """Log why this connection is given up on, then abort it (a reconnect follows)."""
        if not self.connection.is_closing():
            self.client._protocol_failed(self, reason)
            self.connection.abort()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = True
        self.pending.clear()
        self.client._connection_lost(self, exc)

    def shutdown_requested(self) -> None:
        pass  # not an accepted connection; the client decides when to close


@final
class RedisClient:
    """One managed connection to Redis: handshake, subscriptions, reconnects, bounds.

    Args:
        reactor: the reactor that runs it.
        address: where Redis is (:meth:`RedisAddress.from_url`).
        patterns: channel patterns to ``PSUBSCRIBE`` on every connect.
        on_message: ``on_message(channel, payload)`` for each pub/sub message.
        on_state: ``on_state(is_up, reason)`` when the client comes up or goes down.
        name: a label for log lines (e.g. the listener's name).
        max_buffer: bytes of commands that may wait to be sent.
        max_pending: commands that may wait for a reply.
        max_reply: bytes one unfinished reply may hold.
        reconnect_min: the first reconnect delay's ceiling, in seconds.
        reconnect_max: the cap on reconnect delays, in seconds.
        connect_timeout: seconds for the connect and the handshake.
        ping_interval: seconds between liveness PINGs while up.
        rng: the jitter's random source (tests pass a seeded one).
    """

    def __init__(
        self,
        reactor: Reactor,
        address: RedisAddress,
        *,
        patterns: Sequence[bytes] = (),
        on_message: MessageCallback | None = None,
        on_state: StateCallback | None = None,
        name: str = "redis",
        max_buffer: int = DEFAULT_MAX_BUFFER,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_reply: int = DEFAULT_MAX_REPLY,
        reconnect_min: float = DEFAULT_RECONNECT_MIN,
        reconnect_max: float = DEFAULT_RECONNECT_MAX,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        ping_interval: float = DEFAULT_PING_INTERVAL,
        rng: random.Random | None = None,
    ) -> None:
        if HIREDIS_MISSING is not None:
            raise ImportError(HIREDIS_MISSING)
        self.reactor = reactor
        self.address = address
        self.patterns = tuple(patterns)
        self.on_message = on_message
        self.on_state = on_state
        self.name = name
        self.max_buffer = max_buffer
        self.max_pending = max_pending
        self.max_reply = max_reply
        self.reconnect_min = reconnect_min
        self.reconnect_max = reconnect_max
        self.connect_timeout = connect_timeout
        self.ping_interval = ping_interval
        self.stats = RedisStats()
        self._rng = rng if rng is not None else random.Random()
        self._state = _IDLE
        self._protocol: _RedisProtocol | None = None
        self._connector: Connector | None = None
        self._timer: TimerHandle | None = None
        self._ping_waiting = False
        self._unconfirmed: set[bytes] = set()
        self._attempt = 0
        self._last_error = ""
        self._down_since: float | None = None
        self._last_warning = float("-inf")
        self._last_drop_warning = float("-inf")

    # -- public ------------------------------------------------------------

    @property
    def state(self) -> str:
        """One of ``idle``, ``connecting``, ``handshake``, ``up``, ``waiting``, ``closed``.

        ``waiting`` means down, with a reconnect scheduled.
        """
        return self._state

    @property
    def is_up(self) -> bool:
        """True while connected, logged in and subscribed."""
        return self._state is _UP

    def start(self) -> None:
        """Connect (and keep reconnecting until :meth:`close`)."""
        if self._state is _IDLE:
            self._connect()

    def close(self) -> None:
        """Stop for good: close the connection and never reconnect.

        What the kernel has taken reaches Redis; commands still in the write
        buffer (only when Redis stopped reading) are dropped.
        """
        if self._state is _CLOSED:
            return
        was_up = self._state is _UP
        self._state = _CLOSED
        self._cancel_timer()
        if self._connector is not None:
            self._connector.cancel()
            self._connector = None
        if self._protocol is not None:
            connection = self._protocol.connection
            # A healthy Redis took the last commands already; a stalled one
            # would hold the socket open for ever, so it loses the unsent rest.
            if connection.get_write_buffer_size():
                connection.abort()
            else:
                connection.close()
        if was_up and self.on_state is not None:
            self.on_state(False, "closed")

    def execute(self, *args: str | bytes | int, callback: ReplyCallback | None = None) -> bool:
        """Send one command; ``callback(reply)`` gets its reply (a ``hiredis.ReplyError`` on error).

        Returns:
            False when the command was dropped: the client is not up, or the
            buffer or pending-reply bound is reached. Drops are counted in
            ``stats.dropped`` and logged at a limited rate.
        """
        protocol = self._protocol
        if self._state is not _UP or protocol is None:
            return self._drop("Redis is not connected")
        if len(protocol.pending) >= self.max_pending:
            return self._drop(f"{self.max_pending} replies outstanding")
        data = _pack(*args)
        connection = protocol.connection
        if connection.get_write_buffer_size() + len(data) > self.max_buffer:
            return self._drop(f"{connection.get_write_buffer_size()} bytes unsent")
        self._send(protocol, data, callback)
        return True

    def publish(self, channel: bytes, payload: bytes) -> bool:
        """``PUBLISH channel payload``; returns False when dropped (see :meth:`execute`)."""
        return self.execute(b"PUBLISH", channel, payload)

    # -- connecting --------------------------------------------------------

    def _connect(self) -> None:
        self._state = _CONNECTING
        self._timer = None
        protocol = _RedisProtocol(self)
        address = self.address
        if address.path is not None:
            connector = self.reactor.connect_unix(
                address.path, protocol, timeout=self.connect_timeout
            )
        else:
            assert address.host is not None
            connector = self.reactor.connect_tcp(
                address.host, address.port, protocol, timeout=self.connect_timeout
            )
        self._connector = connector
        connector.add_done_callback(self._connect_done)

    def _connect_done(self, connector: Connector) -> None:
        if connector is not self._connector or self._state is not _CONNECTING:
            return
        self._connector = None
        error = connector.exception()
        if error is not None:
            self.stats.failed_connects += 1
            self._went_down(_reason(error))
            return
        connection = connector.result()
        protocol = connection.handler
        assert isinstance(protocol, _RedisProtocol)
        if protocol.lost:  # closed before this callback ran
            self.stats.disconnects += 1
            self._went_down("connection closed during connect")
            return
        self._protocol = protocol
        self._state = _HANDSHAKE
        if not connection.is_closing():  # else connection_lost reconnects
            self._handshake(protocol)

    def _handshake(self, protocol: _RedisProtocol) -> None:
        address = self.address
        hello: list[str | bytes | int] = [b"HELLO", 3]
        if address.password is not None:
            hello += [b"AUTH", address.username or "default", address.password]
        self._send(protocol, _pack(*hello), self._hello_replied)
        if address.db:
            self._send(
                protocol,
                _pack(b"SELECT", address.db),
                self._expect_ok(protocol, f"SELECT {address.db}"),
            )
        self._unconfirmed = set(self.patterns)
        for pattern in self.patterns:
            self._send(protocol, _pack(b"PSUBSCRIBE", pattern), None, reply=False)
        self._timer = self.reactor.call_later(self.connect_timeout, self._handshake_timed_out)
        if not self._unconfirmed:
            self._check_up()

    def _hello_replied(self, reply: Any) -> None:
        protocol = self._protocol
        if protocol is None:
            return
        if isinstance(reply, hiredis.ReplyError):
            # The reply names the problem (WRONGPASS, NOPROTO); it never echoes the password.
            protocol.fail(f"HELLO 3 refused (Redis >= 6 is needed; check the credentials): {reply}")
            return
        self._check_up()

    def _expect_ok(self, protocol: _RedisProtocol, what: str) -> ReplyCallback:
        def check(reply: Any) -> None:
            if isinstance(reply, hiredis.ReplyError):
                protocol.fail(f"{what} refused: {reply}")
            else:
                self._check_up()

        return check

    def _push_received(self, protocol: _RedisProtocol, push: list[Any]) -> None:
        kind = push[0] if push else b""
        if kind == b"pmessage" and len(push) == 4:
            self.stats.messages += 1
            if self.on_message is not None:
                self.on_message(push[2], push[3])
        elif kind == b"message" and len(push) == 3:
            self.stats.messages += 1
            if self.on_message is not None:
                self.on_message(push[1], push[2])
        elif kind == b"psubscribe" and len(push) >= 2:
            self._unconfirmed.discard(push[1])
            self._check_up()
        # Other pushes (invalidation, unsubscribe confirmations) are not ours to act on.

    def _check_up(self) -> None:
        protocol = self._protocol
        if self._state is not _HANDSHAKE or protocol is None or self._unconfirmed:
            return
        if protocol.pending:
            return  # HELLO or SELECT not answered yet (nothing else is sent before up)
        self._cancel_timer()
        self._state = _UP
        self.stats.connects += 1
        if self._down_since is not None:
            downtime = self.reactor.clock() - self._down_since
            log.warning(
                "redis %s (%s): reconnected after %.1fs down and %d attempts",
                self.name,
                self.address,
                downtime,
                self._attempt,
            )
        else:
            log.info("redis %s (%s): connected", self.name, self.address)
        self._attempt = 0
        self._down_since = None
        self._last_warning = float("-inf")
        self._timer = self.reactor.call_later(self.ping_interval, self._ping)
        if self.on_state is not None:
            self.on_state(True, "connected")

    def _handshake_timed_out(self) -> None:
        self._timer = None
        if self._state is _HANDSHAKE and self._protocol is not None:
            self._protocol.fail(f"no answer to the handshake within {self.connect_timeout:g}s")

    # -- liveness ----------------------------------------------------------

    def _ping(self) -> None:
        self._timer = None
        protocol = self._protocol
        if self._state is not _UP or protocol is None:
            return
        if self._ping_waiting:
            protocol.fail(f"no answer to PING within {self.ping_interval:g}s")
            return
        self._ping_waiting = True
        self._send(protocol, _pack(b"PING"), self._pong)
        self._timer = self.reactor.call_later(self.ping_interval, self._ping)

    def _pong(self, reply: Any) -> None:
        self._ping_waiting = False

    # -- losing ------------------------------------------------------------

    def _protocol_failed(self, protocol: _RedisProtocol, reason: str) -> None:
        # Logged by _went_down, at its limited rate: a Redis that answers
        # garbage on every reconnect must not flood the log either.
        if protocol is self._protocol:
            self._last_error = reason

    def _connection_lost(self, protocol: _RedisProtocol, exc: BaseException | None) -> None:
        if protocol is not self._protocol:
            return
        self._protocol = None
        self._ping_waiting = False
        self._cancel_timer()
        if self._state is _CLOSED:
            return
        self.stats.disconnects += 1
        reason = self._last_error or (_reason(exc) if exc is not None else "connection closed")
        self._went_down(reason)

    def _went_down(self, reason: str) -> None:
        was_up = self._state is _UP
        self._last_error = ""
        now = self.reactor.clock()
        delay = backoff_delay(
            self._attempt, base=self.reconnect_min, cap=self.reconnect_max, rng=self._rng
        )
        self._attempt += 1
        if self._down_since is None:
            self._down_since = now
            self._last_warning = now
            log.warning(
                "redis %s (%s): %s: %s; reconnecting with backoff up to %gs",
                self.name,
                self.address,
                "connection lost" if was_up else "unreachable",
                reason,
                self.reconnect_max,
            )
        elif now - self._last_warning >= RECONNECT_LOG_INTERVAL:
            self._last_warning = now
            log.warning(
                "redis %s (%s): still unreachable after %.0fs and %d attempts: %s",
                self.name,
                self.address,
                now - self._down_since,
                self._attempt,
                reason,
            )
        else:
            log.debug("redis %s: attempt %d failed: %s", self.name, self._attempt, reason)
        self._state = _WAITING
        self._timer = self.reactor.call_later(delay, self._connect)
        if was_up and self.on_state is not None:
            self.on_state(False, reason)

    # -- helpers -----------------------------------------------------------

    def _send(
        self,
        protocol: _RedisProtocol,
        data: bytes,
        callback: ReplyCallback | None,
        *,
        reply: bool = True,
    ) -> None:
        if reply:
            protocol.pending.append(callback)
        self.stats.commands += 1
        protocol.connection.write(data)

    def _drop(self, why: str) -> bool:
        self.stats.dropped += 1
        now = self.reactor.clock()
        if now - self._last_drop_warning >= RECONNECT_LOG_INTERVAL:
            log.warning(
                "redis %s: dropping commands (%s); %d dropped so far",
                self.name,
                why,
                self.stats.dropped,
            )
            self._last_drop_warning = now
        return False

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def __repr__(self) -> str:
        return f"<RedisClient {self.name} {self.address} {self._state}>"


def _pack(*args: str | bytes | int) -> bytes:
    # hiredis's stub types the argument as a 1-tuple; any tuple of these works.
    packed: bytes = hiredis.pack_command(cast(Any, args))
    return packed


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectError):
        return exc.reason
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _short(reply: Any) -> str:
    text = repr(reply)
    return text if len(text) <= 80 else text[:77] + "..."
