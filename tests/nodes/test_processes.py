"""Real server processes: start-up, graceful shutdown on SIGTERM, and two nodes sharing
PostgreSQL and Redis delivering each other's room broadcasts."""

import asyncio
import os
import signal

import pytest

from vachat.testing import eventually, needs_shared_services, open_websocket



@pytest.mark.gen_test(timeout=60)
async def test_sigterm_completes_the_request_in_flight_and_exits_0(server_process):
    server = server_process({"VACHAT_PLUGIN_MODULES": "testauth=vachat.testing_auth,slow=tests.plugins.slow"})
    await server.wait_ready()
    socket = await open_websocket(server.ws_url, {"Authorization": "Bearer test:alice"})
    await socket.receive("ready")
    in_flight = asyncio.ensure_future(server.fetch("/api/slow/wait"))
    async def arrived():
        return (await server.fetch("/api/slow/status")).data["waiting"] >= 1

    await eventually(arrived, 10, "the slow request to arrive")
    server.terminate()
    assert await socket.closed(timeout=10) == (1001, "Server shutting down")
    response = await asyncio.wait_for(in_flight, 20)
    assert response.code == 200 and response.json == {"success": True, "data": {"finished": True}}
    assert await server.wait_exit() == 0
    assert '"stopped"' in server.output()


@pytest.mark.gen_test(timeout=60)
async def test_a_fresh_server_serves_health(server_process):
    server = server_process()
    await server.wait_ready()
    response = await server.fetch("/health")
    report = response.json
    assert response.code == 200 and report["status"] == "healthy"
    expected = "ok" if os.environ.get("VACHAT_TEST_REDIS_URL") else "disabled"
    assert report["checks"]["redis"]["status"] == expected
    server.terminate()
    assert await server.wait_exit() == 0


@pytest.mark.gen_test(timeout=60)
async def test_sigusr1_prints_every_threads_stack_and_the_node_carries_on(server_process):
    server = server_process()
    await server.wait_ready()
    server.process.send_signal(signal.SIGUSR1)
    # The IOLoop's thread, waiting in serve(), among the others (database, hashing).
    await eventually(lambda: "vachat/server.py\", line" in server.log_path.read_text(), 10, "the stacks in the log")
    assert server.log_path.read_text().count("Thread 0x") >= 2
    assert (await server.fetch("/health/ready")).code == 200
    server.terminate()
    assert await server.wait_exit() == 0


@pytest.mark.gen_test(timeout=60)
async def test_production_refuses_pending_migrations(server_process, tmp_path):
    server = server_process({
        "VACHAT_ENV": "production", "AUTO_MIGRATE": "0", "DATABASE_URL": f"sqlite:///{tmp_path / 'fresh.db'}",
        "JWT_SECRET": "a" * 48, "JWT_REFRESH_SECRET": "b" * 48, "REDIS_URL": "", "BCRYPT_ROUNDS": "10"})
    assert await server.wait_exit(timeout=30) == 1
    assert "pending migrations" in server.output()


@pytest.mark.gen_test(timeout=60)
async def test_production_refuses_weak_secrets(server_process):
    server = server_process({"VACHAT_ENV": "production", "JWT_SECRET": "short", "JWT_REFRESH_SECRET": "short",
                             "BCRYPT_ROUNDS": "10"})
    assert await server.wait_exit(timeout=30) == 2
    assert "JWT_SECRET must be set to a random value of at least 32 bytes" in server.output()


@needs_shared_services
@pytest.mark.gen_test(timeout=90)
async def test_two_nodes_deliver_each_others_room_broadcasts(server_process):
    modules = {"VACHAT_PLUGIN_MODULES": "testauth=vachat.testing_auth"}
    first, second = server_process(modules), server_process(modules)
    await asyncio.gather(first.wait_ready(), second.wait_ready())
    writer = await open_websocket(first.ws_url, {"Authorization": "Bearer test:alice",
                                                 "X-Test-Permissions": "example.write"})
    reader = await open_websocket(second.ws_url, {"Authorization": "Bearer test:bob"})
    for socket in (writer, reader):
        await socket.receive("ready")
        assert (await socket.request("example-join", {"room": "lobby"}))["type"] == "ack"
    assert (await writer.request("example-shout", {"room": "lobby", "text": "across nodes"}))["type"] == "ack"
    heard = await reader.receive("example-shouted", timeout=10)
    assert heard["data"] == {"room": "lobby", "text": "across nodes", "from": "alice"}
    # And the other way round, through the user room and REST on the second node.
    created = await second.fetch("/api/example/notes", method="POST", json={"text": "from node 2"},
                                  headers={"Authorization": "Bearer test:alice", "X-Test-Permissions": "example.write"})
    assert created.code == 201
    pushed = await writer.receive("example-note-created", timeout=10)
    assert pushed["data"]["text"] == "from node 2"
    for server in (first, second):
        server.terminate()
    assert [await first.wait_exit(), await second.wait_exit()] == [0, 0]
