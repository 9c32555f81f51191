"""The reactorkit command through subprocesses: run, check, plugins, signals and draining."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import reactorkit
from tests.helpers import (
    child_env,
    connect,
    reactorkit_cli,
    recv_until_closed,
    write_distribution,
)

BIG = 32 * 1024 * 1024

# A plugin module named in the config: a handler that answers one line with
# a big reply, so a client that does not read leaves it buffered.
BIG_REPLY_PLUGIN = f"""
import reactorkit

class BigReply(reactorkit.Handler):
    def data_received(self, data):
        self.connection.write(b"R" * {BIG})

@reactorkit.hookimpl
def reactorkit_handler_types():
    return [reactorkit.HandlerType(name="big-reply", handler=BigReply)]
"""


def write_config(path: Path, body: str) -> str:
    path.write_text(textwrap.dedent(body))
    return str(path)


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Path:
    (tmp_path / "rk_big_reply.py").write_text(BIG_REPLY_PLUGIN)
    return tmp_path


def test_version() -> None:
    result = reactorkit_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"reactorkit {reactorkit.__version__}"


def test_run_logs_one_line_per_listener_and_serves(run_server, tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c.toml",
        """
        [[listen]]
        name = "first"
        handler = "echo"
        port = 0

        [[listen]]
        name = "second"
        handler = "echo"
        path = "%s"
    """
        % (tmp_path / "e.sock"),
    )
    server = run_server("run", config)
    addresses = server.wait_serving(2)
    assert addresses["second"] == f"unix:{tmp_path / 'e.sock'}"
    with connect(server.tcp("first")) as sock:
        sock.sendall(b"ping")
        assert sock.recv(10) == b"ping"
    code, log = server.terminate()
    assert code == 0
    assert "listening: first handler=echo on 127.0.0.1:" in log


def start_big_reply(
    run_server,
    tmp_path: Path,
    plugin_dir: Path,  # type: ignore[no-untyped-def]
    shutdown_timeout: float,
):
    """A server whose handler answers any input with BIG bytes; returns (server, client)."""
    config = write_config(
        tmp_path / "c.toml",
        f"""
        [reactor]
        plugins = ["rk_big_reply"]
        shutdown_timeout = {shutdown_timeout}
        [[listen]]
        handler = "big-reply"
        port = 0
    """,
    )
    server = run_server("run", config, env=child_env(PYTHONPATH=str(plugin_dir)))
    server.wait_serving(1)
    sock = connect(server.tcp("big-reply"))
    sock.sendall(b"go\n")
    assert sock.recv(1) == b"R"  # the reply started; most of it is still buffered server-side
    return server, sock


def test_sigterm_drains_pending_writes_then_exits_zero(run_server, tmp_path, plugin_dir) -> None:
    server, sock = start_big_reply(run_server, tmp_path, plugin_dir, shutdown_timeout=10)
    server.proc.send_signal(signal.SIGTERM)
    rest = recv_until_closed(sock, limit=2 * BIG)
    sock.close()
    assert 1 + len(rest) == BIG, "the buffered reply was not drained before closing"
    code, log = server.wait_exit()
    assert code == 0
    assert "SIGTERM received: shutting down gracefully" in log


def test_shutdown_timeout_aborts_a_client_that_never_reads(
    run_server, tmp_path, plugin_dir
) -> None:
    server, sock = start_big_reply(run_server, tmp_path, plugin_dir, shutdown_timeout=0.3)
    with sock:
        code, log = server.terminate(signal.SIGINT)
    assert code == 0
    assert "shutdown timeout: aborting 1 connections still open" in log


def test_run_with_a_bad_config_prints_one_line_and_exits_1(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "bad.toml",
        """
        [[listen]]
        handler = "echo"
        port = "seventy"
    """,
    )
    result = reactorkit_cli("run", config)
    assert result.returncode == 1
    assert result.stderr == (
        f"reactorkit: error: {config}: listen[0] 'echo': port must be an integer 0-65535 "
        "(0 picks a free port), got 'seventy'\n"
    )


@contextlib.contextmanager
def taken_port() -> Iterator[int]:
    """A port some other socket is listening on."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def test_run_with_an_address_in_use_exits_1_without_traceback(tmp_path: Path) -> None:
    with taken_port() as port:
        config = write_config(
            tmp_path / "c.toml",
            f"""
            [[listen]]
            handler = "echo"
            port = {port}
        """,
        )
        result = reactorkit_cli("run", config)
    assert result.returncode == 1
    assert result.stderr == (
        f"reactorkit: error: {config}: listen[0] 'echo': cannot listen on 127.0.0.1:{port}: "
        "Address already in use\n"
    )


def test_check_reports_every_error(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "bad.toml",
        """
        [[listen]]
        handler = "ecoh"
        port = 1

        [[listen]]
        name = "two"
        handler = "echo"
        port = 1
        backlog = 0
    """,
    )
    result = reactorkit_cli("check", config)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 2
    assert lines[0] == (
        f"reactorkit: error: {config}: listen[1] 'two': backlog must be an integer >= 1, got 0"
    )
    assert lines[1].startswith(
        f"reactorkit: error: {config}: listen[0] 'ecoh': handler must name an installed "
        "handler type ("  # the installed ones, listed
    )
    assert lines[1].endswith("got 'ecoh' (did you mean 'echo'?)")
    fixed = write_config(
        tmp_path / "bad2.toml",
        """
        [[listen]]
        handler = "ecoh"
        port = 1

        [[listen]]
        name = "two"
        handler = "echo"
        port = 1
        [listen.options]
        loud = true
    """,
    )
    result = reactorkit_cli("check", fixed)
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 3  # unknown handler, duplicate port, option
    assert "did you mean 'echo'?" in result.stderr
    assert "options.loud" in result.stderr


def test_check_a_good_config_binds_nothing(tmp_path: Path) -> None:
    with taken_port() as port:
        config = write_config(
            tmp_path / "ok.toml",
            f"""
            [[listen]]
            handler = "echo"
            port = {port}
        """,
        )
        result = reactorkit_cli("check", config)  # the port is taken: check must not bind
    assert result.returncode == 0, result.stderr
    assert f"listen[0] 'echo': handler 'echo' on 127.0.0.1:{port}: ok" in result.stdout


def test_plugins_lists_handler_types_with_their_distribution() -> None:
    result = reactorkit_cli("plugins")
    assert result.returncode == 0
    assert re.search(r"^  echo +RFC 862 echo", result.stdout, re.MULTILINE)
    assert f"from reactorkit {reactorkit.__version__} (plugin 'echo')" in result.stdout
    assert "hooks: reactorkit_handler_types" in result.stdout


def test_plugins_json() -> None:
    result = reactorkit_cli("plugins", "--json")
    assert result.returncode == 0
    report = json.loads(result.stdout)
    echo = next(h for h in report["handler_types"] if h["name"] == "echo")
    assert echo == {
        "name": "echo",
        "description": "RFC 862 echo: sends back every byte it receives",
        "default_port": 7007,
        "plugin": "echo",
        "distribution": f"reactorkit {reactorkit.__version__}",
    }
    assert report["errors"] == []


def test_plugins_reports_a_broken_plugin_and_check_fails(tmp_path: Path) -> None:
    from tests.helpers import write_distribution
    from tests.test_plugins import DAYTIME

    write_distribution(
        tmp_path,
        "rk-broken-cli",
        "0.1",
        {"rk_broken_cli": "raise RuntimeError('plugin exploded')\n"},
        {"broken-cli": "rk_broken_cli"},
    )
    write_distribution(
        tmp_path,
        "rk-good-cli",
        "0.3",
        {"rk_good_cli": DAYTIME.format(name="good-cli")},
        {"good-cli": "rk_good_cli"},
    )
    env = child_env(PYTHONPATH=str(tmp_path))
    result = reactorkit_cli("plugins", env=env)
    assert result.returncode == 0
    assert re.search(r"^  good-cli +what day it is", result.stdout, re.MULTILINE)
    assert "from rk-good-cli 0.3" in result.stdout
    assert (
        "broken-cli (rk_broken_cli, rk-broken-cli 0.1): RuntimeError: plugin exploded"
        in result.stdout
    )
    checked = reactorkit_cli("plugins", "--check", env=env)
    assert checked.returncode == 1


def test_no_command_prints_help_and_exits_2() -> None:
    result = reactorkit_cli()
    assert result.returncode == 2
    assert "run" in result.stderr


def test_log_level_is_accepted_before_and_after_the_command() -> None:
    before = reactorkit_cli("--log-level", "debug", "check")
    after = reactorkit_cli("check", "--log-level", "debug")
    assert before.returncode == after.returncode == 0
    assert "<default config>: ok" in before.stdout
    assert "<default config>: ok" in after.stdout
    bad = reactorkit_cli("check", "--log-level", "loud")
    assert bad.returncode == 2
    assert "invalid choice: 'loud'" in bad.stderr


@pytest.mark.parametrize("mode", ["alone", "workers", "systemd"])
def test_run_logs_serving_one_listener_in_the_singular(
    run_server, tmp_path: Path, mode: str
) -> None:
    config = write_config(tmp_path / "c.toml", '[[listen]]\nhandler = "echo"\nport = 0\n')
    args, env, expected = ["run", config], None, r"reactorkit \S+ serving 1 listener \(pid \d+\)"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if mode == "workers":
        # Either worker: SIGTERM may come before the second one is serving.
        args, expected = ["run", "--workers", "2", config], r"worker \d serving 1 listener\n"
    elif mode == "systemd":  # one process serving under systemd: Type=notify
        notify.bind(str(tmp_path / "notify"))
        env = child_env(NOTIFY_SOCKET=str(tmp_path / "notify"))
        expected = r"\] reactorkit.worker: serving 1 listener \(pid \d+\)"
    with notify:
        server = run_server(*args, env=env)
        server.wait_serving(1)
        with connect(server.tcp("echo")) as sock:  # the loop runs: signals are handled
            sock.sendall(b"ping")
            assert sock.recv(10) == b"ping"
        code, log = server.terminate()
    assert code == 0
    assert re.search(expected, log), log
    assert "1 listeners" not in log


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]], ids=["alone", "workers"])
def test_run_reports_every_address_in_use_and_binds_none(
    tmp_path: Path, workers: list[str]
) -> None:
    path = tmp_path / "free.sock"
    with taken_port() as first, taken_port() as second:
        config = write_config(
            tmp_path / "c.toml",
            f"""
            [[listen]]
            name = "unix"
            handler = "echo"
            path = "{path}"

            [[listen]]
            name = "a"
            handler = "echo"
            port = {first}

            [[listen]]
            name = "b"
            handler = "line-command"
            port = {second}
        """,
        )
        result = reactorkit_cli("run", *workers, config)
    assert result.returncode == 1
    # With workers the supervisor also logs each address it bound (INFO).
    errors = [line for line in result.stderr.splitlines() if "bound unix:" not in line]
    assert errors == [
        f"reactorkit: error: {config}: listen[1] 'a': cannot listen on 127.0.0.1:{first}: "
        "Address already in use",
        f"reactorkit: error: {config}: listen[2] 'b': cannot listen on 127.0.0.1:{second}: "
        "Address already in use",
    ]
    assert not path.exists(), "the address that did bind was not released"


def check_and_run(config: str, env: dict[str, str] | None = None) -> tuple[Any, Any]:
    """``check`` then ``run`` of one config; run must fail before serving."""
    checked = reactorkit_cli("check", config, env=env)
    ran = reactorkit_cli("run", config, env=env, timeout=30)
    return checked, ran


def test_check_and_run_refuse_a_unix_socket_in_a_missing_directory(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir"
    config = write_config(
        tmp_path / "c.toml", f'[[listen]]\nhandler = "echo"\npath = "{missing / "e.sock"}"\n'
    )
    checked, ran = check_and_run(config)
    expected = (
        f"reactorkit: error: {config}: listen[0] 'echo': path must be in an existing "
        f"directory: {str(missing)!r} does not exist (create it first), "
        f"got {str(missing / 'e.sock')!r}"
    )
    assert (checked.returncode, checked.stderr.splitlines()) == (1, [expected])
    assert (ran.returncode, ran.stderr.splitlines()) == (1, [expected])
    assert not missing.exists()


def test_check_and_run_refuse_a_unix_socket_path_that_is_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    config = write_config(
        tmp_path / "c.toml", f'[[listen]]\nhandler = "echo"\npath = "{tmp_path / "notes.txt"}"\n'
    )
    checked, ran = check_and_run(config)
    assert checked.returncode == ran.returncode == 1
    assert "path must not name an existing file that is not a socket" in checked.stderr
    assert checked.stderr == ran.stderr
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_check_and_run_refuse_a_config_named_plugin_module_that_does_not_import(
    tmp_path: Path,
) -> None:
    config = write_config(
        tmp_path / "c.toml",
        """
        [reactor]
        plugins = ["missing_module_rk_test"]
        [[listen]]
        handler = "echo"
        port = 0
    """,
    )
    checked, ran = check_and_run(config)
    expected = (
        f"reactorkit: error: {config}: reactor.plugins must name modules that load, got "
        "'missing_module_rk_test' (ModuleNotFoundError: No module named "
        "'missing_module_rk_test'; install what provides it, or remove it from the list)"
    )
    assert (checked.returncode, checked.stderr.splitlines()) == (1, [expected])
    assert (ran.returncode, ran.stderr.splitlines()) == (1, [expected])


def broken_plugin_env(tmp_path: Path) -> dict[str, str]:
    from tests.helpers import write_distribution

    site = tmp_path / "site"
    site.mkdir()
    write_distribution(
        site,
        "rk-broken-check",
        "0.1",
        {"rk_broken_check": "raise RuntimeError('plugin exploded')\n"},
        {"broken-check": "rk_broken_check"},
    )
    return child_env(PYTHONPATH=str(site))


def test_check_warns_about_a_broken_installed_plugin_as_run_does(
    run_server, tmp_path: Path
) -> None:
    env = broken_plugin_env(tmp_path)
    config = write_config(tmp_path / "c.toml", '[[listen]]\nhandler = "echo"\nport = 0\n')
    warning = (
        "plugin 'broken-check' (rk_broken_check, from rk-broken-check 0.1) failed to load: "
        "RuntimeError: plugin exploded"
    )
    checked = reactorkit_cli("check", config, env=env)
    assert checked.returncode == 0, checked.stderr
    assert checked.stderr.splitlines() == [f"reactorkit: warning: {warning}"]
    server = run_server("run", config, env=env)
    server.wait_serving(1)  # run serves what it can, and says what it could not load
    with connect(server.tcp("echo")) as sock:
        sock.sendall(b"ping")
        assert sock.recv(10) == b"ping"
    code, log = server.terminate()
    assert code == 0
    assert f"WARNING reactorkit.server: {warning}" in log


def test_check_and_run_fail_when_a_handler_comes_from_a_broken_plugin(tmp_path: Path) -> None:
    env = broken_plugin_env(tmp_path)
    config = write_config(tmp_path / "c.toml", '[[listen]]\nhandler = "broken-check"\nport = 0\n')
    checked, ran = check_and_run(config, env=env)
    assert checked.returncode == ran.returncode == 1
    for result in (checked, ran):
        assert "handler must name an installed handler type" in result.stderr
        assert "note: plugin 'broken-check'" in result.stderr


def test_a_plugin_named_like_a_builtin_is_refused_by_run_check_and_plugins(
    tmp_path: Path,
) -> None:
    from tests.helpers import write_distribution
    from tests.test_plugins import DAYTIME

    site = tmp_path / "site"
    site.mkdir()
    write_distribution(
        site,
        "rk-echo-clone",
        "1.0",
        {"rk_echo_clone": DAYTIME.format(name="echo-clone")},
        {"echo": "rk_echo_clone"},
    )
    env = child_env(PYTHONPATH=str(site))
    config = write_config(tmp_path / "c.toml", '[[listen]]\nhandler = "echo"\nport = 0\n')
    checked, ran = check_and_run(config, env=env)
    listed = reactorkit_cli("plugins", "--check", env=env)
    assert checked.returncode == ran.returncode == listed.returncode == 1
    for output in (checked.stderr, ran.stderr, listed.stdout):
        assert "plugin name 'echo' is declared twice" in output
        assert f"reactorkit {reactorkit.__version__} (reactorkit.handlers.echo)" in output
        assert "rk-echo-clone 1.0 (rk_echo_clone)" in output


def test_output_into_a_closed_pipe_is_quiet(tmp_path: Path) -> None:
    # The reader is gone before the first write, so every run meets EPIPE.
    read_end, write_end = os.pipe()
    os.close(read_end)
    with os.fdopen(write_end, "wb") as stdout:
        result = subprocess.run(
            [sys.executable, "-m", "reactorkit", "plugins"],
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    assert (result.returncode, result.stderr) == (141, "")


CARELESS_STARTUP_HOOKS = {
    "import": """
        import asyncio

        raise asyncio.CancelledError("no database at startup")
    """,
    "handler state": """
        import asyncio
        import reactorkit

        def state(listener):
            raise asyncio.CancelledError("no database at startup")

        @reactorkit.hookimpl
        def reactorkit_handler_types():
            return [reactorkit.HandlerType(name="echo2", handler=reactorkit.Handler, state=state)]
    """,
    "configure": """
        import reactorkit

        @reactorkit.hookimpl
        def reactorkit_configure(config):
            raise RuntimeError("no database at startup")
    """,
    "collector": """
        import asyncio
        import reactorkit

        @reactorkit.hookimpl
        def reactorkit_handler_types():
            raise asyncio.CancelledError("no database at startup")
    """,
}


@pytest.mark.parametrize("hook", sorted(CARELESS_STARTUP_HOOKS))
def test_a_startup_hook_that_raises_fails_check_and_run_in_one_line(
    tmp_path: Path, hook: str
) -> None:
    # hooks.md: "an exception there stops the start with an error naming the
    # plugin (run and check exit 1)". A raising reactorkit_configure passed
    # check and crashed run with a traceback; a collector raising a
    # BaseException (asyncio.CancelledError) was a traceback for both.
    (tmp_path / "careless_start.py").write_text(textwrap.dedent(CARELESS_STARTUP_HOOKS[hook]))
    config = write_config(
        tmp_path / "c.toml",
        """
        [reactor]
        plugins = ["careless_start"]

        [[listen]]
        handler = "echo"
        port = 0
    """,
    )
    if hook == "handler state":
        Path(config).write_text(Path(config).read_text().replace('"echo"', '"echo2"'))
    env = child_env(PYTHONPATH=str(tmp_path))
    # A listener's state is built when it is set up, after what check does.
    for command in ("run",) if hook == "handler state" else ("check", "run"):
        result = reactorkit_cli(command, config, env=env, timeout=30)
        assert result.returncode == 1, (command, result.stderr)
        assert "Traceback" not in result.stderr, (command, result.stderr)
        assert "'careless_start'" in result.stderr, (command, result.stderr)
        assert "no database at startup" in result.stderr, (command, result.stderr)


ASYNC_BY_MISTAKE = {
    "handler": (
        """
        import reactorkit

        class Eager(reactorkit.Handler):
            async def data_received(self, data):
                self.connection.write(data)

        @reactorkit.hookimpl
        def reactorkit_handler_types():
            return [reactorkit.HandlerType(name="eager", handler=Eager)]
        """,
        "Eager.data_received",
    ),
    "command": (
        """
        import reactorkit

        async def fetch(ctx):
            return "value"

        @reactorkit.hookimpl
        def reactorkit_line_commands():
            return [reactorkit.LineCommand(name="FETCH", function=fetch)]
        """,
        "fetch",
    ),
    "hook": (
        """
        import reactorkit

        @reactorkit.hookimpl
        async def reactorkit_connection_made(listener, connection):
            pass
        """,
        "reactorkit_connection_made",
    ),
}


@pytest.mark.parametrize("kind", sorted(ASYNC_BY_MISTAKE))
def test_async_def_plugin_code_is_refused_before_serving(tmp_path: Path, kind: str) -> None:
    # Called synchronously, an async def handler callback, line command or
    # hook only makes a coroutine nobody awaits: the client hung, or got
    # "+<coroutine object fetch ...>" as its reply, and check said ok.
    source, name = ASYNC_BY_MISTAKE[kind]
    (tmp_path / "eager_plugin.py").write_text(textwrap.dedent(source))
    config = write_config(
        tmp_path / "c.toml",
        """
        [reactor]
        plugins = ["eager_plugin"]

        [[listen]]
        handler = "line-command"
        port = 0
    """,
    )
    env = child_env(PYTHONPATH=str(tmp_path))
    # Line commands are collected when their listener is set up, after check.
    for command in ("run",) if kind == "command" else ("check", "run"):
        result = reactorkit_cli(command, config, env=env, timeout=30)
        assert result.returncode == 1, (command, result.stderr)
        assert "Traceback" not in result.stderr, (command, result.stderr)
        assert "eager_plugin" in result.stderr, (command, result.stderr)
        assert f"{name} is async def" in result.stderr, (command, result.stderr)


def test_a_stopping_hook_that_blocks_the_loop_cannot_hold_the_process_past_the_deadline(
    run_server, tmp_path: Path
) -> None:
    # A reactor_stopping hook that never returns holds the loop, so neither the
    # shutdown deadline nor a second SIGTERM could act: the process served on
    # forever, half shut down. The watchdog ends it, naming where it was stuck.
    (tmp_path / "stuck_stop.py").write_text(
        textwrap.dedent(
            """
            import threading
            import reactorkit

            @reactorkit.hookimpl
            def reactorkit_reactor_stopping(reactor):
                threading.Event().wait(120)  # "flush to a server that never answers"
            """
        )
    )
    config = write_config(
        tmp_path / "c.toml",
        """
        [reactor]
        plugins = ["stuck_stop"]
        shutdown_timeout = 0.5

        [[listen]]
        handler = "echo"
        port = 0
        """,
    )
    server = run_server("run", config, env=child_env(PYTHONPATH=str(tmp_path)))
    server.wait_serving(1)
    with connect(server.tcp("echo")) as sock:  # the loop runs: signals are handled
        sock.sendall(b"ping")
        assert sock.recv(10) == b"ping"
    started = time.monotonic()
    code, log = server.terminate(timeout=15)
    assert code == 1, log
    assert time.monotonic() - started < 10, log  # 0.5 s + the 2 s margin, not 120 s
    assert "the loop is blocked in reactorkit_reactor_stopping()" in log, log
    assert "stuck_stop.py" in log, log


def test_check_reports_two_plugins_routing_one_path_as_run_does(tmp_path: Path) -> None:
    # check passed this config and run refused it: the route table was only
    # built when the listener started, after everything check does.
    route = textwrap.dedent(
        """
        import reactorkit

        @reactorkit.hookimpl
        def reactorkit_http_routes():
            return [reactorkit.Route(method="GET", path="/items/{key}", function=lambda r: "{tag}")]
        """
    )
    for tag in ("one", "two"):
        write_distribution(
            tmp_path,
            f"rk-route-{tag}",
            "1.0",
            {f"rk_route_{tag}": route.replace("{tag}", tag)},
            {f"route-{tag}": f"rk_route_{tag}"},
        )
    config = write_config(tmp_path / "c.toml", '[[listen]]\nhandler = "http-lite"\nport = 0\n')
    env = child_env(PYTHONPATH=str(tmp_path))
    for command in ("check", "run"):
        result = reactorkit_cli(command, config, env=env, timeout=30)
        assert result.returncode == 1, (command, result.stderr)
        assert "Traceback" not in result.stderr, (command, result.stderr)
        first = result.stderr.splitlines()[0]
        assert first == (
            f"reactorkit: error: {config}: listen[0] 'http-lite': "
            "HTTP route GET /items/{key} is defined twice:"
        ), (command, result.stderr)
