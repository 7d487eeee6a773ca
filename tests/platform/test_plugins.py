"""The plugin system: discovery through entry points, enable/disable, ordering, isolation,
namespaced schemas and config, and the installed example plugin end to end."""

import importlib.metadata
import logging

import pytest

from vachat.plugin_manager import PluginLoadError
from vachat.testing import make_test_settings
from vachat.app import VachatApplication
from tests.plugins import broken, sample

# The installed example plugin is not the plugin under test here: name it.
pytestmark = pytest.mark.vachat(plugins=["example"])


@pytest.mark.gen_test
async def test_example_plugin_is_an_installed_distribution(app):
    distribution = importlib.metadata.distribution("vachat-example-plugin")
    assert any(ep.group == "vachat.plugins" and ep.name == "example" for ep in distribution.entry_points)
    plugin = app.plugins.plugins["example"]
    assert plugin.enabled and plugin.source == "vachat-example-plugin" and plugin.version == "0.1.0"


@pytest.mark.gen_test
async def test_example_route_and_event_work_when_enabled(fetch, ws_connect):
    hello = await fetch("/api/example/hello")
    assert hello.code == 200 and hello.json["data"] == {"greeting": "Hello, stranger!"}
    socket = await ws_connect(user="alice")
    reply = await socket.request("example-echo", {"text": "hi"})
    assert reply == {"type": "ack", "id": reply["id"], "data": {"text": "hi", "greeting": "Hello"}}


@pytest.mark.gen_test
@pytest.mark.vachat(config={"plugins_enabled": "-example"})
async def test_example_vanishes_when_disabled(app, fetch, ws_connect):
    assert not app.plugins.is_enabled("example")
    response = await fetch("/api/example/hello")
    assert response.code == 404 and response.json["code"] == "NOT_FOUND"
    socket = await ws_connect(user="alice")
    reply = await socket.request("example-echo", {"text": "hi"})
    assert reply["type"] == "error" and reply["data"]["code"] == "UNKNOWN_EVENT"
    document = (await fetch("/api/openapi.json")).json
    assert "/api/example/hello" not in document["paths"]
    assert not any(schema_id.startswith("example.") for schema_id in document["components"]["schemas"])


@pytest.mark.gen_test
@pytest.mark.vachat(plugins=[("sample", sample)], config={"plugins_enabled": "sample,testauth"})
async def test_allow_list_enables_only_the_named_plugins(app, fetch):
    assert app.plugins.is_enabled("sample") and not app.plugins.is_enabled("example")
    assert (await fetch("/api/sample/widgets/known")).code == 200


def test_plugins_load_in_name_order_core_first(vachat_database_url):
    settings = make_test_settings(vachat_database_url)
    application = VachatApplication(settings, extra_plugins=[("zzz", broken), ("sample", sample)])
    names = [plugin.name for plugin in application.plugins.enabled]
    assert names == sorted(names, key=lambda name: (application.plugins.plugins[name].source != "core", name))


def test_a_failing_plugin_is_logged_and_skipped(vachat_database_url, caplog):
    settings = make_test_settings(vachat_database_url)
    with caplog.at_level(logging.ERROR, logger="vachat.plugins"):
        application = VachatApplication(settings, extra_plugins=[("broken", broken), ("sample", sample)])
    assert not application.plugins.is_enabled("broken")
    assert application.plugins.plugins["broken"].error.startswith("vachat_routes failed")
    assert application.plugins.is_enabled("sample")  # the others carry on
    assert any(record.getMessage().startswith("broken | vachat_routes failed") for record in caplog.records)


def test_strict_mode_makes_a_failing_plugin_fatal(vachat_database_url):
    settings = make_test_settings(vachat_database_url, plugins_strict=True)
    with pytest.raises(PluginLoadError, match="broken"):
        VachatApplication(settings, extra_plugins=[("broken", broken)])


def test_plugin_config_section_is_validated_against_its_schema(vachat_database_url, tmp_path, caplog):
    override = tmp_path / "bad.toml"
    override.write_text('[plugins.example]\ngreeting = ""\nvolume = 11\n')
    from vachat.config import load_settings

    settings = load_settings(environ={"VACHAT_CONFIG": str(override)}, overrides={
        "env": "test", "database_url": vachat_database_url, "log_dir": ""})
    application = VachatApplication(settings)
    plugin = application.plugins.plugins["example"]
    assert not plugin.enabled
    assert "volume" in plugin.error and "greeting" in plugin.error


@pytest.mark.gen_test
@pytest.mark.vachat(config={"plugin_sections": {"example": {"greeting": "Ahoy"}}})
async def test_plugin_config_section_reaches_the_plugin(app, fetch):
    response = await fetch("/api/example/hello", user="alice")
    assert response.json["data"]["greeting"] == "Ahoy, Alice!"


@pytest.mark.gen_test
async def test_plugin_model_migrations_permissions_and_broadcast(app, fetch, ws_connect):
    assert "migratehistory_example" in app.db.engine.get_tables()
    assert app.permissions["example.write"].startswith("Create example notes")
    refused = await fetch("/api/example/notes", method="POST", json={"text": "x"}, user="alice")
    assert refused.code == 403
    writer = {"Authorization": "Bearer test:alice", "X-Test-Permissions": "example.write"}
    other_device = await ws_connect(user="alice")
    created = await fetch("/api/example/notes", method="POST", json={"text": "remember"}, headers=writer)
    assert created.code == 201 and created.json["data"]["text"] == "remember"
    pushed = await other_device.receive("example-note-created")
    assert pushed["data"]["id"] == created.json["data"]["id"]
    listed = await fetch("/api/example/notes", user="alice")
    assert [note["text"] for note in listed.json["data"]] == ["remember"]
    assert (await fetch("/api/example/notes", user="bob")).json["data"] == []
    assert app.metrics.value("vachat_example_notes_created_total") == 1


@pytest.mark.gen_test
async def test_plugin_health_check_is_reported(fetch):
    report = (await fetch("/health")).json
    assert report["checks"]["example.notes"] == {"status": "ok"}


def test_a_misspelt_hook_is_a_load_error_not_silence(vachat_database_url):
    import types

    from vachat.plugin_api import hookimpl

    module = types.ModuleType("typo_plugin")

    @hookimpl
    def vachat_route(app):  # should be vachat_routes
        return []

    module.vachat_route = vachat_route
    application = VachatApplication(make_test_settings(vachat_database_url), extra_plugins=[("typo", module)])
    plugin = application.plugins.plugins["typo"]
    assert not plugin.enabled and "vachat_route" in plugin.error
