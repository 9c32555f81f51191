"""Plugin discovery from real installed distributions (dist-info on sys.path)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import reactorkit
from reactorkit import PluginError, load_plugins
from tests.helpers import DistMaker

DAYTIME = """
    import reactorkit

    class Daytime(reactorkit.Handler):
        def connection_made(self, connection):
            connection.write(b"Monday\\r\\n")
            connection.close()

    @reactorkit.hookimpl
    def reactorkit_handler_types():
        return [reactorkit.HandlerType(name="{name}", handler=Daytime,
                                       description="what day it is")]
"""


def test_builtin_handlers_come_from_the_projects_own_entry_points() -> None:
    plugins = load_plugins()
    echo = plugins.handler_types()["echo"]
    assert echo.plugin == "echo"
    assert echo.distribution == f"reactorkit {reactorkit.__version__}"
    assert plugins.load_errors == []


def test_third_party_handler_type_is_discovered_with_its_distribution(site: DistMaker) -> None:
    site(
        "rk-daytime-test",
        "1.2.3",
        {"rk_daytime_test": DAYTIME.format(name="daytime-test")},
        {"daytime-test": "rk_daytime_test"},
    )
    plugins = load_plugins()
    found = plugins.handler_types()["daytime-test"]
    assert found.distribution == "rk-daytime-test 1.2.3"
    assert found.item.description == "what day it is"
    names = {row["name"]: row for row in plugins.describe()}
    assert names["daytime-test"]["hooks"] == ["reactorkit_handler_types"]
    assert "echo" in names


def test_two_plugins_claiming_one_name_is_an_error_naming_both(site: DistMaker) -> None:
    site("rk-one", "1.0", {"rk_one": DAYTIME.format(name="twice")}, {"one": "rk_one"})
    site("rk-two", "2.0", {"rk_two": DAYTIME.format(name="twice")}, {"two": "rk_two"})
    with pytest.raises(PluginError) as info:
        load_plugins().handler_types()
    message = str(info.value)
    assert "handler type 'twice' is provided twice" in message
    assert "plugin 'one' (rk-one 1.0)" in message
    assert "plugin 'two' (rk-two 2.0)" in message


def test_plugin_that_fails_to_import_is_reported_and_others_still_load(site: DistMaker) -> None:
    site(
        "rk-broken",
        "0.1",
        {"rk_broken": "import does_not_exist_anywhere\n"},
        {"broken": "rk_broken"},
    )
    site("rk-fine", "0.2", {"rk_fine": DAYTIME.format(name="fine")}, {"fine": "rk_fine"})
    plugins = load_plugins()
    (error,) = plugins.load_errors
    assert (error.name, error.value, error.distribution) == ("broken", "rk_broken", "rk-broken 0.1")
    assert isinstance(error.exception, ModuleNotFoundError)
    assert "does_not_exist_anywhere" in str(error)
    assert {"echo", "fine"} <= set(plugins.handler_types())


def test_misspelt_hook_fails_loudly_for_that_plugin_only(site: DistMaker) -> None:
    site(
        "rk-typo",
        "0.1",
        {
            "rk_typo": """
        import reactorkit

        @reactorkit.hookimpl
        def reactorkit_handler_typs():
            return []
    """
        },
        {"typo": "rk_typo"},
    )
    plugins = load_plugins()
    (error,) = plugins.load_errors
    assert error.name == "typo"
    assert "reactorkit_handler_typs" in str(error)
    assert "echo" in plugins.handler_types()


def test_hook_with_unknown_argument_is_a_load_error(site: DistMaker) -> None:
    site(
        "rk-badarg",
        "0.1",
        {
            "rk_badarg": """
        import reactorkit

        @reactorkit.hookimpl
        def reactorkit_reactor_started(reactor, nonsense):
            pass
    """
        },
        {"badarg": "rk_badarg"},
    )
    plugins = load_plugins()
    (error,) = plugins.load_errors
    assert (error.name, error.distribution) == ("badarg", "rk-badarg 0.1")
    assert "nonsense" in str(error)


def test_config_named_module_is_registered(site: DistMaker, tmp_path: Path) -> None:
    (tmp_path / "rk_config_plugin.py").write_text(
        textwrap.dedent(DAYTIME.format(name="from-config"))
    )
    plugins = load_plugins(["rk_config_plugin"])
    found = plugins.handler_types()["from-config"]
    assert (found.plugin, found.distribution) == ("rk_config_plugin", None)


def test_config_named_module_that_does_not_import_is_a_load_error() -> None:
    plugins = load_plugins(["no_such_module_xyz"])
    (error,) = plugins.load_errors
    assert (error.name, error.distribution) == ("no_such_module_xyz", None)
    assert "named in the config" in str(error)


def test_hook_that_returns_garbage_is_reported(site: DistMaker) -> None:
    site(
        "rk-garbage",
        "0.1",
        {
            "rk_garbage": """
        import reactorkit

        @reactorkit.hookimpl
        def reactorkit_handler_types():
            return "echo"
    """
        },
        {"garbage": "rk_garbage"},
    )
    with pytest.raises(PluginError, match="must return a list"):
        load_plugins().handler_types()


def test_collect_attributes_items_in_registration_order() -> None:
    plugins = load_plugins(entry_points=False)

    class First:
        @reactorkit.hookimpl
        def reactorkit_line_commands(self) -> list[str]:
            return ["a", "b"]

    class Second:
        @reactorkit.hookimpl
        def reactorkit_line_commands(self) -> list[str]:
            return ["c"]

    plugins.pm.register(First(), name="first")
    plugins.pm.register(Second(), name="second")
    got = [(c.item, c.plugin) for c in plugins.collect("reactorkit_line_commands")]
    assert got == [("a", "first"), ("b", "first"), ("c", "second")]


def test_a_plugin_declaring_a_builtin_name_is_a_conflict_naming_both(site: DistMaker) -> None:
    site(
        "rk-echo-twin",
        "1.0",
        {"rk_echo_twin": DAYTIME.format(name="twin")},
        {"echo": "rk_echo_twin"},
    )
    plugins = load_plugins()
    assert plugins.load_errors == []  # not a load error that run would only warn about
    with pytest.raises(PluginError) as info:
        plugins.handler_types()
    assert str(info.value) == (
        "plugin name 'echo' is declared twice:\n"
        "  by rk-echo-twin 1.0 (rk_echo_twin)\n"
        f"  and by reactorkit {reactorkit.__version__} (reactorkit.handlers.echo)\n"
        "uninstall one of them, or rename the entry point"
    )


def test_a_plugin_providing_a_builtin_handler_type_is_a_conflict(site: DistMaker) -> None:
    site(
        "rk-echo-too",
        "1.0",
        {"rk_echo_too": DAYTIME.format(name="echo")},
        {"echo-too": "rk_echo_too"},
    )
    with pytest.raises(PluginError) as info:
        load_plugins().handler_types()
    assert "handler type 'echo' is provided twice" in str(info.value)
    assert "plugin 'echo-too' (rk-echo-too 1.0)" in str(info.value)


@pytest.mark.parametrize("alpn", ["h2", b"h2", None, ("h2", b"x")])
def test_a_handler_type_alpn_that_is_not_a_tuple_of_names_is_refused(alpn: object) -> None:
    # A str is iterable: alpn="h2" once offered the ALPN protocols "h" and "2".
    plugins = load_plugins(entry_points=False)

    class Careless:
        @reactorkit.hookimpl
        def reactorkit_handler_types(self) -> list[reactorkit.HandlerType]:
            return [reactorkit.HandlerType(name="careless", handler=reactorkit.Handler, alpn=alpn)]  # type: ignore[arg-type]

    plugins.pm.register(Careless(), name="careless")
    with pytest.raises(PluginError, match=r"handler type 'careless': alpn must be a tuple"):
        plugins.handler_types()


def test_a_handler_type_alpn_list_is_accepted() -> None:
    plugins = load_plugins(entry_points=False)

    class Listed:
        @reactorkit.hookimpl
        def reactorkit_handler_types(self) -> list[reactorkit.HandlerType]:
            return [reactorkit.HandlerType(name="listed", handler=reactorkit.Handler, alpn=["h2"])]  # type: ignore[arg-type]

    plugins.pm.register(Listed(), name="listed")
    assert plugins.handler_types()["listed"].item.alpn == ["h2"]
