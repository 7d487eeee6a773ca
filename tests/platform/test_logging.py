"""Logging: JSON lines, one access line per request with its fields, daily files under
LOG_DIR with a separate error file, and secrets redacted wherever they appear."""

import json
import logging

import pytest

from vachat.logs import configure_logging, redact
from tests.plugins import sample

pytestmark = pytest.mark.vachat(plugins=[("sample", sample)])


@pytest.fixture
def log_dir(tmp_path):
    directory = tmp_path / "logs"
    configure_logging("INFO", directory, retention_days=3)
    yield directory
    configure_logging("WARNING", None)  # back to stdout only for the other tests


def lines(path):
    for handler in logging.getLogger().handlers:
        handler.flush()
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.gen_test
async def test_access_log_line_per_request(log_dir, fetch):
    await fetch("/api/sample/widgets", method="POST", json={"name": "a", "size": 1}, user="alice",
                headers={"X-Request-ID": "req-42"})
    access = [entry for entry in lines(log_dir / "vachat.log") if entry["logger"] == "vachat.access"]
    entry = next(e for e in access if e["requestId"] == "req-42")
    assert entry["method"] == "POST" and entry["route"] == "/api/sample/widgets" and entry["status"] == 201
    assert entry["userId"] == "alice" and entry["durationMs"] >= 0 and entry["level"] == "INFO"


@pytest.mark.gen_test
async def test_errors_go_to_the_error_file_redacted(log_dir, fetch):
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJzZWNyZXQtdG9rZW4ifQ.secret-token-value"
    await fetch("/api/sample/faults/crash", headers={"Authorization": f"Bearer {token}"})
    errors = (log_dir / "error.log").read_text()
    assert "boom" in errors and "RuntimeError" in errors
    assert "hunter2" not in errors and "secret-token-value" not in errors
    everything = (log_dir / "vachat.log").read_text()
    assert "hunter2" not in everything and "secret-token-value" not in everything


def test_secrets_never_reach_a_log_file(log_dir):
    log = logging.getLogger("vachat.test")
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"
    log.warning("login attempt password=%s token %s", "Sup3r$ecret", jwt,
                extra={"apiKey": "vak_abcdefghijklmnop", "body": {"password": "x1", "note": "ok"},
                       "url": "postgresql://u:dbpass@h/db"})
    try:
        raise ValueError("Authorization: Bearer abc.def.ghi")
    except ValueError:
        log.exception("failed with secret=topsecret")
    text = (log_dir / "vachat.log").read_text()
    for secret in ("Sup3r$ecret", jwt, "vak_abcdefghijklmnop", '"x1"', "dbpass", "abc.def.ghi", "topsecret"):
        assert secret not in text
    entry = lines(log_dir / "vachat.log")[0]
    assert entry["body"]["note"] == "ok" and entry["body"]["password"] == "[REDACTED]"


def test_redact_leaves_ordinary_text_alone():
    assert redact("GET /api/chat/conversations 200 in 3ms") == "GET /api/chat/conversations 200 in 3ms"
