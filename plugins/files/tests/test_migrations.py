"""The files plugin's migrations, run as operators run them (`run.py migrate`, SQLite)."""

import sqlite3
import subprocess
import sys
from pathlib import Path

RUN_PY = Path(__file__).resolve().parents[3] / "run.py"


def run(tmp_path, *args):
    environment = {"PATH": "/usr/bin:/bin", "LOG_DIR": "", "VACHAT_ENV": "test",
                   "DATABASE_URL": f"sqlite:///{tmp_path / 'files.db'}"}
    result = subprocess.run([sys.executable, str(RUN_PY), "migrate", *args], env=environment,
                            capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    return result.stdout


def tables(database):
    return {row[0] for row in database.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_the_attachment_copy_is_dropped_and_its_rollback_rebuilds_it_from_chats_links(tmp_path):
    run(tmp_path)
    database = sqlite3.connect(tmp_path / "files.db")
    assert "chat_message_file" in tables(database) and "files_attachment" not in tables(database)
    with database:
        database.execute("INSERT INTO chat_message (id, conversation_id, role, type, content, metadata, is_edited,"
                         " created_at, updated_at) VALUES ('m1', 'c1', 'user', 'text', 'hi', '{}', 0,"
                         " '2026-01-01 00:00:00', '2026-01-01 00:00:00'),"
                         " ('m2', 'c1', 'user', 'text', '', '{}', 0, '2026-01-01 00:00:00',"
                         " '2026-01-01 00:00:00')")
        database.execute("UPDATE chat_message SET deleted_at = '2026-01-02 00:00:00' WHERE id = 'm2'")
        database.execute("INSERT INTO chat_message_file (id, message_id, file_id, position)"
                         " VALUES ('l1', 'm1', 'f1', 0), ('l2', 'm2', 'f2', 0)")

    assert "004_drop_attachments" in run(tmp_path, "rollback", "--owner", "files")
    rows = database.execute("SELECT file_id, message_id, conversation_id FROM files_attachment").fetchall()
    assert rows == [("f1", "m1", "c1")]  # a deleted message's link is not brought back

    run(tmp_path)
    assert "files_attachment" not in tables(database)
