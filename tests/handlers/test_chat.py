"""chat handler without sockets: commands, rooms, nick rules, flood control, slow consumers."""

from __future__ import annotations

import pytest

from reactorkit.handlers.chat import ChatHandler, ChatOptions, ChatRooms
from reactorkit.testing import FakeConnection, run_once


class Client:
    """A chat handler on a fake connection, read line by line."""

    def __init__(self, rooms: ChatRooms) -> None:
        self.handler = ChatHandler(rooms)
        self.conn = FakeConnection(self.handler)

    def send(self, text: str | bytes) -> None:
        data = text if isinstance(text, bytes) else text.encode() + b"\r\n"
        self.conn.feed(data)

    def lines(self) -> list[str]:
        out = self.conn.take().decode()
        assert out == "" or out.endswith("\r\n"), "every output line ends in CRLF"
        return out.split("\r\n")[:-1]


@pytest.fixture
def rooms() -> ChatRooms:
    return ChatRooms(options=ChatOptions())


def join(rooms: ChatRooms, n: int) -> list[Client]:
    clients = [Client(rooms) for _ in range(n)]
    for client in clients:
        client.lines()
    return clients


def test_greeting_assigns_guest_nicks_and_says_how_to_change(rooms: ChatRooms) -> None:
    first = Client(rooms)
    assert first.lines() == [
        "* welcome to reactorkit chat, guest1! you are in #lobby",
        "* change your nick with /nick NAME; /help lists the commands",
        "* you are now in #lobby (0 others here)",
    ]
    second = Client(rooms)
    assert second.lines()[0] == "* welcome to reactorkit chat, guest2! you are in #lobby"
    assert first.lines() == ["* guest2 joined #lobby"]


def test_message_goes_to_every_other_member(rooms: ChatRooms) -> None:
    a, b, c = join(rooms, 3)
    a.send("hello all")
    assert a.lines() == []
    assert b.lines() == c.lines() == ["<guest1> hello all"]


def test_lf_only_input_and_utf8(rooms: ChatRooms) -> None:
    a, b = join(rooms, 2)
    a.send("héllo ☃\n".encode())
    assert b.lines() == ["<guest1> héllo ☃"]


def test_invalid_utf8_and_control_bytes_are_replaced(rooms: ChatRooms) -> None:
    a, b = join(rooms, 2)
    a.send(b"bad \xff\xfe bytes \x1b[2J\r\n")
    assert b.lines() == ["<guest1> bad \ufffd\ufffd bytes \ufffd[2J"]


@pytest.mark.parametrize(
    ("sent", "seen"),
    [
        # TAB is allowed, though not printable: it must not be replaced.
        ("a\tb", "a\tb"),
        # Not printable, not a control character: kept as it came.
        ("no\u00a0break \u2028 sep", "no\u00a0break \u2028 sep"),
        ("bell\x07 del\x7f", "bell\ufffd del\ufffd"),
        ("tab\t and bell\x07", "tab\t and bell\ufffd"),
        # C1: U+009B is CSI (ESC [) to terminals that take 8-bit controls.
        ("csi\u009b2J and \u0085 nel", "csi\ufffd2J and \ufffd nel"),
        ("\u00a0after C1\u00a0", "after C1"),  # NBSP is kept, and trimmed at the ends
    ],
)
def test_only_control_characters_are_replaced(rooms: ChatRooms, sent: str, seen: str) -> None:
    a, b = join(rooms, 2)
    a.send(sent.encode() + b"\r\n")
    assert b.lines() == [f"<guest1> {seen}"]


def test_nick_rules(rooms: ChatRooms) -> None:
    a, b = join(rooms, 2)
    a.send("/nick Alice")
    assert a.lines() == ["* you are now Alice"]
    assert b.lines() == ["* guest1 is now Alice"]
    b.send("/nick alice")
    assert b.lines() == ["! nick alice is taken"]
    b.send("/nick 9lives")
    assert b.lines()[0].startswith("! invalid nick '9lives'")
    b.send("/nick " + "x" * 17)
    assert b.lines()[0].startswith("! invalid nick")
    b.send("/nick bad name")
    assert b.lines()[0].startswith("! invalid nick 'bad name'")
    a.send("/nick ALICE")  # a case change of one's own nick is allowed
    assert a.lines() == ["* you are now ALICE"]
    b.send("/nick")
    assert b.lines() == ["* Alice is now ALICE", "* you are guest2; usage: /nick NAME"]


def test_taken_guest_nicks_are_skipped(rooms: ChatRooms) -> None:
    (a,) = join(rooms, 1)
    a.send("/nick guest2")
    b = Client(rooms)
    assert b.handler.nick == "guest3"


def test_rooms_join_leave_and_listing(rooms: ChatRooms) -> None:
    a, b, c = join(rooms, 3)
    a.send("/join #Dev")
    assert a.lines() == ["* you are now in #dev (0 others here)"]
    assert b.lines() == c.lines() == ["* guest1 left for #dev"]
    b.send("/join dev")
    assert a.lines() == ["* guest2 joined #dev"]
    a.send("in dev")
    assert b.lines()[-1] == "<guest1> in dev"
    assert c.lines() == ["* guest2 left for #dev"]
    c.send("/rooms")
    assert c.lines() == ["* rooms: #lobby (1), #dev (2)"]
    a.send("/who")
    assert a.lines() == ["* in #dev: guest1, guest2"]
    a.send("/join lobby")
    b.send("/join lobby")
    c.send("/rooms")
    assert c.lines()[-1] == "* rooms: #lobby (3)"  # empty rooms are removed


def test_join_errors(rooms: ChatRooms) -> None:
    (a,) = join(rooms, 1)
    a.send("/join")
    assert a.lines()[0].startswith("! invalid room ''")
    a.send("/join no spaces")
    assert a.lines()[0].startswith("! invalid room 'no spaces'")
    a.send("/join lobby")
    assert a.lines() == ["* you are already in #lobby"]


def test_private_message(rooms: ChatRooms) -> None:
    a, b, c = join(rooms, 3)
    a.send("/msg GUEST2 psst, secret")
    assert a.lines() == ["-> *guest2* psst, secret"]
    assert b.lines() == ["*guest1* psst, secret"]
    assert c.lines() == []
    a.send("/msg nobody hi")
    assert a.lines() == ["! no such nick: nobody"]
    a.send("/msg guest2")
    assert a.lines() == ["! usage: /msg NICK text"]


def test_me_action(rooms: ChatRooms) -> None:
    a, b = join(rooms, 2)
    a.send("/me waves")
    assert b.lines() == ["* guest1 waves"]
    assert a.lines() == []


def test_unknown_command_is_named(rooms: ChatRooms) -> None:
    (a,) = join(rooms, 1)
    a.send("/dance now")
    assert a.lines() == ["! unknown command /dance; /help lists the commands"]


def test_double_slash_sends_a_message_starting_with_slash(rooms: ChatRooms) -> None:
    a, b = join(rooms, 2)
    a.send("//nick is a command")
    assert b.lines() == ["<guest1> /nick is a command"]


def test_help_lists_every_command(rooms: ChatRooms) -> None:
    (a,) = join(rooms, 1)
    a.send("/help")
    text = "\n".join(a.lines())
    for command in ("/nick", "/join", "/rooms", "/who", "/msg", "/me", "/quit", "/help"):
        assert command in text


def test_quit_announces_and_closes(rooms: ChatRooms) -> None:
    a, b = join(rooms, 2)
    a.send("/quit see you")
    assert a.lines() == ["* bye"]
    assert a.conn.closed
    a.conn.settle()  # connection_lost arrives on the next pass, as on a socket
    assert b.lines() == ["* guest1 left (quit: see you)"]
    assert "guest1" not in rooms.nicks


def test_disconnect_is_announced(rooms: ChatRooms) -> None:
    a, b = join(rooms, 2)
    a.conn.feed_eof()
    a.conn.settle()
    assert b.lines() == ["* guest1 left (disconnected)"]


def test_over_long_line_gets_an_error_and_closes() -> None:
    rooms = ChatRooms(options=ChatOptions(max_line_length=32))
    a, b = join(rooms, 2)
    a.send("x" * 40)
    assert a.lines() == ["! line too long: the limit is 32 bytes; disconnecting"]
    assert a.conn.closed
    a.conn.settle()
    assert b.lines() == ["* guest1 left (line too long)"]


def test_flood_control_warns_then_disconnects() -> None:
    rooms = ChatRooms(options=ChatOptions(rate=2, burst=3, flood_strikes=3))
    a, b = join(rooms, 2)
    for i in range(3):
        a.send(f"m{i}")
    assert b.lines() == ["<guest1> m0", "<guest1> m1", "<guest1> m2"]
    a.send("too fast")
    assert a.lines() == ["! slow down: at most 2 lines per second (that line was dropped)"]
    assert b.lines() == []
    a.conn.advance(0.5)  # one token back
    a.send("ok again")
    assert b.lines() == ["<guest1> ok again"]
    for _ in range(3):
        a.send("spam")
    assert a.lines()[-1] == "! disconnected for flooding"
    assert a.conn.closed
    a.conn.settle()
    assert b.lines() == ["* guest1 left (flooding)"]


def test_slow_consumer_is_disconnected_others_unaffected() -> None:
    rooms = ChatRooms(options=ChatOptions(max_output_buffer=4096, rate=1000, burst=1000))
    a, slow, c = join(rooms, 3)
    slow.conn.block_writes()
    for i in range(100):
        a.send(f"message number {i} " + "." * 40)
    assert slow.conn.aborted
    slow.conn.settle()
    assert len(c.lines()) == 100 + 1  # every message, then the slow one's leave
    assert "guest2" not in rooms.nicks


def test_room_size_limit() -> None:
    rooms = ChatRooms(options=ChatOptions(max_room_clients=2))
    a, b = join(rooms, 2)
    a.send("/join small")
    b.send("/join small")
    c = Client(rooms)
    c.lines()
    c.send("/join small")
    assert c.lines() == ["! #small is full (2 clients)"]


def test_server_full_when_the_lobby_is() -> None:
    rooms = ChatRooms(options=ChatOptions(max_room_clients=1))
    join(rooms, 1)
    late = Client(rooms)
    assert late.lines()[-1] == "! the server is full, try again later"
    assert late.conn.closed


def test_broadcast_encodes_once_for_all_recipients(rooms: ChatRooms) -> None:
    clients = join(rooms, 4)
    seen: list[int] = []
    for client in clients[1:]:
        original = client.conn.write

        def spy(data: bytes, original=original) -> None:  # type: ignore[no-untyped-def]
            seen.append(id(data))
            original(data)

        client.conn.write = spy  # type: ignore[method-assign]
    clients[0].send("one encoding")
    assert len(seen) == 3
    assert len(set(seen)) == 1


def test_shutdown_says_goodbye(rooms: ChatRooms) -> None:
    (a,) = join(rooms, 1)
    a.handler.shutdown_requested()
    assert a.lines() == ["* the server is shutting down, goodbye"]
    assert a.conn.closed


def test_a_line_not_finished_in_time_disconnects() -> None:
    rooms = ChatRooms(options=ChatOptions(line_timeout=60.0))
    a, b = join(rooms, 2)
    a.send(b"typing slowl")
    a.conn.advance(59.0)
    a.send(b"y")
    assert not a.conn.is_closing()
    a.conn.advance(1.0)
    assert a.lines() == ["! line not finished within 60 seconds; disconnecting"]
    run_once(a.conn.reactor)
    assert a.conn.closed
    assert b.lines() == ["* guest1 left (line timeout)"]


def test_a_client_that_sends_but_never_reads_stops_being_read_at_high_water() -> None:
    rooms = ChatRooms(options=ChatOptions(rate=1e9, burst=10**9))
    (a,) = join(rooms, 1)
    a.send("/help")
    help_size = len(a.conn.take())
    a.conn.block_writes()
    a.send(b"/help\n" * 10000)
    assert not a.conn.is_reading
    assert a.conn.get_write_buffer_size() <= a.conn.high_water + help_size
    for _ in range(3):
        run_once(a.conn.reactor)
        assert a.conn.get_write_buffer_size() <= a.conn.high_water + help_size
    assert not a.conn.is_closing()


def test_a_subclass_send_bytes_sees_broadcasts_too(rooms: ChatRooms) -> None:
    # broadcast writes to a plain ChatHandler's connection itself; a
    # subclass that overrides send_bytes must still get every line.
    seen: list[bytes] = []

    class Recording(ChatHandler):
        def send_bytes(self, data: bytes) -> None:
            seen.append(data)
            super().send_bytes(data)

    a = Client(rooms)
    b = Client(rooms)
    b.handler = Recording(rooms)
    b.conn = FakeConnection(b.handler)
    a.lines()
    b.lines()
    seen.clear()
    a.send("hello")
    assert seen == [b"<guest1> hello\r\n"]
    assert b.lines() == ["<guest1> hello"]
