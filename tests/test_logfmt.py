"""reactorkit.logfmt: the JSON and text line formats."""

from __future__ import annotations

import json
import logging
import sys

from reactorkit.logfmt import JsonFormatter, TextFormatter


def record(
    msg: str = "hello %s", args: tuple[object, ...] = ("world",), **extra: object
) -> logging.LogRecord:
    made = logging.LogRecord("reactorkit.test", logging.WARNING, __file__, 1, msg, args, None)
    for key, value in extra.items():
        setattr(made, key, value)
    return made


def test_json_line_has_the_fields_and_the_extras() -> None:
    line = JsonFormatter().format(record(conn_id=7, listener="web", peer="1.2.3.4:5", status=200))
    data = json.loads(line)
    assert data["level"] == "warning"
    assert data["logger"] == "reactorkit.test"
    assert data["msg"] == "hello world"
    assert data["ts"].endswith("Z")
    assert "T" in data["ts"]
    assert data["conn_id"] == 7
    assert data["listener"] == "web"
    assert data["peer"] == "1.2.3.4:5"
    assert data["status"] == 200
    assert "\n" not in line


def test_json_line_carries_the_traceback_and_survives_odd_values() -> None:
    try:
        raise ValueError("bad")
    except ValueError:
        made = record(thing=object())
        made.exc_info = sys.exc_info()
    data = json.loads(JsonFormatter().format(made))
    assert "ValueError: bad" in data["exc"]
    assert data["thing"].startswith("<object object")


def test_text_line_names_the_connection_nginx_style() -> None:
    formatter = TextFormatter("%(name)s: %(message)s")
    assert formatter.format(record(conn_id=12)) == "reactorkit.test: *12 hello world"
    assert formatter.format(record()) == "reactorkit.test: hello world"


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text")


def strict_json(line: str) -> dict[str, object]:
    """json.loads that refuses NaN and Infinity, as jq, Go and log shippers do."""

    def refuse(name: str) -> object:
        raise ValueError(f"not JSON: {name}")

    assert "\n" not in line
    return json.loads(line, parse_constant=refuse)  # type: ignore[no-any-return]


def test_json_line_survives_what_a_careless_plugin_passes() -> None:
    cycle: list[object] = []
    cycle.append(cycle)
    formatter = JsonFormatter()
    cases = {
        "tuple keys": {"data": {(1, 2): 3}},
        "a cycle": {"data": cycle},
        "a failing __str__": {"data": Unprintable()},
        "NaN": {"data": float("nan")},
    }
    for name, extra in cases.items():
        data = strict_json(formatter.format(record("case %s", (name,), **extra)))
        assert data["msg"] == f"case {name}"
        assert isinstance(data["data"], str), name
    # A format string with too few arguments: the line still says what was logged.
    data = strict_json(formatter.format(record("%s and %s", ("one",), conn_id=5)))
    assert "%s and %s" in str(data["msg"])
    assert "one" in str(data["msg"])
    assert data["conn_id"] == 5


def test_json_extras_named_like_the_formatters_own_keys_are_kept_renamed() -> None:
    # A plugin's extra={"level": ..., "ts": ...} must neither replace the
    # record's own level and time nor vanish.
    line = JsonFormatter().format(record(level="deep", ts="then", pid="p", exc="mine"))
    data = json.loads(line)
    assert data["level"] == "warning"
    assert data["ts"].endswith("Z")
    assert data["extra_level"] == "deep"
    assert data["extra_ts"] == "then"
    assert data["extra_pid"] == "p"
    assert data["extra_exc"] == "mine"
    assert "exc" not in data  # no traceback: the key stays free
