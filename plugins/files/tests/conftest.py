"""Every test of the files plugin runs on each storage backend: ``local`` always, and ``s3``
against the session's SeaweedFS (``vachat.testing``'s ``seaweedfs``: skipped where the ``weed``
binary is missing, failed instead under ``CI=true``).

``files_storage`` is the backend's ``FILES_*`` variables (empty for local): the ``app`` fixture
gets them through ``vachat_config``, and tests that start ``vachat serve`` or the command pass
them on. Each s3 test has a prefix of its own in one bucket, so it sees only its own objects.
``store`` / ``store_at(root)`` look at what the backend holds (``helpers.Store``).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any, Callable

import pytest

from .helpers import Store

#: The bucket of the whole session; the first node started creates it.
BUCKET = "vachat-files-tests"


@pytest.fixture(params=["local", "s3"], autouse=True)
def files_storage(request: pytest.FixtureRequest) -> dict[str, str]:
    if request.param == "local":
        return {}
    server = request.getfixturevalue("seaweedfs")
    return server.env(BUCKET, prefix=f"test-{secrets.token_hex(6)}/")


@pytest.fixture
def vachat_config(files_storage: dict[str, str]) -> dict[str, Any]:
    return {"environ": dict(files_storage)} if files_storage else {}


@pytest.fixture
def store_at(request: pytest.FixtureRequest, files_storage: dict[str, str]) -> Callable[[Path], Store]:
    """``store_at(upload_path)``: the ``Store`` of a node with that upload folder."""
    if not files_storage:
        return Store
    client = request.getfixturevalue("seaweedfs").client()
    request.addfinalizer(client.close)
    return lambda root: Store(root, client, files_storage["FILES_S3_BUCKET"], files_storage["FILES_S3_PREFIX"])


@pytest.fixture
def store(app: Any, store_at: Callable[[Path], Store]) -> Store:
    """What the ``app`` fixture's backend holds."""
    return store_at(app.plugin_state("files").settings.upload_path)
