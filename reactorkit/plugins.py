"""Plugin discovery: built-ins, entry points and config-named modules, one path.

The built-in handlers are entry points of the ``reactorkit`` distribution
itself, so they load exactly as third-party plugins do. A plugin that fails
to import (or implements a hook that does not exist) is recorded as a
:class:`~reactorkit.errors.PluginLoadError` and blocked; every other plugin
still loads, so ``reactorkit plugins`` can show the whole picture.

One rule holds for every name, built-in or not: two distributions declaring
one plugin (entry point) name, or two plugins providing one handler type,
is a conflict that :meth:`Plugins.handler_types` raises, so ``run`` and
``check`` refuse to start and ``plugins --check`` fails. A third-party
``echo`` never silently replaces the built-in one.

Only pluggy's public API is used: distributions through
``list_plugin_distinfo()``, results attributed through ``get_hookimpls()``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import logging
from collections.abc import Generator, Iterable
from typing import Any, final

import attrs
import pluggy

from reactorkit import hookspecs
from reactorkit.errors import PluginError, PluginLoadError
from reactorkit.handler import Handler, HandlerType, LineHandler

__all__ = ["ENTRY_POINT_GROUP", "Contribution", "Plugins", "load_plugins"]

ENTRY_POINT_GROUP = "reactorkit"

log = logging.getLogger("reactorkit.plugins")

# Every callback reactorkit makes on a handler (LineHandler's include Handler's).
_HANDLER_CALLBACKS = sorted(
    name
    for name, value in {**vars(Handler), **vars(LineHandler)}.items()
    if not name.startswith("_") and callable(value)
)


@attrs.frozen
class Contribution:
    """One item returned by a collector hook, with who provided it.

    Attributes:
        item: the object the hook returned (a ``HandlerType``, a command...).
        plugin: the plugin's registered name (entry point or module name).
        distribution: ``"name version"`` of its distribution, or None.
    """

    item: Any
    plugin: str
    distribution: str | None

    @property
    def source(self) -> str:
        """``plugin 'name' (dist version)``, for error messages."""
        where = f" ({self.distribution})" if self.distribution else ""
        return f"plugin {self.plugin!r}{where}"


@final
class Plugins:
    """The loaded plugin manager plus what went wrong while loading it.

    Attributes:
        pm: the ``pluggy.PluginManager("reactorkit")``.
        hook: shortcut for ``pm.hook``.
        load_errors: plugins that could not be loaded, in discovery order.
        conflicts: plugin names declared by two distributions; only the first
            was registered, and :meth:`handler_types` refuses to resolve.
    """

    def __init__(
        self,
        pm: pluggy.PluginManager,
        load_errors: list[PluginLoadError],
        conflicts: list[PluginError] | None = None,
    ) -> None:
        self.pm = pm
        self.hook = pm.hook
        self.load_errors = load_errors
        self.conflicts = list(conflicts or ())
        self._dists = {id(plugin): dist for plugin, dist in pm.list_plugin_distinfo()}

    def distribution(self, plugin: object) -> str | None:
        """``"name version"`` of the distribution that registered ``plugin``, or None."""
        dist = self._dists.get(id(plugin))
        if dist is None:
            return None
        return f"{dist.project_name} {dist.version}"

    def collect(self, hook_name: str) -> list[Contribution]:
        """Call a collector hook plugin by plugin and attribute every item.

        Raises:
            PluginError: a plugin's implementation raised or returned a non-list.
        """
        caller = getattr(self.hook, hook_name)
        out: list[Contribution] = []
        # get_hookimpls() lists implementations in registration order (pluggy
        # calls them last-first); contributions keep registration order.
        for impl in caller.get_hookimpls():
            dist = self.distribution(impl.plugin)
            try:
                items = impl.function()
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # asyncio.CancelledError too
                where = f" ({dist})" if dist else ""
                raise PluginError(
                    f"plugin {impl.plugin_name!r}{where}: {hook_name}() raised "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            if items is None:
                continue
            if not isinstance(items, (list, tuple)):
                raise PluginError(
                    f"plugin {impl.plugin_name!r}: {hook_name}() must return a list, "
                    f"got {type(items).__name__}"
                )
            out.extend(Contribution(item, impl.plugin_name, dist) for item in items)
        return out

    def configure(self, config: Any) -> None:
        """Call ``reactorkit_configure(config)`` plugin by plugin, in pluggy's order.

        Raises:
            PluginError: an implementation raised; it names the plugin.
        """
        caller = self.hook.reactorkit_configure
        impls = caller.get_hookimpls()
        wrapped = any(impl.hookwrapper or impl.wrapper for impl in impls)
        blame: Any = None
        try:
            if wrapped:
                caller(config=config)  # a wrapper must wrap the others
                return
            for blame in reversed(impls):
                blame.function(*[{"config": config}[name] for name in blame.argnames])
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:
            if blame is None:
                who = "a plugin (a wrapper is among them)"
            else:
                dist = self.distribution(blame.plugin)
                who = f"plugin {blame.plugin_name!r}" + (f" ({dist})" if dist else "")
            raise PluginError(
                f"{who}: reactorkit_configure() raised {type(exc).__name__}: {exc}"
            ) from exc

    def handler_types(self) -> dict[str, Contribution]:
        """Every handler type by name, with the plugin that provides it.

        Raises:
            PluginError: two distributions declare one plugin name, two
                plugins claim one handler type name, or a plugin returned
                something that is not a ``HandlerType``.
        """
        if self.conflicts:
            raise PluginError("\n".join(str(c) for c in self.conflicts))
        found: dict[str, Contribution] = {}
        for contribution in self.collect("reactorkit_handler_types"):
            handler_type = contribution.item
            if not isinstance(handler_type, HandlerType):
                raise PluginError(
                    f"{contribution.source}: reactorkit_handler_types() must return "
                    f"HandlerType objects, got {handler_type!r}"
                )
            if isinstance(handler_type.handler, type) and not issubclass(
                handler_type.handler, Handler
            ):
                raise PluginError(
                    f"{contribution.source}: handler type {handler_type.name!r}: "
                    f"handler must be a reactorkit.Handler subclass, got {handler_type.handler!r}"
                )
            alpn = handler_type.alpn
            if not isinstance(alpn, tuple | list) or not all(isinstance(p, str) for p in alpn):
                # A str is iterable: "h2" would offer ALPN "h" and "2", silently.
                raise PluginError(
                    f"{contribution.source}: handler type {handler_type.name!r}: "
                    f"alpn must be a tuple of protocol names such as ('h2',), got {alpn!r}"
                )
            for callback in _HANDLER_CALLBACKS:
                if _is_async(getattr(handler_type.handler, callback, None)):
                    raise PluginError(
                        f"{contribution.source}: handler type {handler_type.name!r}: "
                        f"{handler_type.handler.__name__}.{callback} is async def: handler "
                        "callbacks are called synchronously on the reactor thread; use def, "
                        "and reactor.run_in_thread for blocking work"
                    )
            other = found.get(handler_type.name)
            if other is not None:
                raise PluginError(
                    f"handler type {handler_type.name!r} is provided twice:\n"
                    f"  by {other.source}\n"
                    f"  and by {contribution.source}\n"
                    f"uninstall one of them"
                )
            found[handler_type.name] = contribution
        return found

    def notify(self, hook_name: str, **kwargs: Any) -> None:
        """Call an event hook plugin by plugin, so one that raises harms no other.

        Used for the lifecycle and observation hooks
        (``reactorkit_reactor_started``, ``..._stopping``,
        ``..._connection_made``, ``..._connection_lost``): an implementation
        that raises is logged with its plugin's name and skipped; the others
        still run, in pluggy's order, and the caller goes on. Wrappers
        (``wrapper=True`` or ``hookwrapper=True``) wrap the others as pluggy
        would, each step guarded the same way; they see the results of the
        implementations that did not raise.
        """
        caller = getattr(self.hook, hook_name)
        teardowns: list[tuple[Any, Generator[Any, Any, Any]]] = []
        results: list[Any] = []
        # pluggy's order: wrappers first, each group last-registered first.
        for impl in reversed(caller.get_hookimpls()):
            try:
                result = impl.function(*[kwargs[name] for name in impl.argnames])
                if impl.hookwrapper or impl.wrapper:
                    next(result)  # up to its yield
                    teardowns.append((impl, result))
                elif result is not None:
                    results.append(result)
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:  # asyncio.CancelledError too: a plugin bug
                self._hook_failed(impl, hook_name, exc)
        for impl, wrapper in reversed(teardowns):
            try:
                wrapper.send(pluggy.Result(results, None) if impl.hookwrapper else results)
            except StopIteration:
                continue
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as exc:
                self._hook_failed(impl, hook_name, exc)
                continue
            wrapper.close()
            self._hook_failed(impl, hook_name, RuntimeError("the wrapper yielded more than once"))

    def _hook_failed(self, impl: Any, hook_name: str, exc: BaseException) -> None:
        dist = self.distribution(impl.plugin)
        where = f" ({dist})" if dist else ""
        log.error(
            "plugin %r%s: %s raised; the server goes on without it",
            impl.plugin_name,
            where,
            hook_name,
            exc_info=exc,
        )

    def describe(self) -> list[dict[str, Any]]:
        """Every registered plugin: name, distribution and implemented hooks."""
        rows = []
        for name, plugin in self.pm.list_name_plugin():
            if plugin is None:
                continue  # blocked
            callers = self.pm.get_hookcallers(plugin) or []
            rows.append(
                {
                    "name": name,
                    "module": getattr(plugin, "__name__", repr(plugin)),
                    "distribution": self.distribution(plugin),
                    "hooks": sorted(caller.name for caller in callers),
                }
            )
        return rows


def load_plugins(extra_modules: Iterable[str] = (), *, entry_points: bool = True) -> Plugins:
    """Build the plugin manager: hookspecs, entry points, then config-named modules.

    Args:
        extra_modules: importable module names (the config's ``plugins`` list).
        entry_points: load the ``reactorkit`` entry point group; tests of a
            single module may turn it off.

    Returns:
        The :class:`Plugins`; load failures are in ``load_errors``, not raised.
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    errors: list[PluginLoadError] = []
    conflicts: list[PluginError] = []
    if entry_points:
        _load_entry_points(pm, errors, conflicts)
    for module_name in extra_modules:
        if pm.has_plugin(module_name):
            continue
        try:
            module = importlib.import_module(module_name)
            pm.register(module, name=module_name)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # asyncio.CancelledError too
            errors.append(PluginLoadError(module_name, module_name, None, exc))
            pm.set_blocked(module_name)
    _check_pending(pm, errors)
    _check_async_hooks(pm, errors)
    return Plugins(pm, errors, conflicts)


def _load_entry_points(
    pm: pluggy.PluginManager, errors: list[PluginLoadError], conflicts: list[PluginError]
) -> None:
    # First pass: import each entry point ourselves so one broken plugin is
    # recorded and blocked instead of aborting pluggy's loader for all.
    seen: dict[str, tuple[str, str]] = {}
    by_object: dict[int, tuple[str, str, str]] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist is not None else "?"
        first = seen.get(ep.name)
        if first is not None:
            if first[0] != dist:
                # pluggy keeps one plugin per name: the second would vanish.
                conflicts.append(
                    PluginError(
                        f"plugin name {ep.name!r} is declared twice:\n"
                        f"  by {first[0]} ({first[1]})\n"
                        f"  and by {dist} ({ep.value})\n"
                        f"uninstall one of them, or rename the entry point"
                    )
                )
            continue
        seen[ep.name] = (dist, ep.value)
        try:
            obj = ep.load()
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # asyncio.CancelledError too
            errors.append(PluginLoadError(ep.name, ep.value, dist, exc))
            pm.set_blocked(ep.name)
            continue
        by_object[id(obj)] = (ep.name, ep.value, dist)
    # Second pass: pluggy registers what loaded and records distributions.
    while True:
        try:
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        except pluggy.PluginValidationError as exc:
            name, value, dist = by_object.get(id(exc.plugin), (str(exc.plugin), "?", "?"))
            errors.append(PluginLoadError(name, value, dist, exc))
            pm.set_blocked(name)
            continue
        except Exception as exc:  # pragma: no cover - import raced the first pass
            raise PluginError(f"loading reactorkit entry points failed: {exc}") from exc
        break


def _check_async_hooks(pm: pluggy.PluginManager, errors: list[PluginLoadError]) -> None:
    # pluggy calls an async def hook and drops the coroutine: it would never run.
    for caller in list(vars(pm.hook).values()):
        for impl in caller.get_hookimpls():
            if _is_async(impl.function) and not pm.is_blocked(impl.plugin_name):
                problem = TypeError(
                    f"{impl.function.__name__} is async def: hooks are called "
                    "synchronously; use def"
                )
                errors.append(
                    PluginLoadError(
                        impl.plugin_name,
                        getattr(impl.plugin, "__name__", impl.plugin_name),
                        None,
                        problem,
                    )
                )
                pm.set_blocked(impl.plugin_name)


def _is_async(function: Any) -> bool:
    return inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function)


def _check_pending(pm: pluggy.PluginManager, errors: list[PluginLoadError]) -> None:
    # A misspelt hook name must fail loudly, but only for the plugin at fault.
    while True:
        try:
            pm.check_pending()
        except pluggy.PluginValidationError as exc:
            name = pm.get_name(exc.plugin) or repr(exc.plugin)
            errors.append(PluginLoadError(name, getattr(exc.plugin, "__name__", name), None, exc))
            pm.set_blocked(name)
            continue
        break
