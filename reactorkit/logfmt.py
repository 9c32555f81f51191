"""Log line formats: ``[reactor] log_format = "text"`` (the default) or ``"json"``.

Every line about a connection carries the same three fields, passed by the
code that logs it as ``extra=connection_fields(connection)``
(:mod:`reactorkit.observe`): ``conn_id`` (a per-process counter),
``listener`` and ``peer``. The text format shows the id nginx-style, as
``*17`` in front of the message; the JSON format writes one object per line
with ``ts``, ``level``, ``logger``, ``msg``, ``pid`` and every extra field, so
one connection's life is ``jq 'select(.pid == 4242 and .conn_id == 17)'`` (with
workers, ids repeat between processes: the pid tells them apart).
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from typing import Any

__all__ = ["LOG_FORMATS", "JsonFormatter", "TextFormatter", "setup_logging"]

#: The values ``[reactor] log_format`` accepts.
LOG_FORMATS = ("text", "json")

_TEXT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_TEXT_PID = "%(asctime)s %(levelname)-7s [%(process)d] %(name)s: %(message)s"

# Every attribute a plain LogRecord has: what is left over came in `extra`.
_STANDARD = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)


class TextFormatter(logging.Formatter):
    """The classic line, with ``*CONN_ID`` before the message of a connection's lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        conn_id = getattr(record, "conn_id", None)
        if conn_id is not None:
            record.message = f"*{conn_id} {record.message}"
        return super().formatMessage(record)


# The keys the formatter writes itself (besides the ones set before the extras).
_OWN = frozenset({"exc", "stack"})


class JsonFormatter(logging.Formatter):
    """One JSON object per line.

    Keys: ``ts`` (UTC, ISO 8601 with milliseconds), ``level``, ``logger``,
    ``msg``, ``pid``, every ``extra`` field the caller passed (``conn_id``,
    ``listener``, ``peer``; the access log adds ``method``, ``path``,
    ``status``...), and ``exc`` with the traceback when there is one. An
    extra named like one of these keys is kept as ``extra_<name>``.
    Values JSON cannot hold are written as their ``str()``. It never raises:
    a careless call (an extra with tuple keys, a cycle or NaN; too few
    arguments for the format) still gives one line of strict JSON rather
    than logging's multi-line "--- Logging error ---" report on stderr.
    """

    def format(self, record: logging.LogRecord) -> str:
        """Format ``record`` as one line of JSON."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        try:
            message = record.getMessage()
        except Exception:  # "%s %s" with one argument: say what was logged
            message = f"{_text(record.msg)} (bad log arguments: {_text(record.args)})"
        out: dict[str, Any] = {
            "ts": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": message,
            "pid": record.process,
        }
        for key, value in vars(record).items():
            if key in _STANDARD:
                continue
            while key in out or key in _OWN:  # an extra named like our own keys is kept, renamed
                key = f"extra_{key}"
            out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        try:
            return json.dumps(out, default=_text, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError, RecursionError):  # tuple keys, a cycle, NaN
            return json.dumps({k: _plain(v) for k, v in out.items()}, ensure_ascii=False)


def _text(value: Any) -> str:
    """``str(value)``, or a placeholder when its ``__str__`` raises."""
    try:
        return str(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"


def _plain(value: Any) -> Any:
    """``value`` if JSON holds it as is (finite numbers, strings, null), else its text."""
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, int) and value.bit_length() <= 64:  # huge ints have no str() either
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    return _text(value)


def setup_logging(level: str, log_format: str = "text", *, pid: bool = False) -> None:
    """Log to stderr at ``level`` in ``log_format`` (replacing any earlier setup).

    Args:
        level: ``debug``, ``info``, ``warning`` or ``error``.
        log_format: ``text`` or ``json``.
        pid: put the process id in text lines (supervisor and workers).
    """
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter(_TEXT_PID if pid else _TEXT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
