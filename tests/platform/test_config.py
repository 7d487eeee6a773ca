"""Configuration: one schema, defaults, override file, environment, validation, production secrets."""

import json
from dataclasses import fields

import pytest

from vachat.config import (DEFAULT_CONFIG_FILE, OPTIONS, ConfigError, Rate, Settings, load_config_schema,
                           load_settings)
from vachat.config_docs import (CONFIG_MODULE, FIELDS_END, FIELDS_START, README, between_markers,
                                builtin_plugin_schemas, defaults_toml, markdown_table, settings_fields)
from vachat.db import connect_url

STRONG = "s" * 20 + "0123456789abcdefghijkl"


@pytest.fixture(autouse=True)
def in_a_temporary_directory(tmp_path, monkeypatch):
    """Loading settings outside production writes ./var/secrets.json: keep it out of the checkout."""
    monkeypatch.chdir(tmp_path)


def test_defaults_serve_out_of_the_box(tmp_path):
    settings = load_settings(environ={})
    assert settings.port == 3000
    assert settings.database_url.startswith("sqlite:///")
    assert settings.redis_url == ""
    assert settings.bcrypt_rounds == 12
    assert settings.rate_limit_global == Rate(100, 60)
    assert settings.rate_limit_auth == Rate(5, 900)


def test_environment_overrides_file_overrides_defaults(tmp_path):
    override = tmp_path / "site.toml"
    override.write_text('[server]\nport = 4000\nhost = "127.0.0.1"\n[plugins.example]\ngreeting = "Hi"\n')
    settings = load_settings(environ={"VACHAT_CONFIG": str(override), "PORT": "5000",
                                      "CORS_ORIGIN": "https://a.example, https://b.example",
                                      "WS_MAX_MESSAGE_SIZE": "2MiB", "RATE_LIMIT_AUTH": "10/5m"})
    assert settings.port == 5000  # environment wins over the file
    assert settings.host == "127.0.0.1"  # the file wins over the defaults
    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    assert settings.ws_max_message_size == 2 * 1024 * 1024
    assert settings.rate_limit_auth == Rate(10, 300)
    assert settings.plugin_config("example") == {"greeting": "Hi"}


@pytest.mark.parametrize("name, value, fragment", [
    ("PORT", "eighty", "PORT"),
    ("PORT", "70000", "port number"),
    ("VACHAT_ENV", "staging", "development, production, test"),
    ("RATE_LIMIT_GLOBAL", "lots", "COUNT/PERIOD"),
    ("MAX_JSON_BODY", "-5", "size"),
    ("DATABASE_URL", "mysql://x", "sqlite:///"),
    ("REDIS_URL", "http://x", "redis://"),
    ("LOG_LEVEL", "LOUD", "DEBUG"),
    ("TRUSTED_PROXIES", "not-an-ip", "TRUSTED_PROXIES"),
    ("GC_FULL_COLLECTION_INTERVAL", "-1", "minimum"),
    ("GC_FULL_COLLECTION_INTERVAL", "nan", "finite"),
    ("SHUTDOWN_GRACE", "inf", "finite"),
])
def test_bad_values_name_the_setting(name, value, fragment):
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={name: value})
    assert name in str(caught.value)
    assert fragment in str(caught.value)


def test_missing_override_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(environ={"VACHAT_CONFIG": str(tmp_path / "nope.toml")})


def test_production_refuses_default_or_short_secrets():
    with pytest.raises(ConfigError, match="JWT_SECRET"):
        load_settings(environ={"VACHAT_ENV": "production"})
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        load_settings(environ={"VACHAT_ENV": "production", "JWT_SECRET": "short", "JWT_REFRESH_SECRET": STRONG})
    with pytest.raises(ConfigError, match="must differ"):
        load_settings(environ={"VACHAT_ENV": "production", "JWT_SECRET": STRONG, "JWT_REFRESH_SECRET": STRONG})
    settings = load_settings(environ={"VACHAT_ENV": "production", "JWT_SECRET": STRONG,
                                      "JWT_REFRESH_SECRET": STRONG[::-1]})
    assert settings.is_production and not settings.should_auto_migrate


def test_development_generates_and_remembers_secrets(tmp_path):
    environ = {"VACHAT_DATA_DIR": str(tmp_path)}
    first = load_settings(environ=environ)
    second = load_settings(environ=environ)
    assert len(first.jwt_secret) >= 32 and first.jwt_secret != first.jwt_refresh_secret
    assert (first.jwt_secret, first.jwt_refresh_secret) == (second.jwt_secret, second.jwt_refresh_secret)
    assert json.loads((tmp_path / "secrets.json").read_text())["jwt_secret"] == first.jwt_secret


def test_public_summary_masks_secrets():
    settings = load_settings(environ={"DATABASE_URL": "postgresql://u:hunter2@db/x", "SMTP_URL": "smtp://u:sk-123@mail"})
    summary = settings.public_summary()
    assert "hunter2" not in str(summary) and "sk-123" not in str(summary)
    assert summary["jwt_secret"] == "***"


@pytest.mark.parametrize("toml, named, hint", [
    ("[server]\nprot = 4000\n", "server.prot", "did you mean server.port?"),
    ("[sever]\nport = 4000\n", "[sever]", "did you mean server?"),
    ("[database]\nurl = 'sqlite:///x.db'\npool = 3\n", "database.pool", "did you mean database.pool_size?"),
    ("[plugins]\nenable = ['example']\n", "plugins.enable", "did you mean plugins.enabled?"),
    ("server = 4000\n", "server", "must be a [server] table"),
])
def test_unknown_key_in_a_config_file_stops_start_up_naming_it(tmp_path, toml, named, hint):
    override = tmp_path / "site.toml"
    override.write_text(toml)
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"VACHAT_CONFIG": str(override)})
    message = str(caught.value)
    assert named in message and hint in message and str(override) in message


def test_plugin_sections_are_left_to_their_plugins(tmp_path):
    override = tmp_path / "site.toml"
    override.write_text('[plugins]\nstrict = true\n[plugins.example]\nanything = 1\n[plugins.other.nested]\nx = 2\n')
    settings = load_settings(environ={"VACHAT_CONFIG": str(override)})
    assert settings.plugins_strict
    assert settings.plugin_config("example") == {"anything": 1}
    assert settings.plugin_config("other") == {"nested": {"x": 2}}


def test_runtime_state_defaults_to_var_in_the_working_directory(tmp_path):
    settings = load_settings(environ={})
    assert settings.data_dir == tmp_path / "var"
    assert settings.database_url == f"sqlite:///{tmp_path}/var/vachat.db"
    assert settings.log_dir == str(tmp_path / "var" / "log")
    assert (tmp_path / "var" / "secrets.json").is_file()


def test_data_dir_moves_every_default_but_not_explicit_paths(tmp_path):
    state = tmp_path / "state"
    moved = load_settings(environ={"VACHAT_DATA_DIR": str(state)})
    assert moved.database_url == f"sqlite:///{state}/vachat.db"
    assert moved.log_dir == str(state / "log")
    relative = load_settings(environ={"VACHAT_DATA_DIR": "srv/data"})
    assert relative.data_dir == tmp_path / "srv" / "data"
    explicit = load_settings(environ={"VACHAT_DATA_DIR": str(state), "DATABASE_URL": "sqlite:///own.db",
                                      "LOG_DIR": "logs"})
    assert (explicit.database_url, explicit.log_dir) == ("sqlite:///own.db", "logs")
    assert explicit.resolve_path(explicit.log_dir) == tmp_path / "logs"
    with pytest.raises(ConfigError, match="VACHAT_DATA_DIR"):
        load_settings(environ={"VACHAT_DATA_DIR": " "})


def test_relative_sqlite_paths_are_taken_from_the_working_directory(tmp_path):
    engine = connect_url("sqlite:///nested/own.db")
    assert engine.database == str(tmp_path / "nested" / "own.db")
    assert (tmp_path / "nested").is_dir()


# --- one declaration per setting: schemas/config.json -------------------------------------------

def test_conf_default_toml_is_generated_from_the_schemas():
    expected = defaults_toml(load_config_schema(), builtin_plugin_schemas())
    assert DEFAULT_CONFIG_FILE.read_text(encoding="utf-8") == expected, \
        "conf/default.toml drifted from schemas/config.json: run python -m vachat.config_docs --write"


def test_readme_configuration_table_is_generated_from_the_schemas():
    table = between_markers(README.read_text(encoding="utf-8"))
    assert table == markdown_table(load_config_schema(), builtin_plugin_schemas()), \
        "README's configuration table drifted from the schemas: run python -m vachat.config_docs --write"
    assert "`PORT`" in table and "`MAX_FILE_SIZE`" in table  # the core's and the plugins' settings


def test_settings_attributes_are_generated_from_the_schema():
    source = CONFIG_MODULE.read_text(encoding="utf-8")
    assert between_markers(source, FIELDS_START, FIELDS_END) == settings_fields(load_config_schema()), \
        "Settings drifted from schemas/config.json: run python -m vachat.config_docs --write"
    declared = [field.name for field in fields(Settings) if field.name not in ("plugin_sections", "environ")]
    assert declared == [option.attr for option in OPTIONS]
    assert dict(zip(declared, [field.type for field in fields(Settings)]))["auto_migrate"] == "bool | None"


def test_every_setting_is_declared_completely():
    for option in OPTIONS:
        prop = option.schema
        assert prop.get("description") and prop.get("x-env"), option.key
        assert "default" in prop or "x-default-text" in prop, f"{option.key} says nothing of its default"
    assert len({option.env for option in OPTIONS}) == len(OPTIONS)


def test_the_schema_defaults_are_what_a_server_runs_on_without_conf_default_toml(tmp_path, monkeypatch):
    """The schema, not the shipped file, holds the defaults: an emptied default file changes nothing."""
    from vachat import config

    empty = tmp_path / "empty.toml"
    empty.write_text("")
    shipped = load_settings(environ={})
    monkeypatch.setattr(config, "DEFAULT_CONFIG_FILE", empty)
    assert load_settings(environ={}) == shipped


def test_file_values_written_as_text_are_read_as_their_type(tmp_path):
    override = tmp_path / "site.toml"
    override.write_text('[server]\nport = "4100"\n[plugins]\nstrict = "yes"\nenabled = "chat, -ai"\n')
    settings = load_settings(environ={"VACHAT_CONFIG": str(override)})
    assert (settings.port, settings.plugins_strict, settings.plugins_enabled) == (4100, True, ["chat", "-ai"])
    assert isinstance(settings.http_idle_timeout, float)  # written 60 in the file: a number is a float
    override.write_text('[security]\nbcrypt_rounds = 40\n')
    with pytest.raises(ConfigError, match=r"BCRYPT_ROUNDS \(security.bcrypt_rounds\) from .*site.toml: must be a bcrypt cost"):
        load_settings(environ={"VACHAT_CONFIG": str(override)})


def test_an_invalid_secret_is_never_echoed():
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"REDIS_URL": "http://user:hunter2@cache"})
    assert "REDIS_URL" in str(caught.value) and "hunter2" not in str(caught.value)
