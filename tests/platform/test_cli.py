"""The command line, run as users run it: `python run.py …` in a subprocess."""

import json
import subprocess
import sys
from pathlib import Path

RUN_PY = Path(__file__).resolve().parents[2] / "run.py"


def run(*args, env=None, tmp_path=None):
    environment = {"PATH": "/usr/bin:/bin", "LOG_DIR": "", "VACHAT_ENV": "test",
                   "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}"}
    environment.update(env or {})
    return subprocess.run([sys.executable, str(RUN_PY), *args], env=environment,
                          capture_output=True, text=True, timeout=60, cwd=str(tmp_path))


def test_help_lists_the_commands(tmp_path):
    result = run("--help", tmp_path=tmp_path)
    assert result.returncode == 0
    for command in ("serve", "migrate", "seed", "create-admin", "plugins"):
        assert command in result.stdout


def test_plugins_lists_discovered_and_enabled(tmp_path):
    listed = json.loads(run("plugins", "--json", tmp_path=tmp_path).stdout)
    example = next(p for p in listed if p["name"] == "example")
    assert example == {"name": "example", "version": "0.1.0", "source": "vachat-example-plugin",
                       "enabled": True, "error": None, "requires": [], "hooks": []}
    disabled = json.loads(run("plugins", "--json", env={"VACHAT_PLUGINS": "-example"}, tmp_path=tmp_path).stdout)
    assert next(p for p in disabled if p["name"] == "example")["enabled"] is False
    table = run("plugins", tmp_path=tmp_path).stdout
    assert "example" in table and "vachat-example-plugin" in table


def test_migrate_status_apply_rollback(tmp_path):
    status = json.loads(run("migrate", "status", tmp_path=tmp_path).stdout)
    assert status["example"]["pending"] == ["001_create_notes"]
    applied = run("migrate", tmp_path=tmp_path)
    assert applied.returncode == 0 and "001_create_notes" in applied.stdout
    assert json.loads(run("migrate", "status", tmp_path=tmp_path).stdout)["example"]["pending"] == []
    rolled = run("migrate", "rollback", "--owner", "example", tmp_path=tmp_path)
    assert "001_create_notes" in rolled.stdout
    assert json.loads(run("migrate", "status", tmp_path=tmp_path).stdout)["example"]["applied"] == []


def test_bad_configuration_exits_2_with_the_setting_named(tmp_path):
    result = run("config", env={"PORT": "not-a-port"}, tmp_path=tmp_path)
    assert result.returncode == 2
    assert "PORT" in result.stderr and "Traceback" not in result.stderr


def test_config_prints_masked_settings(tmp_path):
    result = run("config", env={"REDIS_URL": "redis://:pw123@localhost:6379/0"}, tmp_path=tmp_path)
    settings = json.loads(result.stdout)
    assert settings["port"] == 3000 and "pw123" not in result.stdout


def test_config_prints_the_generated_defaults_and_table(tmp_path):
    root = RUN_PY.parent
    toml = run("config", "--defaults-toml", tmp_path=tmp_path)
    assert toml.returncode == 0 and toml.stdout == (root / "conf" / "default.toml").read_text(encoding="utf-8")
    table = run("config", "--markdown-table", tmp_path=tmp_path)
    assert table.returncode == 0 and table.stdout in (root / "README.md").read_text(encoding="utf-8")
    assert "| `PORT` | `3000` |" in table.stdout


def test_openapi_prints_the_rest_api_of_the_enabled_plugins(tmp_path):
    result = run("openapi", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["openapi"].startswith("3.1")
    assert "/api/auth/login" in document["paths"] and "/api/chat/conversations" in document["paths"]
    without_chat = json.loads(run("openapi", env={"VACHAT_PLUGINS": "-chat"}, tmp_path=tmp_path).stdout)
    assert "/api/chat/conversations" not in without_chat["paths"]
