"""docs/deploying.md, tried for real: nginx with the configuration the guide ships
(docs/deploy/nginx.conf), in front of two ``vachat serve`` nodes sharing the database and
Redis, on loopback. A client signs in over HTTPS, opens sockets over WSS (one per node: nginx
takes turns, nothing is sticky) and chats; the client's address and scheme reach the nodes;
``/metrics`` stays private.

nginx runs as our own process (``nginx -p DIR -c CONF``) with certificates from trustme, never
as the system service. Where nginx is not installed the test is skipped, except in CI
(``CI=true``), where that is a failure.
"""

import asyncio
import json
import os
import shutil
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest
import tornado.httpclient
import tornado.websocket
import trustme

from vachat.testing import WsClient, free_port, needs_shared_services

GUIDE_CONFIG = Path(__file__).resolve().parents[2] / "docs" / "deploy" / "nginx.conf"
CLIENT_ADDRESS = "203.0.113.9"  # documentation range: what a client behind nginx claims to be
# nginx starts in well under a second; this is the bound on waiting for its port.
NGINX_START_TIMEOUT = 10.0

pytestmark = needs_shared_services


def nginx_binary() -> str:
    found = shutil.which("nginx") or next((path for path in ("/usr/sbin/nginx",) if os.access(path, os.X_OK)), None)
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("nginx is not installed (.ci/run installs it before the PostgreSQL + Redis pass)")
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    return found


def render_guide_config(directory: Path, nodes: list[int], http_port: int, https_port: int,
                        certificate: Path, key: Path) -> Path:
    """The guide's file with this test's ports and certificate; each replaced line must be
    there, so the guide cannot change under the test unnoticed."""
    text = GUIDE_CONFIG.read_text()
    replacements = {
        "server 127.0.0.1:3001 ": f"server 127.0.0.1:{nodes[0]} ",
        "server 127.0.0.1:3002 ": f"server 127.0.0.1:{nodes[1]} ",
        "listen 80;": f"listen 127.0.0.1:{http_port};",
        "listen 443 ssl;": f"listen 127.0.0.1:{https_port} ssl;",
        "/etc/ssl/vachat/fullchain.pem": str(certificate),
        "/etc/ssl/vachat/privkey.pem": str(key),
    }
    for old, new in replacements.items():
        assert text.count(old) == 1, f"docs/deploy/nginx.conf no longer has {old!r}"
        text = text.replace(old, new)
    site = directory / "vachat.conf"
    site.write_text(text)
    # What /etc/nginx/nginx.conf provides around a conf.d file, kept inside the test's directory.
    main = directory / "nginx.conf"
    main.write_text("\n".join([
        "user root;" if os.geteuid() == 0 else "",
        "worker_processes 1;",
        f"pid {directory / 'nginx.pid'};",
        f"error_log {directory / 'error.log'} warn;",
        "events { worker_connections 256; }",
        "http {",
        f"  access_log {directory / 'access.log'};",
        *(f"  {kind}_temp_path {directory / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")),
        f"  include {site};",
        "}",
    ]))
    return main


@pytest.fixture
def nginx(tmp_path):
    """``start(nodes)`` → (http port, https port, client SSL context): our own nginx."""
    binary = nginx_binary()
    processes: list[subprocess.Popen] = []
    directory = tmp_path / "nginx"
    directory.mkdir()
    ca = trustme.CA()
    leaf = ca.issue_cert("chat.example.com", "127.0.0.1")
    certificate, key = directory / "fullchain.pem", directory / "privkey.pem"
    leaf.private_key_pem.write_to_path(str(key))
    certificate.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)

    async def start(nodes: list[int]) -> tuple[int, int, ssl.SSLContext]:
        http_port, https_port = free_port(), free_port()
        config = render_guide_config(directory, nodes, http_port, https_port, certificate, key)
        checked = subprocess.run([binary, "-t", "-p", str(directory), "-e", str(directory / "error.log"), "-c", str(config)],
                                 capture_output=True, text=True)
        assert checked.returncode == 0, checked.stderr
        processes.append(subprocess.Popen([binary, "-p", str(directory), "-e", str(directory / "error.log"),
                                           "-c", str(config), "-g", "daemon off;"],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        deadline = asyncio.get_running_loop().time() + NGINX_START_TIMEOUT
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", https_port)
                writer.close()
                break
            except OSError:
                assert processes[-1].poll() is None, processes[-1].stderr.read().decode()
                assert asyncio.get_running_loop().time() < deadline, "nginx did not listen"
                await asyncio.sleep(0.05)
        return http_port, https_port, client_context

    yield start
    for process in processes:
        process.terminate()
        process.wait(10)


async def open_wss(url: str, context: ssl.SSLContext) -> WsClient:
    request = tornado.httpclient.HTTPRequest(url, ssl_options=context, request_timeout=10)
    return WsClient(await tornado.websocket.websocket_connect(request))


@pytest.mark.gen_test(timeout=120)
async def test_a_client_signs_in_and_chats_through_nginx_over_https_and_wss(server_process, nginx, make_user):
    user = await make_user()
    nodes = [server_process({"TRUSTED_PROXIES": "127.0.0.1"}) for _ in range(2)]
    await asyncio.gather(*(node.wait_ready() for node in nodes))
    http_port, https_port, context = await nginx([node.port for node in nodes])
    base = f"https://127.0.0.1:{https_port}"

    async with httpx.AsyncClient(base_url=base, verify=context, timeout=20) as client:
        signed_in = await client.post("/api/auth/login", json={"email": user.email, "password": user.password},
                                      headers={"X-Forwarded-For": CLIENT_ADDRESS})
        assert signed_in.status_code == 200, signed_in.text
        # The scheme reached the node: it marks the answer for HTTPS only.
        assert "max-age" in signed_in.headers["Strict-Transport-Security"]
        token = signed_in.json()["data"]["tokens"]["accessToken"]
        auth = {"Authorization": f"Bearer {token}"}
        # The client's address reached the node, as the last hop nginx added before itself.
        sessions = (await client.get("/api/auth/sessions", headers=auth)).json()["data"]
        assert CLIENT_ADDRESS in {session["ip"] for session in sessions}
        conversation = (await client.post("/api/chat/conversations", json={"title": "through nginx"},
                                          headers=auth)).json()["data"]

        # Two sockets: nginx takes turns between the nodes, and nothing needs to be sticky.
        sockets = [await open_wss(f"wss://127.0.0.1:{https_port}/ws", context) for _ in range(2)]
        for socket in sockets:
            assert (await socket.request("auth", {"token": token}))["type"] == "ack"
            joined = await socket.request("join-conversation", {"conversationId": conversation["id"]})
            assert joined["type"] == "ack", joined
        sent = await sockets[0].request("send-message", {"conversationId": conversation["id"], "content": "hello via wss"})
        assert sent["type"] == "ack", sent
        for socket in sockets:
            heard = await socket.receive("new-message", timeout=10)
            assert heard["data"]["content"] == "hello via wss"
        posted = await client.post("/api/chat/message", headers=auth,
                                   json={"conversationId": conversation["id"], "content": "hello via https"})
        assert posted.status_code == 201, posted.text
        for socket in sockets:
            assert (await socket.receive("new-message", timeout=10))["data"]["content"] == "hello via https"
        for socket in sockets:
            socket.close()

        # Probes work with HEAD; metrics stay on the nodes.
        assert (await client.head("/health/ready")).status_code == 200
        assert (await client.get("/metrics")).status_code == 404
        assert (await nodes[0].fetch("/metrics")).code == 200

    # Both nodes served: each logged requests that came through nginx.
    for node in nodes:
        assert "/api/" in node.output() or "/ws" in node.output()
    async with httpx.AsyncClient(timeout=10) as plain:
        redirect = await plain.get(f"http://127.0.0.1:{http_port}/api/auth/me")
        assert redirect.status_code == 301 and redirect.headers["Location"].startswith("https://")
