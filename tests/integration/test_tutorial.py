"""docs/tutorial.md: what the walk runs is there, and every command runs in the tutorial's venv.

The commands themselves run, verbatim and in a clean virtualenv, in
``test_newcomer_walk.py``; these fast checks keep the page walkable.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from tests.integration.docwalk import blocks

ROOT = Path(__file__).resolve().parents[2]
TUTORIAL = ROOT / "docs" / "tutorial.md"
#: What a newcomer has after installing reactorkit into a venv: nothing else.
PROGRAMS = {"reactorkit", "pip", "python", "curl", "printf", "echo"}


def commands(text: str) -> list[str]:
    return [
        command.strip()
        for block in blocks(text)
        if block.lang == "sh"
        for line in block.body.splitlines()
        for command in line.split(" && ")
        if command.strip()
    ]


def test_the_tutorial_has_commands_files_and_expected_output() -> None:
    page = blocks(TUTORIAL.read_text())
    assert [b.file for b in page if b.file] == [
        "reactorkit-quote/src/reactorkit_quote/__init__.py",
        "reactorkit-quote/tests/test_plugin.py",
        "quote.toml",
    ]
    assert any(b.lang == "text" for b in page)
    assert "reactorkit run quote.toml" in commands(TUTORIAL.read_text())


def test_every_command_uses_only_what_the_venv_has() -> None:
    for page in (TUTORIAL, ROOT / "README.md"):
        for command in commands(page.read_text()):
            for part in command.split(" | "):
                program = shlex.split(part)[0]
                assert program in PROGRAMS | {"tox"}, f"{page.name}: `{command}` runs {program}"


def test_tests_run_with_the_venvs_pytest_after_installing_the_test_extra() -> None:
    text = TUTORIAL.read_text()
    assert "pip install -e './reactorkit-quote[test]'" in commands(text)
    assert "python -m pytest reactorkit-quote" in commands(text)
    assert not re.search(r"^pytest ", text, re.MULTILINE)


def test_no_page_a_newcomer_reads_relies_on_nc_or_on_pypi() -> None:
    pages = [
        ROOT / "README.md",
        *(ROOT / "docs").rglob("*.md"),
        *(ROOT / "plugins").glob("*/README.md"),
    ]
    assert len(pages) > 10
    for page in pages:
        text = page.read_text()
        # nc differs between machines (-q1 is Debian's netcat-openbsd only):
        # commands use reactorkit connect, and nc is at most named as an alternative.
        assert not re.search(r"\bnc (-\S+ )*[\d\[]", text), page
        assert "pip install reactorkit`" not in text, page
        assert "pip install --no-cache-dir reactorkit\n" not in text, page
