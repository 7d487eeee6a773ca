"""Configuration: defaults, override file, environment, validation, production secrets."""

import pytest

from vachat.config import ConfigError, Rate, load_settings

STRONG = "s" * 20 + "0123456789abcdefghijkl"


def test_defaults_serve_out_of_the_box(tmp_path):
    settings = load_settings(environ={})
    assert settings.port == 3000
    assert settings.database_url.startswith("sqlite:///")
    assert settings.redis_url == ""
    assert settings.max_file_size == 10 * 1024 * 1024
    assert settings.bcrypt_rounds == 12
    assert settings.rate_limit_global == Rate(100, 60)
    assert settings.rate_limit_auth == Rate(5, 900)
    assert settings.ai_provider == "echo"


def test_environment_overrides_file_overrides_defaults(tmp_path):
    override = tmp_path / "site.toml"
    override.write_text('[server]\nport = 4000\nhost = "127.0.0.1"\n[plugins.example]\ngreeting = "Hi"\n')
    settings = load_settings(environ={"VACHAT_CONFIG": str(override), "PORT": "5000",
                                      "CORS_ORIGIN": "https://a.example, https://b.example",
                                      "MAX_FILE_SIZE": "2MiB", "RATE_LIMIT_AUTH": "10/5m"})
    assert settings.port == 5000  # environment wins over the file
    assert settings.host == "127.0.0.1"  # the file wins over the defaults
    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    assert settings.max_file_size == 2 * 1024 * 1024
    assert settings.rate_limit_auth == Rate(10, 300)
    assert settings.plugin_config("example") == {"greeting": "Hi"}


@pytest.mark.parametrize("name, value, fragment", [
    ("PORT", "eighty", "PORT"),
    ("PORT", "70000", "port number"),
    ("VACHAT_ENV", "staging", "development, production, test"),
    ("RATE_LIMIT_GLOBAL", "lots", "COUNT/PERIOD"),
    ("MAX_FILE_SIZE", "-5", "size"),
    ("DATABASE_URL", "mysql://x", "sqlite:///"),
    ("REDIS_URL", "http://x", "redis://"),
    ("LOG_LEVEL", "LOUD", "DEBUG"),
    ("TRUSTED_PROXIES", "not-an-ip", "TRUSTED_PROXIES"),
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


def test_development_generates_and_remembers_secrets():
    first = load_settings(environ={})
    second = load_settings(environ={})
    assert len(first.jwt_secret) >= 32 and first.jwt_secret != first.jwt_refresh_secret
    assert (first.jwt_secret, first.jwt_refresh_secret) == (second.jwt_secret, second.jwt_refresh_secret)


def test_public_summary_masks_secrets():
    settings = load_settings(environ={"DATABASE_URL": "postgresql://u:hunter2@db/x", "AI_API_KEY": "sk-123"})
    summary = settings.public_summary()
    assert "hunter2" not in str(summary) and "sk-123" not in str(summary)
    assert summary["jwt_secret"] == "***"
