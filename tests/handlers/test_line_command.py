"""line-command without sockets: tokenizer, replies, built-ins, errors, blocking order."""

from __future__ import annotations

import itertools
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

import reactorkit
from reactorkit import CommandError, Contribution, LineCommand, PluginError, split_args
from reactorkit.handlers.line_command import (
    BUILTINS,
    CommandTable,
    LineCommandHandler,
    LineCommandOptions,
)
from reactorkit.testing import FakeConnection, run_once, run_until


def table(*extra: LineCommand, **options: object) -> CommandTable:
    found = [Contribution(c, "line-command", "reactorkit 0") for c in BUILTINS]
    found += [Contribution(c, "test", None) for c in extra]
    return CommandTable.build(LineCommandOptions(**options), found)  # type: ignore[arg-type]


def client(*extra: LineCommand, **options: object) -> FakeConnection:
    return FakeConnection(LineCommandHandler(table(*extra, **options)))


def ask(conn: FakeConnection, request: bytes) -> list[str]:
    conn.feed(request)
    return conn.take().decode().split("\r\n")[:-1]


# -- tokenizer ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("PING", ["PING"]),
        ("  echo   a  b ", ["echo", "a", "b"]),
        ('ECHO "two words"', ["ECHO", "two words"]),
        ("ECHO 'single \\n literal'", ["ECHO", "single \\n literal"]),
        ('SET k "line\\nbreak \\"quoted\\" \\\\"', ["SET", "k", 'line\nbreak "quoted" \\']),
        ('ECHO ""', ["ECHO", ""]),
        ("ECHO\ttab", ["ECHO", "tab"]),
    ],
)
def test_split_args(line: str, words: list[str]) -> None:
    assert split_args(line) == words


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('ECHO "open', "syntax error: unbalanced quotes"),
        ("ECHO 'open", "syntax error: unbalanced quotes"),
        ('ECHO "a"b', "syntax error: a closing quote must be followed by a space"),
        ('ECHO a"b"', "syntax error: a quote must start a word"),
    ],
)
def test_split_args_errors(line: str, message: str) -> None:
    with pytest.raises(CommandError, match=message):
        split_args(line)


@given(
    st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12), max_size=6)
)
def test_quoting_round_trips(words: list[str]) -> None:
    def quote(word: str) -> str:
        escaped = word.replace("\\", "\\\\").replace('"', '\\"')
        escaped = escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t")
        return f'"{escaped}"'

    assert split_args(" ".join(quote(w) for w in words)) == words


# -- replies -----------------------------------------------------------------


def test_ping_echo_time_quit() -> None:
    conn = client()
    assert ask(conn, b"PING\r\n") == ["+PONG"]
    assert ask(conn, b"ping hello\n") == ["+hello"]
    assert ask(conn, b'echo "a b" c\r\n') == ["+a b c"]
    (time_reply,) = ask(conn, b"TIME\r\n")
    stamp, unix = time_reply[1:].split(" ")
    assert stamp.endswith("Z")
    assert float(unix) > 1e9
    assert ask(conn, b"QUIT\r\nPING\r\n") == ["+BYE"]  # nothing after QUIT
    assert conn.closed


def test_help_lists_every_command_with_its_source() -> None:
    conn = client()
    lines = ask(conn, b"HELP\r\n")
    assert lines[0] == f"*{len(BUILTINS)}"
    assert lines[1:] == sorted(lines[1:])
    assert any(line.startswith("ECHO TEXT... - answer the arguments") for line in lines)
    assert all("[plugin 'line-command' (reactorkit 0)]" in line for line in lines[1:])
    assert ask(conn, b"help ping\r\n") == [
        "+PING [TEXT] - answer PONG (or TEXT) [plugin 'line-command' (reactorkit 0)]"
    ]
    assert ask(conn, b"help nope\r\n") == ["-ERR unknown command 'nope'"]


def test_pipelined_requests_are_answered_in_order_a_hundred_per_pass() -> None:
    conn = client()
    conn.feed(b"".join(b"ECHO %d\r\n" % i for i in range(250)))
    replies = conn.take().decode().split("\r\n")[:-1]
    assert replies == [f"+{i}" for i in range(100)]
    assert not conn.is_reading  # the rest of the read waits its turn
    run_once(conn.reactor)
    replies += conn.take().decode().split("\r\n")[:-1]
    assert len(replies) == 200
    run_once(conn.reactor)
    replies += conn.take().decode().split("\r\n")[:-1]
    assert replies == [f"+{i}" for i in range(250)]
    assert conn.is_reading


@given(cuts=st.lists(st.integers(min_value=0, max_value=60), max_size=8))
def test_requests_split_at_any_byte_give_the_same_replies(cuts: list[int]) -> None:
    data = b'PING\r\nECHO "x y"\nHELP PING\r\nBOGUS\r\n'
    conn = client()
    points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    for start, stop in itertools.pairwise(points):
        conn.feed(data[start:stop])
    lines = conn.take().decode().split("\r\n")[:-1]
    assert lines[0] == "+PONG"
    assert lines[1] == "+x y"
    assert lines[2].startswith("+PING [TEXT]")
    assert lines[3] == "-ERR unknown command 'BOGUS'; HELP lists the commands"


def test_error_replies() -> None:
    conn = client()
    assert ask(conn, b"FROB\r\n") == ["-ERR unknown command 'FROB'; HELP lists the commands"]
    assert ask(conn, b"ECHO\r\n") == [
        "-ERR wrong number of arguments for ECHO; usage: ECHO TEXT..."
    ]
    assert ask(conn, b"PING a b\r\n") == [
        "-ERR wrong number of arguments for PING; usage: PING [TEXT]"
    ]
    assert ask(conn, b'ECHO "open\r\n') == ["-ERR syntax error: unbalanced quotes"]
    assert ask(conn, b"   \r\n") == ["-ERR empty request; HELP lists the commands"]
    assert ask(conn, b"ECHO \xff\r\n") == ["-ERR syntax error: the request is not valid UTF-8"]
    assert ask(conn, b"STATS\r\n") == ["-ERR no listener statistics here"]
    assert not conn.closed


def test_over_long_line_errors_and_closes() -> None:
    conn = client(max_line_length=32)
    assert ask(conn, b"ECHO " + b"x" * 100) == ["-ERR line too long: the limit is 32 bytes"]
    assert conn.closed


def test_command_error_and_crash_replies(caplog: pytest.LogCaptureFixture) -> None:
    def refuse(ctx: reactorkit.CommandContext) -> str:
        raise CommandError(f"no {ctx.args[0]} for you")

    def crash(ctx: reactorkit.CommandContext) -> str:
        raise ZeroDivisionError("oops")

    conn = client(
        LineCommand(name="refuse", function=refuse, args="THING"),
        LineCommand(name="crash", function=crash),
    )
    assert ask(conn, b"REFUSE soup\r\n") == ["-ERR no soup for you"]
    assert ask(conn, b"CRASH\r\nPING\r\n") == [
        "-ERR internal error in CRASH; the server log has the details",
        "+PONG",
    ]
    assert "ZeroDivisionError: oops" in caplog.text


def test_multi_line_and_none_replies_and_newlines_are_flattened() -> None:
    conn = client(
        LineCommand(name="many", function=lambda ctx: ["a", "b\nc"]),
        LineCommand(name="nothing", function=lambda ctx: None),
    )
    assert ask(conn, b"MANY\r\nNOTHING\r\n") == ["*2", "a", "b c", "+OK"]


def test_a_reply_with_cr_or_lf_is_never_cached_nor_sent_raw_by_the_one_line_path() -> None:
    # The one-line fast path writes a cached reply unchecked: a reply holding
    # CR or LF (here encoded once by a careless caller) must not be cached,
    # or a command could inject a second reply line.
    t = table(LineCommand(name="split", function=lambda ctx: "a\r\nb"))
    t.encode_reply("a\r\nb")
    assert "a\r\nb" not in t.replies
    conn = FakeConnection(LineCommandHandler(t))
    assert ask(conn, b"SPLIT\r\n") == ["+a  b"]
    assert ask(conn, b"SPLIT\r\n") == ["+a  b"]


def test_blocking_command_keeps_replies_in_request_order() -> None:
    release = threading.Event()
    ran_on: list[int] = []

    def slow(ctx: reactorkit.CommandContext) -> str:
        ran_on.append(threading.get_ident())
        assert release.wait(5)
        return "slow done"

    conn = client(LineCommand(name="slow", function=slow, blocking=True))
    conn.feed(b"PING 1\r\nSLOW\r\nPING 2\r\nECHO 3\r\n")
    assert conn.take() == b"+1\r\n"  # the rest waits for SLOW
    release.set()
    run_until(conn.reactor, lambda: conn.value().count(b"\r\n") == 3)
    assert conn.take() == b"+slow done\r\n+2\r\n+3\r\n"
    assert ran_on[0] != threading.get_ident()


def test_blocking_command_error_is_an_err_reply() -> None:
    def fail(ctx: reactorkit.CommandContext) -> str:
        raise CommandError("backend unavailable")

    conn = client(LineCommand(name="fail", function=fail, blocking=True))
    conn.feed(b"FAIL\r\nPING\r\n")
    run_until(conn.reactor, lambda: conn.value().count(b"\r\n") == 2)
    assert conn.take() == b"-ERR backend unavailable\r\n+PONG\r\n"


def test_many_pipelined_requests_behind_a_blocking_one_pause_reading() -> None:
    release = threading.Event()
    conn = client(
        LineCommand(name="wait", function=lambda ctx: str(release.wait(5)), blocking=True),
        max_pending=4,
    )
    conn.feed(b"WAIT\r\n" + b"PING\r\n" * 4)
    assert not conn.is_reading
    release.set()
    run_until(conn.reactor, lambda: conn.value().count(b"\r\n") == 5)
    assert conn.is_reading


def test_banner_is_sent_on_connect() -> None:
    conn = client(banner="reactorkit admin port")
    assert conn.take() == b"+reactorkit admin port\r\n"


def test_allow_list_limits_the_commands() -> None:
    conn = client(commands=["ping", "HELP"])
    assert ask(conn, b"ECHO hi\r\n") == ["-ERR unknown command 'ECHO'; HELP lists the commands"]
    assert ask(conn, b"HELP\r\n")[0] == "*2"


def test_allow_list_naming_an_unknown_command_is_a_startup_error() -> None:
    with pytest.raises(PluginError, match="names unknown commands: FLY"):
        table(commands=["fly"])


def test_two_plugins_defining_one_command_is_an_error_naming_both() -> None:
    found = [
        Contribution(LineCommand(name="get", function=lambda c: None), "kv", "kv-store 1.0"),
        Contribution(LineCommand(name="GET", function=lambda c: None), "cache", "cachey 2.0"),
    ]
    with pytest.raises(PluginError) as info:
        CommandTable.build(LineCommandOptions(), found)
    assert str(info.value).splitlines()[:3] == [
        "line command 'GET' is defined twice:",
        "  by plugin 'kv' (kv-store 1.0)",
        "  and by plugin 'cache' (cachey 2.0)",
    ]


@pytest.mark.parametrize(
    ("spec", "low", "high"),
    [
        ("", 0, 0),
        ("KEY", 1, 1),
        ("KEY [VALUE]", 1, 2),
        ("TEXT...", 1, None),
        ("[ARG...]", 0, None),
        ("A B [C] [D]", 2, 4),
    ],
)
def test_argument_spec_gives_arity(spec: str, low: int, high: int | None) -> None:
    command = LineCommand(name="x", function=lambda c: None, args=spec)
    assert (command.min_args, command.max_args) == (low, high)


@pytest.mark.parametrize("spec", ["[A] B", "A... B", "[A", "a-b!"])
def test_bad_argument_specs_are_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        LineCommand(name="x", function=lambda c: None, args=spec)


def test_bad_command_name_is_refused() -> None:
    with pytest.raises(ValueError, match="command name must be"):
        LineCommand(name="no spaces", function=lambda c: None)


# -- bounded memory, in order to the end, deadlines, flood control -----------


def lines(data: bytes) -> list[str]:
    return data.decode().split("\r\n")[:-1]


def test_a_client_that_never_reads_stops_being_read_at_high_water() -> None:
    one = client()
    one.feed(b"HELP\r\n")
    reply = one.take()
    count = 65536 // 6  # one full read of HELP requests
    conn = client(rate=0)  # the fake clock stands still: no refill
    conn.block_writes()
    conn.feed(b"HELP\r\n" * count)
    assert not conn.is_reading
    bound = conn.high_water + len(reply)  # high water + one response
    assert conn.get_write_buffer_size() <= bound
    for _ in range(5):  # the client reads nothing: later passes add nothing
        run_once(conn.reactor)
        assert conn.get_write_buffer_size() <= bound
    assert conn.get_write_buffer_size() > conn.high_water  # the mark is what stopped it
    for _ in range(count):  # the client reads: the rest is answered, bounded
        conn.drain()
        conn.block_writes()
        run_once(conn.reactor)
        assert conn.get_write_buffer_size() <= bound
        if conn.is_reading:
            break
    conn.drain()
    assert conn.value() == reply * count
    assert conn.is_reading


def test_pending_requests_then_eof_are_all_answered_in_order_then_closed() -> None:
    release = threading.Event()
    conn = client(LineCommand(name="slow", function=lambda c: str(release.wait(5)), blocking=True))
    conn.feed(b"SLOW\r\nPING\r\nECHO a\r\n")
    conn.feed_eof()
    assert conn.value() == b""
    assert not conn.is_closing()
    release.set()
    run_until(conn.reactor, lambda: conn.is_closing())
    assert lines(conn.take()) == ["+True", "+PONG", "+a"]


def test_shutdown_answers_every_request_received_then_closes() -> None:
    release = threading.Event()
    conn = client(LineCommand(name="slow", function=lambda c: str(release.wait(5)), blocking=True))
    conn.feed(b"SLOW\r\nPING\r\nECHO a\r\nECHO unfinish")
    conn.handler.shutdown_requested()
    assert not conn.is_reading
    assert not conn.is_closing()
    release.set()
    run_until(conn.reactor, lambda: conn.is_closing())
    assert lines(conn.take()) == ["+True", "+PONG", "+a"]


def test_eof_with_a_backlog_answers_it_all_over_later_passes() -> None:
    conn = client()
    conn.feed(b"PING\r\n" * 250 + b"PI")
    conn.feed_eof()
    assert not conn.is_closing()
    run_until(conn.reactor, lambda: conn.is_closing())
    assert lines(conn.take()) == ["+PONG"] * 250


def test_over_long_line_behind_a_blocking_request_is_refused_after_the_answers() -> None:
    release = threading.Event()
    conn = client(
        LineCommand(name="slow", function=lambda c: str(release.wait(5)), blocking=True),
        max_line_length=32,
    )
    conn.feed(b"SLOW\r\nPING\r\n" + b"x" * 100)
    assert conn.value() == b""
    release.set()
    run_until(conn.reactor, lambda: conn.is_closing())
    assert lines(conn.take()) == ["+True", "+PONG", "-ERR line too long: the limit is 32 bytes"]


def test_a_line_not_completed_in_time_gets_an_error_and_a_close() -> None:
    conn = client(line_timeout=30.0)
    conn.feed(b"PING\r\nPI")
    assert conn.take() == b"+PONG\r\n"
    conn.advance(29.0)
    assert not conn.is_closing()
    conn.advance(1.0)
    assert lines(conn.take()) == [
        "-ERR line timeout: a request line must be completed within 30 seconds"
    ]
    assert conn.is_closing()


def test_a_line_trickled_a_byte_a_second_is_cut_off_at_the_deadline() -> None:
    conn = client(line_timeout=10.0)
    for byte in b"ECHO " + b"z" * 40:
        conn.feed(bytes([byte]))
        conn.advance(1.0)
        if conn.is_closing():
            break
    assert conn.is_closing()
    assert conn.take().startswith(b"-ERR line timeout")
    assert conn.clock is not None
    assert conn.clock.now == 1000.0 + 10.0  # cut off 10 s after the first byte


def test_each_line_gets_its_own_deadline() -> None:
    conn = client(line_timeout=10.0)
    for _ in range(5):  # 5 lines of 8 s each: 40 s in all, none too slow
        conn.feed(b"PI")
        conn.advance(8.0)
        conn.feed(b"NG\r\n")
    assert lines(conn.take()) == ["+PONG"] * 5
    assert not conn.is_closing()


def test_line_timeout_zero_means_no_deadline() -> None:
    conn = client(line_timeout=0)
    conn.feed(b"PI")
    conn.advance(3600.0)
    conn.feed(b"NG\r\n")
    assert conn.take() == b"+PONG\r\n"


def test_requests_over_the_rate_wait_their_turn_none_is_dropped() -> None:
    conn = client(rate=10.0, burst=5)
    conn.feed(b"".join(b"ECHO %d\r\n" % i for i in range(20)))
    assert lines(conn.take()) == [f"+{i}" for i in range(5)]  # the burst
    assert not conn.is_reading
    conn.advance(0.1)  # one token
    assert lines(conn.take()) == ["+5"]
    conn.advance(1.0)  # ten tokens, but the bucket holds five
    assert lines(conn.take()) == [f"+{i}" for i in range(6, 11)]
    conn.advance(0.5)
    assert lines(conn.take()) == [f"+{i}" for i in range(11, 16)]
    conn.advance(0.5)
    assert lines(conn.take()) == [f"+{i}" for i in range(16, 20)]
    assert conn.is_reading


def test_rate_zero_turns_flood_control_off() -> None:
    conn = client(rate=0, burst=1)
    conn.feed(b"PING\r\n" * 100)
    assert lines(conn.take()) == ["+PONG"] * 100


# -- the one-line-per-read fast path -------------------------------------------


def _shout(ctx: reactorkit.CommandContext) -> str:
    if ctx.args and ctx.args[0] == "bad":
        raise CommandError("bad word")
    if ctx.args and ctx.args[0] == "boom":
        raise RuntimeError("boom")
    return " ".join(ctx.args).upper() or "QUIET"


def _answer() -> str:
    return "42"


def _multi(ctx: reactorkit.CommandContext) -> list[str]:
    return ["a", "b\r\nc"]


_FAST_EXTRA = (
    LineCommand(name="SHOUT", function=_shout, args="[WORD...]"),
    LineCommand(name="ANSWER", function=_answer),
    LineCommand(name="MULTI", function=_multi),
    LineCommand(name="SLOW", function=_answer, blocking=True),
)
_REQUESTS = [
    b"PING",
    b"ping hello",
    b"PING a b",
    b"ECHO x y",
    b"SHOUT",
    b"shout hi there",
    b"SHOUT bad",
    b"ANSWER",
    b"ANSWER extra",
    b"MULTI",
    b"NOPE",
    b"",
    b"   ",
    b'ECHO "a b"',
    b"ECHO 'x",
    b"\xff\xfe",
    b"PING\r",
    b"SLOW",
]


def test_a_command_without_parameters_is_called_without_a_context() -> None:
    command = LineCommand(name="ANSWER", function=_answer)
    assert command.takes_context is False
    assert LineCommand(name="SHOUT", function=_shout).takes_context is True
    assert ask(client(command), b"ANSWER\r\n") == ["+42"]
    assert ask(client(command), b"ANSWER 1\r\n") == [
        "-ERR wrong number of arguments for ANSWER; usage: ANSWER"
    ]


@given(
    st.lists(st.sampled_from(_REQUESTS), min_size=1, max_size=12),
    st.sampled_from([b"\n", b"\r\n"]),
)
def test_one_line_per_read_answers_exactly_as_a_pipelined_batch(
    requests: list[bytes], ending: bytes
) -> None:
    # One line per feed takes the fast path where it can; the same lines
    # in one feed take the general path. The replies must be identical.
    one_by_one = client(*_FAST_EXTRA)
    for request in requests:
        one_by_one.feed(request + ending)
        run_until(one_by_one.reactor, lambda: not one_by_one.handler._busy)  # type: ignore[attr-defined]
    batched = client(*_FAST_EXTRA)
    batched.feed(b"".join(request + ending for request in requests))
    expected = len(requests)
    run_until(batched.reactor, lambda: _replies(batched.value()) >= expected)
    assert one_by_one.value() == batched.value()


def _replies(output: bytes) -> int:
    count = 0
    lines = output.split(b"\r\n")
    i = 0
    while i < len(lines) - 1:
        if lines[i].startswith(b"*"):
            i += int(lines[i][1:])
        count += 1
        i += 1
    return count


def test_the_fast_path_reuses_a_context_only_for_argument_less_calls() -> None:
    seen: list[reactorkit.CommandContext] = []

    def record(ctx: reactorkit.CommandContext) -> str:
        seen.append(ctx)
        return "ok"

    conn = client(LineCommand(name="REC", function=record, args="[X]"))
    for request in (b"REC\r\n", b"REC\r\n", b"REC 1\r\n", b"REC\r\n"):
        conn.feed(request)
    assert conn.take() == b"+ok\r\n" * 4
    assert seen[0] is seen[1] is seen[3]
    assert seen[2].args == ("1",)
    assert seen[0].args == ()


def test_the_fast_path_keeps_the_rate_limit() -> None:
    conn = client(rate=10.0, burst=2)
    for i in range(3):  # one request per read: the fast path's case
        conn.feed(b"ECHO %d\r\n" % i)
    assert lines(conn.take()) == ["+0", "+1"]  # the third waits for a token
    assert not conn.is_reading  # and the client with it
    conn.advance(0.1)
    assert lines(conn.take()) == ["+2"]
    assert conn.is_reading
    conn.feed(b"PING\r\n")  # the bucket is empty again: this one waits too
    assert conn.take() == b""
    conn.advance(0.1)
    assert lines(conn.take()) == ["+PONG"]


def test_the_encoded_reply_cache_is_bounded() -> None:
    t = table()
    for i in range(1000):
        assert t.encode_reply(f"r{i}") == f"+r{i}\r\n".encode()
    assert t.encode_reply("x" * 100) == b"+" + b"x" * 100 + b"\r\n"
    assert len(t.replies) == 256
    assert all(len(reply) <= 64 for reply in t.replies)


def test_the_fast_path_stops_reading_at_high_water_and_answers_all_at_eof() -> None:
    # One request per read, the inline path: a client that never reads is
    # still stopped at high water + one reply, and what it sent is answered.
    conn = client(rate=0)
    conn.block_writes()
    sent = 0
    while conn.is_reading:
        assert sent < 100_000, "the fast path never stopped reading"
        conn.feed(b"PING\r\n")
        sent += 1
        assert conn.get_write_buffer_size() <= conn.high_water + len(b"+PONG\r\n")
    assert conn.get_write_buffer_size() > conn.high_water  # the mark stopped it
    conn.feed_eof()
    for _ in range(sent):
        conn.drain()
        run_once(conn.reactor)
        if conn.is_closing():
            break
    conn.drain()
    assert conn.value() == b"+PONG\r\n" * sent
    assert conn.is_closing()


def test_the_fast_path_behind_a_blocking_command_queues_up_to_max_pending() -> None:
    release = threading.Event()
    conn = client(
        LineCommand(name="slow", function=lambda c: str(release.wait(5)), blocking=True),
        max_pending=4,
        rate=0,
    )
    conn.feed(b"SLOW\r\n")
    sent = 0
    while conn.is_reading:
        assert sent < 100, "reading never paused behind the blocking command"
        conn.feed(b"PING\r\n")  # one line per read
        sent += 1
    assert sent == 4  # max_pending
    release.set()
    run_until(conn.reactor, lambda: conn.is_reading)
    assert lines(conn.take()) == ["+True"] + ["+PONG"] * 4
