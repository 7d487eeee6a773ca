"""The S3 storage backend (``FILES_STORAGE=s3``): file contents in a bucket every node shares,
on AWS S3 or any S3-compatible store (SeaweedFS, MinIO, Ceph).

The client is aiobotocore: botocore's own request signing, retries, error model and pagination
(the reference implementation of the S3 protocol) on aiohttp, so no call ever blocks the IOLoop.
Addressing is path-style (``endpoint/bucket/key``), which every S3-compatible store accepts and
needs no wildcard DNS. Checksums are computed and checked only where the operation requires
them: botocore's default CRC32 trailers (since 1.36) are mishandled by several stores.

- ``commit`` sends the upload's spooled file: one PUT up to ``PART_BYTES``, a multipart upload
  beyond, one part in memory at a time (memory stays flat whatever the size). A multipart upload
  that fails is aborted; one abandoned by a crash is listed by ``stale_uploads`` for
  ``files reconcile``.
- ``read`` is a ranged GET streamed in chunks, closed as soon as the reader stops.
- ``exists`` is a HEAD that answers False only for a 404: any other failure raises, so a row is
  never taken for orphaned because the store could not be reached.
- An unreachable store or a refused request becomes 503 ``UNAVAILABLE`` for the client.

Keys in the bucket are ``FILES_S3_PREFIX`` + the plugin's own key (``ab/cd/<32 hex>``); nothing
else in the bucket is ever listed as ours or touched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import aiobotocore.session
from aiohttp import ClientError as HttpClientError
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from vachat.plugin_api import StartupRefused, Unavailable

from .settings import S3Settings
from .spool import KEY_PATTERN, READ_CHUNK_BYTES, RunBlocking, Spool, SpooledUpload, check_key

__all__ = ["S3Storage", "PART_BYTES"]

log = logging.getLogger("vachat.plugins.files")

#: Size of one part of a multipart upload, and the largest object sent in a single PUT: the one
#: buffer an upload's commit holds. S3's smallest part (but the last) is 5 MiB and an upload
#: has at most 10,000 parts, so files up to 48 GiB; memory beats reach here.
PART_BYTES = 5 * 1024 * 1024
#: Connections kept to the store: each download holds one while it streams, so this is how many
#: files a node serves at once before the next waits for a connection.
MAX_CONNECTIONS = 100
#: A store that does not accept a connection within this many seconds is taken as down (503).
CONNECT_TIMEOUT = 5
#: Longest wait for the next bytes of an answer: a part upload of PART_BYTES on a slow link.
READ_TIMEOUT = 60
# Names of abandoned multipart uploads in ``stale_uploads``: ``multipart:<key>:<upload id>``.
_MULTIPART = "multipart:"
_MISSING_CODES = {"404", "NoSuchKey", "NotFound", "NoSuchBucket"}


def _status_of(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _is_missing(error: ClientError) -> bool:
    return _status_of(error) in _MISSING_CODES or \
        error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404


@contextlib.contextmanager
def _store_errors(action: str) -> Iterator[None]:
    """A store that cannot be reached, or refuses, is a 503 for the client (and a log line)."""
    try:
        yield
    except (ClientError, BotoCoreError, HttpClientError, OSError) as error:
        if isinstance(error, FileNotFoundError):
            raise
        log.warning("the S3 store failed to %s: %s", action, error)
        raise Unavailable("The file store is unavailable; try again shortly") from error


def _read_part(path: Path, offset: int, size: int) -> bytes:
    with open(path, "rb") as stream:
        stream.seek(offset)
        return stream.read(size)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


class S3Storage:
    def __init__(self, settings: S3Settings, spool: Spool, run_blocking: RunBlocking) -> None:
        self.settings = settings
        self.bucket = settings.bucket
        self.prefix = settings.prefix
        self.spool = spool
        self._run_blocking = run_blocking
        self._exit = contextlib.AsyncExitStack()
        self._client: Any = None

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        await self._run_blocking(self.spool.prepare)
        settings = self.settings
        config = Config(
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            retries={"mode": "standard", "max_attempts": 3},
            connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT,
            max_pool_connections=MAX_CONNECTIONS,
        )
        session = aiobotocore.session.get_session()
        self._client = await self._exit.enter_async_context(session.create_client(
            "s3", endpoint_url=settings.endpoint, region_name=settings.region, config=config,
            aws_access_key_id=settings.access_key, aws_secret_access_key=settings.secret_key))
        try:
            await self._ensure_bucket()
        except BaseException:
            await self.close()
            raise

    async def _ensure_bucket(self) -> None:
        where = f"the S3 bucket {self.bucket!r} at {self.settings.endpoint or 'AWS'}"
        try:
            await self._client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as error:
            if not _is_missing(error):
                raise StartupRefused(f"files: cannot use {where}: {_status_of(error)} (check FILES_S3_ACCESS_KEY, "
                                     "FILES_S3_SECRET_KEY and the bucket's permissions)") from None
        except (BotoCoreError, HttpClientError, OSError) as error:
            raise StartupRefused(f"files: cannot reach {where}: {error}") from None
        create: dict[str, Any] = {"Bucket": self.bucket}
        if self.settings.region != "us-east-1":  # AWS refuses the constraint for its default region
            create["CreateBucketConfiguration"] = {"LocationConstraint": self.settings.region}
        try:
            await self._client.create_bucket(**create)
        except ClientError as error:
            # Another node made it a moment ago: ours after all.
            if _status_of(error) != "BucketAlreadyOwnedByYou":
                raise StartupRefused(f"files: {where} does not exist and could not be created: "
                                     f"{_status_of(error)}; create it, or give the credentials the right to") from None
        except (BotoCoreError, HttpClientError, OSError) as error:
            raise StartupRefused(f"files: cannot reach {where}: {error}") from None
        log.info("created the S3 bucket for files", extra={"bucket": self.bucket})

    async def close(self) -> None:
        self._client = None
        await self._exit.aclose()

    # -- writing -------------------------------------------------------------------------

    def create(self) -> SpooledUpload:
        return self.spool.create(self._keep)

    async def _keep(self, path: Path, key: str) -> None:
        name = self.prefix + check_key(key)
        size = await self._run_blocking(os.path.getsize, path)
        with _store_errors("store a file"):
            if size <= PART_BYTES:
                body = await self._run_blocking(_read_part, path, 0, size)
                await self._client.put_object(Bucket=self.bucket, Key=name, Body=body)
            else:
                await self._send_in_parts(path, name, size)
        await self._run_blocking(_unlink, path)

    async def _send_in_parts(self, path: Path, name: str, size: int) -> None:
        upload = await self._client.create_multipart_upload(Bucket=self.bucket, Key=name)
        upload_id, parts = upload["UploadId"], []
        try:
            for number, offset in enumerate(range(0, size, PART_BYTES), start=1):
                body = await self._run_blocking(_read_part, path, offset, PART_BYTES)
                sent = await self._client.upload_part(Bucket=self.bucket, Key=name, UploadId=upload_id,
                                                      PartNumber=number, Body=body)
                del body  # before the next part is read: one part in memory, not two
                parts.append({"ETag": sent["ETag"], "PartNumber": number})
            await self._client.complete_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id,
                                                         MultipartUpload={"Parts": parts})
        except BaseException:
            with contextlib.suppress(Exception):
                await self._client.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id)
            raise

    # -- reading -------------------------------------------------------------------------

    async def read(self, key: str, start: int = 0, length: int | None = None) -> AsyncIterator[bytes]:
        if length == 0:
            return
        request = {"Bucket": self.bucket, "Key": self.prefix + check_key(key)}
        if length is not None:
            request["Range"] = f"bytes={start}-{start + length - 1}"
        elif start:
            request["Range"] = f"bytes={start}-"
        with _store_errors("read a file"):
            try:
                answer = await self._client.get_object(**request)
            except ClientError as error:
                if _is_missing(error) or _status_of(error) == "InvalidRange":
                    raise FileNotFoundError(key) from None
                raise
        async with answer["Body"] as body:
            while True:
                with _store_errors("read a file"):
                    chunk = await body.read(READ_CHUNK_BYTES)
                if not chunk:
                    return
                yield chunk

    async def exists(self, key: str) -> bool:
        try:
            await self._client.head_object(Bucket=self.bucket, Key=self.prefix + check_key(key))
            return True
        except ClientError as error:
            if _is_missing(error):
                return False
            raise

    # -- removing ------------------------------------------------------------------------

    async def delete(self, key: str) -> bool:
        existed = await self.exists(key)
        if existed:
            await self._client.delete_object(Bucket=self.bucket, Key=self.prefix + key)
        return existed

    async def _listed(self, operation: str, entries: str, written: str,
                      older_than: float) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """(key, entry) of each of our keys under the prefix that ``operation`` lists, written
        (the ``written`` time) more than ``older_than`` seconds ago."""
        cutoff = time.time() - older_than
        pages = self._client.get_paginator(operation).paginate(Bucket=self.bucket, Prefix=self.prefix)
        async for page in pages:
            for entry in page.get(entries, []):
                key = entry["Key"][len(self.prefix):]
                if KEY_PATTERN.match(key) and entry[written].timestamp() <= cutoff:
                    yield key, entry

    async def keys(self, *, older_than: float = 0.0) -> AsyncIterator[str]:
        async for key, _ in self._listed("list_objects_v2", "Contents", "LastModified", older_than):
            yield key

    async def stale_uploads(self, *, older_than: float) -> AsyncIterator[str]:
        for name in await self._run_blocking(self.spool.stale, older_than):
            yield name
        async for key, upload in self._listed("list_multipart_uploads", "Uploads", "Initiated", older_than):
            yield f"{_MULTIPART}{key}:{upload['UploadId']}"

    async def remove_stale_upload(self, name: str) -> bool:
        if not name.startswith(_MULTIPART):
            removed: bool = await self._run_blocking(self.spool.remove, name)
            return removed
        key, _, upload_id = name[len(_MULTIPART):].partition(":")
        try:
            await self._client.abort_multipart_upload(Bucket=self.bucket, Key=self.prefix + check_key(key),
                                                      UploadId=upload_id)
            return True
        except ClientError as error:
            if _status_of(error) == "NoSuchUpload" or _is_missing(error):
                return False
            raise
