"""bench/run.py names each external tool it lacks, with how to install it, before running."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[1] / "bench" / "run.py"


@pytest.mark.parametrize(
    ("what", "tools"),
    [
        ("http", ["taskset", "gcc", "wrk"]),
        ("echo", ["taskset", "gcc"]),
        ("all", ["taskset", "gcc", "wrk"]),
    ],
)
def test_missing_tools_are_named_with_how_to_install_them(
    tmp_path: Path, what: str, tools: list[str]
) -> None:
    result = subprocess.run(
        [sys.executable, str(RUN), what, "--seconds", "0.1"],
        capture_output=True,
        text=True,
        env={"PATH": str(tmp_path)},  # an empty folder: no tool is found
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert [line.split(":")[0] for line in lines[:-1]] == ["bench"] * len(tools)
    assert [line.split()[1] for line in lines[:-1]] == [f"{tool}:" for tool in tools]
    assert all("not found on PATH; install it: apt-get install" in line for line in lines[:-1])
    assert lines[-1] == f"bench: cannot run {what!r} without them"
    assert not (tmp_path / "build").exists()
