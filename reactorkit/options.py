"""Checking TOML values against annotated types: handler options, and the errors found.

A handler type's options class is an ``attrs`` class whose field annotations
(``bool``, ``int``, ``float``, ``str``, ``list[str]``, ``Literal[...]``,
``X | None``) say what ``[listen.options]`` may hold. :func:`build_options`
checks every value against them, reports unknown keys with a "did you
mean", and then lets the class's own validators run. :class:`Problems`
collects :class:`~reactorkit.errors.ConfigError` s so a whole file can be
reported at once.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from reactorkit.errors import ConfigError, ConfigErrors

__all__ = ["Problems", "build_options", "did_you_mean", "is_int", "is_number"]


def build_options(
    options_cls: type,
    table: Mapping[str, Any],
    problems: Problems | None = None,
    label: str | None = None,
) -> Any:
    """Build a handler type's options object from a ``[listen.options]`` table.

    Unknown keys get a "did you mean"; values are checked against the
    annotated field types, then the class's own attrs validators run.

    Returns:
        The options object, or None when problems were recorded.

    Raises:
        ConfigErrors: when ``problems`` is None and the table is invalid.
    """
    own = problems if problems is not None else Problems("<options>")
    before = len(own.errors)
    fields = {f.name: f for f in attrs.fields(options_cls)}
    hints = typing.get_type_hints(options_cls)
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        field = fields.get(key)
        if field is None or not field.init:
            if fields:
                own.unknown(label, f"options.{key}", sorted(fields), what="option")
            else:
                own.add(
                    label,
                    f"options.{key}",
                    "is not a known option: this handler type takes no options",
                    None,
                    show_got=False,
                )
            continue
        ok, converted, expected = _structure(value, hints.get(field.name, Any))
        if not ok:
            own.add(label, f"options.{key}", f"must be {expected}", value)
            continue
        kwargs[field.name] = converted
    for name, field in fields.items():
        missing = field.default is attrs.NOTHING and name not in kwargs and field.init
        if missing and not any(e.field == f"options.{name}" for e in own.errors[before:]):
            own.add(label, f"options.{name}", "is required", None, show_got=False)
    if len(own.errors) > before:
        if problems is None:
            own.raise_if_any()
        return None
    try:
        return options_cls(**kwargs)
    except (ValueError, TypeError) as exc:
        message = exc.args[0] if exc.args else str(exc)
        text = str(message)
        field = _field_in_message(text, fields)
        if field and text.startswith(f"'{field}' "):
            text = text[len(field) + 3 :]  # attrs validators start with the field's name
        own.add(label, f"options.{field}" if field else "options", text, None, show_got=False)
        if problems is None:
            own.raise_if_any()
        return None


class Problems:
    """The problems found in one file, each a ConfigError."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.errors: list[ConfigError] = []

    def add(
        self,
        listener: str | None,
        field: str | None,
        expected: str,
        got: Any,
        *,
        hint: str | None = None,
        show_got: bool = True,
    ) -> None:
        self.errors.append(
            ConfigError(
                path=self.path,
                listener=listener,
                field=field,
                expected=expected,
                got=got,
                hint=hint,
                show_got=show_got,
            )
        )

    def unknown(self, listener: str | None, key: str, known: Sequence[str], *, what: str) -> None:
        bare = key.rsplit(".", 1)[-1]
        self.add(
            listener,
            key,
            f"is not a known {what} (known: {', '.join(known)})",
            None,
            hint=did_you_mean(bare, known),
            show_got=False,
        )

    def raise_if_any(self) -> None:
        if self.errors:
            raise ConfigErrors(self.errors)


def did_you_mean(word: str, known: Sequence[str]) -> str | None:
    """A 'did you mean ...?' hint for the closest known word, or None."""
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else None


def _field_in_message(message: str, fields: Mapping[str, Any]) -> str | None:
    for name in fields:
        if f"'{name}'" in message:
            return name
    return None


def is_int(value: Any) -> bool:
    """An int that is not a bool (TOML's true is not 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """An int or float that is not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _structure(value: Any, hint: Any) -> tuple[bool, Any, str]:
    """Check ``value`` against a type annotation: (ok, converted, expected)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return True, value, "anything"
    if origin in (typing.Union, types.UnionType):
        alternatives: list[str] = []
        for arg in args:
            if arg is type(None):
                continue
            ok, converted, exp = _structure(value, arg)
            if ok:
                return True, converted, exp
            alternatives.append(exp)
        return False, None, " or ".join(alternatives)
    if origin is typing.Literal:
        shown = ", ".join(repr(a) for a in args)
        return (value in args and type(value) in {type(a) for a in args}), value, f"one of {shown}"
    if hint is bool:
        return isinstance(value, bool), value, "true or false"
    if hint is int:
        return is_int(value), value, "an integer"
    if hint is float:
        return is_number(value), float(value) if is_number(value) else None, "a number"
    if hint is str:
        return isinstance(value, str), value, "a string"
    if origin in (list, tuple, Sequence) and args:
        item = args[0]
        ok_list = isinstance(value, list)
        converted_items = []
        _, _, item_expected = _structure(None, item)
        if ok_list:
            for element in value:
                ok, converted, _ = _structure(element, item)
                if not ok:
                    ok_list = False
                    break
                converted_items.append(converted)
        shown = f"a list of {_plural(item_expected)}"
        result: Any = tuple(converted_items) if origin is not list else converted_items
        return ok_list, result if ok_list else None, shown
    if origin in (dict, Mapping) and len(args) == 2:
        ok = isinstance(value, dict) and all(_structure(v, args[1])[0] for v in value.values())
        return ok, dict(value) if ok else None, "a table"
    if isinstance(hint, type):
        return isinstance(value, hint), value, f"a {hint.__name__}"
    return True, value, "anything"


def _plural(expected: str) -> str:
    for article in ("an ", "a "):
        if expected.startswith(article):
            return expected[len(article) :] + "s"
    return expected
