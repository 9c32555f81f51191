"""Two ``reactorkit run`` chat servers sharing rooms through a real redis-server."""

from __future__ import annotations

import http.client
import json
import queue
import re
import socket
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

from tests.helpers import ServerProcess, reactorkit_cli
from tests.integration.test_chat import ChatClient
from tests.redis_server import RedisServer

RECONNECT_MAX = 0.5
PRESENCE_INTERVAL = 0.3


class Skipped:
    """What :meth:`BusClient.expect_prefix` read: the skipped lines and the match's rest."""

    def __init__(self, lines: list[str], found: str) -> None:
        self.lines = lines
        self.found = found


class BusClient(ChatClient):
    def expect_prefix(self, prefix: str) -> Skipped:
        """Read lines until one starts with ``prefix``."""
        skipped = []
        while not (got := self.line()).startswith(prefix):
            skipped.append(got)
        return Skipped(skipped, got[len(prefix) :])


class LoggedServer:
    """A ``reactorkit run`` process whose stderr is read by a thread, line by line."""

    def __init__(self, proc: ServerProcess) -> None:
        self.proc = proc
        self.lines: list[str] = list(proc.log)
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        stderr = self.proc.proc.stderr
        assert stderr is not None
        for line in stderr:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float = 10.0) -> str:
        """The first line (from now on) matching ``pattern``; fails after ``timeout``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self._queue.get(timeout=max(left, 0.0))
            except queue.Empty:
                raise AssertionError(
                    f"no log line matching {pattern!r} within {timeout}s:\n" + self.text()
                ) from None
            if line is None:
                raise AssertionError(f"server exited waiting for {pattern!r}:\n" + self.text())
            self.lines.append(line)
            if regex.search(line):
                return line

    def text(self) -> str:
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        return "".join(self.lines)

    def stop(self) -> str:
        """SIGTERM, wait for the exit, return the whole log."""
        popen = self.proc.proc
        popen.terminate()
        code = popen.wait(15)
        self._thread.join(5)
        for pipe in (popen.stdout, popen.stderr):
            if pipe is not None:
                pipe.close()
        assert code == 0, self.text()
        return self.text()

    def kill(self) -> None:
        """SIGKILL: no goodbye, no draining; the pipes are closed once it is gone."""
        popen = self.proc.proc
        popen.kill()
        popen.wait(15)
        self._thread.join(5)
        for pipe in (popen.stdout, popen.stderr):
            if pipe is not None:
                pipe.close()

    @property
    def address(self) -> tuple[str, int]:
        return self.proc.tcp("chat")


def bus_config(tmp_path: Path, name: str, url: str, prefix: str) -> str:
    path = tmp_path / f"{name}.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            [reactor]
            shutdown_timeout = 5

            [[listen]]
            name = "chat"
            handler = "chat"
            host = "127.0.0.1"
            port = 0

            [listen.options]
            bus = "{url}"
            bus_prefix = "{prefix}"
            bus_presence_interval = {PRESENCE_INTERVAL}
            bus_reconnect_max = {RECONNECT_MAX}
            rate = 1000.0
            burst = 100
            """
        )
    )
    return str(path)


def start_servers(
    run_server: Any, tmp_path: Path, url: str, prefix: str, *, count: int = 2, debug: bool = False
) -> list[LoggedServer]:
    servers = []
    for i in range(count):
        args = ["run", bus_config(tmp_path, f"s{i}", url, prefix)]
        if debug:
            args += ["--log-level", "debug"]
        proc = run_server(*args)
        proc.wait_serving(1)
        server = LoggedServer(proc)
        server.wait_for(r"chat bus chat: up")
        servers.append(server)
    return servers


def join_lobby(first: list[BusClient], client: BusClient) -> BusClient:
    """Every earlier client sees ``client`` arrive, wherever it is, once.

    The new client may itself see an earlier client's join when that join was
    still crossing the bus as it connected; it sees each at most once, and
    ``/who`` lists everyone once the crossings are done.
    """
    for earlier in first:
        assert earlier.expect(f"* {client.nick} joined #lobby") == []
    late_joins = []
    deadline = time.monotonic() + 5
    while True:
        client.send("/who")
        skipped = client.expect_prefix("* in #lobby: ")
        late_joins += skipped.lines
        if all(e.nick in skipped.found.split(", ") for e in first):
            break
        assert time.monotonic() < deadline, f"{client.nick} never saw everyone: {skipped.found}"
    allowed = {f"* {e.nick} joined #lobby" for e in first}
    assert set(late_joins) <= allowed, late_joins
    assert len(late_joins) == len(set(late_joins)), late_joins  # never twice
    return client


def rename(client: BusClient, nick: str, watchers: list[BusClient]) -> None:
    old = client.nick
    client.send(f"/nick {nick}")
    assert client.line() == f"* you are now {nick}"
    client.nick = nick
    for watcher in watchers:
        assert watcher.expect(f"* {old} is now {nick}") == []


def test_two_servers_share_messages_joins_nicks_and_who(
    run_server: Any, tmp_path: Path, redis_server: RedisServer
) -> None:
    s1, s2 = start_servers(run_server, tmp_path, redis_server.url, "t-share:")
    alice = BusClient(s1.address)
    bob = join_lobby([alice], BusClient(s2.address))
    carol = join_lobby([alice, bob], BusClient(s1.address))
    # Guests of two servers never share a nick.
    assert len({alice.nick, bob.nick, carol.nick}) == 3
    rename(alice, "alice", [bob, carol])
    rename(bob, "bob", [alice, carol])
    rename(carol, "carol", [alice, bob])

    # Per-sender order across the bus, two senders interleaved on one server.
    for i in range(30):
        alice.send(f"a{i}")
        carol.send(f"c{i}")
    got = [bob.line() for _ in range(60)]
    assert [g for g in got if g.startswith("<alice>")] == [f"<alice> a{i}" for i in range(30)]
    assert [g for g in got if g.startswith("<carol>")] == [f"<carol> c{i}" for i in range(30)]

    # Same-server delivery is in order too; no line comes twice.
    bob.send("/me waves")
    assert alice.expect("* bob waves") == [f"<carol> c{i}" for i in range(30)]
    assert carol.expect("* bob waves") == [f"<alice> a{i}" for i in range(30)]
    bob.send("/who")
    assert bob.line() == "* in #lobby: bob, alice, carol"
    alice.send("/who")
    assert alice.line() == "* in #lobby: alice, carol, bob"

    # A nick in use on the other server is taken here too.
    carol.send("/nick bob")
    assert carol.line() == "! nick bob is taken"
    # Private messages cross over.
    bob.send("/msg alice psst")
    assert bob.line() == "-> *alice* psst"
    assert alice.line() == "*bob* psst"

    # Rooms: a join on one server is seen on the other, and so is the leave.
    alice.send("/join den")
    alice.expect("* you are now in #den (0 others here)")
    for client in (bob, carol):
        assert client.expect("* alice left for #den") == []
    bob.send("/join den")
    assert bob.line() == "* you are now in #den (1 other here)"
    assert alice.line() == "* bob joined #den"
    assert carol.line() == "* bob left for #den"
    bob.send("in the den")
    assert alice.line() == "<bob> in the den"

    # No duplicates: a sentinel is the very next line everywhere.
    carol.send("/join den")
    assert carol.line() == "* you are now in #den (2 others here)"
    assert alice.line() == "* carol joined #den"
    assert bob.line() == "* carol joined #den"
    alice.send("sentinel")
    assert bob.line() == "<alice> sentinel"
    assert carol.line() == "<alice> sentinel"

    carol.send("/quit")
    assert carol.line() == "* bye"
    assert alice.line() == "* carol left (quit)"
    assert bob.line() == "* carol left (quit)"
    for client in (alice, bob, carol):
        client.close()
    for server in (s1, s2):
        assert "Traceback" not in server.stop()


def test_a_stopped_server_says_goodbye_and_its_members_leave(
    run_server: Any, tmp_path: Path, redis_server: RedisServer
) -> None:
    # Over Redis's UNIX socket, for once.
    s1, s2 = start_servers(run_server, tmp_path, redis_server.unix_url, "t-bye:")
    alice = BusClient(s1.address)
    bob = join_lobby([alice], BusClient(s2.address))
    assert "Traceback" not in s2.stop()
    assert bob.expect("* the server is shutting down, goodbye") == []
    assert alice.expect(f"* {bob.nick} left (server shutting down)") == []
    alice.send("/who")
    assert alice.line() == f"* in #lobby: {alice.nick}"
    alice.close()
    bob.close()
    assert "Traceback" not in s1.stop()


def test_a_killed_server_s_members_vanish_within_four_presence_intervals(
    run_server: Any, tmp_path: Path, redis_server: RedisServer
) -> None:
    # SIGKILL: no goodbye crosses the bus, only the heartbeats stop.
    s1, s2 = start_servers(run_server, tmp_path, redis_server.url, "t-kill:")
    alice = BusClient(s1.address)
    bob = join_lobby([alice], BusClient(s2.address))
    killed = time.monotonic()
    s2.kill()
    assert alice.expect(f"* {bob.nick} left (their server stopped answering)") == []
    # 3 silent intervals drop the server, checked once per interval: 4 at most
    # (plus the slack of a loaded machine).
    assert time.monotonic() - killed < 4 * PRESENCE_INTERVAL + 2.0
    alice.send("/who")
    assert alice.line() == f"* in #lobby: {alice.nick}"
    alice.close()
    bob.close()
    assert "Traceback" not in s1.stop()


def test_redis_down_keeps_local_chat_then_delivery_resumes(
    run_server: Any, tmp_path: Path, own_redis_server: RedisServer
) -> None:
    redis = own_redis_server
    s1, s2 = start_servers(run_server, tmp_path, redis.url, "t-down:", debug=True)
    alice = BusClient(s1.address)
    bob = join_lobby([alice], BusClient(s2.address))
    amy = join_lobby([alice, bob], BusClient(s1.address))
    alice.send("before")
    assert bob.line() == "<" + alice.nick + "> before"
    assert amy.line() == "<" + alice.nick + "> before"

    redis.kill()
    notice = "! other servers are unreachable: only people on this server see messages now"
    for client in (alice, bob, amy):
        assert client.line() == notice
    # /who says nothing false: the other server's people are no longer listed.
    alice.send("/who")
    assert alice.line() == f"* in #lobby: {alice.nick}, {amy.nick}"
    # Local chat goes on; several reconnect attempts fail meanwhile.
    s1.wait_for(r"attempt 3 failed")
    alice.send("while down")
    assert amy.line() == f"<{alice.nick}> while down"

    redis.start()  # the same port
    for server in (s1, s2):
        server.wait_for(r"reconnected after", timeout=RECONNECT_MAX + 5)
    for client in (alice, bob, amy):
        assert client.line() == "* other servers are reachable again"
    # Presence comes back with the hello/state exchange, then messages cross again.
    bob.send("after")
    assert alice.line() == f"<{bob.nick}> after"
    assert amy.line() == f"<{bob.nick}> after"
    deadline = time.monotonic() + 5
    while True:
        alice.send("/who")
        who = alice.line()
        if bob.nick in who or time.monotonic() > deadline:
            break
    assert who == f"* in #lobby: {alice.nick}, {amy.nick}, {bob.nick}"

    # Exactly one "lost" warning per server, however many attempts failed.
    for client in (alice, bob, amy):
        client.close()
    for server in (s1, s2):
        log = server.stop()
        assert "Traceback" not in log
        warnings = [line for line in log.splitlines() if "WARNING" in line and "redis" in line]
        lost = [line for line in warnings if "connection lost" in line]
        assert len(lost) == 1, log
        assert not [line for line in warnings if "still unreachable" in line], log


def test_a_server_starts_and_serves_locally_while_redis_is_unreachable(
    run_server: Any, tmp_path: Path
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))  # bound, never listening: connects are refused
        url = f"redis://127.0.0.1:{closed.getsockname()[1]}/0"
        proc = run_server(
            "run", bus_config(tmp_path, "alone", url, "t-alone:"), "--log-level", "debug"
        )
        proc.wait_serving(1)
        server = LoggedServer(proc)
        server.wait_for(r"unreachable: Connection refused; reconnecting with backoff up to")
        server.wait_for(r"attempt 3 failed")
        alice = BusClient(server.address)
        amy = join_lobby([alice], BusClient(server.address))
        alice.send("hi")
        assert amy.line() == f"<{alice.nick}> hi"
        amy.send("/who")
        assert amy.line() == f"* in #lobby: {alice.nick}, {amy.nick}"
        alice.close()
        amy.close()
        log = server.stop()
    assert "Traceback" not in log
    assert len([line for line in log.splitlines() if "WARNING" in line]) == 1, log


def test_healthz_and_status_show_the_bus_going_down_and_up(
    run_server: Any, tmp_path: Path, own_redis_server: RedisServer
) -> None:
    redis = own_redis_server
    config = Path(bus_config(tmp_path, "h", redis.url, "t-health:"))
    control = tmp_path / "control.sock"
    config.write_text(
        config.read_text().replace("[reactor]\n", f'[reactor]\ncontrol_socket = "{control}"\n', 1)
        + '\n[[listen]]\nname = "web"\nhandler = "http-lite"\nport = 0\n'
    )
    proc = run_server("run", str(config))
    proc.wait_serving(2)
    server = LoggedServer(proc)
    server.wait_for(r"chat bus chat: up")
    host, port = proc.tcp("web")

    def healthz() -> str:
        conn = http.client.HTTPConnection(host, port, timeout=5)
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        body = response.read().decode()
        conn.close()
        assert response.status == 200
        return body

    def status() -> tuple[dict[str, Any], str]:
        """The bus's entry in ``reactorkit status --json``, and the table's bus row."""
        as_json = reactorkit_cli("status", "--socket", str(control), "--json", timeout=30)
        assert as_json.returncode == 0, as_json.stderr
        (process,) = json.loads(as_json.stdout)["processes"]
        (bus,) = process["buses"]
        table = reactorkit_cli("status", "--socket", str(control), timeout=30)
        assert table.returncode == 0, table.stderr
        lines = table.stdout.splitlines()
        header = next(i for i, line in enumerate(lines) if line.startswith("CHAT BUS "))
        (row,) = lines[header + 1 :]
        return bus, row

    assert healthz() == "ok\nchat bus chat: up\n"
    bus, row = status()
    assert (bus["name"], bus["up"], bus["dropped"]) == ("chat", True, 0)
    assert row.split()[:3] == ["chat", "0", "up"]
    redis.kill()
    server.wait_for(r"chat bus chat: down")
    assert healthz() == "ok\nchat bus chat: down\n"
    # Events while the bus is down are not queued: they are counted as dropped.
    alice = BusClient(server.address)
    alice.send("nobody elsewhere hears this")
    alice.send("/who")
    assert alice.expect_prefix("* in #lobby: ").found == alice.nick
    bus, row = status()
    assert bus["up"] is False
    assert bus["dropped"] >= 2  # the join and the message at least
    assert row.split()[:3] == ["chat", "0", "down"]
    redis.start()
    server.wait_for(r"reconnected after", timeout=RECONNECT_MAX + 5)
    assert healthz() == "ok\nchat bus chat: up\n"
    bus, _ = status()
    assert bus["up"] is True
    assert bus["redis"]["connects"] == 2
    alice.close()


def redis_publish(redis: RedisServer, channel: str, payload: bytes) -> None:
    """PUBLISH over a raw RESP socket: whoever can reach Redis, not a chat server."""
    with socket.create_connection(("127.0.0.1", redis.port), timeout=5) as sock:
        parts = [b"PUBLISH", channel.encode(), payload]
        command = b"*%d\r\n" % len(parts)
        command += b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
        sock.sendall(command)
        reply = sock.makefile("rb").readline()
        assert reply.startswith(b":"), reply  # the number of subscribers it reached


def test_control_characters_from_the_bus_never_reach_a_client_raw(
    run_server: Any, tmp_path: Path, redis_server: RedisServer
) -> None:
    # Another publisher on the same Redis sends CR/LF, NUL and an escape in a
    # nick and a message: the client gets one line with them replaced, as it
    # would for the same text typed by a local client, not a forged second line.
    (server,) = start_servers(run_server, tmp_path, redis_server.url, "t-ctl:", count=1)
    alice = BusClient(server.address)
    event = {
        "o": "hostile",
        "q": 1,
        "k": "say",
        "r": "lobby",
        "n": "mal\rlory",
        "t": "hi\r\n<admin> type /quit\x00\x1b[2J\u009b0m",
    }
    redis_publish(redis_server, "t-ctl:room:lobby", json.dumps(event).encode())
    # U+009B (C1 CSI) too: ESC [ to terminals that take 8-bit controls.
    assert alice.line() == (
        "<mal\ufffdlory> hi\ufffd\ufffd<admin> type /quit\ufffd\ufffd[2J\ufffd0m"
    )
    state = {"o": "hostile", "q": 2, "k": "state", "r": "lobby", "m": ["eve\r\n* forged"]}
    redis_publish(redis_server, "t-ctl:ctl", json.dumps(state).encode())
    deadline = time.monotonic() + 5
    while True:
        alice.send("/who")
        who = alice.expect_prefix("* in #lobby: ").found
        if "eve" in who:
            break
        assert time.monotonic() < deadline, who
    assert who == f"{alice.nick}, eve\ufffd\ufffd* forged"
    alice.close()
    assert "Traceback" not in server.stop()


def test_a_huge_message_from_the_bus_is_clipped_to_what_a_client_may_send(
    run_server: Any, tmp_path: Path, redis_server: RedisServer
) -> None:
    # One 512 KiB PUBLISH must not become a 512 KiB line to every member (past
    # max_output_buffer, which would disconnect them all): nick and text are
    # clipped to max_nick_length and max_line_length, as local input is.
    (server,) = start_servers(run_server, tmp_path, redis_server.url, "t-huge:", count=1)
    alice = BusClient(server.address)
    event = {"o": "hostile", "q": 1, "k": "say", "r": "lobby", "n": "N" * 100, "t": "x" * (1 << 19)}
    redis_publish(redis_server, "t-huge:room:lobby", json.dumps(event).encode())
    assert alice.line() == f"<{'N' * 16}> {'x' * 1024}"
    alice.send("/who")
    assert alice.line() == f"* in #lobby: {alice.nick}"  # still connected, nothing else queued
    alice.close()
    assert "Traceback" not in server.stop()
