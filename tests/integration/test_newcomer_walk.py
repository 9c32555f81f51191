"""A newcomer's path on a clean machine: README, tutorial, new-plugin (every kind), tests, run.

Every command comes verbatim from the Markdown (see ``docwalk``) and runs in
a fresh virtualenv that has nothing but what those commands install; pip
may use its cache and the package index, as a newcomer's would.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from reactorkit.scaffold import KINDS
from tests.integration.docwalk import (
    Walk,
    blocks,
    clean_venv,
    copy_checkout,
    fixed_ports_lock,
    long_test,
)

ROOT = Path(__file__).resolve().parents[2]
NEW_PLUGIN = re.compile(r"^reactorkit new-plugin (\S+)(?: --kind (\S+))?$", re.MULTILINE)


def imports(env: dict[str, str], module: str) -> bool:
    venv_python = Path(env["VIRTUAL_ENV"]) / "bin" / "python"
    # cwd: not this checkout, whose reactorkit/ python -c would import.
    result = subprocess.run(
        [str(venv_python), "-c", f"import {module}"],
        capture_output=True,
        env=env,
        cwd=Path(env["VIRTUAL_ENV"]),
        timeout=60,
    )
    return result.returncode == 0


@pytest.mark.slow
def test_readme_then_tutorial_then_every_kind_of_plugin_in_a_clean_venv(tmp_path: Path) -> None:
    long_test()
    checkout = copy_checkout(ROOT, tmp_path / "reactorkit")
    env = clean_venv(tmp_path / "venv")
    assert not imports(env, "reactorkit")
    work = tmp_path / "work"  # the tutorial's empty directory
    work.mkdir()
    walk = Walk(env)
    tutorial = (checkout / "docs" / "tutorial.md").read_text()
    with fixed_ports_lock():
        # The README: install from the checkout, serve the default config, try each handler.
        # Its other quick-start command, `tox`, is this test suite itself.
        readme = blocks((checkout / "README.md").read_text(), sections=("Quick start", "Try it"))
        walk.page([b for b in readme if "tox" not in b.body], checkout)
        assert imports(env, "reactorkit")
        assert not imports(env, "pytest"), "pytest must come from the plugin's [test] extra"

        walk.page(blocks(tutorial), work)
        assert "from reactorkit-quote 0.1.0 (plugin 'quote')" in walk.output("reactorkit plugins")
        assert re.search(r"\b2 passed\b", walk.output("python -m pytest reactorkit-quote"))

        scaffolded = [(m.group(1), m.group(2) or "handler") for m in NEW_PLUGIN.finditer(tutorial)]
        others = [(name, kind) for name, kind in scaffolded if name != "quote"]
        assert sorted(kind for _, kind in others) == sorted(KINDS)
        for name, _ in others:
            folder = work / f"reactorkit-{name}"
            walk.page(blocks((folder / "README.md").read_text()), folder)
            tests = walk.output("python -m pytest")
            assert re.search(r"\b\d+ passed\b", tests), tests
            assert "failed" not in tests, tests
            listed = walk.output("reactorkit plugins")
            assert f"{name} (reactorkit_{name}, reactorkit-{name} 0.1.0)" in listed
