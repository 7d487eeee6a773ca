"""Choosing the storage backend: a service another plugin publishes is used as it is (named by
FILES_STORAGE or its older name FILES_STORAGE_BACKEND), and a name that is none of local, s3 or
a service stops start-up."""

import types

import pytest

from vachat.plugin_api import hookimpl

from plugins.files.storage import LocalDiskStorage

from .helpers import TEXT, upload

on_local = pytest.mark.parametrize("files_storage", ["local"], indirect=True)


class CountingStorage(LocalDiskStorage):
    """A disk store of the plugin's own, elsewhere, counting what it is given."""

    def __init__(self, root, run_blocking):
        super().__init__(root, run_blocking)
        self.committed = 0

    async def _keep(self, path, key):
        self.committed += 1
        await super()._keep(path, key)


def storage_plugin(root):
    module = types.ModuleType("vault_plugin")

    @hookimpl
    def vachat_services(app):
        return {"vault.store": CountingStorage(root, app.run_blocking)}

    @hookimpl
    async def vachat_startup(app):
        await app.service("vault.store").start()

    setattr(module, "vachat_services", vachat_services)
    setattr(module, "vachat_startup", vachat_startup)
    return module


@pytest.fixture
def vachat_plugins(tmp_path):
    return [("vault", storage_plugin(tmp_path / "vault"))]


@pytest.fixture(params=["FILES_STORAGE", "FILES_STORAGE_BACKEND"])
def vachat_config(request):
    return {"environ": {request.param: "vault.store"}}


@on_local
@pytest.mark.gen_test
async def test_a_service_another_plugin_publishes_keeps_the_files(app, fetch, tmp_path, store):
    file = (await upload(fetch, "alice", "notes.txt", TEXT)).data
    vault = app.service("vault.store")
    assert vault.committed == 1 and store.keys() == []  # nothing under the files plugin's own folder
    assert (await fetch(f"/api/files/{file['id']}/download", user="alice")).body == TEXT
    assert (await fetch(f"/api/files/{file['id']}", method="DELETE", user="alice")).code == 200
    assert [key async for key in vault.keys()] == []


@on_local
@pytest.mark.gen_test(timeout=60)
async def test_an_unknown_backend_name_stops_start_up(server_process):
    server = server_process({"FILES_STORAGE": "nowhere"})
    assert await server.wait_exit(timeout=45) == 2
    assert "FILES_STORAGE='nowhere'" in server.output()
