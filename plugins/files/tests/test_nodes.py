"""Files across nodes: two ``vachat serve`` processes on one PostgreSQL, Redis and S3 bucket
share every file; a node that cannot use its bucket refuses to start; a node that keeps files on
its own disk while Redis says there may be others warns."""

import hashlib
import os
import subprocess
import sys

import pytest

from vachat.testing import eventually, free_port, needs_redis, needs_shared_services

from .helpers import HTML, TEXT, multipart, png_bytes, raw_request

on_s3 = pytest.mark.parametrize("files_storage", ["s3"], indirect=True)
on_local = pytest.mark.parametrize("files_storage", ["local"], indirect=True)


async def upload_to(server, token, filename, data, path="/api/files/upload"):
    body, content_type = multipart((filename, data, "application/octet-stream"))
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return await raw_request(server.port, head, [body])


@needs_shared_services
@on_s3
@pytest.mark.gen_test(timeout=150)
async def test_a_file_uploaded_on_one_node_is_served_and_deleted_on_the_other(app, server_process, tmp_path,
                                                                             files_storage, store_at):
    # ``app`` empties the session's database first: earlier tests' rows name objects elsewhere,
    # which the reconcile below would rightly remove.
    first, second = (server_process({**files_storage, "UPLOAD_PATH": str(tmp_path / name)}) for name in ("one", "two"))
    await first.wait_ready()
    await second.wait_ready()
    registered = await first.fetch("/api/auth/register", method="POST",
                                   json={"email": "nodes@example.test", "password": "Correct-Horse-7!"})
    assert registered.code == 201, registered.body
    token = registered.json["data"]["tokens"]["accessToken"]
    bearer = {"Authorization": f"Bearer {token}"}

    data = TEXT * 4000  # ~280 KiB: more than one read chunk
    status, payload = await upload_to(first, token, "notes.txt", data)
    assert status == 201, payload
    file = payload["data"]
    url = f"/api/files/{file['id']}/download"

    whole = await second.fetch(url, headers=bearer)
    assert whole.code == 200 and whole.body == data
    assert whole.headers["ETag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    part = await second.fetch(url, headers={**bearer, "Range": "bytes=1000-1999"})
    assert part.code == 206 and part.body == data[1000:2000]
    assert part.headers["Content-Range"] == f"bytes 1000-1999/{len(data)}"
    assert (await second.fetch(url, headers={**bearer, "If-None-Match": whole.headers["ETag"]})).code == 304

    status, payload = await upload_to(first, token, "me.png", png_bytes((300, 200)), path="/api/users/avatar")
    assert status == 201, payload
    avatar = await second.fetch(payload["data"]["avatarUrl"])  # public: no credentials
    assert avatar.code == 200 and avatar.headers["Content-Type"] == "image/png" and avatar.body[:8] == b"\x89PNG\r\n\x1a\n"

    # Node 2's reconcile sees every live file (none lives on its disk) and removes nothing.
    env = {**os.environ, **second.env, "VACHAT_PLUGINS": "files"}
    done = subprocess.run([sys.executable, "-m", "vachat", "files", "reconcile", "--grace", "0"],
                          env=env, capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
    assert done.returncode == 0 and "0 orphan objects, 0 abandoned uploads, 0 rows without objects" in done.stdout, \
        done.stdout + done.stderr
    assert (await first.fetch(url, headers=bearer)).body == data

    assert (await second.fetch(f"/api/files/{file['id']}", method="DELETE", headers=bearer)).code == 200
    assert (await first.fetch(url, headers=bearer)).code == 404
    assert len(store_at(tmp_path / "one").keys()) == 1  # the avatar alone
    for server in (first, second):
        server.terminate()
    assert [await first.wait_exit(), await second.wait_exit()] == [0, 0]


@on_s3
@pytest.mark.gen_test(timeout=60)
async def test_a_bucket_that_is_missing_and_cannot_be_made_stops_start_up(server_process, files_storage):
    # Read-only credentials: they may look, not create.
    server = server_process({**files_storage, "FILES_S3_BUCKET": "vachat-never-made",
                             "FILES_S3_ACCESS_KEY": "reader", "FILES_S3_SECRET_KEY": "reader-secret"})
    assert await server.wait_exit(timeout=45) == 2
    assert "vachat-never-made" in server.output() and "could not be created" in server.output()


@on_s3
@pytest.mark.gen_test(timeout=60)
async def test_a_missing_bucket_is_created_at_start(server_process, files_storage, seaweedfs, tmp_path):
    bucket = "vachat-made-" + os.urandom(4).hex()
    server = server_process({**files_storage, "FILES_S3_BUCKET": bucket, "UPLOAD_PATH": str(tmp_path / "up")})
    await server.wait_ready()
    status, payload = await upload_to(server, "test:alice", "a.txt", TEXT)
    assert status == 201, payload
    status, _ = await upload_to(server, "test:alice", "page.html", HTML)
    assert status == 415  # a refused upload leaves nothing in the bucket
    client = seaweedfs.client()
    try:
        listed = client.list_objects_v2(Bucket=bucket, Prefix=files_storage["FILES_S3_PREFIX"])
    finally:
        client.close()
    assert listed["KeyCount"] == 1


@needs_redis
@on_local
@pytest.mark.gen_test(timeout=60)
async def test_local_storage_with_redis_warns_at_start(server_process):
    server = server_process()
    await server.wait_ready()
    assert await eventually(lambda: "FILES_STORAGE=local" in server.output())


@on_s3
@pytest.mark.gen_test(timeout=90)
async def test_a_store_that_cannot_be_reached_stops_start_up(server_process, files_storage):
    nobody = f"http://127.0.0.1:{free_port()}"  # a port nothing listens on
    server = server_process({**files_storage, "FILES_S3_ENDPOINT": nobody})
    assert await server.wait_exit(timeout=75) == 2
    assert "cannot reach the S3 bucket" in server.output() and nobody in server.output()
