"""Who may see, download and delete a file: the owner, anyone signed in for a public file
(read only), holders of files.access_all; everyone else sees 404 on every route. Listing
is mine only, paginated, sorted and searchable."""

import pytest

from vachat.testing import assert_error

from .helpers import TEXT, pdf_bytes, png_bytes, upload

ACCESS_ALL = {"X-Test-Permissions": "files.access_all"}


@pytest.mark.gen_test
async def test_another_users_ids_are_404_on_every_route(app, fetch):
    private = (await upload(fetch, "alice", "secret.pdf", pdf_bytes())).data
    for path, method in [(f"/api/files/{private['id']}", "GET"), (f"/api/files/{private['id']}/download", "GET"),
                         (f"/api/files/{private['id']}", "DELETE")]:
        assert_error(await fetch(path, method=method, user="mallory"), 404, "NOT_FOUND")
        assert_error(await fetch(path, method=method), 401, "UNAUTHORIZED")
    # Indistinguishable from an id that does not exist.
    missing = await fetch("/api/files/01M8KY3QAF9X5RVC992DT9Y8GE", user="mallory")
    assert missing.json["error"] == (await fetch(f"/api/files/{private['id']}", user="mallory")).json["error"]
    assert_error(await fetch("/api/files/" + "x" * 500, user="mallory"), 404, "NOT_FOUND")
    # Mallory's list does not show it, and the file is still there for Alice.
    assert (await fetch("/api/files", user="mallory")).data == []
    assert (await fetch(f"/api/files/{private['id']}/download", user="alice")).body == pdf_bytes()


@pytest.mark.gen_test
async def test_a_public_file_is_readable_by_anyone_signed_in_but_only_the_owner_deletes_it(app, fetch):
    public = (await upload(fetch, "alice", "poster.png", png_bytes(), isPublic="true")).data
    assert public["isPublic"] is True
    assert (await fetch(f"/api/files/{public['id']}", user="bob")).data["id"] == public["id"]
    assert (await fetch(f"/api/files/{public['id']}/download", user="bob")).body == png_bytes()
    assert_error(await fetch(f"/api/files/{public['id']}/download"), 401, "UNAUTHORIZED")
    assert_error(await fetch(f"/api/files/{public['id']}", method="DELETE", user="bob"), 403, "FORBIDDEN")
    assert (await fetch(f"/api/files/{public['id']}", user="alice")).code == 200


@pytest.mark.gen_test
async def test_files_access_all_reads_and_deletes_anyones_file(app, fetch):
    private = (await upload(fetch, "alice", "secret.txt", TEXT)).data
    assert (await fetch(f"/api/files/{private['id']}", user="moderator", headers=ACCESS_ALL)).code == 200
    assert (await fetch(f"/api/files/{private['id']}/download", user="moderator", headers=ACCESS_ALL)).body == TEXT
    deleted = await fetch(f"/api/files/{private['id']}", method="DELETE", user="moderator", headers=ACCESS_ALL)
    assert deleted.code == 200 and deleted.data == {"id": private["id"]}
    assert_error(await fetch(f"/api/files/{private['id']}", user="alice"), 404, "NOT_FOUND")
    assert "files.access_all" in app.permissions


@pytest.mark.gen_test
async def test_deleting_removes_the_row_and_the_bytes(app, fetch, store):
    kept = (await upload(fetch, "alice", "keep.txt", b"keep me")).data
    gone = (await upload(fetch, "alice", "gone.txt", b"delete me")).data
    assert len(store.keys()) == 2
    assert (await fetch(f"/api/files/{gone['id']}", method="DELETE", user="alice")).code == 200
    assert store.contents() == [b"keep me"]
    assert_error(await fetch(f"/api/files/{gone['id']}", method="DELETE", user="alice"), 404, "NOT_FOUND")
    assert [f["id"] for f in (await fetch("/api/files", user="alice")).data] == [kept["id"]]


@pytest.mark.gen_test
@pytest.mark.vachat(plugins=["files", "admin"])
async def test_deleting_a_user_removes_their_rows_and_bytes_only(app, fetch, make_user, admin_user, store):
    alice, bob = await make_user(), await make_user()
    for name in ("a.txt", "b.txt"):
        await upload(fetch, alice, name, b"alice's " + name.encode())
    await upload(fetch, alice, "me.png", png_bytes(), path="/api/users/avatar")
    await upload(fetch, bob, "c.txt", b"bob's")
    dashboard = await fetch("/api/admin/dashboard", user=admin_user)
    assert dashboard.data["files"]["count"] == 4 and "files" not in dashboard.data.get("missing", [])

    deleted = await fetch(f"/api/admin/users/{alice.id}", method="DELETE", user=admin_user)
    assert deleted.code == 200, deleted.body
    assert store.contents() == [b"bob's"]
    await app.hooks.vachat_user_deleting(user_id=alice.id)  # idempotent: a retried deletion
    assert len((await fetch("/api/files", user=bob)).data) == 1
    totals = (await fetch("/api/admin/dashboard", user=admin_user)).data["files"]
    assert totals == {"count": 1, "bytes": len(b"bob's")}


@pytest.mark.gen_test
async def test_my_list_is_paginated_sorted_and_searchable(app, fetch):
    names = ["alpha.txt", "beta.txt", "gamma.txt", "delta-report.txt", "epsilon.txt"]
    for index, name in enumerate(names):
        await upload(fetch, "alice", name, b"x" * (index + 1))
    await upload(fetch, "bob", "bobs.txt", b"bob")

    page = await fetch("/api/files?limit=2&page=1", user="alice")
    assert page.json["pagination"] == {"page": 1, "limit": 2, "total": 5, "totalPages": 3}
    assert [f["originalName"] for f in page.data] == ["epsilon.txt", "delta-report.txt"]  # newest first
    last = await fetch("/api/files?limit=2&page=3", user="alice")
    assert [f["originalName"] for f in last.data] == ["alpha.txt"]

    by_size = await fetch("/api/files?sortBy=size&sortOrder=asc", user="alice")
    assert [f["size"] for f in by_size.data] == [1, 2, 3, 4, 5]
    found = await fetch("/api/files?search=REPORT", user="alice")
    assert [f["originalName"] for f in found.data] == ["delta-report.txt"]
    assert_error(await fetch("/api/files?sortBy=ownerId", user="alice"), 400, "VALIDATION_FAILED")
    assert_error(await fetch("/api/files?limit=1000", user="alice"), 400, "VALIDATION_FAILED")


@pytest.mark.gen_test
async def test_the_routes_are_in_the_openapi_document(app, fetch):
    document = (await fetch("/api/openapi.json")).json
    paths = document["paths"]
    for path in ("/api/files/upload", "/api/files", "/api/users/avatar"):
        assert path in paths, sorted(paths)
    assert any(path.startswith("/api/files/") and path.endswith("/download") for path in paths)
