"""``python -m vachat files reconcile`` as an operator runs it: a separate process on the same
database and storage (upload folder, or bucket)."""

import os
import subprocess
import sys

import pytest

from vachat.testing import TEST_REFRESH_SECRET, TEST_SECRET

from .helpers import TEXT, upload


def run_reconcile(app, tmp_path, files_storage, *args):
    env = {**os.environ, "VACHAT_ENV": "test", "DATABASE_URL": app.config.database_url, "REDIS_URL": "",
           "UPLOAD_PATH": str(app.plugin_state("files").settings.upload_path), "LOG_DIR": "",
           "VACHAT_DATA_DIR": str(tmp_path / "cli-var"), "JWT_SECRET": TEST_SECRET,
           "JWT_REFRESH_SECRET": TEST_REFRESH_SECRET, "VACHAT_PLUGINS": "files", **files_storage}
    return subprocess.run([sys.executable, "-m", "vachat", "files", "reconcile", "--grace", "0", *args],
                          env=env, capture_output=True, text=True, timeout=60, cwd=str(tmp_path))


@pytest.mark.gen_test(timeout=120)
async def test_reconcile_finds_a_planted_orphan_and_a_row_without_bytes(app, fetch, tmp_path, files_storage, store):
    kept = (await upload(fetch, "alice", "kept.txt", TEXT)).data
    lost = (await upload(fetch, "alice", "lost.txt", b"soon gone")).data
    [lost_key] = [key for key in store.keys() if store.read(key) == b"soon gone"]
    store.remove(lost_key)
    orphan = "ab/cd/abcd" + "0" * 28
    store.put(orphan, b"nobody's")
    abandoned = store.root / ".incoming" / ("f" * 32 + ".part")
    abandoned.write_bytes(b"half an upload")
    unfinished = [abandoned.name, *store.abandon_multipart("12/34/1234" + "0" * 28)]  # S3: a crashed commit
    stranger = "ab/cd/not-a-key.txt"  # not ours: never touched
    store.put(stranger, b"operator's note")

    dry = run_reconcile(app, tmp_path, files_storage, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"would remove orphan object {orphan}" in dry.stdout
    assert all(f"would remove abandoned upload {name}" in dry.stdout for name in unfinished), dry.stdout
    assert f"would remove row {lost['id']}" in dry.stdout
    assert f"1 orphan objects, {len(unfinished)} abandoned uploads, 1 rows without objects" in dry.stdout
    assert store.exists(orphan) and abandoned.exists()
    assert len((await fetch("/api/files", user="alice")).data) == 2

    real = run_reconcile(app, tmp_path, files_storage)
    assert real.returncode == 0, real.stderr
    assert f"removed orphan object {orphan}" in real.stdout
    assert not store.exists(orphan) and store.incoming() == [] and store.multipart_uploads() == []
    assert store.exists(stranger)
    assert [f["id"] for f in (await fetch("/api/files", user="alice")).data] == [kept["id"]]
    assert (await fetch(f"/api/files/{kept['id']}/download", user="alice")).body == TEXT

    again = run_reconcile(app, tmp_path, files_storage)
    assert "0 orphan objects, 0 abandoned uploads, 0 rows without objects" in again.stdout
