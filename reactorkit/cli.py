"""The ``reactorkit`` command: run, check, plugins, new-plugin, connect.

Expected failures (a bad config, an address in use, conflicting plugins)
print one clear line per problem on stderr and exit 1, without a traceback.
``check`` reports every problem ``run`` would meet before binding, and exits
1 exactly when ``run`` would refuse to start. Output into a closed pipe
(``reactorkit plugins | head -1``) ends the command quietly with status 141,
as a Unix tool killed by SIGPIPE does.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import reactorkit
from reactorkit import logfmt, supervisor, worker
from reactorkit.config import LOG_LEVELS, MAX_WORKERS, Config, cpu_count
from reactorkit.errors import ConfigErrors, PluginError, ReactorkitError
from reactorkit.plugins import Plugins, load_plugins
from reactorkit.server import Server, catch_early_signals

__all__ = ["main"]

log = logging.getLogger("reactorkit.cli")

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

#: 128 + SIGPIPE: what a shell reports for a tool killed writing to a closed pipe.
EXIT_BROKEN_PIPE = 141


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # a closed pipe shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except (ConfigErrors, PluginError, OSError) as exc:
        for line in str(exc).splitlines():
            print(f"reactorkit: error: {line}", file=sys.stderr)
        return 1
    except ReactorkitError as exc:
        print(f"reactorkit: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reactorkit",
        description="Plugin-driven network servers on the Reactor pattern.",
    )
    parser.add_argument(
        "--version", action="version", version=f"reactorkit {reactorkit.__version__}"
    )
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        help="override [reactor] log_level (default: from the config, else info)",
    )
    # Accepted after the subcommand too (`reactorkit run --log-level debug`);
    # SUPPRESS keeps a value given before the subcommand.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--log-level", choices=LOG_LEVELS, default=argparse.SUPPRESS, help=argparse.SUPPRESS
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", parents=[common], help="serve the listeners a config names")
    run.add_argument("config", nargs="?", help="TOML config file (default: built-in config)")
    run.add_argument(
        "--workers",
        type=_workers,
        metavar="N",
        help='worker processes, or "auto" (CPU count); overrides [reactor] workers',
    )
    run.set_defaults(func=_cmd_run)

    check = sub.add_parser(
        "check", parents=[common], help="validate a config and resolve its handlers, bind nothing"
    )
    check.add_argument("config", nargs="?", help="TOML config file (default: built-in config)")
    check.set_defaults(func=_cmd_check)

    plugins = sub.add_parser(
        "plugins", parents=[common], help="list handler types and installed plugins"
    )
    plugins.add_argument("--json", action="store_true", help="machine-readable output")
    plugins.add_argument(
        "--check", action="store_true", help="exit 1 if any plugin failed to load or conflicts"
    )
    plugins.set_defaults(func=_cmd_plugins)

    _add_scaffold_command(sub)
    return parser


def _add_scaffold_command(sub: Any) -> None:
    for name in ("reactorkit.scaffold", "reactorkit.client", "reactorkit.status"):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError:  # pragma: no cover - both modules ship with the package
            continue
        module.add_command(sub)


def _silence_stdout() -> None:
    # The reader is gone: point stdout at /dev/null so the interpreter's
    # final flush does not report the same broken pipe again.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # pragma: no cover - stdout without a descriptor
        pass


def _setup_logging(level: str, log_format: str = "text") -> None:
    logfmt.setup_logging(level, log_format)


def _load_config(path: str | None) -> Config:
    return Config.from_toml(path) if path else Config.default()


def _workers(value: str) -> int:
    if value == "auto":
        return cpu_count()
    if value.isdigit() and 1 <= int(value) <= MAX_WORKERS:
        return int(value)
    raise argparse.ArgumentTypeError(f'must be an integer 1-{MAX_WORKERS} or "auto", got {value!r}')


def _cmd_run(args: argparse.Namespace) -> int:
    if worker.is_worker():
        return worker.run_worker()
    _setup_logging(args.log_level or "info")
    early_signals = catch_early_signals()
    config = _load_config(args.config)
    if args.workers is not None:
        config = config.with_workers(args.workers)
    log_format = config.reactor.log_format
    _setup_logging(args.log_level or config.reactor.log_level, log_format)
    if supervisor.is_needed(config):
        # Lines carry the pid.
        worker.setup_logging(args.log_level or config.reactor.log_level, log_format)
        return supervisor.serve(
            config,
            log_level=args.log_level,
            workers_override=args.workers,
            early_signals=early_signals,
        )
    server = Server.from_config(config)
    count = len(server.listeners)
    log.info(
        "reactorkit %s serving %d %s (pid %d)",
        reactorkit.__version__,
        count,
        "listener" if count == 1 else "listeners",
        os.getpid(),
    )
    server.serve_forever(early_signals=early_signals)
    log.info("stopped")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    _setup_logging(args.log_level or "warning")
    config, problems = Config.check_toml(args.config)
    errors = [str(e) for e in problems]
    warnings: list[str] = []
    plans = []
    if config is not None:
        # Everything run meets before binding, so one run reports everything.
        plugins = load_plugins(config.reactor.plugins)
        # Like run, a broken plugin the config does not need is a warning.
        warnings = [str(e) for e in plugins.load_errors if e.name not in config.reactor.plugins]
        try:
            plans = Server.plan(config, plugins)
        except ConfigErrors as exc:
            errors.extend(str(e) for e in exc.errors)
        except PluginError as exc:
            errors.extend(str(exc).splitlines())
    for line in warnings:
        print(f"reactorkit: warning: {line}", file=sys.stderr)
    if errors:
        for line in errors:
            print(f"reactorkit: error: {line}", file=sys.stderr)
        return 1
    assert config is not None
    for plan in plans:
        listen = plan.config
        where = f"unix:{listen.path}" if listen.path else f"{listen.host}:{plan.port}"
        if listen.fd_name is not None:
            where = f"systemd socket {listen.fd_name!r}"
        print(f"{listen.label}: handler {plan.handler_type.name!r} on {where}: ok")
    count = len(plans)
    print(f"{config.path}: ok ({count} {'listener' if count == 1 else 'listeners'})")
    return 0


def _cmd_plugins(args: argparse.Namespace) -> int:
    _setup_logging(args.log_level or "error")
    plugins = load_plugins()
    report = _plugins_report(plugins)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_plugins(report)
    if args.check and (report["errors"] or report["conflicts"]):
        return 1
    return 0


def _plugins_report(plugins: Plugins) -> dict[str, Any]:
    conflicts: list[str] = []
    handler_types: list[dict[str, Any]] = []
    try:
        found = plugins.handler_types()
    except PluginError as exc:
        conflicts.append(str(exc))
        found = {}
    for name, contribution in sorted(found.items()):
        handler_type = contribution.item
        handler_types.append(
            {
                "name": name,
                "description": handler_type.description,
                "default_port": handler_type.default_port,
                "plugin": contribution.plugin,
                "distribution": contribution.distribution,
            }
        )
    return {
        "version": reactorkit.__version__,
        "handler_types": handler_types,
        "plugins": plugins.describe(),
        "errors": [
            {
                "name": e.name,
                "value": e.value,
                "distribution": e.distribution,
                "error": f"{type(e.exception).__name__}: {e.exception}",
            }
            for e in plugins.load_errors
        ],
        "conflicts": conflicts,
    }


def _print_plugins(report: dict[str, Any]) -> None:
    print("Handler types:")
    if not report["handler_types"]:
        print("  (none)")
    width = max((len(h["name"]) for h in report["handler_types"]), default=0)
    for h in report["handler_types"]:
        port = f" [default port {h['default_port']}]" if h["default_port"] else ""
        print(f"  {h['name']:<{width}}  {h['description']}{port}")
        print(
            f"  {'':<{width}}  from {h['distribution'] or 'no distribution'} "
            f"(plugin {h['plugin']!r})"
        )
    print()
    print("Plugins:")
    for p in report["plugins"]:
        dist = p["distribution"] or "not from a distribution"
        print(f"  {p['name']} ({p['module']}, {dist})")
        print(f"      hooks: {', '.join(p['hooks']) or '(none)'}")
    if report["errors"]:
        print()
        print("Failed to load:")
        for e in report["errors"]:
            print(f"  {e['name']} ({e['value']}, {e['distribution'] or 'config'}): {e['error']}")
    if report["conflicts"]:
        print()
        print("Conflicts:")
        for c in report["conflicts"]:
            for line in c.splitlines():
                print(f"  {line}")
