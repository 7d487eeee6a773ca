"""Commands that fit an installed package, run as users run them (a subprocess): `migrate
create` never writes into an installed package, `migrate status --owner` shows that owner only,
`config` shows every plugin's section with its secrets masked."""

import json
import subprocess
import sys
from pathlib import Path

RUN_PY = Path(__file__).resolve().parents[2] / "run.py"


def run(tmp_path, *args, env=None):
    environment = {"PATH": "/usr/bin:/bin", "LOG_DIR": "", "VACHAT_ENV": "test",
                   "DATABASE_URL": f"sqlite:///{tmp_path / 'commands.db'}", **(env or {})}
    return subprocess.run([sys.executable, str(RUN_PY), *args], env=environment, capture_output=True,
                          text=True, timeout=60, cwd=str(tmp_path))


def fake_plugin(folder: Path, *, editable: bool) -> Path:
    """A plugin distribution ``fakeplug`` on ``folder``: installed from a wheel (its RECORD lists
    the package's files) or editable (the package is the checkout; RECORD lists only metadata)."""
    package = folder / "fakeplug"
    (package / "migrations").mkdir(parents=True)
    (package / "__init__.py").write_text('"""A plugin with migrations and nothing else."""\n')
    info = folder / "fakeplug-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakeplug\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[vachat.plugins]\nfakeplug = fakeplug\n")
    listed = ["fakeplug-1.0.dist-info/METADATA", "fakeplug-1.0.dist-info/entry_points.txt"]
    if not editable:
        listed.append("fakeplug/__init__.py")
    (info / "RECORD").write_text("".join(f"{name},,\n" for name in listed))
    return package / "migrations"


def test_migrate_create_refuses_an_installed_package_and_says_where_to_run(tmp_path):
    migrations = fake_plugin(tmp_path / "site", editable=False)
    result = run(tmp_path, "migrate", "create", "add_tags", "--owner", "fakeplug",
                 env={"PYTHONPATH": str(tmp_path / "site")})
    assert result.returncode == 1, result.stderr
    assert "refusing to write fakeplug's migration into an installed package" in result.stderr
    assert "installed distribution fakeplug" in result.stderr and "pip install -e" in result.stderr
    assert list(migrations.iterdir()) == []


def test_migrate_create_writes_into_an_editable_checkout(tmp_path):
    migrations = fake_plugin(tmp_path / "checkout", editable=True)
    result = run(tmp_path, "migrate", "create", "add_tags", "--owner", "fakeplug",
                 env={"PYTHONPATH": str(tmp_path / "checkout")})
    assert result.returncode == 0, result.stderr
    created = Path(result.stdout.strip())
    assert created.parent == migrations and created.name.endswith("_add_tags.py") and created.is_file()


def test_migrate_status_shows_the_owner_asked_for_only(tmp_path):
    result = run(tmp_path, "migrate", "status", "--owner", "example")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"example": {"applied": [], "pending": ["001_create_notes"]}}
    unknown = run(tmp_path, "migrate", "status", "--owner", "nosuch")
    assert unknown.returncode == 2 and "no migrations for 'nosuch'; known: core," in unknown.stderr


def test_config_prints_every_plugins_section_with_secrets_masked(tmp_path):
    (tmp_path / "vachat.toml").write_text('[plugins.example]\ngreeting = "Ahoy"\n')
    result = run(tmp_path, "config", env={"VACHAT_CONFIG": str(tmp_path / "vachat.toml"),
                                          "AI_API_KEY": "sk-secret-123",
                                          "AI_BASE_URL": "https://bob:pw456@llm.test/v1"})
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["port"] == 3000
    assert {"admin", "ai", "chat", "example", "files"} <= set(summary["plugins"])
    ai = summary["plugins"]["ai"]
    assert ai["api_key"] == "***" and ai["base_url"] == "https://bob:***@llm.test/v1"
    assert ai["provider"] == "echo"  # defaults shown as the plugin sees them
    assert summary["plugins"]["example"]["greeting"] == "Ahoy"
    assert "sk-secret-123" not in result.stdout and "pw456" not in result.stdout
