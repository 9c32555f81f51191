"""Third-party discovery with real pip-installed distributions: a good and a broken plugin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers import reactorkit_cli

GOOD = '''
"""A good third-party plugin: one handler type."""

import reactorkit


class Shout(reactorkit.LineHandler):
    def line_received(self, line: bytes) -> None:
        self.connection.write(line.upper() + b"\\r\\n")


@reactorkit.hookimpl
def reactorkit_handler_types():
    return [reactorkit.HandlerType(name="shout", handler=Shout, description="shouts back")]
'''

BROKEN = '''
"""A broken third-party plugin: importing it fails."""

import reactorkit_no_such_module  # noqa: F401
'''

TYPO = '''
"""A plugin with a misspelt hook: pluggy's check_pending() rejects it."""

import reactorkit


@reactorkit.hookimpl
def reactorkit_handler_type():
    return []
'''


def write_project(root: Path, dist: str, module: str, source: str, version: str) -> Path:
    """A real source distribution folder (hatchling) with a ``reactorkit`` entry point."""
    folder = root / dist
    (folder / module).mkdir(parents=True)
    (folder / module / "__init__.py").write_text(textwrap.dedent(source))
    (folder / "pyproject.toml").write_text(
        textwrap.dedent(f"""\
            [build-system]
            requires = ["hatchling"]
            build-backend = "hatchling.build"

            [project]
            name = "{dist}"
            version = "{version}"

            [project.entry-points.reactorkit]
            {dist.removeprefix("reactorkit-")} = "{module}"
            """)
    )
    return folder


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pip installs the good and the broken plugin into a ``--target`` folder (never the env)."""
    root = tmp_path_factory.mktemp("discovery")
    good = write_project(root, "reactorkit-shout", "reactorkit_shout", GOOD, "2.3.4")
    broken = write_project(root, "reactorkit-broken", "reactorkit_broken", BROKEN, "0.0.1")
    typo = write_project(root, "reactorkit-typo", "reactorkit_typo", TYPO, "0.2.0")
    target = root / "site"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "--target",
            str(target),
            str(good),
            str(broken),
            str(typo),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return target


def with_site(site: Path) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, PYTHONPATH=path)


def test_the_good_plugin_is_listed_with_its_distribution_and_version(site: Path) -> None:
    result = reactorkit_cli("plugins", env=with_site(site))
    assert result.returncode == 0, result.stderr
    assert "shout (reactorkit_shout, reactorkit-shout 2.3.4)" in result.stdout
    assert "from reactorkit-shout 2.3.4 (plugin 'shout')" in result.stdout


def test_a_broken_plugin_is_reported_without_hiding_the_others(site: Path) -> None:
    result = reactorkit_cli("plugins", "--json", env=with_site(site))
    report = json.loads(result.stdout)
    types = {h["name"]: h for h in report["handler_types"]}
    assert types["shout"]["distribution"] == "reactorkit-shout 2.3.4"
    assert "echo" in types  # the built-ins are still there
    (error,) = (e for e in report["errors"] if e["name"] == "broken")
    assert error["value"] == "reactorkit_broken"
    assert error["distribution"] == "reactorkit-broken 0.0.1"
    assert "ModuleNotFoundError" in error["error"]
    assert "reactorkit_no_such_module" in error["error"]


def test_a_misspelt_hook_is_reported_and_the_plugin_blocked(site: Path) -> None:
    report = json.loads(reactorkit_cli("plugins", "--json", env=with_site(site)).stdout)
    (error,) = (e for e in report["errors"] if e["name"] == "typo")
    assert "reactorkit_handler_type" in error["error"]
    assert "typo" not in {p["name"] for p in report["plugins"]}
    assert "shout" in {h["name"] for h in report["handler_types"]}


def test_the_text_listing_names_the_broken_plugin_under_failed_to_load(site: Path) -> None:
    result = reactorkit_cli("plugins", env=with_site(site))
    assert result.returncode == 0
    failed = result.stdout.split("Failed to load:", 1)[1]
    assert "broken (reactorkit_broken, reactorkit-broken 0.0.1): ModuleNotFoundError" in failed


def test_check_exits_1_when_a_plugin_fails_to_load(site: Path) -> None:
    result = reactorkit_cli("plugins", "--check", env=with_site(site))
    assert result.returncode == 1, result.stdout + result.stderr


def test_check_exits_0_without_the_broken_plugin() -> None:
    result = reactorkit_cli("plugins", "--check")
    assert result.returncode == 0, result.stdout + result.stderr


def pip_install_target(target: Path, *projects: Path) -> None:
    result = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"),
            *("--disable-pip-version-check", "--target", str(target), *map(str, projects)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr


def test_an_installed_plugin_named_like_a_builtin_stops_run_check_and_plugins_check(
    tmp_path: Path,
) -> None:
    # Its entry point is `echo`, as `reactorkit new-plugin echo` would have made it.
    source = GOOD.replace('name="shout"', 'name="loud"')
    twin = write_project(tmp_path, "reactorkit-echo", "reactorkit_echo", source, "0.1.0")
    pip_install_target(tmp_path / "site", twin)
    env = with_site(tmp_path / "site")
    config = tmp_path / "echo.toml"
    config.write_text('[[listen]]\nhandler = "echo"\nport = 0\n')
    for args in (("check", str(config)), ("run", str(config)), ("plugins", "--check")):
        result = reactorkit_cli(*args, env=env)
        output = result.stdout + result.stderr
        assert result.returncode == 1, (args, output)
        assert "plugin name 'echo' is declared twice" in output, args
        assert "reactorkit-echo 0.1.0 (reactorkit_echo)" in output, args
