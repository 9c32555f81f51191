"""reactorkit new-plugin: refuses bad, taken or misplaced names; its files say how to use it."""

from __future__ import annotations

import re
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


@pytest.mark.parametrize(
    ("name", "owner"),
    [
        ("echo", "the handler type 'echo' of plugin 'echo' (reactorkit "),
        ("reactorkit-chat", "the handler type 'chat' of plugin 'chat' (reactorkit "),
        ("healthz", "the plugin 'healthz' from reactorkit "),
    ],
)
def test_a_name_already_installed_is_refused(tmp_path: Path, name: str, owner: str) -> None:
    result = reactorkit_cli("new-plugin", name, "--dir", str(tmp_path))
    assert result.returncode == 1
    bare = name.removeprefix("reactorkit-")
    assert result.stderr.startswith(f"reactorkit: error: plugin name {bare!r} is taken by {owner}")
    assert "choose another one" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "owner"),
    [
        ("help", "the line command 'HELP' of plugin 'line-command' (reactorkit "),
        ("ping", "the line command 'PING' of plugin 'line-command' (reactorkit "),
    ],
)
def test_a_line_commands_plugin_whose_command_is_installed_is_refused(
    tmp_path: Path, name: str, owner: str
) -> None:
    # Installed, it would stop every line-command listener: HELP defined twice.
    result = reactorkit_cli("new-plugin", name, "--dir", str(tmp_path), "--kind", "line-commands")
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"reactorkit: error: plugin name {name!r} would add the command {name.upper()!r}, "
        f"which is taken by {owner}"
    )
    assert list(tmp_path.iterdir()) == []
    # As a protocol of its own the name is free: it adds no command.
    handler = reactorkit_cli("new-plugin", name, "--dir", str(tmp_path))
    assert handler.returncode == 0, handler.stderr


def test_a_missing_dir_is_refused_and_nothing_is_created(tmp_path: Path) -> None:
    missing = tmp_path / "a" / "missing" / "path"
    result = reactorkit_cli("new-plugin", "nowhere", "--dir", str(missing))
    assert result.returncode == 1
    assert result.stderr == (
        f"reactorkit: error: --dir {str(missing)!r} is not an existing directory; create it "
        f"first (mkdir -p {missing}): new-plugin only creates reactorkit-nowhere/\n"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kind", KINDS)
def test_the_next_hint_is_the_readmes_install_and_test_commands(tmp_path: Path, kind: str) -> None:
    result = reactorkit_cli("new-plugin", "hint", "--dir", str(tmp_path), "--kind", kind)
    assert result.returncode == 0, result.stderr
    folder = tmp_path / "reactorkit-hint"
    hint = result.stdout.split("next:\n", 1)[1].splitlines()
    assert hint[0] == f"  cd {folder}"
    readme = (folder / "README.md").read_text()
    first_block = re.search(r"```sh\n(.*?)```", readme, re.DOTALL)
    assert first_block is not None
    assert [line.strip() for line in hint[1:]] == first_block.group(1).splitlines()
    # pytest comes with the plugin's test extra, into the same environment.
    assert "pip install -e '.[test]'" in hint[1]
    assert "python -m pytest" in hint[2]
    assert 'test = ["pytest>=8"]' in (folder / "pyproject.toml").read_text()


@pytest.mark.parametrize("kind", KINDS)
def test_the_readme_says_how_to_install_reactorkit_first(tmp_path: Path, kind: str) -> None:
    folder = Path(create_plugin("docs", directory=str(tmp_path), kind=kind))
    readme = (folder / "README.md").read_text()
    assert "reactorkit is not on PyPI yet" in readme
    assert "pip install /path/to/reactorkit" in readme
    assert "pypi.org" not in readme
    assert "nc " not in readme
