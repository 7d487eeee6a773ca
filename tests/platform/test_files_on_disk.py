"""What a development server leaves on disk (issue 7, item 11), from a real ``run.py serve``:
mail on standard output and never in the log file; the secrets file, the SQLite database and
its companions 0600 inside a 0700 data directory, whatever modes they had before."""

from __future__ import annotations

import json
import os
import re
import stat

import pytest

from vachat.config import load_settings
from vachat.testing import eventually

# A server's output appears a little after the request that causes it (s).
OUTPUT_WAIT = 10.0


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


async def wait_for_output(server, pattern: str) -> re.Match:
    try:
        return await eventually(lambda: re.search(pattern, server.output()), OUTPUT_WAIT,
                                f"{pattern!r} in the server's output")
    except AssertionError as error:
        raise AssertionError(f"{error}:\n{server.output()}") from None


@pytest.mark.gen_test(timeout=60)
async def test_a_development_server_keeps_secrets_private_and_mail_out_of_the_log(server_process, tmp_path):
    data = tmp_path / "var"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    secrets_file = data / "secrets.json"
    secrets_file.write_text("{not json")  # unusable: regenerated, in the file that is there
    os.chmod(secrets_file, 0o644)
    server = server_process(env={
        "VACHAT_ENV": "development", "JWT_SECRET": "", "JWT_REFRESH_SECRET": "", "VACHAT_DATA_DIR": str(data),
        "DATABASE_URL": f"sqlite:///{data / 'vachat.db'}", "LOG_DIR": str(data / "log"), "REDIS_URL": "",
    })
    await server.wait_ready()
    response = await server.fetch("/api/auth/register", method="POST",
                                  json={"email": "dev@example.com", "password": "Dev-Machine-42?"})
    assert response.code == 201, response.body
    token = (await wait_for_output(server, r"/verify-email/([A-Za-z0-9_-]{20,})")).group(1)
    await wait_for_output(server, r"e-mail printed on standard output")
    # Opening the mailed page puts its address in the access log: the token part redacted.
    assert (await server.fetch(f"/verify-email/{token}")).code == 200
    await wait_for_output(server, r"/verify-email/\[REDACTED\]")

    log_text = (data / "log" / "vachat.log").read_text()
    assert "/verify-email/[REDACTED]" in log_text
    assert "e-mail printed on standard output" in log_text  # the log does say a mail went out
    assert token not in log_text

    assert mode(data) == 0o700
    assert mode(data / "log") == 0o700
    assert mode(secrets_file) == 0o600
    assert json.loads(secrets_file.read_text())["jwt_secret"]
    for name in ("vachat.db", "vachat.db-wal", "vachat.db-shm"):
        if (data / name).exists() or name == "vachat.db":
            assert mode(data / name) == 0o600, name


def test_an_existing_secrets_file_is_tightened_when_read(tmp_path):
    data = tmp_path / "state"
    data.mkdir()
    os.chmod(data, 0o755)
    secrets_file = data / "secrets.json"
    stored = {"jwt_secret": "a" * 64, "jwt_refresh_secret": "b" * 64}
    secrets_file.write_text(json.dumps(stored))
    os.chmod(secrets_file, 0o644)
    settings = load_settings(environ={"VACHAT_DATA_DIR": str(data)})
    assert settings.jwt_secret == "a" * 64  # kept, not regenerated
    assert (mode(data), mode(secrets_file)) == (0o700, 0o600)


def test_an_existing_sqlite_file_is_tightened(tmp_path):
    from vachat.db import connect_url

    database = tmp_path / "old.db"
    database.write_bytes(b"")
    os.chmod(database, 0o644)
    engine = connect_url(f"sqlite:///{database}")
    engine.connect()
    engine.execute_sql("CREATE TABLE t (x INTEGER)")
    engine.close()
    assert mode(database) == 0o600
    fresh = tmp_path / "new" / "deeper" / "fresh.db"
    connect_url(f"sqlite:///{fresh}").connect()
    assert (mode(fresh), mode(fresh.parent), mode(fresh.parent.parent)) == (0o600, 0o700, 0o700)
