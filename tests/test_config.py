"""Config loading: the shape of the TOML file, options against handler types, exact errors."""

from __future__ import annotations

import tomllib

import attrs
import pytest

import reactorkit
from reactorkit import Config, ConfigErrors, HandlerType
from reactorkit.config import build_options, plan_listeners
from reactorkit.plugins import Contribution

P = "r.toml"

BAD_CONFIGS = [
    pytest.param(
        '[[listen]]\nhandler="echo"\nport="seventy"',
        [
            f"{P}: listen[0] 'echo': port must be an integer 0-65535 (0 picks a free port), "
            "got 'seventy'"
        ],
        id="port-not-int",
    ),
    pytest.param(
        '[[listen]]\nhandler="echo"\nport=70000',
        [
            f"{P}: listen[0] 'echo': port must be an integer 0-65535 (0 picks a free port), "
            "got 70000"
        ],
        id="port-range",
    ),
    pytest.param(
        "[[listen]]\nport=1",
        [f"{P}: listen[0]: handler is required: the name of a handler type (e.g. 'echo')"],
        id="handler-missing",
    ),
    pytest.param(
        '[[listen]]\nhandler="echo"\nprot=1',
        [
            f"{P}: listen[0] 'echo': prot is not a known listener key (known: name, handler, "
            "host, port, path, fd_name, backlog, max_connections, idle_timeout, options, allow, "
            "deny, proxy_protocol, proxy_from, proxy_timeout, tls) "
            "(did you mean 'port'?)"
        ],
        id="unknown-key-did-you-mean",
    ),
    pytest.param(
        '[reactor]\nlog_level="verbose"\n[[listen]]\nhandler="echo"',
        [f"{P}: reactor.log_level must be one of debug, info, warning, error, got 'verbose'"],
        id="log-level",
    ),
    pytest.param(
        '[reactor]\nthreads=0\nshutdown_timeout=-1\n[[listen]]\nhandler="echo"',
        [
            f"{P}: reactor.threads must be an integer 1-1024, got 0",
            f"{P}: reactor.shutdown_timeout must be a number of seconds >= 0, got -1",
        ],
        id="reactor-numbers-every-error",
    ),
    pytest.param(
        '[reactor]\nplugin=["x"]\n[[listen]]\nhandler="echo"',
        [
            f"{P}: reactor.plugin is not a known [reactor] key (known: log_level, "
            "shutdown_timeout, threads, plugins, workers, log_format, control_socket) "
            "(did you mean 'plugins'?)"
        ],
        id="reactor-unknown-key",
    ),
    pytest.param(
        '[reactor]\nplugins="mod"\n[[listen]]\nhandler="echo"',
        [f"{P}: reactor.plugins must be a list of module names (strings), got 'mod'"],
        id="plugins-not-list",
    ),
    pytest.param(
        '[[listen]]\nhandler="echo"\nport=7\n[[listen]]\nhandler="echo"\nname="e2"\nport=7',
        [
            f"{P}: listen[1] 'e2': port must be a free address: listen[0] 'echo' already "
            "listens on 127.0.0.1:7, got 7"
        ],
        id="same-address",
    ),
    pytest.param(
        '[[listen]]\nhandler="echo"\nhost="0.0.0.0"\nport=7\n'
        '[[listen]]\nname="b"\nhandler="echo"\nport=7',
        [
            f"{P}: listen[1] 'b': port must be a free address: listen[0] 'echo' already "
            "listens on 0.0.0.0:7, got 7"
        ],
        id="wildcard-overlaps",
    ),
    pytest.param(
        '[[listen]]\nhandler="echo"\npath="/tmp/a.sock"\n'
        '[[listen]]\nname="b"\nhandler="echo"\npath="/tmp/a.sock"',
        [
            f"{P}: listen[1] 'b': path must be a free address: listen[0] 'echo' already "
            "listens on /tmp/a.sock, got '/tmp/a.sock'"
        ],
        id="same-unix-path",
    ),
    pytest.param(
        '[[listen]]\nhandler="echo"\nport=7\n[[listen]]\nhandler="echo"\nport=8',
        [
            f"{P}: listen[1] 'echo': name must be unique: listen[0] 'echo' has the same name, "
            "got 'echo'"
        ],
        id="duplicate-name",
    ),
    pytest.param(
        '[[listen]]\nhandler="echo"\nhost="example.com"',
        [
            f"{P}: listen[0] 'echo': host must be an IP address (e.g. '127.0.0.1', '::1') or "
            "'localhost', got 'example.com'"
        ],
        id="host",
    ),
    pytest.param(
        '[[listen]]\nhandler="echo"\npath="/tmp/x"\nport=3',
        [
            f"{P}: listen[0] 'echo': path cannot be combined with host/port: choose a UNIX "
            "socket or TCP, got '/tmp/x'"
        ],
        id="path-and-port",
    ),
    pytest.param(
        '[[listen]]\nhandler="echo"\nidle_timeout="5m"\nbacklog=0',
        [
            f"{P}: listen[0] 'echo': backlog must be an integer >= 1, got 0",
            f"{P}: listen[0] 'echo': idle_timeout must be a number of seconds >= 0 (0 = never), "
            "got '5m'",
        ],
        id="limits",
    ),
    pytest.param(
        '[[listen]]\nhandler="echo"\nport=1\nmax_connections=1.5',
        [f"{P}: listen[0] 'echo': max_connections must be an integer >= 1, got 1.5"],
        id="max-connections-float",
    ),
    pytest.param(
        '[server]\nx=1\n[[listen]]\nhandler="echo"',
        [f"{P}: server is not a known top-level table (known: reactor, listen)"],
        id="unknown-table",
    ),
    pytest.param("", [f"{P}: listen needs at least one [[listen]] entry"], id="empty"),
    pytest.param(
        '[[listen]]\nhandler="echo"\noptions=3',
        [f"{P}: listen[0] 'echo': options must be a table ([listen.options]), got 3"],
        id="options-not-table",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD_CONFIGS)
def test_bad_config_is_reported_exactly(text: str, expected: list[str]) -> None:
    with pytest.raises(ConfigErrors) as info:
        Config.from_dict(tomllib.loads(text), path=P)
    assert [str(e) for e in info.value.errors] == expected


def test_error_carries_structure() -> None:
    with pytest.raises(ConfigErrors) as info:
        Config.from_dict(tomllib.loads('[[listen]]\nname="web"\nhandler="echo"\nport=-1'), path=P)
    (error,) = info.value.errors
    assert (error.path, error.listener, error.field, error.got) == (
        P,
        "listen[0] 'web'",
        "port",
        -1,
    )
    assert "integer" in error.expected


def test_missing_file_names_the_file(tmp_path) -> None:
    missing = str(tmp_path / "nope.toml")
    with pytest.raises(ConfigErrors, match=r"nope\.toml: file not found"):
        Config.from_toml(missing)


def test_invalid_toml_names_the_file_and_position(tmp_path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[[listen]\nhandler = 'echo'\n")
    with pytest.raises(ConfigErrors) as info:
        Config.from_toml(str(path))
    assert str(info.value).startswith(f"{path}: is not valid TOML: ")
    assert "line 1" in str(info.value)


def test_full_example_loads(tmp_path) -> None:
    path = tmp_path / "ok.toml"
    path.write_text(
        """
[reactor]
log_level = "debug"
shutdown_timeout = 2
threads = 3
plugins = ["some.module"]

[[listen]]
name = "main"
handler = "echo"
host = "::1"
port = 0
backlog = 16
max_connections = 5
idle_timeout = 0
[listen.options]
"""
    )
    config = Config.from_toml(str(path))
    assert config.reactor == reactorkit.config.ReactorConfig(
        log_level="debug", shutdown_timeout=2.0, threads=3, plugins=("some.module",)
    )
    (listen,) = config.listeners
    assert (listen.name, listen.host, listen.port, listen.backlog) == ("main", "::1", 0, 16)
    assert (listen.max_connections, listen.idle_timeout) == (5, 0.0)


def test_default_config_has_the_four_builtin_listeners() -> None:
    config = Config.default()
    assert config.is_default
    assert [(lc.handler, lc.host, lc.port) for lc in config.listeners] == [
        ("echo", "127.0.0.1", 7007),
        ("chat", "127.0.0.1", 7070),
        ("line-command", "127.0.0.1", 7071),
        ("http-lite", "127.0.0.1", 8080),
    ]


# -- options against handler types -----------------------------------------


@attrs.frozen(kw_only=True)
class DemoOptions:
    rate: float = attrs.field(default=5.0, validator=attrs.validators.gt(0))
    greeting: str = "hi"
    verbose: bool = False
    commands: list[str] = attrs.field(factory=list)
    mode: str | None = None


class _Handler(reactorkit.Handler):
    pass


def _types(**kinds: HandlerType) -> dict[str, Contribution]:
    return {name: Contribution(kind, "demo", "demo-dist 1.0") for name, kind in kinds.items()}


DEMO = _types(
    demo=HandlerType(name="demo", handler=_Handler, options=DemoOptions, default_port=9000)
)


def _plan(text: str, types: dict[str, Contribution] = DEMO) -> list[object]:
    return plan_listeners(Config.from_dict(tomllib.loads(text), path=P), types)


def test_options_are_built_and_converted() -> None:
    (plan,) = _plan('[[listen]]\nhandler="demo"\n[listen.options]\nrate=2\ncommands=["a"]')
    assert plan.options == DemoOptions(rate=2.0, commands=["a"])  # type: ignore[attr-defined]
    assert plan.port == 9000  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (
            "rat=2",
            f"{P}: listen[0] 'demo': options.rat is not a known option (known: "
            "commands, greeting, mode, rate, verbose) (did you mean 'rate'?)",
        ),
        ("rate='fast'", f"{P}: listen[0] 'demo': options.rate must be a number, got 'fast'"),
        ("verbose=1", f"{P}: listen[0] 'demo': options.verbose must be true or false, got 1"),
        (
            "commands=[1]",
            f"{P}: listen[0] 'demo': options.commands must be a list of strings, got [1]",
        ),
        ("mode=3", f"{P}: listen[0] 'demo': options.mode must be a string, got 3"),
        ("rate=0", f"{P}: listen[0] 'demo': options.rate must be > 0: 0.0"),
    ],
)
def test_bad_options_are_reported_exactly(options: str, expected: str) -> None:
    with pytest.raises(ConfigErrors) as info:
        _plan(f'[[listen]]\nhandler="demo"\n[listen.options]\n{options}')
    assert [str(e) for e in info.value.errors] == [expected]


def test_unknown_handler_gets_did_you_mean() -> None:
    with pytest.raises(ConfigErrors) as info:
        _plan('[[listen]]\nhandler="dmeo"')
    assert str(info.value) == (
        f"{P}: listen[0] 'dmeo': handler must name an installed handler type (demo), "
        "got 'dmeo' (did you mean 'demo'?)"
    )


def test_handler_without_default_port_needs_a_port() -> None:
    types = _types(bare=HandlerType(name="bare", handler=_Handler))
    with pytest.raises(ConfigErrors) as info:
        _plan('[[listen]]\nhandler="bare"', types)
    assert str(info.value) == (
        f"{P}: listen[0] 'bare': port is required (handler type 'bare' has no default port)"
    )


def test_options_for_a_handler_without_options() -> None:
    types = _types(bare=HandlerType(name="bare", handler=_Handler))
    with pytest.raises(ConfigErrors) as info:
        _plan('[[listen]]\nhandler="bare"\nport=1\n[listen.options]\nx=1', types)
    assert str(info.value) == (
        f"{P}: listen[0] 'bare': options.x is not a known option: this handler type takes "
        "no options"
    )


def test_every_listener_error_is_collected() -> None:
    with pytest.raises(ConfigErrors) as info:
        _plan(
            '[[listen]]\nhandler="nope"\n[[listen]]\nname="b"\nhandler="demo"\n'
            "[listen.options]\nrate=-1"
        )
    assert len(info.value.errors) == 2


def test_missing_handlers_are_skipped_for_the_default_config(caplog) -> None:
    config = Config.default()
    plans = plan_listeners(
        config, _types(echo=HandlerType(name="echo", handler=_Handler)), skip_missing=True
    )
    assert [p.config.handler for p in plans] == ["echo"]
    assert "handler 'chat' is not installed; skipping it" in caplog.text


def test_build_options_standalone_raises() -> None:
    assert build_options(DemoOptions, {"greeting": "yo"}) == DemoOptions(greeting="yo")
    with pytest.raises(ConfigErrors):
        build_options(DemoOptions, {"greeting": 5})
