"""``reactorkit new-plugin``: scaffold a plugin distribution that works at once.

The generated folder is a complete distribution: ``pyproject.toml`` with the
``reactorkit`` entry point, a module with a working example and its hook
implementation, a README, and tests that use reactorkit's pytest plugin.
Right after ``pip install -e '.[test]'`` in the folder, ``python -m pytest``
passes and ``reactorkit plugins`` lists it; the README says so, and how to
serve it. The name must not be one an installed plugin or handler type
already has (a plugin cannot replace another), nor, for ``line-commands``,
make a command an installed plugin defines; only the plugin's own folder is
created.
"""

from __future__ import annotations

import argparse
import keyword
import os
import re
import shlex
import sys
import textwrap
from collections.abc import Mapping
from typing import Any

__all__ = ["KINDS", "add_command", "create_plugin"]

KINDS = ("handler", "line-commands", "http-routes")
_NAME = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*\Z")


def add_command(subparsers: Any) -> None:
    """Add ``new-plugin`` to the CLI's subcommands."""
    parser = subparsers.add_parser(
        "new-plugin",
        help="scaffold a plugin distribution (pyproject, module, README, tests)",
        description="Create reactorkit-NAME/ with a working example plugin and its tests.",
    )
    parser.add_argument("name", help="the plugin's name: lower case letters, digits and dashes")
    parser.add_argument("--dir", default=".", help="where to create the folder (default: .)")
    parser.add_argument(
        "--kind",
        choices=KINDS,
        default="handler",
        help="handler (a protocol), line-commands or http-routes",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        taken, commands = _installed_names()
        folder = create_plugin(
            args.name, directory=args.dir, kind=args.kind, taken=taken, taken_commands=commands
        )
    except (ValueError, FileExistsError, FileNotFoundError) as exc:
        print(f"reactorkit: error: {exc}", file=sys.stderr)
        return 1
    print(f"created {folder}")
    print("next:")
    for command in (f"cd {shlex.quote(folder)}", *SETUP_COMMANDS):
        print(f"  {command}")
    return 0


def _installed_names() -> tuple[dict[str, str], dict[str, str]]:
    """Every plugin and handler type name installed here, then every line command.

    Each name maps to who provides it.
    """
    # Imported here: the scaffold needs no plugin machinery until it runs.
    from reactorkit.commands import LineCommand
    from reactorkit.errors import PluginError
    from reactorkit.handler import HandlerType
    from reactorkit.plugins import load_plugins

    plugins = load_plugins()
    taken: dict[str, str] = {}
    for name, plugin in plugins.pm.list_name_plugin():
        dist = plugins.distribution(plugin) if plugin is not None else None
        taken[name] = f"the plugin {name!r}" + (f" from {dist}" if dist else "")
    try:
        contributions = plugins.collect("reactorkit_handler_types")
    except PluginError:  # a broken plugin must not stop the scaffold
        contributions = []
    for c in contributions:
        if isinstance(c.item, HandlerType):
            taken[c.item.name] = f"the handler type {c.item.name!r} of {c.source}"
    commands: dict[str, str] = {}
    try:
        contributions = plugins.collect("reactorkit_line_commands")
    except PluginError:
        contributions = []
    for c in contributions:
        if isinstance(c.item, LineCommand):
            commands[c.item.name] = f"the line command {c.item.name!r} of {c.source}"
    return taken, commands


def create_plugin(
    name: str,
    *,
    directory: str = ".",
    kind: str = "handler",
    taken: Mapping[str, str] | None = None,
    taken_commands: Mapping[str, str] | None = None,
) -> str:
    """Write the distribution folder; returns its path.

    Args:
        name: the plugin's name (``reactorkit-`` is stripped).
        directory: an existing directory to create ``reactorkit-NAME/`` in;
            only that one folder is created.
        kind: one of :data:`KINDS`.
        taken: plugin and handler type names already installed, each with
            a description of its provider; ``name`` must not be one of them,
            since a plugin cannot replace an installed one.
        taken_commands: line commands already installed (upper case), each
            with its provider; a ``line-commands`` plugin's command (its
            name upper-cased) must not be one of them, since two plugins
            defining one command stop every line-command listener.

    Raises:
        ValueError: an invalid or taken name, or an invalid kind.
        FileNotFoundError: ``directory`` does not exist.
        FileExistsError: the folder exists (nothing is overwritten).
    """
    name = name.removeprefix("reactorkit-")
    if not _NAME.match(name) or len(name) > 40:
        raise ValueError(
            f"invalid plugin name {name!r}: use lower case letters, digits and single "
            "dashes, starting with a letter (e.g. 'daytime', 'quote-of-the-day')"
        )
    if kind not in KINDS:
        raise ValueError(f"invalid kind {kind!r}: choose one of {', '.join(KINDS)}")
    if taken and name in taken:
        raise ValueError(
            f"plugin name {name!r} is taken by {taken[name]}: two plugins cannot share a "
            "name, so choose another one (e.g. 'my-" + name + "')"
        )
    command = name.replace("-", "_").upper()
    if kind == "line-commands" and taken_commands and command in taken_commands:
        raise ValueError(
            f"plugin name {name!r} would add the command {command!r}, which is taken by "
            f"{taken_commands[command]}: two plugins cannot define one command, so choose "
            "another name (e.g. 'my-" + name + "')"
        )
    module = "reactorkit_" + name.replace("-", "_")
    if keyword.iskeyword(module):  # pragma: no cover - the prefix makes this impossible
        raise ValueError(f"invalid plugin name {name!r}")
    if not os.path.isdir(directory):
        raise FileNotFoundError(
            f"--dir {directory!r} is not an existing directory; create it first "
            f"(mkdir -p {shlex.quote(directory)}): new-plugin only creates reactorkit-{name}/"
        )
    folder = os.path.join(directory, f"reactorkit-{name}")
    if os.path.exists(folder):
        raise FileExistsError(f"{folder} already exists; refusing to overwrite it")
    values = {
        "name": name,
        "dist": f"reactorkit-{name}",
        "module": module,
        "title": name.replace("-", " "),
        "command": command,
        "route": name,
        "klass": "".join(part.capitalize() for part in name.split("-")),
        "setup": "\n".join(SETUP_COMMANDS),
    }
    files = {
        "pyproject.toml": PYPROJECT,
        "README.md": README[kind],
        f"src/{module}/__init__.py": MODULE[kind],
        "tests/test_plugin.py": TESTS[kind],
    }
    os.mkdir(folder)
    for relative, template in files.items():
        path = os.path.join(folder, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(_render(template, values))
    return folder


def _render(template: str, values: Mapping[str, str]) -> str:
    # Dedent first, then fill in: a multi-line value must not break the dedent.
    return textwrap.dedent(template).lstrip().format(**values)


#: What a plugin author runs in the new folder, in the README and the CLI's hint:
#: the test extra brings pytest into the same environment as the plugin.
SETUP_COMMANDS = (
    "pip install -e '.[test]'",
    "python -m pytest",
    "reactorkit plugins",
)


PYPROJECT = """
    [build-system]
    requires = ["hatchling>=1.21"]
    build-backend = "hatchling.build"

    [project]
    name = "{dist}"
    version = "0.1.0"
    description = "A reactorkit plugin: {title}"
    readme = "README.md"
    requires-python = ">=3.11"
    # reactorkit is not on PyPI yet: install it from its checkout first
    # (see README.md); pip then finds it installed.
    dependencies = ["reactorkit"]

    [project.optional-dependencies]
    test = ["pytest>=8"]

    # This table is what makes reactorkit find the plugin.
    [project.entry-points.reactorkit]
    {name} = "{module}"

    [tool.hatch.build.targets.wheel]
    packages = ["src/{module}"]

    [tool.pytest.ini_options]
    testpaths = ["tests"]
"""

_README_HEAD = """
    # {dist}

    A plugin for reactorkit, the plugin-driven network server.

    ## Install and test

    reactorkit is not on PyPI yet, so install it first, from a checkout, into
    the virtualenv you work in: `pip install /path/to/reactorkit` (the folder
    with reactorkit's `pyproject.toml`). Then, in this folder:

    ```sh
    {setup}
    ```

    The `test` extra installs pytest into the same environment as the plugin;
    `python -m pytest` runs that pytest, and `reactorkit plugins` lists
    `{name}` with the distribution `{dist} 0.1.0`.

    ## Serve it
"""

README = {
    "handler": _README_HEAD
    + """
    It provides the handler type `{name}`: after a greeting, every line a
    client sends comes back upper-cased. Serve it with this config:

    ```toml file={name}.toml
    [[listen]]
    handler = "{name}"
    host = "127.0.0.1"
    port = 7100

    [listen.options]
    greeting = "hello"
    ```

    ```sh
    reactorkit check {name}.toml
    reactorkit run {name}.toml
    ```

    and from another terminal (`reactorkit connect` sends its input and
    prints what comes back until the server closes):

    ```sh
    printf 'make some noise\\n' | reactorkit connect 127.0.0.1:7100
    ```

    ```text
    hello
    MAKE SOME NOISE
    ```
    """,
    "line-commands": _README_HEAD
    + """
    It adds the command `{command} TEXT...` to reactorkit's line-command
    handler, which answers the text reversed. Start the built-in default
    config (line-command listens on 127.0.0.1:7071):

    ```sh
    reactorkit run
    ```

    and from another terminal:

    ```sh
    printf '{command} hello world\\r\\n' | reactorkit connect 127.0.0.1:7071
    ```

    ```text
    +dlrow olleh
    ```
    """,
    "http-routes": _README_HEAD
    + """
    It adds the route `GET /{route}/hello/{{who}}` to reactorkit's HTTP-lite
    handler, answering JSON. Start the built-in default config (HTTP-lite
    listens on 127.0.0.1:8080):

    ```sh
    reactorkit run
    ```

    and from another terminal:

    ```sh
    curl -s http://127.0.0.1:8080/{route}/hello/world
    ```

    ```text
    {{"hello":"world"}}
    ```
    """,
}

MODULE = {
    "handler": '''
        """The {name} handler type: upper-cases every line, after a greeting."""

        from __future__ import annotations

        import attrs

        import reactorkit


        @attrs.frozen(kw_only=True)
        class {klass}Options:
            """What [listen.options] may set for this handler."""

            greeting: str = "welcome"
            max_line_length: int = attrs.field(default=1024, validator=attrs.validators.ge(1))


        class {klass}Handler(reactorkit.LineHandler):
            """One client: greet it, then answer every line upper-cased."""

            def __init__(self, options: {klass}Options) -> None:
                super().__init__(options, max_line_length=options.max_line_length)
                self.options = options

            def connection_made(self, connection: reactorkit.Transport) -> None:
                self.connection = connection
                connection.write(self.options.greeting.encode() + b"\\r\\n")

            def line_received(self, line: bytes) -> None:
                self.connection.write(line.upper() + b"\\r\\n")


        @reactorkit.hookimpl
        def reactorkit_handler_types() -> list[reactorkit.HandlerType]:
            return [
                reactorkit.HandlerType(
                    name="{name}",
                    handler={klass}Handler,
                    options={klass}Options,
                    description="upper-cases every line it receives",
                    default_port=7100,
                )
            ]
    ''',
    "line-commands": '''
        """Adds {command} to reactorkit's line-command handler."""

        from __future__ import annotations

        import reactorkit


        def reverse(ctx: reactorkit.CommandContext) -> str:
            """Answer the arguments, joined by spaces, reversed."""
            return " ".join(ctx.args)[::-1]


        @reactorkit.hookimpl
        def reactorkit_line_commands() -> list[reactorkit.LineCommand]:
            return [
                reactorkit.LineCommand(
                    name="{command}", function=reverse, args="TEXT...", help="reverse the text"
                )
            ]
    ''',
    "http-routes": '''
        """Adds GET /{route}/hello/{{who}} to reactorkit's HTTP-lite handler."""

        from __future__ import annotations

        import reactorkit


        def hello(request: reactorkit.Request) -> reactorkit.Response:
            """Greet whoever the path names."""
            return reactorkit.json_response({{"hello": request.captures["who"]}})


        @reactorkit.hookimpl
        def reactorkit_http_routes() -> list[reactorkit.Route]:
            return [reactorkit.Route(method="GET", path="/{route}/hello/{{who}}", function=hello)]
    ''',
}

TESTS = {
    "handler": '''
        """Tests for the {name} handler, with reactorkit's pytest plugin fixtures."""

        import socket

        from {module} import {klass}Handler, {klass}Options


        def test_lines_come_back_upper_cased(fake_connection):
            conn = fake_connection({klass}Handler({klass}Options(greeting="hi")))
            assert conn.take() == b"hi\\r\\n"
            conn.feed(b"hello\\r\\nwor")
            conn.feed(b"ld\\n")
            assert conn.take() == b"HELLO\\r\\nWORLD\\r\\n"


        def test_served_for_real(reactorkit_server):
            server = reactorkit_server(handler="{name}", options={{"greeting": "hey"}})
            with socket.create_connection(server.address(), timeout=5) as sock:
                reader = sock.makefile("rb")
                assert reader.readline() == b"hey\\r\\n"
                sock.sendall(b"quiet please\\r\\n")
                assert reader.readline() == b"QUIET PLEASE\\r\\n"
    ''',
    "line-commands": '''
        """Tests for the {command} command, through a real line-command server."""

        import socket


        def test_command_answers(reactorkit_server):
            server = reactorkit_server(handler="line-command")
            with socket.create_connection(server.address(), timeout=5) as sock:
                reader = sock.makefile("rb")
                sock.sendall(b"{command} hello world\\r\\nHELP {command}\\r\\n")
                assert reader.readline() == b"+dlrow olleh\\r\\n"
                assert reader.readline().startswith(b"+{command} TEXT... - reverse the text")
    ''',
    "http-routes": '''
        """Tests for the /{route}/hello route, through a real HTTP-lite server."""

        import http.client
        import json


        def test_route_answers_json(reactorkit_server):
            server = reactorkit_server(handler="http-lite")
            host, port = server.address()[:2]
            conn = http.client.HTTPConnection(host, port, timeout=5)
            conn.request("GET", "/{route}/hello/world")
            response = conn.getresponse()
            assert response.status == 200
            assert json.loads(response.read()) == {{"hello": "world"}}
            conn.close()
    ''',
}
