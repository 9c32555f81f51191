"""docs/tutorial.md, run for real: every shell command and every file it shows."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import pytest

from tests.helpers import ServerProcess
from tests.integration.test_scaffold import overlay_venv

TUTORIAL = Path(__file__).resolve().parents[2] / "docs" / "tutorial.md"
FENCE = re.compile(r"^```(\w+)(?: file=(\S+))?\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def steps() -> list[tuple[str, str | None, str]]:
    return [(m.group(1), m.group(2), m.group(3)) for m in FENCE.finditer(TUTORIAL.read_text())]


def test_the_tutorial_has_commands_and_files() -> None:
    kinds = [(lang, file) for lang, file, _ in steps()]
    assert ("sh", None) in kinds
    assert any(file for _, file in kinds)


@pytest.mark.skipif(
    shutil.which("nc") is None, reason="nc is not installed (.ci/run installs netcat-openbsd)"
)
def test_every_tutorial_command_works(tmp_path: Path) -> None:
    # A throwaway venv over the suite's env: `pip install` in the tutorial lands there.
    venv = tmp_path / ".venv"
    env = overlay_venv(venv)
    server: ServerProcess | None = None
    try:
        for lang, file, body in steps():
            if file is not None:
                target = tmp_path / file
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(body)
                continue
            if lang != "sh":
                continue
            for command in body.strip().splitlines():
                if command.startswith("reactorkit run "):
                    # ServerProcess runs `sys.executable -m reactorkit`: the venv's python here.
                    with mock.patch.object(sys, "executable", str(venv / "bin" / "python")):
                        server = ServerProcess(command.split()[1:], env=env, cwd=str(tmp_path))
                    server.wait_serving(1)
                    continue
                started = time.monotonic()
                result = subprocess.run(
                    command,
                    shell=True,
                    cwd=tmp_path,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=180,
                    input="" if command.startswith("nc ") else None,
                )
                assert result.returncode == 0, (
                    f"`{command}` failed ({time.monotonic() - started:.1f}s):\n"
                    f"{result.stdout}\n{result.stderr}"
                )
                if command == "reactorkit plugins":
                    assert "from reactorkit-quote 0.1.0 (plugin 'quote')" in result.stdout
                if command.startswith("nc "):
                    assert result.stdout.strip() == "Now is better than never."
                if command.startswith("pytest "):
                    assert "2 passed" in result.stdout
        assert server is not None, "the tutorial never runs the server"
        code, _ = server.terminate(signal.SIGINT)
        assert code == 0
    finally:
        if server is not None:
            server.kill()
