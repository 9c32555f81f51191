"""python -m build makes the sdist and, from it, the wheel; the wheel works in a clean venv."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import reactorkit
from tests.integration.docwalk import clean_venv, copy_checkout, long_test

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_built_wheel_installs_into_a_clean_venv_and_checks(tmp_path: Path) -> None:
    long_test()
    checkout = copy_checkout(ROOT, tmp_path / "reactorkit")
    dist = tmp_path / "dist"
    # Without arguments build makes the sdist, then the wheel from the sdist:
    # both are checked at once.
    built = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(dist), str(checkout)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    version = reactorkit.__version__
    sdist = dist / f"reactorkit-{version}.tar.gz"
    wheel = dist / f"reactorkit-{version}-py3-none-any.whl"
    assert sorted(p.name for p in dist.iterdir()) == [wheel.name, sdist.name]
    # The name docs/operations.md's Dockerfile copies.
    assert f"dist/{wheel.name}" in (ROOT / "docs" / "operations.md").read_text()
    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
    assert "reactorkit/client.py" in names
    assert "reactorkit/testing/pytest_plugin.py" in names
    assert not any(name.startswith(("tests/", "docs/")) for name in names)
    with tarfile.open(sdist) as tar:
        members = tar.getnames()
    assert f"reactorkit-{version}/docs/tutorial.md" in members

    env = clean_venv(tmp_path / "venv")
    bin_dir = tmp_path / "venv" / "bin"
    install = subprocess.run(
        [str(bin_dir / "pip"), "install", str(wheel)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    checked = subprocess.run(
        [str(bin_dir / "reactorkit"), "check"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.endswith("<default config>: ok (4 listeners)\n")
    listed = subprocess.run(
        [str(bin_dir / "reactorkit"), "plugins", "--check"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert re.search(rf"echo \(reactorkit\.handlers\.echo, reactorkit {version}\)", listed.stdout)
