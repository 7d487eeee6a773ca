"""The door between the core and its plugins: one public API, plugin-declared hooks, services,
requirements, load-time checks, and test fixtures that load only what a test asks for."""

import ast
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from vachat.app import VachatApplication
PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the checkout
from vachat.plugin_api import hookimpl
from vachat.testing import make_test_settings
from tests.plugins import listens, missing_schema, offers

ALLOWED_IN_PLUGINS = {"vachat.plugin_api"}
ALLOWED_IN_PLUGIN_TESTS = {"vachat.plugin_api", "vachat.testing"}


def vachat_imports(path: Path) -> list[str]:
    """Every ``vachat…`` module a file imports (``import x``, ``from x import y``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module == "vachat" and node.level == 0:
            found += [f"vachat.{alias.name}" for alias in node.names]  # from vachat import db
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
    return [name for name in found if name == "vachat" or name.startswith("vachat.")]


def boundary_violations(root: Path, base: Path = PROJECT_ROOT) -> list[str]:
    problems = []
    for path in sorted(root.rglob("*.py")):
        if ".egg-info" in str(path) or "/build/" in str(path):
            continue
        in_tests = "tests" in path.relative_to(root).parts or path.name.startswith(("test_", "conftest"))
        allowed = ALLOWED_IN_PLUGIN_TESTS if in_tests else ALLOWED_IN_PLUGINS
        for name in vachat_imports(path):
            if name not in allowed and not any(name.startswith(f"{ok}.") for ok in allowed):
                problems.append(f"{path.relative_to(base)} imports {name}")
    return problems


def test_plugins_import_only_the_plugin_api():
    problems = boundary_violations(PROJECT_ROOT / "plugins") + boundary_violations(PROJECT_ROOT / "examples")
    assert problems == []


def test_the_boundary_check_catches_a_leak(tmp_path):
    leaky = tmp_path / "leaky" / "__init__.py"
    leaky.parent.mkdir()
    leaky.write_text("from vachat.plugin_api import hookimpl\nfrom vachat.accounts import models\n"
                     "import vachat.web\nfrom vachat import db\n")
    (tmp_path / "leaky" / "tests").mkdir()
    (tmp_path / "leaky" / "tests" / "test_it.py").write_text("from vachat.testing import fetch\n")
    problems = boundary_violations(tmp_path / "leaky", base=tmp_path)
    assert problems == ["leaky/__init__.py imports vachat.accounts", "leaky/__init__.py imports vachat.web",
                        "leaky/__init__.py imports vachat.db"]


@pytest.mark.gen_test
@pytest.mark.vachat(plugins=[("offers", offers), ("listens", listens)])
async def test_a_hook_declared_by_one_plugin_is_implemented_by_another(app, fetch):
    assert app.plugins.plugins["offers"].declared_hooks == ("offers_pick", "offers_thing_happened")
    response = await fetch("/api/offers/happen", method="POST", json={})
    assert response.code == 200
    # hooks.call collects answers; a firstresult spec gives the first answer alone.
    assert response.json["data"] == {"answers": ["heard boom"], "picked": "b"}


@pytest.mark.gen_test
@pytest.mark.vachat(plugins=[("offers", offers), ("listens", listens)])
async def test_a_service_published_by_one_plugin_is_used_by_another(app, fetch):
    first = await fetch("/api/listens/bump", method="POST", json={})
    second = await fetch("/api/listens/bump", method="POST", json={})
    assert (first.json["data"], second.json["data"]) == ({"count": 2}, {"count": 4})
    assert app.service("offers").count == 4
    with pytest.raises(LookupError, match="'ghost' plugin that provides it is not installed"):
        app.service("ghost.things")


def test_a_plugin_requiring_an_absent_one_refuses_to_load(vachat_database_url, caplog):
    application = VachatApplication(make_test_settings(vachat_database_url), extra_plugins=[("listens", listens)],
                                    only_plugins=[])
    plugin = application.plugins.plugins["listens"]
    assert not plugin.enabled
    assert plugin.error == "requires plugin 'offers', which is not installed"
    assert not any(route[0] == "/api/listens/bump" for route in application.route_table)


def test_a_requirement_that_fails_takes_its_dependents_with_it(vachat_database_url):
    settings = make_test_settings(vachat_database_url, plugins_enabled="-offers")
    application = VachatApplication(settings, extra_plugins=[("offers", offers), ("listens", listens)],
                                    only_plugins=[])
    assert application.plugins.plugins["listens"].error == \
        "requires plugin 'offers', which is disabled (VACHAT_PLUGINS)"


def test_a_plugin_naming_an_unknown_schema_refuses_to_load(vachat_database_url):
    application = VachatApplication(make_test_settings(vachat_database_url),
                                    extra_plugins=[("missing_schema", missing_schema)], only_plugins=[])
    plugin = application.plugins.plugins["missing_schema"]
    assert not plugin.enabled
    assert "'missing_schema/note-create'" in plugin.error and "package data" in plugin.error
    assert not any(route[0].startswith("/api/missing_schema") for route in application.route_table)


def test_plugins_json_shows_why_a_plugin_did_not_load(tmp_path):
    environment = {"PATH": "/usr/bin:/bin", "LOG_DIR": "", "VACHAT_ENV": "test", "PYTHONPATH": str(PROJECT_ROOT),
                   "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
                   "VACHAT_PLUGIN_MODULES": "missing_schema=tests.plugins.missing_schema"}
    result = subprocess.run([sys.executable, "-m", "vachat.cli", "plugins", "--json"], env=environment,
                            capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    listed = {plugin["name"]: plugin for plugin in json.loads(result.stdout)}
    assert listed["missing_schema"]["enabled"] is False
    assert "'missing_schema/note-create'" in listed["missing_schema"]["error"]


def test_a_missing_schemas_folder_is_named(vachat_database_url, tmp_path):
    module = types.ModuleType("packaged")
    module.SCHEMAS_DIR = str(tmp_path / "not-installed")
    application = VachatApplication(make_test_settings(vachat_database_url), extra_plugins=[("packaged", module)],
                                    only_plugins=[])
    error = application.plugins.plugins["packaged"].error
    assert "SCHEMAS_DIR" in error and "not-installed" in error and "package data" in error


def test_an_optional_hook_of_an_absent_owner_is_allowed_but_a_typo_is_not(vachat_database_url):
    typo = types.ModuleType("typo")

    @hookimpl(optionalhook=True)
    def offers_thing_hapened(app, thing):  # offers is loaded: this name is a typo
        return None

    typo.offers_thing_hapened = offers_thing_hapened
    application = VachatApplication(
        make_test_settings(vachat_database_url),
        extra_plugins=[("offers", offers), ("listens", listens), ("typo", typo)], only_plugins=[])
    assert application.plugins.is_enabled("listens")  # its ghost_appeared is optional, ghost absent
    assert not application.plugins.is_enabled("typo")
    assert "offers_thing_hapened" in application.plugins.plugins["typo"].error


def test_a_plugin_cannot_declare_hooks_outside_its_namespace(vachat_database_url):
    from vachat.plugin_api import hookspec

    class Specs:
        @hookspec
        def chat_message_created(self, app):
            """Someone else's name."""

    squatter = types.ModuleType("squatter")

    @hookimpl
    def vachat_addhooks(pluginmanager):
        pluginmanager.add_hookspecs(Specs)

    squatter.vachat_addhooks = vachat_addhooks
    application = VachatApplication(make_test_settings(vachat_database_url),
                                    extra_plugins=[("squatter", squatter)], only_plugins=[])
    assert "must be named squatter_<event>" in application.plugins.plugins["squatter"].error


@pytest.mark.gen_test
async def test_the_app_fixture_loads_only_the_plugins_a_test_names(app):
    import importlib.metadata

    installed = {entry_point.name for entry_point in importlib.metadata.entry_points(group="vachat.plugins")}
    assert "example" in installed  # installed by the README's test command…
    assert "example" not in app.plugins.plugins  # …and not loaded for a core test that did not ask
    assert [plugin.name for plugin in app.plugins.enabled] == ["accounts", "testauth"]


@pytest.mark.gen_test
@pytest.mark.vachat(plugins=["example"])
async def test_a_named_installed_plugin_is_loaded(app):
    assert app.plugins.is_enabled("example")


@pytest.mark.gen_test
@pytest.mark.vachat(plugins=["example"], config={
    "plugin_sections": {"example": {"greeting": "Hi"}}, "environ": {"EXAMPLE_GREETING": "Servus"}})
async def test_a_plugins_environment_variable_wins_over_its_config_section(app, fetch):
    assert app.plugin_config("example")["greeting"] == "Servus"
    assert (await fetch("/api/example/hello")).json["data"]["greeting"] == "Servus, stranger!"


@pytest.mark.gen_test
@pytest.mark.vachat(plugins=["example"])
async def test_plugin_state_is_per_application(app):
    state = app.plugin_state("example")
    state.seen = 1
    assert app.plugin_state("example") is state
    other = VachatApplication(app.config, only_plugins=["example"])
    assert not hasattr(other.plugin_state("example"), "seen")


@pytest.mark.gen_test
async def test_plugins_reach_accounts_through_the_api(app, make_user, ws_connect):
    user = await make_user(first_name="Ada")
    assert (await app.accounts.get_user(user.id))["firstName"] == "Ada"
    assert await app.accounts.get_users([user.id, "nobody"]) == {user.id: await app.accounts.get_user(user.id)}
    socket = await ws_connect(user=user)
    await socket.receive("ready")
    assert await app.accounts.end_sessions(user.id) == 1
    code, _ = await socket.closed()
    assert code == 4401


def test_the_vachat_marker_refuses_arguments_it_does_not_take():
    from types import SimpleNamespace

    from vachat.testing import requested_plugins

    marker = pytest.mark.vachat(plugin_sections={"notes": {}}).mark
    request = SimpleNamespace(node=SimpleNamespace(iter_markers=lambda name: [marker]))
    with pytest.raises(pytest.UsageError, match="go inside config="):
        requested_plugins(request, [])
