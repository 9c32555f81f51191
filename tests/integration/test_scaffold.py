"""reactorkit new-plugin: refuses bad input; every kind installs, passes its tests, is listed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from reactorkit.scaffold import KINDS, create_plugin
from tests.helpers import reactorkit_cli


@pytest.mark.parametrize("name", ["Bad", "9lives", "two--dashes", "trailing-", "sp ace", "a_b", ""])
def test_invalid_names_are_refused(tmp_path: Path, name: str) -> None:
    result = reactorkit_cli("new-plugin", name, "--dir", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.startswith(f"reactorkit: error: invalid plugin name {name!r}")
    assert list(tmp_path.iterdir()) == []


def test_an_existing_folder_is_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "reactorkit-taken").mkdir()
    (tmp_path / "reactorkit-taken" / "keep.txt").write_text("mine")
    result = reactorkit_cli("new-plugin", "taken", "--dir", str(tmp_path))
    assert result.returncode == 1
    assert "already exists; refusing to overwrite it" in result.stderr
    assert (tmp_path / "reactorkit-taken" / "keep.txt").read_text() == "mine"


def test_unknown_kind_is_refused(tmp_path: Path) -> None:
    result = reactorkit_cli("new-plugin", "x", "--dir", str(tmp_path), "--kind", "magic")
    assert result.returncode == 2
    assert "invalid choice: 'magic'" in result.stderr


@pytest.mark.parametrize("kind", KINDS)
def test_layout(tmp_path: Path, kind: str) -> None:
    folder = Path(create_plugin("demo", directory=str(tmp_path), kind=kind))
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == [
        "README.md",
        "pyproject.toml",
        "src/reactorkit_demo/__init__.py",
        "tests/test_plugin.py",
    ]
    pyproject = (folder / "pyproject.toml").read_text()
    assert '[project.entry-points.reactorkit]\ndemo = "reactorkit_demo"' in pyproject
    compile((folder / "src/reactorkit_demo/__init__.py").read_text(), "plugin", "exec")
    compile((folder / "tests/test_plugin.py").read_text(), "tests", "exec")


def overlay_venv(root: Path) -> dict[str, str]:
    """A venv at ``root`` that sees this interpreter's packages; returns an env using it.

    Plugins installed in it (``pip install -e``) never touch the environment
    the suite runs in, which other test runs may share. ``pip``, ``pytest``
    and ``reactorkit`` on its PATH run with the venv's interpreter.
    """
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # addsitedir (not a bare path) so the outer .pth files (editable installs) apply too;
    # it runs after the venv's own site-packages, so the venv's installs come first.
    outer = [p for p in sys.path if p.endswith("-packages")]
    (Path(purelib) / "_outer_site.pth").write_text(
        "".join(f"import site; site.addsitedir({p!r})\n" for p in outer)
    )
    for script, module in (("pip", "pip"), ("pytest", "pytest"), ("reactorkit", "reactorkit")):
        path = root / "bin" / script
        path.write_text(f'#!/bin/sh\nexec "{python}" -m {module} "$@"\n')
        path.chmod(0o755)
    env = dict(
        os.environ,
        PATH=f"{root / 'bin'}{os.pathsep}{os.environ['PATH']}",
        VIRTUAL_ENV=str(root),
        # Build with the hatchling already installed, offline.
        PIP_NO_BUILD_ISOLATION="0",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    env.pop("PYTHONPATH", None)
    return env


@pytest.fixture
def scaffolded(tmp_path: Path) -> list[Path]:
    folders = []
    for kind in KINDS:
        result = reactorkit_cli("new-plugin", f"sc-{kind}", "--dir", str(tmp_path), "--kind", kind)
        assert result.returncode == 0, result.stderr
        folders.append(tmp_path / f"reactorkit-sc-{kind}")
    return folders


def test_every_kind_installs_passes_its_tests_and_is_listed(
    scaffolded: list[Path], tmp_path: Path
) -> None:
    env = overlay_venv(tmp_path / "venv")
    install = subprocess.run(
        ["pip", "install", "-q", "--no-deps", *(arg for f in scaffolded for arg in ("-e", str(f)))],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr
    for folder in scaffolded:
        tests = subprocess.run(
            ["pytest", "-q", "-p", "no:cacheprovider", str(folder / "tests")],
            capture_output=True,
            text=True,
            cwd=folder,
            env=env,
            timeout=120,
        )
        assert tests.returncode == 0, tests.stdout + tests.stderr
    listed = subprocess.run(
        ["reactorkit", "plugins", "--check"], capture_output=True, text=True, env=env, timeout=60
    )
    assert listed.returncode == 0, listed.stdout + listed.stderr
    for kind in KINDS:
        assert (
            f"sc-{kind} (reactorkit_sc_{kind.replace('-', '_')}, reactorkit-sc-{kind} 0.1.0)"
            in listed.stdout
        )
    assert re.search(
        r"^  sc-handler +upper-cases every line it receives", listed.stdout, re.MULTILINE
    )
    # Nothing leaked into the environment this suite runs in.
    assert "reactorkit-sc-handler" not in reactorkit_cli("plugins").stdout
