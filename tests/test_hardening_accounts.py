"""Hardening of the accounts (issue 7), through the real server: API keys end with a password
reset, bcrypt costs checked at start-up, the audit gaps, names without control characters,
errors that never echo a secret, one wording for a bad token, and login limits that count
only failures."""

from __future__ import annotations

import subprocess
import sys

import pytest

from vachat.config import PROJECT_ROOT, ConfigError, load_settings


def run_server(env: dict[str, str], tmp_path) -> subprocess.CompletedProcess:
    """``python run.py serve`` as an operator starts it; returns once the process exits."""
    environment = {"PATH": "/usr/bin:/bin", "LOG_DIR": "", "VACHAT_ENV": "test", "PORT": "0",
                   "HOST": "127.0.0.1", "DATABASE_URL": f"sqlite:///{tmp_path / 'start.db'}", **env}
    return subprocess.run([sys.executable, str(PROJECT_ROOT / "run.py"), "serve"], env=environment,
                          capture_output=True, text=True, timeout=60, cwd=str(PROJECT_ROOT))


# ---------------------------------------------------------------------------
# 7. bcrypt costs outside 4-31 (and below 10 in production) stop the start-up
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("rounds", ["3", "32", "0", "-1", "100"])
def test_bcrypt_rounds_outside_what_bcrypt_accepts_are_refused(rounds):
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"BCRYPT_ROUNDS": rounds})
    assert "BCRYPT_ROUNDS" in str(caught.value) and "4 to 31" in str(caught.value)


def test_bcrypt_rounds_below_10_are_refused_in_production_only():
    assert load_settings(environ={"BCRYPT_ROUNDS": "4"}).bcrypt_rounds == 4
    assert load_settings(environ={"BCRYPT_ROUNDS": "31"}).bcrypt_rounds == 31
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"BCRYPT_ROUNDS": "9", "VACHAT_ENV": "production"})
    assert "BCRYPT_ROUNDS" in str(caught.value) and "production" in str(caught.value)


@pytest.mark.parametrize("env", [{"BCRYPT_ROUNDS": "3"}, {"BCRYPT_ROUNDS": "32"},
                                 {"BCRYPT_ROUNDS": "9", "VACHAT_ENV": "production"}])
def test_the_server_refuses_to_start_with_a_bad_bcrypt_cost(env, tmp_path):
    result = run_server(env, tmp_path)
    assert result.returncode == 2, result.stderr
    assert "BCRYPT_ROUNDS" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "start.db").exists()  # refused before touching anything
