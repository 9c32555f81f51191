"""Fixtures for the project's own tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import ServerProcess


@pytest.fixture
def run_server() -> Iterator[Any]:
    """Start ``reactorkit run ARGS`` subprocesses; all are killed in teardown."""
    started: list[ServerProcess] = []

    def start(*args: str, env: dict[str, str] | None = None) -> ServerProcess:
        proc = ServerProcess(list(args), env=env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()
