"""Hook calls keep pluggy's promises: ``tryfirst`` first, ``trylast`` last, the rest in load
order (the core, then plugins by name); wrappers refused at load; a caller's wrong argument or
hook name fails in the caller, before any plugin runs."""

import asyncio
import logging
import types

import pytest

from vachat.app import VachatApplication
from vachat.plugin_api import hookimpl
from vachat.plugin_manager import PluginLoadError
from vachat.testing import make_test_settings
from tests.plugins import offers


def listener(name: str, heard: list[str], **options: bool) -> types.ModuleType:
    """A plugin answering ``offers``' hooks with its own name, recording that it ran."""
    module = types.ModuleType(name)

    @hookimpl(**options)
    def offers_thing_happened(thing):
        heard.append(name)
        return name

    @hookimpl(**options)
    def offers_pick(choices):
        return name

    module.offers_thing_happened = offers_thing_happened
    module.offers_pick = offers_pick
    return module


def application(database_url: str, *plugins: tuple[str, types.ModuleType], strict: bool = False) -> VachatApplication:
    settings = make_test_settings(database_url, plugins_strict=strict)
    return VachatApplication(settings, extra_plugins=[("offers", offers), *plugins])


def test_tryfirst_runs_first_trylast_last_the_rest_in_name_order(vachat_database_url):
    heard: list[str] = []
    app = application(vachat_database_url,
                      ("alpha", listener("alpha", heard, trylast=True)),
                      ("delta", listener("delta", heard)),
                      ("beta", listener("beta", heard)),
                      ("zulu", listener("zulu", heard, tryfirst=True)))
    answers = asyncio.run(app.hooks.offers_thing_happened(thing="x"))
    assert answers == ["zulu", "beta", "delta", "alpha"] == heard
    # A firstresult hook: the tryfirst implementation's answer wins.
    assert asyncio.run(app.hooks.offers_pick(choices=["a"])) == "zulu"


def test_the_string_form_calls_in_the_same_order(vachat_database_url):
    heard: list[str] = []
    app = application(vachat_database_url, ("alpha", listener("alpha", heard, trylast=True)),
                      ("beta", listener("beta", heard)))
    asyncio.run(app.hooks.notify("offers_thing_happened", thing="x"))
    assert heard == ["beta", "alpha"]


@pytest.mark.parametrize("option", ["wrapper", "hookwrapper"])
def test_a_wrapper_implementation_is_refused_at_load_naming_the_plugin(vachat_database_url, option, caplog):
    module = types.ModuleType("wraps")

    @hookimpl(**{option: True})
    def offers_thing_happened(thing):
        yield

    module.offers_thing_happened = offers_thing_happened
    with caplog.at_level(logging.ERROR, logger="vachat.plugins"):
        app = application(vachat_database_url, ("wraps", module))
    plugin = app.plugins.plugins["wraps"]
    assert not plugin.enabled
    assert f"offers_thing_happened ({option}=True)" in plugin.error and "wrapper" in caplog.text
    assert asyncio.run(app.hooks.offers_thing_happened(thing="x")) == []  # nothing of it runs
    with pytest.raises(PluginLoadError, match=rf"^wraps \| .*{option}=True"):
        application(vachat_database_url, ("wraps", module), strict=True)


def test_a_misspelt_argument_raises_in_the_caller_before_any_plugin_runs(vachat_database_url, caplog):
    heard: list[str] = []
    app = application(vachat_database_url, ("beta", listener("beta", heard)))
    with caplog.at_level(logging.ERROR, logger="vachat.plugins"):
        with pytest.raises(TypeError, match=r"hook offers_thing_happened: unexpected argument 'thnig'; "
                                            r"missing argument 'thing' \(it takes app, thing\)"):
            asyncio.run(app.hooks.offers_thing_happened(thnig="x"))
        with pytest.raises(TypeError, match="offers_thing_happened: missing argument 'thing'"):
            asyncio.run(app.hooks.offers_thing_happened.notify())
    assert heard == [] and "failed" not in caplog.text


def test_an_unknown_hook_attribute_raises_at_once_naming_near_ones(vachat_database_url):
    app = application(vachat_database_url)
    with pytest.raises(AttributeError, match=r"'offers_thing_hapened'; did you mean offers_thing_happened"):
        app.hooks.offers_thing_hapened  # noqa: B018 - the access itself must fail
    with pytest.raises(AttributeError, match="no loaded plugin declares a hook named 'nothing_at_all'"):
        app.hooks.nothing_at_all  # noqa: B018
    assert app.hooks.offers_thing_happened.implemented() is False  # declared, nobody listens


def test_a_failing_implementation_is_logged_and_the_others_still_run(vachat_database_url, caplog):
    heard: list[str] = []
    failing = types.ModuleType("alpha")

    @hookimpl(tryfirst=True)
    def offers_thing_happened(thing):
        raise RuntimeError("boom")

    failing.offers_thing_happened = offers_thing_happened
    app = application(vachat_database_url, ("alpha", failing), ("beta", listener("beta", heard)))
    with caplog.at_level(logging.ERROR, logger="vachat.plugins"):
        assert asyncio.run(app.hooks.offers_thing_happened(thing="x")) == ["beta"]
    assert "alpha | offers_thing_happened failed" in caplog.text
