"""Uploads through the real server: real files of each kind, content sniffing that the
declared type and the name never override, refusals that leave nothing behind, EXIF."""

import hashlib

import pytest

from vachat.testing import assert_error, error_fields

from .helpers import (
    GPS_INFO_TAG, HTML, SVG, TEXT, docx_bytes, exif_of, jpeg_bytes, multipart, pdf_bytes, png_bytes,
    upload,
)


async def download(fetch, user, file_id, **kwargs):
    return await fetch(f"/api/files/{file_id}/download", user=user, **kwargs)


@pytest.mark.gen_test
@pytest.mark.parametrize("filename, make, expected", [
    ("photo.png", png_bytes, "image/png"),
    ("photo.jpg", jpeg_bytes, "image/jpeg"),
    ("paper.pdf", pdf_bytes, "application/pdf"),
    ("notes.txt", lambda: TEXT, "text/plain"),
    ("letter.docx", docx_bytes, "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
])
async def test_real_files_are_stored_with_the_type_their_content_shows(app, fetch, filename, make, expected, store):
    data = make()
    # The declared type is wrong on purpose: it never decides.
    response = await upload(fetch, "alice", filename, data, declared="application/x-msdownload",
                            description="for the test", purpose="document")
    assert response.code == 201, response.body
    file = response.data
    assert file["mimeType"] == expected
    assert file["originalName"] == filename
    assert file["size"] == len(data)
    assert file["sha256"] == hashlib.sha256(data).hexdigest()
    assert file["description"] == "for the test" and file["purpose"] == "document"
    assert file["isPublic"] is False and file["downloadCount"] == 0 and file["ownerId"] == "alice"
    assert file["url"] == f"/api/files/{file['id']}/download"

    got = await download(fetch, "alice", file["id"])
    assert got.code == 200 and got.body == data
    assert got.headers["Content-Type"] == expected
    # Stored under a generated name, sharded, nothing left in the incoming folder.
    keys = store.keys()
    assert len(keys) == 1 and filename not in keys[0]
    assert store.incoming() == []


@pytest.mark.gen_test
@pytest.mark.parametrize("filename, data, declared", [
    ("innocent.png", HTML, "image/png"),                       # HTML renamed .png
    ("page.txt", HTML, "text/plain"),                          # HTML as text
    ("drawing.svg", SVG, "image/svg+xml"),                     # SVG with a script
    ("drawing.txt", SVG, "text/plain"),                        # the same SVG as text
    ("run.png", b"alert(document.cookie);\n", "image/png"),    # a script named as an image
    ("run.jpg", b"#!/bin/sh\nrm -rf /\n", "text/plain"),       # a shell script named as an image
    ("tool.exe", b"MZ\x90\x00" + b"\x00" * 200, "application/octet-stream"),
    ("archive.zip", docx_bytes(with_document=False), "application/zip"),  # zip, not a document
    ("binary.txt", b"text then \x00\x01\x02 binary", "text/plain"),
])
async def test_content_off_the_allow_list_is_415_and_leaves_nothing(app, fetch, filename, data, declared, store):
    response = await upload(fetch, "alice", filename, data, declared=declared)
    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert store.keys() == []
    listed = await fetch("/api/files", user="alice")
    assert listed.data == []


@pytest.mark.gen_test
async def test_text_that_turns_invalid_after_the_sniffed_head_is_refused(app, fetch, store):
    data = b"a" * 20000 + b"\xff\xfe not utf-8" + b"b" * 100
    response = await upload(fetch, "alice", "long.txt", data, declared="text/plain")
    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert store.keys() == [] and store.incoming() == []


@pytest.mark.gen_test
async def test_a_docx_without_its_document_part_is_refused(app, fetch, store):
    # Signature-wise a Word file (word/ parts at the start), structurally not one.
    response = await upload(fetch, "alice", "fake.docx", docx_bytes(with_document=False))
    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert store.keys() == []


@pytest.mark.gen_test
@pytest.mark.parametrize("raw, expected", [
    ("../../etc/passwd.txt", "passwd.txt"),
    ("..\\..\\windows\\system.ini.txt", "system.ini.txt"),
    ("..", "file"),
    ("nul\x00byte.txt", "nulbyte.txt"),
    ("bell\x07\x1b[31mred\t\x7f.txt", "bell[31mred .txt"),
    ("invoice\u202etxt.exe", "invoicetxt.exe"),
    (".hidden.txt", "hidden.txt"),
    ("a" * 1000 + ".txt", "a" * 251 + ".txt"),
])
async def test_hostile_file_names_are_cleaned_and_never_reach_the_disk(app, fetch, raw, expected, store):
    response = await upload(fetch, "alice", raw, TEXT.replace(b"<angle> ", b""), declared="text/plain")
    assert response.code == 201, response.body
    assert response.data["originalName"] == expected
    got = await download(fetch, "alice", response.data["id"])
    disposition = got.headers["Content-Disposition"]
    assert disposition.startswith("attachment; filename=\"")
    assert "filename*=UTF-8''" in disposition
    assert all(32 <= ord(ch) < 127 for ch in disposition)
    [key] = store.keys()
    first, second, name = key.split("/")
    assert len(name) == 32 and all(c in "0123456789abcdef" for c in name) and first + second == name[:4]


@pytest.mark.gen_test
async def test_a_unicode_name_keeps_its_exact_form_in_filename_star(app, fetch):
    response = await upload(fetch, "alice", "résumé 日本.txt", b"hello", declared="text/plain")
    assert response.data["originalName"] == "résumé 日本.txt"
    got = await download(fetch, "alice", response.data["id"])
    assert got.headers["Content-Disposition"] == (
        "attachment; filename=\"resume __.txt\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20%E6%97%A5%E6%9C%AC.txt")


@pytest.mark.gen_test
async def test_gps_exif_is_stripped_unless_the_upload_keeps_it(app, fetch):
    photo = jpeg_bytes((80, 60), gps=True)
    assert GPS_INFO_TAG in exif_of(photo)
    stripped = await upload(fetch, "alice", "trip.jpg", photo, declared="image/jpeg")
    assert stripped.code == 201
    body = (await download(fetch, "alice", stripped.data["id"])).body
    assert exif_of(body) == {}
    assert stripped.data["size"] == len(body) and stripped.data["sha256"] == hashlib.sha256(body).hexdigest()

    kept = await upload(fetch, "alice", "trip.jpg", photo, declared="image/jpeg", keepExif="true")
    body = (await download(fetch, "alice", kept.data["id"])).body
    assert body == photo and GPS_INFO_TAG in exif_of(body)


@pytest.mark.gen_test
async def test_form_problems_are_400_with_the_field_named(app, fetch, store):
    body, content_type = multipart(fields={"purpose": "general"})
    response = await fetch("/api/files/upload", method="POST", body=body, headers={"Content-Type": content_type}, user="alice")
    assert error_fields(assert_error(response, 400, "VALIDATION_FAILED")) == {"file": "is required"}

    response = await upload(fetch, "alice", "a.txt", b"hi", declared="text/plain", owner="bob")
    assert error_fields(assert_error(response, 400, "VALIDATION_FAILED")) == {"owner": "is not an allowed field"}

    response = await upload(fetch, "alice", "a.txt", b"hi", declared="text/plain", purpose="avatar")
    assert "purpose" in error_fields(assert_error(response, 400, "VALIDATION_FAILED"))

    response = await upload(fetch, "alice", "a.txt", b"hi", declared="text/plain", isPublic="maybe")
    assert error_fields(assert_error(response, 400, "VALIDATION_FAILED")) == {"isPublic": "must be true or false"}

    response = await upload(fetch, "alice", "a.txt", b"", declared="text/plain")
    assert error_fields(assert_error(response, 400, "VALIDATION_FAILED")) == {"file": "must not be empty"}

    response = await fetch("/api/files/upload", method="POST", body=b"garbage", user="alice",
                           headers={"Content-Type": "multipart/form-data; boundary=xyz"})
    assert_error(response, 400, "VALIDATION_FAILED")
    assert store.keys() == [] and store.incoming() == []


@pytest.mark.gen_test
async def test_not_multipart_is_415_and_strangers_are_401(app, fetch):
    response = await fetch("/api/files/upload", method="POST", json={"file": "x"}, user="alice")
    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    body, content_type = multipart(("a.txt", b"hello", "text/plain"))
    response = await fetch("/api/files/upload", method="POST", body=body, headers={"Content-Type": content_type})
    assert_error(response, 401, "UNAUTHORIZED")


@pytest.mark.gen_test
@pytest.mark.vachat(config={"plugin_sections": {"files": {"max_file_size": "64KiB", "user_quota": "80KiB"}}})
async def test_the_quota_refuses_an_upload_that_would_pass_it(app, fetch, store):
    first = await upload(fetch, "alice", "one.jpg", jpeg_bytes((220, 220), noise=True), declared="image/jpeg")
    assert first.code == 201, first.body
    assert 30_000 < first.data["size"] < 64 * 1024
    second = await upload(fetch, "alice", "two.jpg", jpeg_bytes((220, 220), noise=True), declared="image/jpeg")
    body = assert_error(second, 413, "PAYLOAD_TOO_LARGE")
    assert "quota" in body["error"] and error_fields(body) == {"file": "would exceed your storage quota"}
    assert len(store.keys()) == 1 and store.incoming() == []
    # Someone else's quota is their own.
    assert (await upload(fetch, "bob", "two.jpg", jpeg_bytes((220, 220), noise=True))).code == 201
