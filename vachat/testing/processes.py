"""Real server processes: ``server_process`` (``ServerProcess``) and ``free_port``."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
import tornado.httpclient
import tornado.websocket

from .clients import Response
from .fixtures import TEST_REFRESH_SECRET, TEST_SECRET


# How long a spawned server may take to report ready (s): imports, migrations, pool warm-up.
SERVER_START_TIMEOUT = 30.0

# ServerProcess.fetch takes a ``json=`` argument, which hides the module inside it.
_json_module = json


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class ServerProcess:
    """A ``vachat serve`` child process on its own port; stopped when the test ends."""

    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self) -> "ServerProcess":
        env = {**os.environ, **self.env, "PORT": str(self.port), "HOST": "127.0.0.1"}
        self._log = open(self.log_path, "ab")
        # `python -m vachat` runs whatever vachat this interpreter imports (checkout, editable or
        # wheel), and in the test's own directory, so the default data directory is the test's too.
        self.process = subprocess.Popen([sys.executable, "-m", "vachat", "serve"], env=env, stdout=self._log,
                                        stderr=subprocess.STDOUT, cwd=str(self.log_path.parent))
        return self

    async def wait_ready(self, timeout: float = SERVER_START_TIMEOUT) -> None:
        client = tornado.httpclient.AsyncHTTPClient(force_instance=True)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.output()}")
                try:
                    response = await client.fetch(self.base_url + "/health/ready", raise_error=False, request_timeout=2)
                    if response.code == 200:
                        return
                except OSError:
                    pass  # not listening yet
                await asyncio.sleep(0.05)
            raise TimeoutError(f"server not ready after {timeout}s:\n{self.output()}")
        finally:
            client.close()

    async def fetch(self, path: str, method: str = "GET", *, json: Any = None,
                    headers: dict[str, str] | None = None, timeout: float = 60) -> Response:
        """A request to this server (never raises on 4xx/5xx)."""
        all_headers = dict(headers or {})
        body = None
        if json is not None:
            body = _json_module.dumps(json)
            all_headers["Content-Type"] = "application/json"
        client = tornado.httpclient.AsyncHTTPClient(force_instance=True)
        try:
            response = await client.fetch(self.base_url + path, method=method, headers=all_headers, body=body,
                                          raise_error=False, request_timeout=timeout)
        finally:
            client.close()
        if response.code == 599:
            raise response.error
        return Response(response.code, response.headers, response.body or b"")

    def terminate(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    async def wait_exit(self, timeout: float = 40.0) -> int:
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                self.process.send_signal(signal.SIGUSR1)  # its threads' stacks, into the log
                await asyncio.sleep(0.5)
                raise TimeoutError(f"server still running after {timeout}s:\n{self.output()}")
            await asyncio.sleep(0.05)
        return self.process.returncode

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-8000:]
        except OSError:
            return ""

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        if getattr(self, "_log", None):
            self._log.close()


@pytest.fixture
def server_process(request: pytest.FixtureRequest, tmp_path: Path, vachat_database_url: str,
                   vachat_redis_url: str) -> Callable[..., Any]:
    """``server_process(env={...})`` → a started ``ServerProcess`` (await ``wait_ready()``).

    The child runs in the test environment with the session's database and Redis, the test
    auth plugin loaded, and migrations applied at start-up. Its working directory is
    ``tmp_path``; the project under test is on its import path, so ``VACHAT_PLUGIN_MODULES`` may
    name test modules such as ``tests.plugins.x``.
    """
    import_path = os.pathsep.join(filter(None, [str(request.config.rootpath), os.environ.get("PYTHONPATH")]))
    started: list[ServerProcess] = []

    def spawn(env: dict[str, str] | None = None) -> ServerProcess:
        base = {
            "VACHAT_ENV": "test", "DATABASE_URL": vachat_database_url, "REDIS_URL": vachat_redis_url,
            "JWT_SECRET": TEST_SECRET, "JWT_REFRESH_SECRET": TEST_REFRESH_SECRET, "BCRYPT_ROUNDS": "4",
            "LOG_DIR": "", "AUTO_MIGRATE": "1", "RATE_LIMIT_GLOBAL": "100000/60s", "RATE_LIMIT_AUTH": "100000/60s",
            "VACHAT_PLUGIN_MODULES": "testauth=vachat.testing_auth",
            "PYTHONPATH": import_path,
        }
        base.update(env or {})
        server = ServerProcess(base, tmp_path / f"server-{len(started)}.log").start()
        started.append(server)
        return server

    yield spawn
    for server in started:
        server.kill()
