"""``python -m vachat seed`` and ``… create-admin`` in a real subprocess against a temporary SQLite
database: migrations applied on the way, idempotent, clear output, meaningful exit codes."""

import os
import sqlite3
import subprocess
import sys
from contextlib import closing

import bcrypt
import pytest

from vachat.testing import TEST_REFRESH_SECRET, TEST_SECRET

ADMIN_PASSWORD = "Admin-Strong-Pass-42!"


@pytest.fixture
def cli(tmp_path):
    database = tmp_path / "cli.db"
    env = {**os.environ, "VACHAT_ENV": "test", "DATABASE_URL": f"sqlite:///{database}", "REDIS_URL": "",
           "JWT_SECRET": TEST_SECRET, "JWT_REFRESH_SECRET": TEST_REFRESH_SECRET, "BCRYPT_ROUNDS": "4",
           "LOG_DIR": ""}

    def run(*args):
        result = subprocess.run([sys.executable, "-m", "vachat", *args], env=env, cwd=str(tmp_path),
                                capture_output=True, text=True, timeout=120)
        return result

    def query(sql, *params):
        with closing(sqlite3.connect(database)) as connection, connection:
            return connection.execute(sql, params).fetchall()

    run.query = query
    return run


def test_seed_creates_the_default_roles_once(cli):
    first = cli("seed")
    assert first.returncode == 0, first.stderr
    assert "applied migrations (core)" in first.stdout
    assert "role admin: created" in first.stdout and "role user: created" in first.stdout
    # The installed example plugin grants its permission to "user" by default (grant_to).
    assert "role user: granted example.write (default grants)" in first.stdout
    assert dict(cli.query("SELECT name, permissions FROM roles")) == {"admin": '["*"]', "user": '["example.write"]'}

    again = cli("seed")
    assert again.returncode == 0, again.stderr
    assert "role admin: already present" in again.stdout and "role user: already present" in again.stdout
    assert "applied migrations" not in again.stdout and "granted" not in again.stdout
    assert cli.query("SELECT count(*) FROM roles") == [(2,)]


def test_create_admin(cli):
    result = cli("create-admin", "--email", "Root@Example.TEST", "--password", ADMIN_PASSWORD, "--name", "Ada Lovelace")
    assert result.returncode == 0, result.stderr
    assert "admin root@example.test: created" in result.stdout
    assert ADMIN_PASSWORD not in result.stdout + result.stderr
    [(user_id, role, active, verified, first, last, hashed)] = cli.query(
        "SELECT id, role, is_active, is_email_verified, first_name, last_name, password_hash FROM users "
        "WHERE email = 'root@example.test'")
    assert (role, active, verified, first, last) == ("admin", 1, 1, "Ada", "Lovelace")
    assert bcrypt.checkpw(ADMIN_PASSWORD.encode(), hashed.encode())
    assert cli.query("SELECT count(*) FROM roles") == [(2,)]  # created the roles on the way
    assert cli.query("SELECT action FROM audit_logs WHERE user_id = ?", user_id) == [("user.created",)]

    # Again for the same address: promoted/kept admin, password replaced, still one account.
    again = cli("create-admin", "--email", "root@example.test", "--password", "Another-Strong-Pass-7!")
    assert again.returncode == 0, again.stderr
    assert "updated" in again.stdout
    assert cli.query("SELECT count(*) FROM users") == [(1,)]
    [(hashed,)] = cli.query("SELECT password_hash FROM users")
    assert bcrypt.checkpw(b"Another-Strong-Pass-7!", hashed.encode())


def test_create_admin_refuses_bad_input_and_changes_nothing(cli):
    weak = cli("create-admin", "--email", "root@example.test", "--password", "password")
    assert weak.returncode == 1
    assert "password" in weak.stderr and "password" not in weak.stdout
    bad_email = cli("create-admin", "--email", "nope", "--password", ADMIN_PASSWORD)
    assert bad_email.returncode == 1 and "--email" in bad_email.stderr
    too_long = cli("create-admin", "--email", "root@example.test", "--password", "Aa1!" + "x" * 80)
    assert too_long.returncode == 1 and "72 bytes" in too_long.stderr
    seeded = cli("seed")  # the database was never touched by the refusals
    assert "applied migrations (core)" in seeded.stdout


def test_promoting_an_existing_user(cli):
    assert cli("seed").returncode == 0
    cli.query("INSERT INTO users (id, email, password_hash, first_name, last_name, bio, timezone, language, role, "
              "tier, is_active, is_email_verified, created_at, updated_at) VALUES ('01HUSER0000000000000000000', "
              "'member@example.test', 'x', '', '', '', 'UTC', 'en', 'user', 'free', 0, 0, '2024-01-01', '2024-01-01')")
    result = cli("create-admin", "--email", "member@example.test", "--password", ADMIN_PASSWORD)
    assert result.returncode == 0, result.stderr
    assert cli.query("SELECT role, is_active FROM users") == [("admin", 1)]
    actions = {row[0] for row in cli.query("SELECT action FROM audit_logs")}
    assert {"user.role_changed", "auth.password_changed"} <= actions
