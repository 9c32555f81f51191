"""Fixtures for the project's own tests."""

from __future__ import annotations

import gc
import importlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import DistMaker, ServerProcess, write_distribution
from tests.redis_server import own_redis_server, redis_server  # noqa: F401 (fixtures)


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


@pytest.fixture
def site(tmp_path: Path) -> Iterator[DistMaker]:
    """A temporary site directory on sys.path; distributions written there are installed."""
    sys.path.insert(0, str(tmp_path))
    importlib.invalidate_caches()
    written: list[str] = []

    def make(
        dist: str, version: str, modules: dict[str, str], entry_points: dict[str, str]
    ) -> Path:
        written.extend(modules)
        return write_distribution(tmp_path, dist, version, modules, entry_points)

    yield make
    sys.path.remove(str(tmp_path))
    for name in written:
        sys.modules.pop(name, None)
    importlib.invalidate_caches()


@pytest.fixture(autouse=True)
def _collect_unreachable_reactors() -> Iterator[None]:
    """Keep the test process's descriptors low.

    A FakeConnection's own reactor (an epoll fd and a socketpair) sits in a
    reference cycle with its handler and is closed when the cycle is
    collected; after hundreds of hypothesis examples that can take a while.
    """
    yield
    if os.path.isdir("/proc/self/fd") and len(os.listdir("/proc/self/fd")) > 256:
        gc.collect()
