"""Config: ``[reactor] log_format`` and ``control_socket`` (issue 16)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from reactorkit import Config, ConfigErrors

LISTEN = '\n[[listen]]\nhandler = "echo"\nport = 0\n'


def load(reactor: str) -> Config:
    return Config.from_dict(_toml(reactor), path="r.toml")


def _toml(reactor: str) -> dict[str, object]:
    return tomllib.loads("[reactor]\n" + reactor + LISTEN)


def errors(reactor: str) -> list[str]:
    with pytest.raises(ConfigErrors) as info:
        load(reactor)
    return [str(e) for e in info.value.errors]


def test_defaults_are_text_logs_and_no_control_socket() -> None:
    config = load("")
    assert config.reactor.log_format == "text"
    assert config.reactor.control_socket is None


def test_json_and_a_control_socket_load(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    config = load(f'log_format = "json"\ncontrol_socket = "{path}"')
    assert config.reactor.log_format == "json"
    assert config.reactor.control_socket == str(path)


def test_unknown_log_format_is_named() -> None:
    assert errors('log_format = "logfmt"') == [
        "r.toml: reactor.log_format must be one of text, json, got 'logfmt'"
    ]


def test_control_socket_in_a_missing_directory_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    (message,) = errors(f'control_socket = "{missing}/c.sock"')
    assert message.startswith("r.toml: reactor.control_socket must be in an existing directory")


def test_control_socket_must_be_a_path() -> None:
    assert errors("control_socket = 7") == [
        "r.toml: reactor.control_socket must be a filesystem path (string), got 7"
    ]


def test_control_socket_over_a_regular_file_is_refused(tmp_path: Path) -> None:
    existing = tmp_path / "file"
    existing.write_text("not a socket")
    (message,) = errors(f'control_socket = "{existing}"')
    assert "must not name an existing file that is not a socket" in message
