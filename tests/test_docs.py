"""Docs stay true to the code: every hook and config field is documented, every hook tested."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import attrs
import pytest

import reactorkit
from reactorkit import hookspecs
from reactorkit.config import ListenConfig, ReactorConfig

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def hook_signatures() -> dict[str, str]:
    out = {}
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction):
        if name.startswith("reactorkit_"):
            out[name] = f"{name}{inspect.signature(fn)}".replace("'", "")
    return out


@pytest.mark.parametrize("name", sorted(hook_signatures()))
def test_every_hookspec_has_a_section_titled_with_its_signature(name: str) -> None:
    text = (DOCS / "hooks.md").read_text()
    assert f"## `{hook_signatures()[name]}`" in text


@pytest.mark.parametrize("name", sorted(hook_signatures()))
def test_every_hook_section_says_what_it_returns_and_shows_an_example(name: str) -> None:
    section = _section((DOCS / "hooks.md").read_text(), f"## `{hook_signatures()[name]}`")
    assert "```python" in section, f"{name}: no example"
    assert f"def {name}(" in section, f"{name}: the example does not implement the hook"
    if not hook_signatures()[name].endswith("-> None"):
        assert "Returns" in section, f"{name}: return value undocumented"


@pytest.mark.parametrize("name", sorted(hook_signatures()))
def test_every_hookspec_has_a_docstring(name: str) -> None:
    assert inspect.getdoc(getattr(hookspecs, name))


@pytest.mark.parametrize("name", sorted(hook_signatures()))
def test_every_hook_is_implemented_in_some_test(name: str) -> None:
    here = Path(__file__).resolve()
    sources = [p.read_text() for p in (ROOT / "tests").rglob("test_*.py") if p.resolve() != here]
    sources += [p.read_text() for p in (ROOT / "plugins").rglob("test_*.py")]
    pattern = re.compile(rf"def {name}\(")
    assert any(pattern.search(s) for s in sources), f"no test implements {name}"


def _section(text: str, title: str) -> str:
    start = text.index(title)
    following = re.search(r"^#{2,3} ", text[start + len(title) :], re.MULTILINE)
    return text[start : start + len(title) + (following.start() if following else len(text))]


@pytest.mark.parametrize(
    ("cls", "title"), [(ReactorConfig, "## `[reactor]`"), (ListenConfig, "## `[[listen]]`")]
)
def test_every_core_config_field_is_documented(cls: type, title: str) -> None:
    section = _section((DOCS / "config.md").read_text(), title)
    for field in attrs.fields(cls):
        if field.name == "index":
            continue  # the position in the file, not a key
        assert f"| `{field.name}` |" in section, f"{field.name} missing from {title}"


def builtin_handler_types() -> dict[str, reactorkit.HandlerType]:
    found = reactorkit.load_plugins().handler_types()
    return {
        name: c.item
        for name, c in found.items()
        if c.distribution and c.distribution.startswith("reactorkit ")
    }


@pytest.mark.parametrize("name", sorted(builtin_handler_types()))
def test_every_builtin_handler_option_is_documented(name: str) -> None:
    handler_type = builtin_handler_types()[name]
    section = _section((DOCS / "config.md").read_text(), f"### {name} options")
    fields = attrs.fields(handler_type.options)
    if not fields:
        assert "takes no options" in section
    for field in fields:
        assert f"| `{field.name}` |" in section, f"{name}: option {field.name} undocumented"


def test_no_placeholder_is_left_in_the_docs() -> None:
    for page in sorted(DOCS.rglob("*.md")):
        text = page.read_text()
        assert "<!--" not in text, f"{page.relative_to(ROOT)}: a placeholder comment is left"
        assert "TODO" not in text, f"{page.relative_to(ROOT)}: a TODO is left"


def test_readme_links_every_doc() -> None:
    readme = (ROOT / "README.md").read_text()
    for page in (
        "index.md",
        "tutorial.md",
        "config.md",
        "hooks.md",
        "architecture.md",
        "operations.md",
        "testing.md",
        "performance.md",
    ):
        assert f"docs/{page}" in readme, page
        assert (DOCS / page).exists(), page


def test_readme_quick_start_has_exactly_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```sh\n(.*?)\n```", quick, re.DOTALL)
    assert commands == ["pip install . && reactorkit run", "pip install tox && tox"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "pip install tox && tox" in ci


def test_the_systemd_units_reload_is_the_supervisors_sighup_reload() -> None:
    # A reload runs `kill -HUP` (the supervisor's real reload, tested in
    # tests/integration/test_systemd.py), never a `check` that reloads nothing.
    page = (DOCS / "operations.md").read_text()
    unit = page.split("# /etc/systemd/system/reactorkit.service", 1)[1].split("```", 1)[0]
    reloads = re.findall(r"^ExecReload=(.*)$", unit, re.MULTILINE)
    assert reloads == ["/bin/kill -HUP $MAINPID"]
    assert "systemctl reload reactorkit` sends SIGHUP" in page
