"""Avatars: images only, size-capped, re-encoded without EXIF, served publicly at an
unguessable URL, replaced without leaving the old one behind."""

import io

import pytest
from PIL import Image

from vachat.testing import assert_error

from .helpers import GPS_INFO_TAG, HTML, exif_of, jpeg_bytes, png_bytes, upload


@pytest.mark.gen_test
async def test_an_avatar_is_reencoded_without_exif_and_served_without_credentials(app, fetch, make_user):
    alice = await make_user()
    photo = jpeg_bytes((1200, 900), gps=True)
    assert GPS_INFO_TAG in exif_of(photo)
    response = await upload(fetch, alice, "me.jpg", photo, path="/api/users/avatar")
    assert response.code == 201, response.body
    url = response.data["avatarUrl"]
    token = url.removeprefix("/api/files/avatars/").removesuffix(".png")
    assert len(token) == 32
    assert response.data["file"]["purpose"] == "avatar" and response.data["file"]["url"] == url

    public = await fetch(url)  # no credentials
    assert public.code == 200 and public.headers["Content-Type"] == "image/png"
    assert public.headers["X-Content-Type-Options"] == "nosniff"
    with Image.open(io.BytesIO(public.body)) as image:
        assert image.format == "PNG" and max(image.size) == 512 and image.size == (512, 384)
    assert exif_of(public.body) == {}
    profile = await fetch("/api/users/profile", user=alice)
    assert profile.data["avatarUrl"] == url
    # A guessed token is just a 404.
    assert_error(await fetch("/api/files/avatars/" + "A" * 32 + ".png"), 404, "NOT_FOUND")
    assert_error(await fetch("/api/files/avatars/..%2F..%2Fetc.png"), 404, "NOT_FOUND")


@pytest.mark.gen_test
async def test_a_new_avatar_replaces_the_old_one_entirely(app, fetch, make_user, store):
    alice = await make_user()
    first = (await upload(fetch, alice, "one.png", png_bytes((300, 300)), path="/api/users/avatar")).data
    second = (await upload(fetch, alice, "two.png", png_bytes((200, 100), (0, 200, 0)), path="/api/users/avatar")).data
    assert first["avatarUrl"] != second["avatarUrl"]
    assert_error(await fetch(first["avatarUrl"]), 404, "NOT_FOUND")
    assert (await fetch(second["avatarUrl"])).code == 200
    assert len(store.keys()) == 1  # the old bytes and the raw upload are gone
    assert (await fetch("/api/users/profile", user=alice)).data["avatarUrl"] == second["avatarUrl"]
    mine = (await fetch("/api/files?purpose=avatar", user=alice)).data
    assert [f["id"] for f in mine] == [second["file"]["id"]]
    # Deleting the avatar file clears the profile's URL.
    assert (await fetch(f"/api/files/{second['file']['id']}", method="DELETE", user=alice)).code == 200
    assert (await fetch("/api/users/profile", user=alice)).data["avatarUrl"] is None


@pytest.mark.gen_test
@pytest.mark.vachat(config={"plugin_sections": {"files": {"max_avatar_size": "64KiB"}}})
async def test_avatars_are_images_within_the_cap(app, fetch, make_user, store):
    alice = await make_user()
    assert_error(await upload(fetch, alice, "me.png", HTML, path="/api/users/avatar"), 415, "UNSUPPORTED_MEDIA_TYPE")
    assert_error(await upload(fetch, alice, "me.txt", b"just text", path="/api/users/avatar"), 415, "UNSUPPORTED_MEDIA_TYPE")
    big = jpeg_bytes((400, 400), noise=True)
    assert len(big) > 64 * 1024
    assert_error(await upload(fetch, alice, "big.jpg", big, path="/api/users/avatar"), 413, "PAYLOAD_TOO_LARGE")
    # Pictures that announce more pixels than any camera makes (decompression bombs): past our
    # own limit, and past the point where Pillow itself refuses.
    for edge in (8000, 20000):
        bomb = io.BytesIO()
        Image.new("1", (edge, edge)).save(bomb, format="PNG")
        assert len(bomb.getvalue()) < 64 * 1024
        response = await upload(fetch, alice, "bomb.png", bomb.getvalue(), path="/api/users/avatar")
        assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert store.keys() == []
    assert (await fetch("/api/users/profile", user=alice)).data["avatarUrl"] is None


@pytest.mark.gen_test
async def test_a_range_past_any_file_on_the_public_avatar_url_is_416(app, fetch, make_user):
    alice = await make_user()
    url = (await upload(fetch, alice, "me.png", png_bytes((64, 64)), path="/api/users/avatar")).data["avatarUrl"]
    refused = await fetch(url, headers={"Range": "bytes=0-" + "9" * 4301})
    assert_error(refused, 416, "RANGE_NOT_SATISFIABLE")
    assert (await fetch(url, headers={"Range": "bytes=0-9"})).code == 206
