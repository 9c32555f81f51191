"""Config for workers and systemd: [reactor] workers, fd_name listeners, chat with workers."""

from __future__ import annotations

import os
import tomllib

import pytest

from reactorkit import Config, ConfigErrors

P = "r.toml"


def load(text: str) -> Config:
    return Config.from_dict(tomllib.loads(text), path=P)


def errors(text: str) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        load(text)
    return [str(e) for e in info.value.errors]


def test_workers_default_to_one() -> None:
    assert load('[[listen]]\nhandler="echo"').reactor.workers == 1


def test_workers_auto_is_the_cpus_this_process_may_use() -> None:
    config = load('[reactor]\nworkers="auto"\n[[listen]]\nhandler="echo"')
    assert config.reactor.workers == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("value", ["0", "1025", '"many"', "2.5"])
def test_bad_workers_are_reported_exactly(value: str) -> None:
    got = tomllib.loads(f"x={value}")["x"]
    assert errors(f'[reactor]\nworkers={value}\n[[listen]]\nhandler="echo"') == [
        f'{P}: reactor.workers must be an integer 1-1024 or "auto" (CPU count), got {got!r}'
    ]


def test_chat_with_workers_is_an_error_naming_the_listener() -> None:
    text = '[reactor]\nworkers=2\n[[listen]]\nname="lobby"\nhandler="chat"'
    assert errors(text) == [
        f"{P}: listen[0] 'lobby': handler cannot run with reactor.workers = 2: chat rooms "
        "live in one process and would split between the workers (users on different "
        "workers would never meet); use workers = 1, or set options.bus, got 'chat'"
    ]


def test_chat_with_a_bus_may_run_with_workers() -> None:
    text = '[reactor]\nworkers=2\n[[listen]]\nhandler="chat"\noptions={bus="redis://h"}'
    assert load(text).reactor.workers == 2


def test_with_workers_overrides_and_checks_chat_again() -> None:
    config = load('[[listen]]\nhandler="echo"\n[[listen]]\nhandler="chat"\nport=1')
    with pytest.raises(ConfigErrors) as info:
        config.with_workers(3)
    assert "cannot run with --workers = 3" in str(info.value)
    echo_only = load('[[listen]]\nhandler="echo"')
    assert echo_only.with_workers(3).reactor.workers == 3


def test_a_listener_may_name_a_systemd_socket() -> None:
    (listen,) = load('[[listen]]\nhandler="echo"\nfd_name="web"').listeners
    assert listen.fd_name == "web"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            'fd_name="web"\nport=80',
            "fd_name cannot be combined with host/port/path: the inherited socket is "
            "already bound, got 'web'",
        ),
        (
            'fd_name="a:b"',
            "fd_name must be the name of a socket systemd passes (FileDescriptorName=, "
            "no ':'), got 'a:b'",
        ),
        ("fd_name=3", "fd_name must be the name of a socket systemd passes"),
    ],
)
def test_bad_fd_names_are_reported(extra: str, expected: str) -> None:
    (error,) = errors(f'[[listen]]\nhandler="echo"\n{extra}')
    assert error.startswith(f"{P}: listen[0] 'echo': {expected}")


def test_two_listeners_on_one_systemd_socket_is_an_error() -> None:
    text = (
        '[[listen]]\nhandler="echo"\nfd_name="w"\n[[listen]]\nname="b"\nhandler="echo"\nfd_name="w"'
    )
    assert errors(text) == [
        f"{P}: listen[1] 'b': fd_name must be a free address: listen[0] 'echo' already "
        "listens on systemd socket 'w', got 'w'"
    ]


def test_from_text_is_what_a_worker_reads() -> None:
    config = Config.from_text('[reactor]\nworkers=2\n[[listen]]\nhandler="echo"', path=P)
    assert config.path == P
    assert config.reactor.workers == 2
    with pytest.raises(ConfigErrors, match="is not valid TOML"):
        Config.from_text("[[listen]", path=P)
